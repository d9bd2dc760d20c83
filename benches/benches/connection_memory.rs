//! Heap memory per connection, counted allocation by allocation, for S3 (10 000 requests in
//! flight in 200 MB): `CONNECTIONS` requests (default 1 000; 20 under `cargo test`) are sent
//! at once, each on a new connection, to volley-mock answering after `LATENCY_MS` (default
//! 1 000; 2 000 under `cargo test`); once the mock has read all of them the bench reads what
//! the client holds per request in flight, then what it held at its peak while connecting,
//! then what an idle pooled connection keeps once all answers are read, and again once each
//! connection has carried `EXCHANGES` (default 40) more requests, answered at once (hyper's
//! dispatch channel takes a second block of 32 slots after a connection's 32nd request).
//!
//! The client runs on this thread alone and only its allocations are counted (the mock runs on
//! a thread of its own), so the figures are exact and the same from run to run: bytes the
//! program asked for, and the same rounded up to jemalloc's size classes, which is what the
//! `volley` binary's allocator hands out. Pages never written (most of hyper's 8 KiB buffers)
//! are counted in full here although they are not resident, so these figures sit above what
//! peak RSS shows per connection.
//!
//! Four clients: the bare transport and the whole default stack (`volley::Client`, as `volley
//! bench` builds it), each over plain HTTP and over TLS.
//!
//! ```text
//! cargo bench -p volley-benches --bench connection_memory
//! CONNECTIONS=5000 cargo bench -p volley-benches --bench connection_memory
//! ONLY=plain cargo bench -p volley-benches --bench connection_memory   # or ONLY=tls
//! EXCHANGES=0 cargo bench -p volley-benches --bench connection_memory  # no further requests
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use volley::Client;
use volley_core::{Error, Request, Response};
use volley_mock::{Latency, MockConfig, MockServer, MockTls};
use volley_testkit::tls::TestPki;
use volley_transport::Transport;

/// Counts the live bytes allocated on threads that asked to be counted.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_CLASSES: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static PEAK_CLASSES: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// jemalloc's size class for a request of `size` bytes: multiples of 8 then 16 up to 128, then
/// four classes to each doubling (160, 192, 224, 256, 320, ...), small and large alike.
fn size_class(size: usize) -> usize {
    match size {
        0..=8 => 8,
        9..=128 => size.div_ceil(16) * 16,
        _ => {
            let lg = usize::BITS - 1 - (size - 1).leading_zeros();
            let step = 1usize << (lg - 2);
            size.div_ceil(step) * step
        }
    }
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

/// Runs `f` with counting off on this thread: for the bench's own look at the mock's counters,
/// whose snapshot is made and dropped inside `f`.
fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    COUNTED.with(|c| c.set(false));
    let value = f();
    COUNTED.with(|c| c.set(true));
    value
}

fn add(size: usize) {
    let live = LIVE.fetch_add(size as isize, Relaxed) + size as isize;
    PEAK.fetch_max(live, Relaxed);
    let class = size_class(size) as isize;
    let live = LIVE_CLASSES.fetch_add(class, Relaxed) + class;
    PEAK_CLASSES.fetch_max(live, Relaxed);
}

