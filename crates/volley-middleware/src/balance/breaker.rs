//! The circuit breaker of one endpoint: a state machine with no I/O, driven by the outcomes
//! the balancer reports and the instants it passes in (so tests run it under paused time).
//!
//! ```text
//! Closed ──(N consecutive failures, or error rate ≥ R over the window)──▶ Open
//! Open ──(cool-down, with jitter, doubling per reopening up to a cap)──▶ HalfOpen
//! HalfOpen ──(a probe fails)──▶ Open        HalfOpen ──(M probes succeed)──▶ Closed
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// The thresholds of a circuit breaker. Every endpoint of a balancer has its own breaker with
/// these settings.
///
/// What counts: connection errors, timeouts and 5xx answers are failures; other answers
/// (2xx, 3xx, 4xx) are successes, since a 400 says the request was wrong, not the endpoint;
/// a 429 (or 529) is a rate signal and counts as neither (the balancer sends the endpoint
/// less traffic instead).
#[derive(Debug, Clone)]
#[must_use]
pub struct BreakerConfig {
    pub(crate) consecutive_failures: u32,
    pub(crate) error_rate: f64,
    pub(crate) min_requests: u32,
    pub(crate) window: Duration,
    pub(crate) cool_down: Duration,
    pub(crate) max_cool_down: Duration,
    pub(crate) jitter: f64,
    pub(crate) probes: u32,
    pub(crate) health_check: Option<http::uri::PathAndQuery>,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(60),
            jitter: 0.2,
            probes: 2,
            health_check: Some(http::uri::PathAndQuery::from_static("/models")),
        }
    }
}

impl BreakerConfig {
    /// The defaults each setter documents.
    pub fn new() -> BreakerConfig {
        BreakerConfig::default()
    }

    /// Opens after this many failures in a row; `0` turns this trigger off.
    ///
    /// Default: 5.
    pub fn consecutive_failures(mut self, n: u32) -> BreakerConfig {
        self.consecutive_failures = n;
        self
    }

    /// Opens when at least this share of the requests over the window failed (`0.0..=1.0`),
    /// once the window holds [`min_requests`](Self::min_requests); above `1.0` turns this
    /// trigger off.
    ///
    /// Default: 0.5.
    pub fn error_rate(mut self, rate: f64) -> BreakerConfig {
        self.error_rate = rate;
        self
    }

    /// The fewest requests in the window before the error rate is judged.
    ///
    /// Default: 20.
    pub fn min_requests(mut self, n: u32) -> BreakerConfig {
        self.min_requests = n;
        self
    }

    /// The sliding window of the error rate (ten buckets).
    ///
    /// Default: 10 s.
    pub fn window(mut self, window: Duration) -> BreakerConfig {
        self.window = window.max(Duration::from_millis(10));
        self
    }

    /// How long the breaker stays open before letting probes through; doubled each time a
    /// probe fails, up to [`max_cool_down`](Self::max_cool_down).
    ///
    /// Default: 5 s.
    pub fn cool_down(mut self, cool_down: Duration) -> BreakerConfig {
        self.cool_down = cool_down;
        self
    }

    /// The longest cool-down.
    ///
    /// Default: 60 s.
    pub fn max_cool_down(mut self, max: Duration) -> BreakerConfig {
        self.max_cool_down = max;
        self
    }

