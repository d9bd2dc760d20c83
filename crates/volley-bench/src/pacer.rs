//! The open loop's pacer: arrival times from a seeded schedule, each waited for on a clock.
//!
//! The pacing loop is written against [`Clock`], so its logic (when arrivals land, when the
//! run stops) is tested on a virtual clock, and [`TokioClock`] in tokio's paused time; the
//! run uses [`TokioClock`], which sleeps with `tokio::time::sleep_until` to each arrival's
//! absolute time (no drift accumulates, and an arrival that is late fires at once: the open
//! loop never slows down to the server). A pacer that is behind yields to the runtime every
//! 64 late arrivals, so it never starves the lanes or a stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::Arrivals;
use super::lane::Arrival;
use super::lengths::Lengths;
use super::rng::Rng;
use super::shared::{Control, Shared};

/// Arrival times of an open loop, as offsets from the run's start: the first at 0, then
/// `1 / rate` apart (constant) or exponentially distributed gaps with that mean (Poisson).
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    rate: f64,
    arrivals: Arrivals,
    rng: Rng,
    index: u64,
    /// Seconds since the start of the latest Poisson arrival.
    poisson_at: f64,
}

impl Schedule {
    pub(crate) fn new(rate: f64, arrivals: Arrivals, seed: u64) -> Schedule {
        Schedule {
            rate,
            arrivals,
            rng: Rng::new(seed),
            index: 0,
            poisson_at: 0.0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let secs = match self.arrivals {
            // Multiplied, not summed: no rounding error builds up over millions of arrivals.
            Arrivals::Constant => self.index as f64 / self.rate,
            Arrivals::Poisson => {
                if self.index > 0 {
                    self.poisson_at += self.rng.exponential(self.rate);
                }
                self.poisson_at
            }
        };
        self.index += 1;
        // Saturates instead of panicking for absurd offsets (an arrival centuries away).
        Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }
}

/// Waits until an offset from the run's start.
pub(crate) trait Clock {
    /// Resolves at `offset` after the start (at once when that has passed), with `false` when
    /// the run was asked to stop meanwhile.
    fn wait_until(&mut self, offset: Duration) -> impl Future<Output = bool> + Send;
}

/// When the pacer stops.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Until {
    /// After this many arrivals.
    pub(crate) arrivals: Option<u64>,
    /// Before the first arrival at or after this offset.
    pub(crate) duration: Option<Duration>,
}

/// Runs the schedule: waits for each arrival and calls `arrive(index, offset)` at its time
/// (`offset` after the start: when it was due, however late the call), until `until` or a
/// stop. Returns the number of arrivals.
pub(crate) async fn pace<C: Clock>(
    schedule: Schedule,
    until: Until,
    clock: &mut C,
    mut arrive: impl FnMut(u64, Duration),
) -> u64 {
    let mut arrivals = 0;
    for offset in schedule {
        if until.arrivals.is_some_and(|n| arrivals >= n)
            || until.duration.is_some_and(|d| offset >= d)
            || !clock.wait_until(offset).await
        {
            break;
        }
        arrive(arrivals, offset);
        arrivals += 1;
    }
    arrivals
}

/// Late arrivals in a row after which the pacer yields to the runtime.
const LATE_BEFORE_YIELD: u32 = 64;

/// The run's clock: tokio's timer, and the run's control channel for stops.
pub(crate) struct TokioClock {
    start: Instant,
    control: watch::Receiver<Control>,
    /// Late arrivals in a row, since the last yield or sleep.
    late: u32,
}

impl TokioClock {
    pub(crate) fn new(start: Instant, control: watch::Receiver<Control>) -> TokioClock {
        TokioClock {
            start,
            control,
            late: 0,
        }
    }
}

