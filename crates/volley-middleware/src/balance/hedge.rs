//! Hedging (opt-in): when an attempt has no response head after a delay, the same request is
//! sent to another endpoint (or the same one when it is alone) and the first answer wins; a
//! budget caps the extra requests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Hedged requests: after a delay without a response head, a copy goes to another endpoint
/// (the same one when the client has only one), the first answer wins and the other attempt
/// is dropped (cancelled).
///
/// The delay is fixed ([`Hedging::after`]) or a percentile of the recent times to the
/// response head ([`Hedging::at_percentile`]), learned from the answers.
///
/// **A hedged request may be billed twice**: the provider may finish (and charge for) the
/// attempt that lost, since cancelling it refunds nothing. Turn hedging on only for clients
/// whose requests are safe and cheap to duplicate. Each copy takes a slot under the
/// concurrency ceiling and pays its endpoint's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Hedging {
    pub(crate) delay: Delay,
    pub(crate) budget: f64,
}

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Delay {
    Fixed(Duration),
    /// The `percentile` (50–99.9) of the recent times to the response head, at least `min`.
    Learned {
        percentile: f64,
        min: Duration,
    },
}

/// The default budget: 5 % extra requests.
const DEFAULT_BUDGET: f64 = 0.05;

impl Hedging {
    /// Hedge a request that has no response head after `delay` (a little above the usual
    /// latency: the 95th percentile, say).
    pub fn after(delay: Duration) -> Hedging {
        Hedging {
            delay: Delay::Fixed(delay),
            budget: DEFAULT_BUDGET,
        }
    }

    /// Hedge a request that has no response head after the `percentile` (e.g. 95.0) of the
    /// recent times to the response head: the last 512 answers, recomputed every 32
    /// answers. Nothing is hedged until 32 answers have been seen. The percentile is clamped
    /// to 50–99.9.
    ///
    /// Answers count with their time to the response head; an attempt its hedge beat counts
    /// as slower than every answer (its time is unknown); errors do not count.
    /// About `100 − percentile` % of the requests are hedged, within the budget. Choose a
    /// percentile below `100 −` the share of slow requests you expect: with 5 % of requests
    /// in a slow mode, p94 hedges them (p95 sits on the edge between the modes and may land
    /// in the slow one, which then hedges nothing).
    pub fn at_percentile(percentile: f64) -> Hedging {
        let percentile = if percentile.is_finite() {
            percentile.clamp(50.0, 99.9)
        } else {
            95.0
        };
        Hedging {
            delay: Delay::Learned {
                percentile,
                min: Duration::ZERO,
            },
            budget: DEFAULT_BUDGET,
        }
    }

    /// With a learned delay: never hedge sooner than `min`, whatever the percentile says.
    /// No effect on a fixed delay.
    ///
    /// Default: zero.
    pub fn min_delay(mut self, min: Duration) -> Hedging {
        if let Delay::Learned { percentile, .. } = self.delay {
            self.delay = Delay::Learned { percentile, min };
        }
        self
    }

    /// The most extra requests, as a share of all requests (plus 10 to start with).
    ///
    /// Default: 0.05 (5 %).
    pub fn budget(mut self, share: f64) -> Hedging {
        self.budget = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            DEFAULT_BUDGET
        };
        self
    }

    /// The share of extra requests allowed.
    pub fn budget_share(&self) -> f64 {
        self.budget
    }

    /// The fixed delay, or `None` for a learned one.
    pub fn fixed_delay(&self) -> Option<Duration> {
        match self.delay {
            Delay::Fixed(d) => Some(d),
            Delay::Learned { .. } => None,
        }
    }

    /// The learned percentile (50–99.9), or `None` for a fixed delay.
    pub fn percentile(&self) -> Option<f64> {
        match self.delay {
            Delay::Fixed(_) => None,
            Delay::Learned { percentile, .. } => Some(percentile),
        }
    }
}

/// Counts requests and hedges, and decides whether one more hedge fits the budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    requests: AtomicU64,
    hedges: AtomicU64,
}

/// Hedges allowed before the share applies, so that a short run can hedge at all.
const INITIAL: f64 = 10.0;

impl Budget {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one hedge from the budget, if it allows one.
    pub(crate) fn try_hedge(&self, share: f64) -> bool {
        let requests = self.requests.load(Ordering::Relaxed) as f64;
        let allowed = requests * share + INITIAL;
        let taken = self.hedges.fetch_add(1, Ordering::Relaxed) as f64;
        if taken + 1.0 <= allowed {
            return true;
        }
        self.hedges.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Gives back a hedge taken by [`try_hedge`](Self::try_hedge) and not sent.
    pub(crate) fn give_back(&self) {
        self.hedges.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }
}

/// How many recent times to the response head a learned delay is computed from.
pub(crate) const WINDOW: usize = 512;
/// A learned delay is recomputed after this many new answers.
pub(crate) const RECOMPUTE_EVERY: u64 = 32;
/// Answers needed before a learned delay hedges anything.
pub(crate) const MIN_SAMPLES: u64 = 32;

/// The recent times to the response head, and the delay computed from them.
#[derive(Debug)]
pub(crate) struct Learner {
    quantile: f64,
    min: Duration,
    ring: Mutex<Ring>,
    /// The current delay in nanoseconds; `u64::MAX` until [`MIN_SAMPLES`] answers.
    delay_nanos: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    samples: Vec<u64>,
    seen: u64,
}

impl Learner {
    pub(crate) fn new(hedging: &Hedging) -> Option<Learner> {
        let Delay::Learned { percentile, min } = hedging.delay else {
            return None;
        };
        Some(Learner {
            quantile: percentile / 100.0,
            min,
            ring: Mutex::new(Ring {
                samples: Vec::with_capacity(WINDOW),
                seen: 0,
            }),
            delay_nanos: AtomicU64::new(u64::MAX),
        })
    }

