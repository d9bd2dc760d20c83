//! State shared by the driver's tasks and the [`Live`] handle: live counters, the in-flight
//! count, and the control channel that carries a ramp's target and the stop.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ramp::Ramp;
use super::recorder::ErrorLabel;

/// The shortest time between two updates of a ramp's target (each wakes every lane).
const RAMP_TICK: Duration = Duration::from_millis(10);

/// A cheap, cloneable view of a run in progress, for a progress line: counters read with
/// relaxed atomics, and a way to stop the run early.
#[derive(Clone)]
pub struct Live {
    pub(crate) shared: Arc<Shared>,
}

impl Live {
    /// Requests sent so far.
    pub fn started(&self) -> u64 {
        self.sum(|c| &c.started)
    }

    /// Requests finished so far, successfully or not.
    pub fn finished(&self) -> u64 {
        self.sum(|c| &c.finished)
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u64 {
        self.sum(|c| &c.failed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Relaxed)
    }

    /// Stream content chunks received so far (updated every 32 chunks of a stream and at its
    /// end).
    pub fn chunks(&self) -> u64 {
        self.sum(|c| &c.chunks)
    }

    /// Open-loop arrivals dropped so far because `max_in_flight` requests were in flight.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Time since the run started (zero before), frozen when it ends.
    pub fn elapsed(&self) -> Duration {
        match (self.shared.started.get(), self.shared.ended.get()) {
            (Some(start), Some(end)) => end.saturating_duration_since(*start),
            (Some(start), None) => start.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.ended.get().is_some()
    }

    /// Stops the run early: no request starts after this, those in flight are finished (or
    /// cancelled past the grace of a timed run, or by [`cancel`](Self::cancel)), and
    /// [`Bench::run`](super::Bench::run) returns the results so far (for Ctrl-C).
    pub fn stop(&self) {
        self.shared.interrupted.store(true, Relaxed);
        self.shared.control.send_modify(|c| c.stop = true);
    }

    /// Stops the run and cancels the requests in flight (a second Ctrl-C): they are dropped,
    /// their connections closed, and counted in
    /// [`Summary::unfinished`](crate::results::Summary::unfinished), and
    /// [`Bench::run`](super::Bench::run) returns the results so far at once.
    pub fn cancel(&self) {
        self.shared.interrupted.store(true, Relaxed);
        self.shared.control.send_modify(Control::cancel);
    }

    fn sum(&self, counter: impl Fn(&LaneCounters) -> &AtomicU64) -> u64 {
        self.shared
            .lanes
            .iter()
            .map(|c| counter(c).load(Relaxed))
            .sum()
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("started", &self.started())
            .field("finished", &self.finished())
            .field("failed", &self.failed())
            .field("in_flight", &self.in_flight())
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// What the lanes are told while they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Control {
    /// The concurrency to keep in flight (closed loop and ramp).
    pub(crate) target: usize,
    /// Start no more requests.
    pub(crate) stop: bool,
    /// Drop the requests in flight, counted as unfinished (with `stop`).
    pub(crate) cancel: bool,
}

impl Control {
    /// Stop, and drop what is in flight.
    pub(crate) fn cancel(&mut self) {
        self.stop = true;
        self.cancel = true;
    }
}

/// State shared by the lanes, the pacer and [`Live`].
pub(crate) struct Shared {
    pub(crate) lanes: Box<[LaneCounters]>,
    /// Requests in flight: one shared counter, so the peak is exact and the open loop's cap
    /// holds. Updated twice per request, far from the per-chunk path.
    pub(crate) in_flight: AtomicU64,
    pub(crate) peak: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Closed loop: requests taken from the budget.
    issued: AtomicU64,
    pub(crate) started: OnceLock<Instant>,
    pub(crate) ended: OnceLock<Instant>,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) failures: Failures,
    /// [`Live::stop`] was called: the run did not reach its stop condition.
    pub(crate) interrupted: AtomicBool,
}

/// The bit of `label` in [`Failures`]' `has_example`.
fn label_bit(label: ErrorLabel) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut hasher);
    1 << (hasher.finish() % 64)
}

/// How many of a run's first requests (in the order they were sent) all failing with the same
/// client error (a 4xx other than 429) stop it: the server refuses what is sent (a model it
/// does not serve, a field it does not take, a path without `/v1`), and every other request
/// would fail the same way. In sending order, not finishing order: a refusal comes back in
/// milliseconds, an answer in seconds, so the first to finish are the refusals of a few bad
/// requests (prompts over the context window) among good ones.
pub(crate) const REFUSED_IN_A_ROW: u64 = 16;

/// How one of the run's first requests ended, for the refusal rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Early {
    Unknown,
    Refused(u16),
    Other,
}