impl Clock for TokioClock {
    async fn wait_until(&mut self, offset: Duration) -> bool {
        if self.control.borrow().stop {
            return false;
        }
        let due = self.start + offset;
        // A late arrival fires at once, without registering a timer; but a pacer that is
        // behind would then never give the thread back (sends on the lanes' unbounded
        // channels never wait), starving the lanes and a stop on a single-threaded runtime.
        // So every so many late arrivals in a row, it yields.
        if Instant::now() >= due {
            self.late += 1;
            if self.late >= LATE_BEFORE_YIELD {
                self.late = 0;
                tokio::task::yield_now().await;
                return !self.control.borrow().stop;
            }
            return true;
        }
        self.late = 0;
        let stopped = tokio::select! {
            () = tokio::time::sleep_until(due) => false,
            _ = self.control.wait_for(|c| c.stop) => true,
        };
        !stopped && !self.control.borrow().stop
    }
}

/// The open loop's arrivals: each one is sent to a lane, or dropped when `max_in_flight`
/// requests are in flight.
pub(crate) struct Pacer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) senders: Vec<mpsc::UnboundedSender<Arrival>>,
    pub(crate) max_in_flight: u64,
    pub(crate) prompt: Lengths,
    pub(crate) output: Lengths,
    pub(crate) rng: Rng,
}

impl Pacer {
    pub(crate) async fn run(mut self, schedule: Schedule, until: Until, mut clock: TokioClock) {
        let lanes = self.senders.len();
        let origin = clock.start.into_std();
        pace(schedule, until, &mut clock, |index, offset| {
            // Drawn for every arrival, dropped ones too, so the lengths follow the seed.
            let arrival = Arrival {
                prompt: self.prompt.sample(&mut self.rng),
                output: self.output.sample(&mut self.rng),
                due: origin.checked_add(offset).unwrap_or(origin),
            };
            if self.shared.in_flight.load(Relaxed) >= self.max_in_flight {
                self.shared.dropped.fetch_add(1, Relaxed);
                return;
            }
            self.shared.enter();
            // A send fails only when the lane is gone: it panicked (the run then ends with
            // that panic), or the run was cancelled and it stopped taking arrivals.
            if self.senders[index as usize % lanes].send(arrival).is_err() {
                self.shared.leave();
            }
        })
        .await;
        // Dropping the senders tells the lanes no more arrivals come.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock that jumps to each offset at once and remembers where it is.
    struct Virtual {
        now: Arc<Mutex<Duration>>,
        stop_at: Option<Duration>,
    }

    impl Clock for Virtual {
        async fn wait_until(&mut self, offset: Duration) -> bool {
            if self.stop_at.is_some_and(|s| offset >= s) {
                return false;
            }
            let mut now = self.now.lock().unwrap();
            *now = (*now).max(offset);
            true
        }
    }

    /// Paces `schedule` on a virtual clock; returns the clock's time at each arrival.
    fn run(schedule: Schedule, until: Until, stop_at: Option<Duration>) -> Vec<Duration> {
        let now = Arc::new(Mutex::new(Duration::ZERO));
        let mut clock = Virtual {
            now: now.clone(),
            stop_at,
        };
        let mut times = Vec::new();
        let count =
            futures_util::FutureExt::now_or_never(pace(schedule, until, &mut clock, |i, _| {
                assert_eq!(i as usize, times.len());
                times.push(*now.lock().unwrap());
            }))
            .expect("a virtual clock never waits");
        assert_eq!(count as usize, times.len());
        times
    }

    #[test]
    fn constant_arrivals_land_exactly_one_period_apart() {
        let until = Until {
            arrivals: Some(5),
            duration: None,
        };
        let times = run(Schedule::new(4.0, Arrivals::Constant, 1), until, None);
        let want: Vec<Duration> = (0..5).map(|k| Duration::from_millis(250 * k)).collect();
        assert_eq!(times, want);
    }

    #[test]
    fn a_duration_stops_before_the_first_arrival_at_or_after_it() {
        let until = Until {
            arrivals: None,
            duration: Some(Duration::from_secs(1)),
        };
        // 10/s for 1 s: arrivals at 0, 100, ..., 900 ms.
        let times = run(Schedule::new(10.0, Arrivals::Constant, 1), until, None);
        assert_eq!(times.len(), 10);
        assert_eq!(times[9], Duration::from_millis(900));
        // A stop at 450 ms ends it after the arrival at 400 ms.
        let stopped = run(
            Schedule::new(10.0, Arrivals::Constant, 1),
            until,
            Some(Duration::from_millis(450)),
        );
        assert_eq!(stopped.len(), 5);
    }

    #[test]
    fn poisson_arrivals_have_the_asked_rate_and_spread() {
        let n = 20_000;
        let until = Until {
            arrivals: Some(n),
            duration: None,
        };
        let times = run(Schedule::new(200.0, Arrivals::Poisson, 42), until, None);
        assert_eq!(times[0], Duration::ZERO);
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Mean gap 5 ms, and an exponential's standard deviation equals its mean.
        assert!((mean - 0.005).abs() < 0.005 * 0.03, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
        // The same seed gives the same schedule; another seed another one.
        let again = run(Schedule::new(200.0, Arrivals::Poisson, 42), until, None);
        assert_eq!(times, again);
        let other = run(Schedule::new(200.0, Arrivals::Poisson, 43), until, None);
        assert_ne!(times, other);
    }

    /// A pacer that is behind yields now and then, so on a single-threaded runtime other
    /// tasks (the lanes, a stop) still run while it catches up.
    #[tokio::test(flavor = "current_thread")]
    async fn a_late_pacer_yields_to_other_tasks() {
        use std::sync::atomic::{AtomicBool, AtomicU64};

        let (control, receiver) = watch::channel(Control {
            target: 0,
            stop: false,
            cancel: false,
        });
        let start = Instant::now();
        let mut clock = TokioClock::new(start, receiver);
        // 10 ms behind a 10 million a second schedule: the first 100 000 arrivals are late.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let other = tokio::spawn({
            let ran = ran.clone();
            async move { ran.store(true, Relaxed) }
        });
        let seen_at = AtomicU64::new(u64::MAX);
        let until = Until {
            arrivals: Some(1000),
            duration: None,
        };
        let count = pace(
            Schedule::new(10_000_000.0, Arrivals::Constant, 1),
            until,
            &mut clock,
            |i, _| {
                if ran.load(Relaxed) {
                    seen_at.fetch_min(i, Relaxed);
                }
            },
        )
        .await;
        assert_eq!(count, 1000);
        let seen_at = seen_at.load(Relaxed);
        assert!(seen_at <= u64::from(LATE_BEFORE_YIELD), "{seen_at}");
        other.await.unwrap();

        // A stop while it is behind ends it at the next yield.
        let stopper = tokio::spawn(async move { control.send_modify(|c| c.stop = true) });
        let count = pace(
            Schedule::new(10_000_000.0, Arrivals::Constant, 1),
            Until::default(),
            &mut clock,
            |_, _| {},
        )
        .await;
        assert!(count <= u64::from(LATE_BEFORE_YIELD), "{count}");
        stopper.await.unwrap();
    }

