//! One endpoint of a balancer: its settings, its live state (load, breaker, rate signal),
//! and its counts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;
use tokio::time::Instant;

use super::breaker::{Admission, Breaker, BreakerConfig, BreakerState, Outcome};

/// How a balancer treats one endpoint: its name in logs, metrics and reports, its weight,
/// its priority group and the most requests it may have in flight.
#[derive(Debug, Clone)]
#[must_use]
pub struct EndpointConfig {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) priority: u32,
    pub(crate) max_in_flight: Option<usize>,
}

impl EndpointConfig {
    /// An endpoint named `name` (a label; the facade uses `host:port`), weight 1, priority 0,
    /// no cap on requests in flight.
    pub fn new(name: impl Into<String>) -> EndpointConfig {
        EndpointConfig {
            name: name.into(),
            weight: 1,
            priority: 0,
            max_in_flight: None,
        }
    }

    /// The share of traffic relative to the other endpoints of its group, all else equal (at
    /// least 1).
    ///
    /// Default: 1.
    pub fn weight(mut self, weight: u32) -> EndpointConfig {
        self.weight = weight.max(1);
        self
    }

    /// The fallback group: endpoints of a higher number receive traffic only while every
    /// endpoint of the lower numbers is open or saturated.
    ///
    /// Default: 0 (the first group).
    pub fn priority(mut self, priority: u32) -> EndpointConfig {
        self.priority = priority;
        self
    }

    /// The most requests in flight at this endpoint before it counts as saturated (the
    /// balancer then prefers others). The facade also enforces it with a concurrency limit.
    ///
    /// Default: none.
    pub fn max_in_flight(mut self, max: Option<usize>) -> EndpointConfig {
        self.max_in_flight = max;
        self
    }

    /// The name given to [`EndpointConfig::new`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One endpoint's counts and state, from [`Balance::stats`](super::Balance::stats).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// Its priority group.
    pub priority: u32,
    /// Its weight.
    pub weight: u32,
    /// Its circuit breaker's state now.
    pub state: BreakerState,
    /// Attempts sent to it.
    pub requests: u64,
    /// Answers other than 429/529 and 5xx (2xx, 3xx, 4xx).
    pub answered: u64,
    /// Answers 429 or 529 (rate signals).
    pub rate_limited: u64,
    /// Answers 5xx (except 529).
    pub server_errors: u64,
    /// Attempts that got no answer: refused or broken connections, timeouts.
    pub failed: u64,
    /// How often its breaker opened.
    pub breaker_opened: u64,
    /// Active health checks sent while its breaker was open.
    pub health_checks: u64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// The mean time to the response head over every answer, when there was one.
    pub mean_latency: Option<Duration>,
    /// How many answers [`mean_latency`](Self::mean_latency) is the mean of: with it, the
    /// mean of the answers between two snapshots can be found
    /// ([`EndpointStats::since`]).
    pub timed_answers: u64,
}

impl EndpointStats {
    /// These counts less `earlier`'s (a snapshot of the same endpoint taken before): what
    /// happened between the two, the mean latency that of the answers in between. The state,
    /// the requests in flight and the names are this snapshot's.
    ///
    /// ```
    /// # use volley_middleware::balance::EndpointStats;
    /// fn after_warm_up(now: &EndpointStats, warm: &EndpointStats) -> Option<std::time::Duration> {
    ///     now.since(warm).mean_latency
    /// }
    /// ```
    #[must_use]
    pub fn since(&self, earlier: &EndpointStats) -> EndpointStats {
        let timed_answers = self.timed_answers.saturating_sub(earlier.timed_answers);
        let total = |stats: &EndpointStats| {
            stats
                .mean_latency
                .map_or(0, |mean| mean.as_nanos() * u128::from(stats.timed_answers))
        };
        let mean_latency = (timed_answers > 0).then(|| {
            let nanos = total(self).saturating_sub(total(earlier)) / u128::from(timed_answers);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        });
        EndpointStats {
            requests: self.requests.saturating_sub(earlier.requests),
            answered: self.answered.saturating_sub(earlier.answered),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            failed: self.failed.saturating_sub(earlier.failed),
            breaker_opened: self.breaker_opened.saturating_sub(earlier.breaker_opened),
            health_checks: self.health_checks.saturating_sub(earlier.health_checks),
            mean_latency,
            timed_answers,
            ..self.clone()
        }
    }
}