    /// The share of the cool-down drawn at random and added or removed, so that many clients
    /// do not probe an endpoint at the same instant (`0.0..=1.0`).
    ///
    /// Default: 0.2 (± 20 %).
    pub fn jitter(mut self, jitter: f64) -> BreakerConfig {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The path of the active health check (a `GET` under the endpoint's base URL): while a
    /// breaker is open, this request, sent when each cool-down ends, decides when to let
    /// traffic try again; any answer but a 5xx counts as alive (a 401 or 404 too: the
    /// server is up). `None` lets real requests probe when the cool-down ends instead.
    /// Healthy endpoints are never probed. Needs a tokio runtime (else it is skipped).
    ///
    /// Default: `/models`.
    pub fn health_check(mut self, path: Option<http::uri::PathAndQuery>) -> BreakerConfig {
        self.health_check = path;
        self
    }

    /// How many probes may be in flight while half-open, and how many must succeed in a row
    /// to close the breaker (at least 1).
    ///
    /// Default: 2.
    pub fn probes(mut self, n: u32) -> BreakerConfig {
        self.probes = n.max(1);
        self
    }
}

/// The state of a breaker, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until the cool-down is over.
    Open,
    /// A few probes decide whether to close or open again.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: yes.
    Yes,
    /// Half-open: yes, as a probe (its outcome decides) of the half-open round it carries.
    Probe(u32),
    /// Open, or half-open with every probe slot taken.
    No,
}

/// The outcome of one request, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// A 429 or 529, or a request dropped before an answer: counted as nothing.
    Neutral,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: State,
    consecutive: u32,
    /// Ten buckets of `(failures, total)`, the newest at `head`, each `window / 10` long.
    buckets: [(u32, u32); BUCKETS],
    head: usize,
    head_start: Instant,
    /// The cool-down of the next opening (before jitter).
    next_cool_down: Duration,
    /// A cheap random state for the jitter.
    seed: u64,
    /// Active health checks running for this breaker (their tasks alive). With none, an open
    /// breaker's cool-down lets real requests probe, as without a health check: a check that
    /// could not start (no runtime) or whose runtime is gone (a client that outlives the
    /// runtime its breaker opened on) must not keep the endpoint shut for good.
    checks: u32,
    /// Half-open rounds so far.
    rounds: u32,
}

const BUCKETS: usize = 10;

