//! The control law of [`AdaptiveConcurrencyLimit`](super::AdaptiveConcurrencyLimit): no clock
//! and no I/O, so it is tested with made-up samples.
//!
//! Loss first, then latency:
//!
//! - An **overload signal** (429, 503, 529, a refused connection, a timeout) from a request
//!   sent under the current limit cuts the limit at once by the backoff factor (× 0.8 by
//!   default). Answers to requests sent before the last change do not judge it: a burst of
//!   503s from one overfull window cuts once, not once per 503.
//! - Otherwise every window of successful answers (half the limit, at least 16) is judged by
//!   its **median latency**, smoothed over windows, against a baseline, the lowest smoothed
//!   median seen (rising 0.1 % a window, so a server that became slower for good is
//!   followed). A median above `tolerance` × baseline (1.2 by default) means requests queue at the server: the limit is
//!   scaled by `tolerance / ratio` (at most halved), which lands a processor-sharing server
//!   just past its knee.
//! - Four windows in a row at the minimum limit, where no request of ours queues behind
//!   another, each with its own median above the tolerance, say the latency changed for
//!   another reason (longer answers, a slower model or endpoint): the baseline is taken anew
//!   from the last, as Vegas probes its minimum RTT again, and the limit grows back by its
//!   square root a window, instead of sitting at its minimum while the baseline rises 0.1 % a
//!   window (a tenfold slowdown would take some 2 000 windows). A median within it grows the limit, by doubling during the slow
//!   start (until the first cut) and by its square root after, but only when the window used
//!   at least half the limit: an idle client does not inflate its limit.
//!
//! The median of a window, not the mean, because LLM latency grows with output length: a
//! few long answers move a mean but not a median, and the baseline is a median too, so
//! varied lengths compare like with like.

use std::time::Duration;

use tokio::time::Instant;

/// How much the baseline rises per window, so that it follows a server that got slower.
const BASELINE_DRIFT: f64 = 0.001;

/// How many windows in a row at the minimum limit, each slower than the tolerance, take the
/// baseline anew: one is not enough (its smoothed median still holds the queueing before).
const STALE_WINDOWS: u32 = 4;

/// The fewest successful answers that make a window.
const MIN_WINDOW: usize = 16;

/// The weight of a new window's median in the smoothed median: halves the noise of a
/// window's median, at the cost of one window's lag.
const SMOOTHING: f64 = 0.5;

/// The settings of the control law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) tolerance: f64,
    pub(crate) backoff: f64,
}

/// What one finished request says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// An answer, after this long.
    Success(Duration),
    /// The server is overloaded: 429, 503, 529, a refused connection, a timeout.
    Overload,
    /// Says nothing about load (a 400, a 500).
    Ignored,
}

#[derive(Debug)]
pub(crate) struct Controller {
    settings: Settings,
    limit: f64,
    slow_start: bool,
    baseline: Option<Duration>,
    /// The window medians, smoothed.
    smoothed: Option<Duration>,
    /// When the current window (and the current limit) began.
    window_started: Instant,
    latencies: Vec<Duration>,
    /// The most requests in flight seen in the window.
    peak: usize,
    /// Windows in a row at the minimum limit whose median was above the tolerance.
    stale: u32,
}

impl Controller {
    pub(crate) fn new(settings: Settings, now: Instant) -> Controller {
        Controller {
            limit: settings.initial as f64,
            settings,
            slow_start: true,
            baseline: None,
            smoothed: None,
            window_started: now,
            latencies: Vec::with_capacity(MIN_WINDOW),
            peak: 0,
            stale: 0,
        }
    }

    /// The limit in force.
    pub(crate) fn limit(&self) -> usize {
        (self.limit as usize).clamp(self.settings.min, self.settings.max)
    }