/// The live state of one endpoint.
pub(crate) struct EndpointState {
    pub(crate) config: EndpointConfig,
    pub(crate) outstanding: AtomicUsize,
    /// Whether the breaker is closed: the hot path reads this and takes no lock.
    closed: AtomicBool,
    breaker: Mutex<Breaker>,
    /// Peak-EWMA of the time to the response head, in nanoseconds, as `f64` bits, and when
    /// it was last updated (nanoseconds since `epoch`).
    cost: AtomicU64,
    stamp: AtomicU64,
    /// Until when (nanoseconds since `epoch`) a 429 makes the endpoint look busier.
    rate_limited_until: AtomicU64,
    /// The ids of requests that failed here recently, by `id % len`: a retry avoids it.
    recent_failures: [AtomicU64; RECENT],
    counts: Counts,
    metrics: EndpointMetrics,
}

/// Enough slots that the requests in flight at a high concurrency rarely share one.
const RECENT: usize = 1024;
/// The cost of an endpoint before its first answer.
const INITIAL_COST: Duration = Duration::from_millis(50);
/// How fast the Peak-EWMA forgets (tower's `PeakEwma` uses the same idea).
const DECAY: Duration = Duration::from_secs(5);
/// How much busier an endpoint that answered 429 recently looks.
const RATE_PENALTY: f64 = 8.0;
/// How long a 429 counts, when it said nothing about when to come back.
const RATE_WINDOW: Duration = Duration::from_secs(2);
const MAX_RATE_WINDOW: Duration = Duration::from_secs(60);
/// The time to the head a refusal counts as in the Peak-EWMA (and the penalty of a 429 for a
/// minute on top): an endpoint that refuses is tried again about once every half minute
/// while another answers, as LiteLLM cools a deployment down after a 401 or 404.
const REFUSED_COST: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    answered: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    failed: AtomicU64,
    opened: AtomicU64,
    checks: AtomicU64,
    latency_ns: AtomicU64,
    latency_n: AtomicU64,
}

struct EndpointMetrics {
    requests: Counter,
    answered: Counter,
    rate_limited: Counter,
    server_errors: Counter,
    failed: Counter,
    /// Breaker changes, by the new state: open, half-open, closed.
    transitions: [Counter; 3],
}

/// What the balancer learned from one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observed {
    Answered,
    RateLimited(Option<Duration>),
    ServerError,
    Failed,
    /// Refused by this endpoint in a way no wait heals soon (a rejected key, a model it does
    /// not serve, its quota used up): at once, so its few milliseconds must not make it look
    /// like the fastest endpoint. Not a failure for the breaker (a probe's refusal closes a
    /// half-open one): the same refusal from every endpoint is the request's or the account's,
    /// and is better reported than hidden behind open breakers.
    Refused,
    /// Held back by this endpoint's own rate limiter past the call's deadline, and failed
    /// unsent (its sends paused by a 429, or its limit used up for that long): the endpoint
    /// is rate-limited for the wait given, but the provider said nothing, and the few
    /// microseconds it took are no latency.
    Held(Option<Duration>),
    /// Dropped, cancelled or refused by the request itself: counts as nothing.
    Nothing,
}