/// How long past an open breaker's cool-down its health check's verdict may take before real
/// requests probe instead.
const CHECK_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `round` counts the times the breaker went half-open: a probe admitted in an earlier
    /// round (it outlived that round, as a request up to its 600 s timeout can) counts for
    /// nothing in this one.
    HalfOpen {
        in_flight: u32,
        successes: u32,
        round: u32,
    },
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, now: Instant, seed: u64) -> Breaker {
        Breaker {
            next_cool_down: config.cool_down,
            config,
            state: State::Closed,
            consecutive: 0,
            buckets: [(0, 0); BUCKETS],
            head: 0,
            head_start: now,
            seed: seed | 1,
            checks: 0,
            rounds: 0,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether an open breaker (open `until`) waits for its health check's verdict rather
    /// than its cool-down's end: a check is configured, its task is alive, and its verdict is
    /// not overdue by [`CHECK_GRACE`] (a task on a runtime nobody drives any more, or a check
    /// stuck on a server that never answers, does not keep the endpoint shut).
    fn awaits_check(&self, until: Instant, now: Instant) -> bool {
        self.config.health_check.is_some()
            && self.checks > 0
            && now < until.checked_add(CHECK_GRACE).unwrap_or(until)
    }

    /// Counts a health check's task in (`true`) or out (`false`: it ended, or was dropped
    /// with its runtime).
    pub(crate) fn check_running(&mut self, running: bool) {
        if running {
            self.checks += 1;
        } else {
            self.checks = self.checks.saturating_sub(1);
        }
    }

    /// When an open breaker lets probes through, or sends its health check.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a request could be admitted now, without taking a probe slot.
    pub(crate) fn available(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until && !self.awaits_check(until, now),
            State::HalfOpen { in_flight, .. } => in_flight < self.config.probes,
        }
    }

    /// Admits a request, taking a probe slot when half-open; returns the transition to
    /// half-open when the cool-down just ended.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admission, Option<BreakerState>) {
        let mut changed = None;
        if let State::Open { until } = self.state {
            if now < until || self.awaits_check(until, now) {
                return (Admission::No, None);
            }
            self.half_open();
            changed = Some(BreakerState::HalfOpen);
        }
        let admission = match &mut self.state {
            State::Closed => Admission::Yes,
            State::HalfOpen {
                in_flight, round, ..
            } if *in_flight < self.config.probes => {
                *in_flight += 1;
                Admission::Probe(*round)
            }
            _ => Admission::No,
        };
        (admission, changed)
    }

    /// Records the outcome of a request admitted as `admission`; returns the new state when
    /// it changed.
    pub(crate) fn record(
        &mut self,
        admission: Admission,
        outcome: Outcome,
        now: Instant,
    ) -> Option<BreakerState> {
        if let Admission::Probe(round) = admission {
            return self.record_probe(round, outcome, now);
        }
        // An answer to a request admitted while closed: it may arrive after the breaker opened
        // (then it changes nothing).
        if !matches!(self.state, State::Closed) || outcome == Outcome::Neutral {
            return None;
        }
        self.rotate(now);
        let bucket = &mut self.buckets[self.head];
        bucket.1 += 1;
        if outcome == Outcome::Failure {
            bucket.0 += 1;
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
        }
        let (failures, total) = self
            .buckets
            .iter()
            .fold((0, 0), |(f, t), (bf, bt)| (f + bf, t + bt));
        let by_count = self.config.consecutive_failures > 0
            && self.consecutive >= self.config.consecutive_failures;
        let by_rate = total >= self.config.min_requests.max(1)
            && f64::from(failures) >= self.config.error_rate * f64::from(total);
        (outcome == Outcome::Failure && (by_count || by_rate)).then(|| self.open(now))
    }

    fn record_probe(&mut self, round: u32, outcome: Outcome, now: Instant) -> Option<BreakerState> {
        let State::HalfOpen {
            in_flight,
            successes,
            round: current,
        } = &mut self.state
        else {
            return None;
        };
        if round != *current {
            // A probe of an earlier round: its slot was that round's.
            return None;
        }
        *in_flight = in_flight.saturating_sub(1);
        match outcome {
            Outcome::Neutral => None,
            Outcome::Failure => Some(self.open(now)),
            Outcome::Success => {
                *successes += 1;
                if *successes < self.config.probes {
                    return None;
                }
                self.state = State::Closed;
                self.consecutive = 0;
                self.buckets = [(0, 0); BUCKETS];
                self.head_start = now;
                self.next_cool_down = self.config.cool_down;
                Some(BreakerState::Closed)
            }
        }
    }

    /// The outcome of an active health check sent while open: alive lets probes through
    /// (half-open), dead opens again with the next cool-down. `None` when the breaker is not
    /// open (any more).
    pub(crate) fn checked(&mut self, alive: bool, now: Instant) -> Option<BreakerState> {
        if !matches!(self.state, State::Open { .. }) {
            return None;
        }
        if alive {
            self.half_open();
            Some(BreakerState::HalfOpen)
        } else {
            Some(self.open(now))
        }
    }

    /// Starts a new half-open round.
    fn half_open(&mut self) {
        self.rounds = self.rounds.wrapping_add(1);
        self.state = State::HalfOpen {
            in_flight: 0,
            successes: 0,
            round: self.rounds,
        };
    }

    fn open(&mut self, now: Instant) -> BreakerState {
        let base = self.next_cool_down;
        self.next_cool_down = base
            .saturating_mul(2)
            .min(self.config.max_cool_down.max(self.config.cool_down));
        // xorshift64: cheap and good enough to spread probes.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64; // in [0, 1)
        let factor = 1.0 + self.config.jitter * (2.0 * unit - 1.0);
        // A cool-down too long for the clock (`Duration::MAX`: open for good) ends at the
        // furthest instant it can name, some thirty years on, as tokio's own timers do.
        let cool_down = Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0))
            .unwrap_or(Duration::MAX);
        let until = now
            .checked_add(cool_down)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600));
        self.state = State::Open { until };
        self.consecutive = 0;
        BreakerState::Open
    }

    /// Moves the bucket ring forward to `now`, clearing buckets that fell out of the window.
    fn rotate(&mut self, now: Instant) {
        let width = self.config.window / BUCKETS as u32;
        let elapsed = now.saturating_duration_since(self.head_start);
        if elapsed < width {
            return;
        }
        let steps = (elapsed.as_nanos() / width.as_nanos().max(1)) as usize;
        for _ in 0..steps.min(BUCKETS) {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = (0, 0);
        }
        self.head_start += width * steps as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn breaker(config: BreakerConfig) -> Breaker {
        Breaker::new(config.health_check(None), Instant::now(), 7)
    }

    fn fail(b: &mut Breaker) -> Option<BreakerState> {
        let (admission, _) = b.admit(Instant::now());
        assert_ne!(admission, Admission::No);
        b.record(admission, Outcome::Failure, Instant::now())
    }

    fn succeed(b: &mut Breaker) -> Option<BreakerState> {
        let (admission, _) = b.admit(Instant::now());
        assert_ne!(admission, Admission::No);
        b.record(admission, Outcome::Success, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let mut b = breaker(BreakerConfig::new().consecutive_failures(3).error_rate(2.0));
        assert_eq!(fail(&mut b), None);
        assert_eq!(fail(&mut b), None);
        assert_eq!(succeed(&mut b), None);
        assert_eq!(fail(&mut b), None);
        assert_eq!(fail(&mut b), None);
        assert_eq!(fail(&mut b), Some(BreakerState::Open));
        assert_eq!(b.admit(Instant::now()).0, Admission::No);
    }

    /// A cool-down of `Duration::MAX` (open for good) opens without overflowing the clock,
    /// and again after a probe fails.
    #[tokio::test(start_paused = true)]
    async fn a_cool_down_without_end_opens_for_good() {
        let config = BreakerConfig::new()
            .consecutive_failures(1)
            .error_rate(2.0)
            .cool_down(Duration::MAX)
            .max_cool_down(Duration::MAX);
        let mut b = breaker(config);
        assert_eq!(fail(&mut b), Some(BreakerState::Open));
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(
            b.admit(Instant::now()).0,
            Admission::No,
            "still open a year on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_count_as_nothing() {
        let mut b = breaker(BreakerConfig::new().consecutive_failures(2).error_rate(2.0));
        assert_eq!(fail(&mut b), None);
        for _ in 0..100 {
            let (admission, _) = b.admit(Instant::now());
            assert_eq!(b.record(admission, Outcome::Neutral, Instant::now()), None);
        }
        assert_eq!(fail(&mut b), Some(BreakerState::Open), "429s broke the run");
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_error_rate_over_the_window_only() {
        let config = BreakerConfig::new()
            .consecutive_failures(0)
            .error_rate(0.5)
            .min_requests(10)
            .window(Duration::from_secs(10));
        let mut b = breaker(config.clone());
        // 4 failures in 10: below the rate.
        for i in 0..10 {
            let state = if i % 5 < 2 {
                fail(&mut b)
            } else {
                succeed(&mut b)
            };
            assert_eq!(state, None);
        }
        // Old successes leave the window: the next failures tip the rate.
        advance(Duration::from_secs(11)).await;
        for _ in 0..4 {
            assert_eq!(succeed(&mut b), None);
        }
        let mut opened = None;
        for _ in 0..6 {
            opened = opened.or(fail(&mut b));
        }
        assert_eq!(opened, Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_the_cool_down_with_jitter_then_closes_after_probes() {
        let config = BreakerConfig::new()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(10))
            .jitter(0.2)
            .probes(2);
        let mut b = breaker(config);
        assert_eq!(fail(&mut b), Some(BreakerState::Open));
        let until = b.open_until().unwrap();
        let wait = until - Instant::now();
        assert!(wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12));
        advance(wait - Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()).0, Admission::No);
        advance(Duration::from_millis(1)).await;
        let (first, changed) = b.admit(Instant::now());
        assert_eq!(
            (first, changed),
            (Admission::Probe(1), Some(BreakerState::HalfOpen))
        );
        let (second, _) = b.admit(Instant::now());
        assert_eq!(second, Admission::Probe(1));
        assert_eq!(
            b.admit(Instant::now()).0,
            Admission::No,
            "probe slots are capped"
        );
        assert_eq!(b.record(first, Outcome::Success, Instant::now()), None);
        assert_eq!(
            b.record(second, Outcome::Success, Instant::now()),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.admit(Instant::now()).0, Admission::Yes);
    }

    /// With a health check running, an open breaker waits for its verdict, but not for good:
    /// once the verdict is overdue by `CHECK_GRACE` (a check on a runtime nobody drives, or
    /// stuck on a server that never answers), real requests probe. With no check running,
    /// they probe when the cool-down ends.
    #[tokio::test(start_paused = true)]
    async fn an_overdue_health_check_lets_real_requests_probe() {
        let config = BreakerConfig::new()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(10))
            .jitter(0.0);
        let mut b = Breaker::new(config, Instant::now(), 7);
        b.check_running(true);
        fail(&mut b);
        advance(Duration::from_secs(10)).await;
        assert_eq!(
            b.admit(Instant::now()).0,
            Admission::No,
            "the check decides"
        );
        advance(CHECK_GRACE - Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()).0, Admission::No);
        advance(Duration::from_millis(1)).await;
        assert_eq!(b.admit(Instant::now()).0, Admission::Probe(1));

        let mut b = Breaker::new(
            BreakerConfig::new().consecutive_failures(1).jitter(0.0),
            Instant::now(),
            7,
        );
        fail(&mut b);
        advance(Duration::from_secs(5)).await;
        assert!(
            matches!(b.admit(Instant::now()).0, Admission::Probe(_)),
            "no check running"
        );
    }

    /// A probe that outlives its half-open round (the breaker reopened and went half-open
    /// again meanwhile) counts for nothing in the new round: it neither frees one of its
    /// probe slots nor counts towards closing it.
    #[tokio::test(start_paused = true)]
    async fn a_probe_of_an_earlier_round_counts_for_nothing() {
        let config = BreakerConfig::new()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(10))
            .jitter(0.0)
            .probes(2);
        let mut b = breaker(config);
        fail(&mut b);
        advance(Duration::from_secs(10)).await;
        let (a, _) = b.admit(Instant::now());
        let (stale, _) = b.admit(Instant::now());
        assert_eq!((a, stale), (Admission::Probe(1), Admission::Probe(1)));
        assert_eq!(
            b.record(a, Outcome::Failure, Instant::now()),
            Some(BreakerState::Open)
        );
        advance(Duration::from_secs(20)).await;
        let (c, changed) = b.admit(Instant::now());
        assert_eq!(
            (c, changed),
            (Admission::Probe(2), Some(BreakerState::HalfOpen))
        );
        // The earlier round's probe ends now, a success: nothing changes.
        assert_eq!(b.record(stale, Outcome::Success, Instant::now()), None);
        let (d, _) = b.admit(Instant::now());
        assert_eq!(d, Admission::Probe(2));
        assert_eq!(
            b.admit(Instant::now()).0,
            Admission::No,
            "two probes at most"
        );
        assert_eq!(b.record(c, Outcome::Success, Instant::now()), None);
        assert_eq!(
            b.record(d, Outcome::Success, Instant::now()),
            Some(BreakerState::Closed)
        );
        // Nor does a late failure reopen a breaker that went half-open since.
        fail(&mut b);
        advance(Duration::from_secs(10)).await;
        let (e, _) = b.admit(Instant::now());
        assert_eq!(e, Admission::Probe(3));
        assert_eq!(b.record(stale, Outcome::Failure, Instant::now()), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_with_a_doubled_cool_down() {
        let config = BreakerConfig::new()
            .consecutive_failures(1)
            .cool_down(Duration::from_secs(10))
            .max_cool_down(Duration::from_secs(25))
            .jitter(0.0);
        let mut b = breaker(config);
        fail(&mut b);
        let mut waits = Vec::new();
        for _ in 0..3 {
            let wait = b.open_until().unwrap() - Instant::now();
            waits.push(wait.as_secs());
            advance(wait).await;
            let (probe, _) = b.admit(Instant::now());
            assert!(matches!(probe, Admission::Probe(_)), "{probe:?}");
            assert_eq!(
                b.record(probe, Outcome::Failure, Instant::now()),
                Some(BreakerState::Open)
            );
        }
        assert_eq!(waits, [10, 20, 25]);
        // An answer to a request admitted before the opening changes nothing.
        assert_eq!(
            b.record(Admission::Yes, Outcome::Success, Instant::now()),
            None
        );
        assert_eq!(b.state(), BreakerState::Open);
    }
}