/// The most characters of an error's message kept as its label's example.
const MAX_EXAMPLE_CHARS: usize = 300;

/// What failures said: the first message of each label, and whether the run's first requests
/// all failed with one client error. Touched by the run's first requests, and then only when
/// a request fails.
pub(crate) struct Failures {
    /// The refusal rule is still undecided: requests take a number and report how they ended.
    watching: AtomicBool,
    next: AtomicU64,
    /// How the first [`REFUSED_IN_A_ROW`] requests sent ended.
    first: Mutex<[Early; REFUSED_IN_A_ROW as usize]>,
    /// The labels that have their example, as bits of a hash of the label: checked without
    /// the lock, so a storm of failures of known kinds takes no lock and formats no message.
    has_example: AtomicU64,
    /// The first message of each label, in the order first seen.
    examples: Mutex<Vec<(ErrorLabel, String)>>,
    /// Why the run stopped early, when it did.
    pub(crate) stopped: OnceLock<String>,
}

impl Default for Failures {
    fn default() -> Failures {
        Failures {
            watching: AtomicBool::new(true),
            next: AtomicU64::new(0),
            first: Mutex::new([Early::Unknown; REFUSED_IN_A_ROW as usize]),
            has_example: AtomicU64::new(0),
            examples: Mutex::default(),
            stopped: OnceLock::new(),
        }
    }
}

impl Failures {
    /// The number of a request about to be sent, while the refusal rule is undecided (one
    /// load afterwards).
    pub(crate) fn number(&self) -> Option<u64> {
        self.watching
            .load(Relaxed)
            .then(|| self.next.fetch_add(1, Relaxed))
    }

    /// Notes how request `seq` ended (`None`: a success or a failure that is no client
    /// error), for the refusal rule. Whether the run should stop: the first
    /// [`REFUSED_IN_A_ROW`] requests sent all failed with the same client error.
    pub(crate) fn ended(&self, seq: Option<u64>, label: Option<ErrorLabel>) -> bool {
        let Some(seq) = seq.filter(|s| *s < REFUSED_IN_A_ROW) else {
            return false;
        };
        let early = match label {
            Some(ErrorLabel::Status(status)) if (400..500).contains(&status) && status != 429 => {
                Early::Refused(status)
            }
            _ => Early::Other,
        };
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        first[seq as usize] = early;
        let status = match first[0] {
            Early::Refused(status) => status,
            // One of them is no refusal, or not known yet.
            _ => {
                if first[0] == Early::Other || early == Early::Other {
                    self.watching.store(false, Relaxed);
                }
                return false;
            }
        };
        if first
            .iter()
            .any(|e| *e == Early::Other || matches!(e, Early::Refused(s) if *s != status))
        {
            self.watching.store(false, Relaxed);
            return false;
        }
        if first.contains(&Early::Unknown) {
            return false;
        }
        self.watching.store(false, Relaxed);
        drop(first);
        let label = ErrorLabel::Status(status);
        let example = self.example(label).unwrap_or_default();
        let _ = self.stopped.set(format!(
            "the first {REFUSED_IN_A_ROW} requests all failed with {}{}{example}",
            label.name(),
            if example.is_empty() { "" } else { ": " }
        ));
        true
    }

    /// Whether `label` still needs its example (a false "no" for one label in 64 whose hash
    /// meets another's: it then goes without).
    pub(crate) fn wants_example(&self, label: ErrorLabel) -> bool {
        self.has_example.load(Relaxed) & label_bit(label) == 0
    }

    /// Notes a failure with `label`, and `message` when there is one: the first of each label
    /// is kept, cleaned of control characters and bounded.
    pub(crate) fn failed(&self, label: ErrorLabel, message: Option<&str>) {
        if let Some(message) = message.filter(|_| self.wants_example(label)) {
            let mut examples = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
            self.has_example.fetch_or(label_bit(label), Relaxed);
            if !examples.iter().any(|(l, _)| *l == label) {
                let clean: String = message
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(MAX_EXAMPLE_CHARS)
                    .collect();
                examples.push((label, clean));
            }
        }
    }

    /// The first message of `label`, if one was kept.
    pub(crate) fn example(&self, label: ErrorLabel) -> Option<String> {
        let examples = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
        examples
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, m)| m.clone())
    }

    /// Every label's first message, by label name.
    pub(crate) fn examples(&self) -> std::collections::BTreeMap<String, String> {
        let examples = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
        examples
            .iter()
            .map(|(l, m)| (l.name(), m.clone()))
            .collect()
    }
}

/// One lane's live counters, written by that lane alone. Aligned to two cache lines so lanes
/// on different cores never share one (adjacent-line prefetching pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LaneCounters {
    pub(crate) started: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) chunks: AtomicU64,
}