fn sub(size: usize) {
    LIVE.fetch_sub(size as isize, Relaxed);
    LIVE_CLASSES.fetch_sub(size_class(size) as isize, Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are atomics
// and the thread-local flag is a `Cell<bool>` with no destructor, so counting never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && counted() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            sub(layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live bytes (asked for, in size classes) now.
fn live() -> (isize, isize) {
    (LIVE.load(Relaxed), LIVE_CLASSES.load(Relaxed))
}

/// Starts the peak over from what is live now.
fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    PEAK_CLASSES.store(LIVE_CLASSES.load(Relaxed), Relaxed);
}

fn peak() -> (isize, isize) {
    (PEAK.load(Relaxed), PEAK_CLASSES.load(Relaxed))
}

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request {
    Request::post("/chat/completions", BODY).expect("a static path")
}

/// A request the mock answers at once, for the exchanges after the first.
fn quick_request() -> Request {
    request().with_header(
        http::HeaderName::from_static(volley_mock::LATENCY_HEADER),
        http::HeaderValue::from_static("0ms"),
    )
}

/// The figures of one client, per connection.
struct Figures {
    in_flight: (isize, isize),
    peak: (isize, isize),
    idle: (isize, isize),
    /// Idle again, after `exchanges` more requests on each connection.
    worn: (isize, isize),
}

/// Sends `n` requests at once through `send`, and reads the client's heap per connection
/// while they are in flight, at its peak, and once they are all answered; then sends
/// `exchanges` rounds of `n` requests answered at once through `send_quick`, and reads it
/// again.
///
/// Each round's requests all take their connection before any answer is read (the
/// connections' tasks run on this thread only when the round waits), so each of the `n`
/// idle connections carries one request a round; the mock's count of connections checks that
/// no other was opened.
async fn measure<F, Fut, Q, QFut>(
    server: &MockServer,
    n: usize,
    exchanges: usize,
    send: F,
    send_quick: Q,
) -> Figures
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response, Error>>,
    Q: Fn() -> QFut,
    QFut: Future<Output = Result<Response, Error>>,
{
    let per = |(bytes, classes): (isize, isize), (base, base_classes): (isize, isize)| {
        (
            (bytes - base) / n as isize,
            (classes - base_classes) / n as isize,
        )
    };
    let answered = || uncounted(|| server.stats().requests_total);
    let answered_before = answered();
    let base = live();
    reset_peak();
    let mut calls = calls_of(n, &send);
    // Poll the calls until the mock has read every request, bounded: the latency is far
    // longer than it takes to open the connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_flight = loop {
        tokio::select! {
            Some(()) = calls.next() => {
                panic!("a request was answered before all were sent: raise LATENCY_MS")
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if uncounted(|| server.stats().in_flight) as usize >= n {
            break live();
        }
        assert!(
            Instant::now() < deadline,
            "the mock has not read {n} requests after 30 s"
        );
    };
    let peak = peak();
    while calls.next().await.is_some() {}
    drop(calls);
    assert_eq!(answered() - answered_before, n as u64);
    let idle = live();
    let connections = uncounted(|| server.stats().connections_total);
    for _ in 0..exchanges {
        let mut calls = calls_of(n, &send_quick);
        while calls.next().await.is_some() {}
    }
    assert_eq!(
        uncounted(|| server.stats().connections_total),
        connections,
        "the further requests opened connections of their own"
    );
    let figures = Figures {
        in_flight: per(in_flight, base),
        peak: per(peak, base),
        idle: per(idle, base),
        worn: per(live(), base),
    };
    // An idle pooled connection keeps hyper's buffers, and a request in flight adds to it: a
    // count below that means the counting missed the client.
    assert!(
        figures.idle.0 >= 16 * 1024 && figures.in_flight.0 > figures.idle.0,
        "implausible counts: {} bytes per connection in flight, {} idle",
        figures.in_flight.0,
        figures.idle.0
    );
    figures
}

/// `n` calls of `send`, each reading its answer whole; none is polled yet.
fn calls_of<F, Fut>(n: usize, send: &F) -> FuturesUnordered<impl Future<Output = ()> + use<F, Fut>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response, Error>>,
{
    (0..n)
        .map(|_| {
            let call = send();
            async move {
                let response = call.await.expect("the mock answers");
                response.bytes().await.expect("the body arrives");
            }
        })
        .collect()
}

/// Waits until the connections of a client that was dropped are closed and their tasks gone
/// (the live count stops moving), so that the next client starts from a quiet heap.
async fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = live();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = live();
        if now == last || Instant::now() >= deadline {
            return;
        }
        last = now;
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<24} {:>8} {:>8}   {:>8} {:>8}   {:>8} {:>8}   {:>8} {:>8}",
        f.in_flight.0, f.in_flight.1, f.peak.0, f.peak.1, f.idle.0, f.idle.1, f.worn.0, f.worn.1
    );
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Settings come from the environment: `cargo bench` passes criterion's flags to every
    // bench, this one included. Run by `cargo test` (no `--bench`, a debug build), it makes a
    // small run instead: it only shows that the benchmark works.
    let timed = std::env::args().any(|a| a == "--bench");
    let n = env("CONNECTIONS", if timed { 1_000 } else { 20 }) as usize;
    let latency = Duration::from_millis(env("LATENCY_MS", if timed { 1_000 } else { 2_000 }));
    let only = std::env::var("ONLY").ok();
    let exchanges = env("EXCHANGES", 40) as usize;
    let pki = TestPki::new("connection-memory");
    let config = MockConfig {
        latency: Latency::Fixed(latency),
        ..MockConfig::default()
    };

    // The mock on a thread of its own, uncounted.
    let (servers, servers_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .expect("the test certificate");
    let mock = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let plain = MockServer::start(config.clone()).await.expect("the mock");
            let secure = MockServer::start_tls(config, tls)
                .await
                .expect("the TLS mock");
            servers.send((plain, secure)).expect("the bench waits");
            let _ = stop_rx.await;
        });
    });
    let (plain, secure) = servers_rx.recv().expect("the mocks start");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "{n} connections, latency {latency:?}; heap bytes per connection: asked for, in jemalloc's size classes"
    );
    println!(
        "{:<24} {:>17}   {:>17}   {:>17}   {:>17}",
        "",
        "in flight",
        "peak",
        "idle after",
        format!("idle after {}", 1 + exchanges)
    );
    COUNTED.with(|c| c.set(true));
    runtime.block_on(async {
        for (name, server) in [("plain", &plain), ("TLS", &secure)] {
            if only.as_ref().is_some_and(|o| !o.eq_ignore_ascii_case(name)) {
                continue;
            }
            let transport = || {
                Transport::builder()
                    .base_url(server.url())
                    .tls_ca_pem(pki.ca_pem.as_bytes().to_vec())
            };
            let bare = transport().build().expect("a transport");
            let f = measure(
                server,
                n,
                exchanges,
                || bare.send(request()),
                || bare.send(quick_request()),
            )
            .await;
            print(&format!("transport, {name}"), &f);
            drop(bare);
            settle().await;

            let client = Client::builder()
                .transport(transport())
                .base_url(server.url())
                .retries(0)
                .rpm(0)
                .tpm(0)
                .concurrency(n)
                .build()
                .expect("a client");
            let f = measure(
                server,
                n,
                exchanges,
                || client.send(request()),
                || client.send(quick_request()),
            )
            .await;
            print(&format!("volley::Client, {name}"), &f);
            drop(client);
            settle().await;
        }
    });
    COUNTED.with(|c| c.set(false));
    let _ = stop.send(());
    mock.join().expect("the mock thread");
}
