//! [`WorkerRuntimes`]: current-thread runtimes on threads of their own, for
//! [`BenchConfig::workers`](crate::BenchConfig::workers).

use std::fmt;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Current-thread runtimes, each driven by a thread of its own until this is dropped: the
/// runtimes a run's lanes can be spread over ([`BenchConfig::workers`](crate::BenchConfig)),
/// one per core. Dropping it stops the runtimes (a second at most to let their tasks go) and
/// joins their threads; drop it after the runs that use it.
pub struct WorkerRuntimes {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerRuntimes {
    /// Starts `n` runtimes (timers and I/O enabled), on threads named `volley-bench-1` to
    /// `volley-bench-n`.
    ///
    /// # Errors
    /// When a runtime or a thread cannot be created (the process is out of threads or file
    /// descriptors); those already started are stopped.
    pub fn start(n: usize) -> std::io::Result<WorkerRuntimes> {
        let mut workers = WorkerRuntimes {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 1..=n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("volley-bench-{i}"))
                .spawn(move || {
                    // Runs the runtime's tasks until the sender is dropped.
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            workers.handles.push(handle);
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The runtimes' handles, to spawn on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for WorkerRuntimes {
    fn drop(&mut self) {
        self.stops.clear();
        for thread in self.threads.drain(..) {
            // A runtime's thread panics only if tokio does; the runs say more than this could.
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for WorkerRuntimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRuntimes")
            .field("runtimes", &self.handles.len())
            .finish()
    }
}