impl Shared {
    pub(crate) fn new(lanes: usize, target: usize) -> Shared {
        Shared {
            lanes: (0..lanes).map(|_| LaneCounters::default()).collect(),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            started: OnceLock::new(),
            ended: OnceLock::new(),
            control: watch::Sender::new(Control {
                target,
                stop: false,
                cancel: false,
            }),
            failures: Failures::default(),
            interrupted: AtomicBool::new(false),
        }
    }

    pub(crate) fn lane(&self, index: usize) -> &LaneCounters {
        &self.lanes[index]
    }

    /// Takes one request from a budget of `budget`; `false` when it is spent.
    pub(crate) fn take(&self, budget: Option<u64>) -> bool {
        budget.is_none_or(|n| self.issued.fetch_add(1, Relaxed) < n)
    }

    /// Counts a request in flight.
    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        if now > self.peak.load(Relaxed) {
            self.peak.fetch_max(now, Relaxed);
        }
    }

    /// Counts a request out.
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Counts `n` requests out that were cancelled in flight.
    pub(crate) fn cancelled(&self, n: usize) {
        self.in_flight.fetch_sub(n as u64, Relaxed);
    }
}

/// The closed loop's conductor: moves a ramp's target step by step (at most every
/// [`RAMP_TICK`]), and says stop at the deadline.
pub(crate) async fn conduct(
    shared: Arc<Shared>,
    ramp: Option<Ramp>,
    duration: Option<Duration>,
    start: tokio::time::Instant,
) {
    if let Some(ramp) = ramp {
        let mut last_update = start;
        let mut step = 0;
        while let Some(due) = ramp.step_at(step + 1) {
            if duration.is_some_and(|d| due >= d) {
                break;
            }
            tokio::time::sleep_until((start + due).max(last_update + RAMP_TICK)).await;
            last_update = tokio::time::Instant::now();
            let elapsed = last_update.saturating_duration_since(start);
            step = ramp.steps_at(elapsed);
            let target = ramp.target_at(elapsed);
            shared.control.send_if_modified(|c| {
                let changed = c.target != target;
                c.target = target;
                changed
            });
        }
    }
    if let Some(duration) = duration {
        tokio::time::sleep_until(start + duration).await;
        shared.control.send_modify(|c| c.stop = true);
    }
}

/// The bound on a timed run's drain: at `duration` + `grace` after the start, the requests
/// still in flight are cancelled (a server that holds them for minutes, or never answers,
/// does not hold the run).
pub(crate) async fn bound_drain(
    shared: Arc<Shared>,
    duration: Duration,
    grace: Duration,
    start: tokio::time::Instant,
) {
    let Some(at) = start.checked_add(duration.saturating_add(grace)) else {
        return;
    };
    tokio::time::sleep_until(at).await;
    shared.control.send_modify(Control::cancel);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 16 requests sent, all failing with one client error, stop the run, in
    /// whatever order they finish; a success among them, a 429, another status, or a failure
    /// without one never do.
    #[test]
    fn only_a_run_refused_from_its_start_stops() {
        let failures = Failures::default();
        let not_found = Some(ErrorLabel::Status(404));
        failures.failed(ErrorLabel::Status(404), Some("no such model"));
        let seqs: Vec<_> = (0..REFUSED_IN_A_ROW).map(|_| failures.number()).collect();
        // Finished last to first.
        for seq in seqs[1..].iter().rev() {
            assert!(!failures.ended(*seq, not_found));
        }
        assert!(failures.ended(seqs[0], not_found));
        let why = failures.stopped.get().unwrap();
        assert!(why.contains("status_404: no such model"), "{why}");
        assert_eq!(failures.number(), None, "decided: no more numbers");

        for other in [
            None,
            Some(ErrorLabel::Status(429)),
            Some(ErrorLabel::Status(400)),
            Some(ErrorLabel::Kind("timeout")),
        ] {
            let failures = Failures::default();
            let seqs: Vec<_> = (0..REFUSED_IN_A_ROW).map(|_| failures.number()).collect();
            // The fast refusals come back first; the other outcome, of request 7, last.
            for (n, seq) in seqs.iter().enumerate().filter(|(n, _)| *n != 7) {
                assert!(!failures.ended(*seq, not_found), "{n}");
            }
            assert!(!failures.ended(seqs[7], other), "{other:?}");
            assert_eq!(failures.stopped.get(), None, "{other:?}");
            assert_eq!(failures.number(), None, "decided");
        }

        // Messages are kept once per label, without control characters.
        let failures = Failures::default();
        failures.failed(ErrorLabel::Status(500), Some("first\u{1b}[2J"));
        failures.failed(ErrorLabel::Status(500), Some("second"));
        assert_eq!(failures.examples()["status_500"], "first [2J");
    }
}
