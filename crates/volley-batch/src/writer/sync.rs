//! The `fsync` thread of [`Fsync::Interval`](crate::Fsync::Interval): it syncs the files the
//! writer wrote to, at most once per interval, so that the writer never waits for the disk.
//! One `fsync` covers every record written before it (group commit).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use volley::core::Error;

use super::sink::{Target, io_error};

/// The handle of the `fsync` thread.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Files written since their last `fsync` began.
    dirty: Vec<Arc<Target>>,
    stop: bool,
    /// The first failed `fsync`; the thread ends with it.
    error: Option<Error>,
}

impl Syncer {
    /// Starts the thread, which syncs at most once per `interval`.
    pub(crate) fn start(interval: Duration) -> Result<Syncer, Error> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("volley-fsync".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, interval)
            })
            .map_err(|e| io_error("starting the fsync thread for", "outcomes".as_ref(), e))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Notes that `target` was written: it is synced within the interval.
    pub(crate) fn mark(&self, target: &Arc<Target>) {
        let mut state = self.shared.lock();
        if !state.dirty.iter().any(|t| Arc::ptr_eq(t, target)) {
            state.dirty.push(target.clone());
            self.shared.wake.notify_one();
        }
    }

    /// The error of a failed `fsync`, once.
    pub(crate) fn take_error(&self) -> Option<Error> {
        self.shared.lock().error.take()
    }

    /// Stops the thread (without waiting for the interval; the writer syncs every file at
    /// the end itself) and returns the error of a failed `fsync`, if any.
    pub(crate) fn stop(mut self) -> Result<(), Error> {
        self.halt();
        self.take_error().map_or(Ok(()), Err)
    }

    fn halt(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            self.halt();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it (plain fields).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(shared: &Shared, interval: Duration) {
    loop {
        let dirty = {
            let mut state = shared.lock();
            while state.dirty.is_empty() && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            std::mem::take(&mut state.dirty)
        };
        let began = Instant::now();
        for target in &dirty {
            if let Err(e) = target.sync() {
                shared.lock().error = Some(e);
                return;
            }
        }
        drop(dirty);
        // The cadence: the next `fsync` begins one interval after this one began.
        let until = began + interval;
        let mut state = shared.lock();
        while !state.stop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, OpenOptions};
    use std::path::PathBuf;

    use super::super::sink::Sink;
    use super::*;

    /// Whether `done` holds within a few seconds, checked every millisecond.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        done()
    }

    /// A file whose `fsync` fails, as a device's does on Linux; `None` where it succeeds.
    fn unsyncable() -> Option<Sink> {
        let file = OpenOptions::new().write(true).open("/dev/null").ok()?;
        if file.sync_data().is_ok() {
            return None;
        }
        Sink::new(file, PathBuf::from("/dev/null")).ok()
    }

    #[test]
    fn a_marked_file_is_synced_and_its_failure_reported() {
        let Some(bad) = unsyncable() else { return };
        let syncer = Syncer::start(Duration::from_millis(1)).unwrap();
        syncer.mark(bad.target());
        assert!(eventually(|| syncer.shared.lock().error.is_some()));
        let err = syncer.stop().unwrap_err();
        assert!(err.to_string().contains("syncing /dev/null"), "{err}");
    }

    #[test]
    fn a_file_written_again_waits_for_the_next_interval() {
        let Some(bad) = unsyncable() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = Sink::new(File::create(&path).unwrap(), path).unwrap();
        let syncer = Syncer::start(Duration::from_secs(3600)).unwrap();
        syncer.mark(good.target());
        assert!(
            eventually(|| syncer.shared.lock().dirty.is_empty()),
            "the first sync begins at once"
        );
        // Within the interval of that sync, a file marked now is not synced yet.
        syncer.mark(bad.target());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(syncer.shared.lock().dirty.len(), 1);
        assert!(
            syncer.stop().is_ok(),
            "stopping does not wait for the interval"
        );
    }

    #[test]
    fn dropping_the_handle_ends_the_thread() {
        let syncer = Syncer::start(Duration::from_secs(3600)).unwrap();
        let shared = syncer.shared.clone();
        drop(syncer);
        assert_eq!(
            Arc::strong_count(&shared),
            1,
            "the thread let go of its handle"
        );
    }
}