    /// Learns from a request sent at `sent` that finished at `now` with `in_flight` in
    /// flight; returns the new limit when it changed.
    pub(crate) fn record(
        &mut self,
        sent: Instant,
        outcome: Outcome,
        in_flight: usize,
        now: Instant,
    ) -> Option<usize> {
        if sent < self.window_started {
            return None;
        }
        let before = self.limit();
        self.peak = self.peak.max(in_flight);
        match outcome {
            Outcome::Ignored => return None,
            Outcome::Overload => {
                self.slow_start = false;
                self.set(self.limit * self.settings.backoff, now);
            }
            Outcome::Success(latency) => {
                self.latencies.push(latency);
                let size = MIN_WINDOW.max(self.limit() / 2);
                if self.latencies.len() < size {
                    return None;
                }
                self.judge_window(now);
            }
        }
        let after = self.limit();
        (after != before).then_some(after)
    }

    fn judge_window(&mut self, now: Instant) {
        let mid = self.latencies.len() / 2;
        let raw = *self.latencies.select_nth_unstable(mid).1;
        let median = raw;
        let median = match self.smoothed {
            Some(s) => s.mul_f64(1.0 - SMOOTHING) + median.mul_f64(SMOOTHING),
            None => median,
        };
        self.smoothed = Some(median);
        let baseline = match self.baseline {
            Some(b) => b.mul_f64(1.0 + BASELINE_DRIFT).min(median),
            None => median,
        };
        self.baseline = Some(baseline);
        let ratio = if baseline.is_zero() {
            1.0
        } else {
            median.as_secs_f64() / baseline.as_secs_f64()
        };
        // Windows in a row at the minimum whose own median (not the smoothed one, which still
        // holds the queueing that led there) is above the tolerance.
        let at_minimum = self.limit() <= self.settings.min;
        let raw_ratio = if baseline.is_zero() {
            1.0
        } else {
            raw.as_secs_f64() / baseline.as_secs_f64()
        };
        if at_minimum && raw_ratio > self.settings.tolerance {
            self.stale = self.stale.saturating_add(1);
        } else {
            self.stale = 0;
        }
        let limit = if self.stale >= STALE_WINDOWS {
            // Nothing of ours queues behind the fewest requests, for several windows: the
            // baseline is stale. Taken anew; the limit grows back additively, not by
            // doubling, in case the server is loaded by others.
            self.stale = 0;
            self.smoothed = Some(raw);
            self.baseline = Some(raw);
            self.limit
        } else if ratio > self.settings.tolerance {
            self.slow_start = false;
            self.limit * (self.settings.tolerance / ratio).max(0.5)
        } else if self.peak * 2 >= self.limit() {
            if self.slow_start {
                self.limit * 2.0
            } else {
                self.limit + self.limit.sqrt()
            }
        } else {
            self.limit
        };
        self.set(limit, now);
    }

    /// Puts `limit` in force and starts a new window.
    fn set(&mut self, limit: f64, now: Instant) {
        let (min, max) = (self.settings.min as f64, self.settings.max as f64);
        self.limit = limit.clamp(min, max);
        self.window_started = now;
        self.latencies.clear();
        self.peak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize) -> Settings {
        Settings {
            initial: 4,
            min: 1,
            max,
            tolerance: 1.2,
            backoff: 0.8,
        }
    }

    const BASE: Duration = Duration::from_millis(200);