impl EndpointState {
    pub(crate) fn new(config: EndpointConfig, breaker: BreakerConfig, seed: u64) -> Self {
        let name = config.name.clone();
        let counter = |outcome: &'static str| metrics::counter!(super::ENDPOINT_REQUESTS_TOTAL, "endpoint" => name.clone(), "outcome" => outcome);
        let metrics = EndpointMetrics {
            requests: counter("sent"),
            answered: counter("answered"),
            rate_limited: counter("rate_limited"),
            server_errors: counter("server_error"),
            failed: counter("failed"),
            transitions: [BreakerState::Open, BreakerState::HalfOpen, BreakerState::Closed]
                .map(|state| {
                    metrics::counter!(super::BREAKER_TRANSITIONS_TOTAL, "endpoint" => name.clone(), "state" => state.as_str())
                }),
        };
        EndpointState {
            config,
            outstanding: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            breaker: Mutex::new(Breaker::new(breaker, Instant::now(), seed)),
            cost: AtomicU64::new((INITIAL_COST.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(0),
            rate_limited_until: AtomicU64::new(0),
            recent_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: Counts::default(),
            metrics,
        }
    }

    /// Whether the endpoint may take a request now: breaker closed (or ready to probe) and
    /// not saturated.
    pub(crate) fn available(&self, now: Instant) -> bool {
        if self.saturated() {
            return false;
        }
        self.closed.load(Ordering::Relaxed) || self.lock().available(now)
    }

    /// Whether the endpoint is at its cap of requests in flight.
    pub(crate) fn saturated(&self) -> bool {
        self.config
            .max_in_flight
            .is_some_and(|max| self.outstanding.load(Ordering::Relaxed) >= max)
    }

    /// Whether the breaker is open (and not yet ready for probes).
    pub(crate) fn open(&self, now: Instant) -> bool {
        !self.closed.load(Ordering::Relaxed) && !self.lock().available(now)
    }

    /// Whether the breaker is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn failed_recently(&self, id: u64) -> bool {
        self.recent_failures[id as usize % RECENT].load(Ordering::Relaxed) == id
    }

    /// The load that power of two choices compares: Peak-EWMA cost × (outstanding + 1),
    /// × a penalty after a recent 429, ÷ weight.
    pub(crate) fn load(&self, nanos: u64) -> f64 {
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let elapsed = nanos.saturating_sub(self.stamp.load(Ordering::Relaxed));
        let decayed = cost * (-(elapsed as f64) / DECAY.as_nanos() as f64).exp();
        let pending = self.outstanding.load(Ordering::Relaxed) as f64 + 1.0;
        let penalty = if self.rate_limited_until.load(Ordering::Relaxed) > nanos {
            RATE_PENALTY
        } else {
            1.0
        };
        // An endpoint never looks free: keep a floor so that outstanding requests still count.
        decayed.max(1_000.0) * pending * penalty / f64::from(self.config.weight)
    }

    /// Admits a request (taking a probe slot when half-open) and counts it as sent. A
    /// request refused ([`Admission::No`]: the breaker opened, or another request took the
    /// last probe slot, since the endpoint was chosen) is not counted and must not be sent.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let admission = if self.closed.load(Ordering::Relaxed) {
            Admission::Yes
        } else {
            let (admission, changed) = self.lock().admit(now);
            if let Some(state) = changed {
                self.changed(state);
            }
            admission
        };
        if admission == Admission::No {
            return admission;
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.requests.increment(1);
        admission
    }