    /// The run's own clock, in tokio's paused time: arrivals land at their offsets exactly,
    /// and a stop ends the pacing at once.
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_paces_in_paused_time() {
        let (control, receiver) = watch::channel(Control {
            target: 0,
            stop: false,
            cancel: false,
        });
        let start = Instant::now();
        let mut clock = TokioClock::new(start, receiver);
        let until = Until {
            arrivals: Some(10),
            duration: None,
        };
        let mut seen = Vec::new();
        let count = pace(
            Schedule::new(50.0, Arrivals::Constant, 1),
            until,
            &mut clock,
            |_, _| seen.push(Instant::now() - start),
        )
        .await;
        assert_eq!(count, 10);
        let want: Vec<Duration> = (0..10).map(|k| Duration::from_millis(20 * k)).collect();
        assert_eq!(seen, want);

        // A stop 55 ms into a second run ends it after the arrivals at 0, 20 and 40 ms.
        let start = Instant::now();
        let mut clock = TokioClock::new(start, control.subscribe());
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(55)).await;
            control.send_modify(|c| c.stop = true);
        });
        let mut seen = Vec::new();
        let count = pace(
            Schedule::new(50.0, Arrivals::Constant, 1),
            Until::default(),
            &mut clock,
            |_, _| seen.push(Instant::now() - start),
        )
        .await;
        stopper.await.unwrap();
        assert_eq!(count, 3);
        assert_eq!(Instant::now() - start, Duration::from_millis(55));
    }
}
