//! State shared by the driver's tasks and the [`Live`] handle: live counters, the in-flight
//! count, and the control channel that carries a ramp's target and the stop.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ramp::Ramp;

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

    /// Stops the run early: no request starts after this, those in flight are finished, and
    /// [`Bench::run`](super::Bench::run) returns the results so far (for Ctrl-C).
    pub fn stop(&self) {
        self.shared.control.send_modify(|c| c.stop = true);
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
            }),
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