    /// When an open breaker's cool-down ends; `None` when it is not open.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        self.lock().open_until()
    }

    /// Records an active health check's verdict; returns the new state when it changed.
    pub(crate) fn checked(&self, alive: bool, now: Instant) -> Option<BreakerState> {
        let changed = self.lock().checked(alive, now);
        if let Some(state) = changed {
            self.changed(state);
        }
        changed
    }

    /// Counts a health check's task in or out (see `Breaker::check_running`).
    pub(crate) fn check_running(&self, running: bool) {
        self.lock().check_running(running);
    }

    /// Counts an active health check.
    pub(crate) fn count_check(&self, alive: bool) {
        self.counts.checks.fetch_add(1, Ordering::Relaxed);
        let outcome = if alive { "alive" } else { "dead" };
        metrics::counter!(super::HEALTH_CHECKS_TOTAL, "endpoint" => self.config.name.clone(), "outcome" => outcome)
            .increment(1);
    }

    /// Records the end of an attempt admitted as `admission`; returns the breaker's new
    /// state when it changed.
    pub(crate) fn finish(
        &self,
        admission: Admission,
        observed: Observed,
        id: u64,
        latency: Duration,
        nanos: u64,
    ) -> Option<BreakerState> {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        let outcome = match observed {
            Observed::Answered => {
                self.counts.answered.fetch_add(1, Ordering::Relaxed);
                self.metrics.answered.increment(1);
                Outcome::Success
            }
            Observed::RateLimited(wait) => {
                self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.metrics.rate_limited.increment(1);
                let wait = wait.unwrap_or(RATE_WINDOW).min(MAX_RATE_WINDOW);
                self.rate_limited_until
                    .fetch_max(nanos + wait.as_nanos() as u64, Ordering::Relaxed);
                Outcome::Neutral
            }
            Observed::ServerError => {
                self.counts.server_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.server_errors.increment(1);
                Outcome::Failure
            }
            Observed::Failed => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.failed.increment(1);
                Outcome::Failure
            }
            Observed::Refused => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.failed.increment(1);
                self.rate_limited_until
                    .fetch_max(nanos + MAX_RATE_WINDOW.as_nanos() as u64, Ordering::Relaxed);
                // A probe's answer closes a half-open breaker (the endpoint is up); otherwise
                // nothing for the breaker: a run of refusals must not reset its count of
                // failures in a row, nor dilute its error rate.
                if matches!(admission, Admission::Probe(_)) {
                    Outcome::Success
                } else {
                    Outcome::Neutral
                }
            }
            Observed::Held(wait) => {
                let wait = wait.unwrap_or(RATE_WINDOW).min(MAX_RATE_WINDOW);
                self.rate_limited_until
                    .fetch_max(nanos + wait.as_nanos() as u64, Ordering::Relaxed);
                Outcome::Neutral
            }
            Observed::Nothing => Outcome::Neutral,
        };
        match observed {
            Observed::Nothing | Observed::Failed => {}
            // The load only, as a refusal's: at once, it must not look fast.
            Observed::Held(_) => self.update_cost(REFUSED_COST.max(latency), nanos),
            // The load only: the endpoint's mean latency is its answers'.
            Observed::Refused => self.update_cost(REFUSED_COST.max(latency), nanos),
            _ => {
                self.counts
                    .latency_ns
                    .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
                self.counts.latency_n.fetch_add(1, Ordering::Relaxed);
                self.update_cost(latency, nanos);
            }
        }
        if !matches!(outcome, Outcome::Success) && !matches!(observed, Observed::Nothing) {
            self.recent_failures[id as usize % RECENT].store(id, Ordering::Relaxed);
        }
        if outcome == Outcome::Neutral && !matches!(admission, Admission::Probe(_)) {
            // Counted as nothing, and no probe slot to give back: no need for the lock.
            return None;
        }
        let changed = self.lock().record(admission, outcome, Instant::now());
        if let Some(state) = changed {
            self.changed(state);
        }
        changed
    }

    /// Feeds the Peak-EWMA cost with a time to the head.
    fn update_cost(&self, latency: Duration, nanos: u64) {
        let rtt = latency.as_nanos() as f64;
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let elapsed = nanos.saturating_sub(self.stamp.swap(nanos, Ordering::Relaxed));
        // Peak-EWMA: a slower answer is taken at once, faster ones are averaged in.
        let next = if rtt > cost {
            rtt
        } else {
            let decay = (-(elapsed as f64) / DECAY.as_nanos() as f64).exp();
            cost * decay + rtt * (1.0 - decay)
        };
        self.cost.store(next.to_bits(), Ordering::Relaxed);
    }

    fn changed(&self, state: BreakerState) {
        self.closed
            .store(state == BreakerState::Closed, Ordering::Relaxed);
        if state == BreakerState::Open {
            self.counts.opened.fetch_add(1, Ordering::Relaxed);
        }
        let index = match state {
            BreakerState::Open => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Closed => 2,
        };
        self.metrics.transitions[index].increment(1);
        match state {
            BreakerState::Open => {
                tracing::warn!(endpoint = %self.config.name, "circuit breaker opened")
            }
            BreakerState::HalfOpen => {
                tracing::info!(endpoint = %self.config.name, "circuit breaker half-open: probing")
            }
            BreakerState::Closed => {
                tracing::info!(endpoint = %self.config.name, "circuit breaker closed")
            }
        }
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        let c = &self.counts;
        let n = c.latency_n.load(Ordering::Relaxed);
        EndpointStats {
            name: self.config.name.clone(),
            priority: self.config.priority,
            weight: self.config.weight,
            state: self.lock().state(),
            requests: c.requests.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            breaker_opened: c.opened.load(Ordering::Relaxed),
            health_checks: c.checks.load(Ordering::Relaxed),
            in_flight: self.outstanding.load(Ordering::Relaxed),
            mean_latency: (n > 0)
                .then(|| Duration::from_nanos(c.latency_ns.load(Ordering::Relaxed) / n)),
            timed_answers: n,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock leaves a consistent breaker (every update is a
        // plain assignment), so a poisoned lock is used as is.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