    /// The delay now, or `None` while too few answers have been seen.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_nanos.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos).max(self.min)),
        }
    }

    /// Records one answer's time to the response head.
    pub(crate) fn record(&self, elapsed: Duration) {
        // Below the sentinel of a beaten attempt.
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(BEATEN - 1);
        self.push(nanos.min(BEATEN - 1));
    }

    /// Records a first attempt its hedge beat: slower than the delay by an unknown amount.
    /// For the percentile it ranks above every answer (right-censored): counting the time it
    /// had taken would pull the delay up with itself, leaving it out would pull it down.
    pub(crate) fn record_beaten(&self) {
        self.push(BEATEN);
    }

    fn push(&self, nanos: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (ring.seen % WINDOW as u64) as usize;
        if ring.samples.len() < WINDOW {
            ring.samples.push(nanos);
        } else {
            ring.samples[slot] = nanos;
        }
        ring.seen += 1;
        if ring.seen < MIN_SAMPLES || !ring.seen.is_multiple_of(RECOMPUTE_EVERY) {
            return;
        }
        let mut sorted = ring.samples.clone();
        drop(ring);
        let rank = ((sorted.len() as f64 * self.quantile).ceil() as usize).clamp(1, sorted.len());
        let (below, value, _) = sorted.select_nth_unstable(rank - 1);
        let value = if *value == BEATEN {
            // More than `100 − percentile` % were beaten: hedge whatever is slower than the
            // slowest answer below the rank (the budget still caps the copies).
            match below.iter().copied().filter(|&n| n != BEATEN).max() {
                Some(answer) => answer,
                None => return,
            }
        } else {
            *value
        };
        self.delay_nanos.store(value, Ordering::Relaxed);
    }
}

/// The sample of a first attempt its hedge beat (`u64::MAX` is "nothing learned yet").
const BEATEN: u64 = u64::MAX - 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fixed_delay_learns_nothing() {
        assert!(Learner::new(&Hedging::after(ms(100))).is_none());
        assert_eq!(Hedging::after(ms(100)).fixed_delay(), Some(ms(100)));
        assert_eq!(Hedging::after(ms(100)).percentile(), None);
    }

    #[test]
    fn the_learned_delay_is_the_percentile_of_recent_answers() {
        let learner = Learner::new(&Hedging::at_percentile(90.0)).unwrap();
        for i in 1..MIN_SAMPLES {
            learner.record(ms(i));
        }
        assert_eq!(learner.delay(), None, "too few answers to hedge");
        // 1..=100 ms in a shuffled order: the 90th percentile is 90 ms.
        let learner = Learner::new(&Hedging::at_percentile(90.0)).unwrap();
        for i in 0..128u64 {
            learner.record(ms((i * 37) % 100 + 1));
        }
        let d = learner.delay().unwrap();
        assert!((ms(88)..=ms(92)).contains(&d), "{d:?}");
    }

    #[test]
    fn the_window_forgets_old_answers_and_min_holds() {
        let learner = Learner::new(&Hedging::at_percentile(95.0)).unwrap();
        for _ in 0..WINDOW {
            learner.record(ms(1_000));
        }
        assert_eq!(learner.delay(), Some(ms(1_000)));
        for _ in 0..WINDOW {
            learner.record(ms(10));
        }
        assert_eq!(learner.delay(), Some(ms(10)));
        let floored = Learner::new(&Hedging::at_percentile(95.0).min_delay(ms(50))).unwrap();
        for _ in 0..WINDOW {
            floored.record(ms(10));
        }
        assert_eq!(floored.delay(), Some(ms(50)));
    }

    #[test]
    fn beaten_attempts_rank_above_every_answer() {
        // 5 % of attempts beaten by their hedge: the 95th percentile is the slowest answer
        // or just above it, never the beaten ones' unknown times.
        let learner = Learner::new(&Hedging::at_percentile(95.0)).unwrap();
        for i in 0..WINDOW as u64 {
            if i % 20 == 0 {
                learner.record_beaten();
            } else {
                learner.record(ms(100 + i % 5));
            }
        }
        assert_eq!(learner.delay(), Some(ms(104)));
        // 20 % beaten at p90: the rank falls among them; the slowest answer is the delay.
        let learner = Learner::new(&Hedging::at_percentile(90.0)).unwrap();
        for i in 0..WINDOW as u64 {
            if i % 5 == 0 {
                learner.record_beaten();
            } else {
                learner.record(ms(50 + i % 7));
            }
        }
        assert_eq!(learner.delay(), Some(ms(56)));
    }

    #[test]
    fn settings_are_clamped() {
        assert_eq!(Hedging::at_percentile(120.0).percentile(), Some(99.9));
        assert_eq!(Hedging::at_percentile(f64::NAN).percentile(), Some(95.0));
        assert_eq!(Hedging::after(ms(1)).budget(2.0).budget_share(), 1.0);
        assert_eq!(Hedging::after(ms(1)).budget(f64::NAN).budget_share(), 0.05);
    }

    #[test]
    fn the_budget_allows_ten_then_the_share() {
        let budget = Budget::default();
        let taken = (0..20).filter(|_| budget.try_hedge(0.05)).count();
        assert_eq!(taken, 10);
        for _ in 0..100 {
            budget.request();
        }
        assert!(budget.try_hedge(0.05));
        assert_eq!(budget.hedges(), 11);
    }
}
