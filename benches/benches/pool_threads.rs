//! The HTTP/1.1 pool under two threads: the bare transport shared by two current-thread
//! runtimes on threads of their own (as `volley bench` runs one per core), against the mock on
//! a runtime of its own. The figure is the CPU time of the two client threads
//! (`CLOCK_THREAD_CPUTIME_ID`) per batch, not wall time: the mock, on the same cores, sets
//! the pace. A request sent on a connection whose task runs on the other thread wakes that
//! thread for the request and is woken back for the answer; the pool prefers the caller's
//! own connections, and this shows what that saves.
//!
//! `cargo bench -p volley-benches --bench pool_threads` (Linux and other Unix systems).

#[cfg(unix)]
mod common;

#[cfg(unix)]
mod unix {
    use std::time::Duration;

    use criterion::{Criterion, Throughput};
    use futures_util::future::join_all;
    use volley_core::Request;

    const BODY: &str =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

    fn request() -> Request {
        Request::post("/chat/completions", BODY).expect("static path")
    }

    /// The CPU time the calling thread has used.
    fn thread_cpu_time() -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill; the clock exists on Linux.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        assert_eq!(status, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// The bare transport shared by two current-thread runtimes on threads of their own (as
    /// `volley bench` runs one per core), each sending half of a batch, against the mock on a
    /// runtime of its own. The figure is the CPU time of the two client threads (not wall time:
    /// the mock, on the same two cores, sets the pace), so it shows what a request costs when
    /// the pool's connections are driven by either thread: one sent on a connection whose task
    /// runs on the other thread wakes that thread for the request and is woken back for the
    /// answer. The pool prefers the caller's own.
    pub(crate) fn two_threads(c: &mut Criterion) {
        const PER_THREAD: usize = 32;
        let server_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (_server, transport) = super::common::mock_and_transport(&server_runtime);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let handle = runtime.handle().clone();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let thread = std::thread::spawn(move || {
                    let _ = runtime.block_on(stopped);
                });
                (handle, stop, thread)
            })
            .collect();
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut group = c.benchmark_group("two_threads");
        group.throughput(Throughput::Elements((2 * PER_THREAD) as u64));
        group.measurement_time(Duration::from_secs(4));
        group.warm_up_time(Duration::from_secs(1));
        group.bench_function("bare_client_cpu", |b| {
            b.iter_custom(|iterations| {
                let halves: Vec<_> = workers
                    .iter()
                    .map(|(handle, _, _)| {
                        let transport = transport.clone();
                        handle.spawn(async move {
                            let before = thread_cpu_time();
                            for _ in 0..iterations {
                                let calls = (0..PER_THREAD).map(|_| async {
                                    let response =
                                        transport.send(request()).await.expect("the mock answers");
                                    response.bytes().await.expect("the body arrives")
                                });
                                join_all(calls).await;
                            }
                            thread_cpu_time() - before
                        })
                    })
                    .collect();
                main.block_on(async {
                    let mut cpu = Duration::ZERO;
                    for half in halves {
                        cpu += half.await.expect("the half completes");
                    }
                    cpu
                })
            });
        });
        group.finish();
        for (_, stop, thread) in workers {
            drop(stop);
            thread.join().expect("the runtime's thread ends");
        }
    }
}

#[cfg(unix)]
criterion::criterion_group!(benches, unix::two_threads);
#[cfg(unix)]
criterion::criterion_main!(benches);

#[cfg(not(unix))]
fn main() {}