    /// Feeds windows of answers from a processor-sharing server with knee `knee` (latency
    /// `BASE · n / knee` past it) kept full at the limit, and returns the limits it went
    /// through.
    fn drive_knee(knee: usize, windows: usize) -> Vec<usize> {
        let mut now = Instant::now();
        let mut c = Controller::new(settings(1024), now);
        let mut limits = vec![c.limit()];
        for _ in 0..windows {
            let n = c.limit();
            let latency = BASE.mul_f64((n as f64 / knee as f64).max(1.0));
            let sent = now;
            now += latency;
            for _ in 0..n {
                if let Some(limit) = c.record(sent, Outcome::Success(latency), n, now) {
                    limits.push(limit);
                    break;
                }
            }
        }
        limits
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_doubles_then_settles_near_the_knee() {
        let limits = drive_knee(32, 60);
        assert_eq!(&limits[..4], &[4, 8, 16, 32], "{limits:?}");
        let settled = &limits[limits.len() - 20..];
        for &limit in settled {
            assert!((28..=48).contains(&limit), "{limits:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn varied_lengths_do_not_read_as_load() {
        // Unloaded latencies spread from 200 ms to 600 ms (output lengths), the same at any
        // limit: the limit grows to its maximum and stays near it.
        let mut now = Instant::now();
        let mut c = Controller::new(settings(256), now);
        let mut seed = 7u64;
        let mut lowest = usize::MAX;
        for i in 0..20_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let latency = Duration::from_millis(200 + (seed >> 33) % 400);
            now += Duration::from_millis(1);
            c.record(now, Outcome::Success(latency), c.limit(), now);
            if i > 2_000 {
                lowest = lowest.min(c.limit());
            }
        }
        assert!(lowest >= 96, "fell to {lowest}");
    }

    #[tokio::test(start_paused = true)]
    async fn overload_cuts_once_per_change_and_answers_from_before_are_ignored() {
        let start = Instant::now();
        let mut c = Controller::new(settings(1024), start);
        let later = start + Duration::from_millis(10);
        assert_eq!(c.record(start, Outcome::Overload, 4, later), Some(3));
        // Sent before the cut: ignored, however many.
        for _ in 0..100 {
            assert_eq!(c.record(start, Outcome::Overload, 4, later), None);
        }
        let after = later + Duration::from_millis(1);
        assert_eq!(c.record(after, Outcome::Overload, 3, after), Some(2));
        assert_eq!(c.record(after, Outcome::Ignored, 3, after), None);
        // Never below the minimum.
        for _ in 0..10 {
            let t = Instant::now() + Duration::from_secs(1);
            c.record(t, Outcome::Overload, 1, t);
        }
        assert_eq!(c.limit(), 1);
    }

    /// A server that became ten times slower for good, not from load (the answers got
    /// longer): the limit is cut, then grows back within a few dozen windows, where rising
    /// 0.1 % a window would have kept it at its minimum for some 2 000.
    #[tokio::test(start_paused = true)]
    async fn a_lasting_slowdown_that_is_not_load_is_followed() {
        let mut now = Instant::now();
        let mut c = Controller::new(settings(256), now);
        let mut feed = |c: &mut Controller, latency: Duration, windows: usize| {
            for _ in 0..windows {
                let n = c.limit();
                let sent = now;
                now += latency;
                for _ in 0..n.max(MIN_WINDOW) {
                    if c.record(sent, Outcome::Success(latency), n, now).is_some() {
                        break;
                    }
                }
            }
        };
        feed(&mut c, BASE, 30);
        let settled = c.limit();
        assert_eq!(settled, 256, "no knee: the ceiling");
        feed(&mut c, BASE * 10, 60);
        assert!(c.limit() >= settled / 2, "{} after the slowdown", c.limit());
    }

    /// A server that serves one request at a time (its knee at 1), first seen at the limit
    /// 1: the limit stays between 1 and 3 (a step of growth past 2). The queueing that
    /// brings it back to the minimum is not taken for a new baseline (one window at the
    /// minimum still holds it), so it does not ratchet up.
    #[tokio::test(start_paused = true)]
    async fn a_server_of_one_slot_keeps_the_limit_low() {
        let mut now = Instant::now();
        let mut c = Controller::new(
            Settings {
                initial: 1,
                ..settings(1024)
            },
            now,
        );
        let mut limits = Vec::new();
        for _ in 0..300 {
            let n = c.limit();
            let latency = BASE.mul_f64(n as f64);
            let sent = now;
            now += latency;
            for _ in 0..n.max(MIN_WINDOW) {
                if c.record(sent, Outcome::Success(latency), n, now).is_some() {
                    break;
                }
            }
            limits.push(c.limit());
        }
        assert!(limits.iter().all(|&l| l <= 3), "{limits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_does_not_grow_its_limit() {
        let now = Instant::now();
        let mut c = Controller::new(settings(1024), now);
        for _ in 0..100 {
            c.record(now, Outcome::Success(BASE), 1, now);
        }
        assert_eq!(c.limit(), 4);
    }
}
