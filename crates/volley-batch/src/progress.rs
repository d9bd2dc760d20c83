//! Live counters of a run, for a progress bar.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use volley::Client;

/// Live counters of a [`BatchRunner`](super::BatchRunner), updated as it runs (atomics; read
/// them with [`Progress::snapshot`] as often as you like).
#[derive(Debug)]
pub struct Progress {
    client: Client,
    total_lines: AtomicU64,
    started: AtomicBool,
    attempts_base: AtomicU64,
    pub(crate) read: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) skipped_failed: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) tokens_in: AtomicU64,
    pub(crate) tokens_out: AtomicU64,
}

/// The counters of a [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressSnapshot {
    /// Non-blank lines in the input file (the lines that get an outcome), once counted (a
    /// second reader counts them while the run starts); `None` for standard input, a pipe or
    /// a FIFO, and until counted.
    pub total_lines: Option<u64>,
    /// Non-blank lines read so far.
    pub read: u64,
    /// Lines skipped because the output already had their outcome (resume).
    pub skipped: u64,
    /// Requests in flight in the runner (waiting for the client's limits or a retry
    /// included).
    pub in_flight: u64,
    /// Lines whose outcome is a 2xx response.
    pub succeeded: u64,
    /// Lines whose request failed: a final HTTP error or an error without a response.
    pub failed: u64,
    /// Invalid input lines (nothing sent).
    pub invalid: u64,
    /// Prompt (input) tokens reported in the responses' `usage`, a cache hit's replayed
    /// usage left out (it was billed when the answer first came).
    pub tokens_in: u64,
    /// Completion (output) tokens reported in the responses' `usage`, cache hits' left out.
    pub tokens_out: u64,
    /// HTTP attempts made by the client since the run started (retries included; cache hits
    /// make none). Counted by the client's connection pool: work the same client does
    /// elsewhere at the same time is counted too.
    pub attempts: u64,
    /// Attempts beyond the first of each request, as far as known now:
    /// `attempts - (requests sent - cached)`, so a lower bound while requests wait for their
    /// first attempt.
    pub retries: u64,
    /// Requests answered by the client's cache so far (they made no attempt).
    pub cached: u64,
}

impl ProgressSnapshot {
    /// Lines with an outcome: skipped (recorded earlier), succeeded, failed or invalid.
    pub fn done(&self) -> u64 {
        self.skipped + self.succeeded + self.failed + self.invalid
    }
}

impl Progress {
    pub(crate) fn new(client: Client) -> Progress {
        let zero = || AtomicU64::new(0);
        Progress {
            client,
            total_lines: AtomicU64::new(UNKNOWN),
            started: AtomicBool::new(false),
            attempts_base: zero(),
            read: zero(),
            skipped: zero(),
            skipped_failed: zero(),
            sent: zero(),
            cached: zero(),
            in_flight: zero(),
            succeeded: zero(),
            failed: zero(),
            invalid: zero(),
            tokens_in: zero(),
            tokens_out: zero(),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let total = get(&self.total_lines);
        let attempts = self.attempts();
        // Read before `sent`: a line sent and answered from the cache between the two reads
        // then counts in `sent` only, and `retries` stays a lower bound.
        let cached = get(&self.cached);
        ProgressSnapshot {
            total_lines: (total != UNKNOWN).then_some(total),
            read: get(&self.read),
            skipped: get(&self.skipped),
            in_flight: get(&self.in_flight),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            invalid: get(&self.invalid),
            tokens_in: get(&self.tokens_in),
            tokens_out: get(&self.tokens_out),
            attempts,
            retries: attempts.saturating_sub(get(&self.sent).saturating_sub(cached)),
            cached,
        }
    }

    /// Whether the run got past its start: the input, output and errors files are open and
    /// checked, and lines are being sent. An error of
    /// [`BatchRunner::run`](super::BatchRunner::run) while this is `false` is a mistake in
    /// the options or files; once it is `true`, a failure of the run itself (an I/O error
    /// reading the input or writing outcomes).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_total_lines(&self, total: u64) {
        self.total_lines
            .store(total.min(UNKNOWN - 1), Ordering::Relaxed);
    }

    /// Starts counting attempts from now.
    pub(crate) fn start_attempts(&self) {
        let now = self.client.connection_stats().requests;
        self.attempts_base.store(now, Ordering::Relaxed);
    }

    pub(crate) fn attempts(&self) -> u64 {
        let now = self.client.connection_stats().requests;
        now.saturating_sub(self.attempts_base.load(Ordering::Relaxed))
    }

    /// Adds `n`, saturating: token counts are a server's numbers.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_add(n))
        });
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// `total_lines` before it is known.
const UNKNOWN: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    /// Token counts are a server's numbers: two huge ones saturate, never wrap to a small sum.
    #[test]
    fn counters_saturate() {
        let counter = AtomicU64::new(0);
        Progress::add(&counter, u64::MAX);
        Progress::add(&counter, u64::MAX);
        assert_eq!(Progress::get(&counter), u64::MAX);
    }
}
