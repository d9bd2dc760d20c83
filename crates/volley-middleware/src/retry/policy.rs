//! How often to retry and how long to wait: [`Policy`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use volley_core::{Error, ErrorKind, RequestId};

use super::backoff::{Backoff, ServerWait, server_wait};
use super::budget::Budget;
use super::classify::{Decision, classify_default, classify_safe_only, is_rate_signal};

/// The default of [`PolicyBuilder::give_up_after`]: 10 minutes.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(600);

type Classifier = dyn Fn(&Error, u32) -> Decision + Send + Sync;

/// What takes secrets out of provider text before the retry layer puts it in an error; see
/// [`Policy::scrubbing`].
type Scrub = dyn Fn(Bytes) -> Bytes + Send + Sync;

/// What the retry layer retries, how many times, and how long it waits.
///
/// Cloning is cheap (an `Arc`) and clones share one retry budget: build one policy per
/// provider and hand it to every [`RetryLayer`](super::RetryLayer) that talks to it.
///
/// The defaults ([`Policy::default`]): the [`classify_default`] classifier, 3 retries,
/// backoff from 500 ms doubling to 8 s with full jitter, a `Retry-After` honoured up to 60 s
/// (a rate-limit reset up to the 8 s cap), each server's wait stretched at random by up to a
/// fifth of it (at most the backoff cap) so that clients told the same time do not all come
/// back at that instant, and a budget of 20 % retries plus 10 per second
/// over 10 s. Rate signals (429, 529) are retried without counting toward the retries or
/// drawing on the budget, for at most [`DEFAULT_GIVE_UP_AFTER`] (10 minutes) per request.
/// [`Policy::builder`] changes any of them.
#[derive(Clone)]
pub struct Policy {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    max_retries: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    give_up_after: Duration,
    classifier: Arc<Classifier>,
    budget: Option<Arc<Budget>>,
    scrub: Option<Arc<Scrub>>,
    /// See [`Policy::moving_held_requests`].
    move_held: bool,
}

/// Where a request stands when an attempt fails: what [`Policy::next`] decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    /// The failed attempt's number, 1 for the first.
    pub(crate) attempt: u32,
    /// Failed attempts so far that count toward `max_retries` (rate signals do not), this
    /// one excluded.
    pub(crate) counted: u32,
    /// Time since the first attempt started.
    pub(crate) elapsed: Duration,
    /// The time left before the request's deadline ([`Request::deadline`]), if it has one.
    ///
    /// [`Request::deadline`]: volley_core::Request::deadline
    pub(crate) remaining: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Policy {
        // The default settings are in range, so the build cannot fail.
        Policy::builder()
            .build()
            .expect("the default policy is valid")
    }
}

impl Policy {
    /// A builder starting from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::new()
    }

    /// The defaults, with the [`classify_safe_only`] classifier: only failures that cannot
    /// have been billed are retried, for callers who must not pay twice for a generation.
    pub fn safe_only() -> Policy {
        Policy::builder()
            .classifier(classify_safe_only)
            .build()
            .expect("the default policy is valid")
    }

    /// The most retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.config.max_retries
    }

    /// This policy, with `scrub` applied to a provider's text before the layer puts it in an
    /// error of its own making (an error event among a stream's first bytes, which fails the
    /// attempt): the `volley` client passes a function that replaces its API keys with `***`,
    /// as it does for every error body. Clones share the budget with this policy.
    #[must_use]
    pub fn scrubbing(&self, scrub: impl Fn(Bytes) -> Bytes + Send + Sync + 'static) -> Policy {
        Policy {
            config: Arc::new(Config {
                scrub: Some(Arc::new(scrub)),
                ..(*self.config).clone()
            }),
        }
    }

    /// This policy, for a retry layer above a [`Balance`](crate::balance::Balance) of several
    /// endpoints, each with its own rate limiter: a request one endpoint's limiter refused,
    /// unsent, because it would have held it past the call's deadline (the
    /// `ErrorKind::RateLimited` error of this crate's limiters from
    /// [`RateLimiter::acquire_before`](crate::rate_limit::RateLimiter::acquire_before); not a
    /// 429, whoever sent it), is retried at once, and the balancer sends the retry to another
    /// endpoint. Such a retry counts toward [`max_retries`](Self::max_retries) (so a request
    /// every endpoint holds back fails after that many) and draws nothing from the budget
    /// (nothing was sent). Without it, the retry layer sees a wait longer than the time left
    /// and gives up. The `volley` client uses it when its endpoints have limiters of their
    /// own (endpoints sharing one limiter would all refuse the retry alike). Clones share the
    /// budget with this policy.
    #[must_use]
    pub fn moving_held_requests(&self) -> Policy {
        Policy {
            config: Arc::new(Config {
                move_held: true,
                ..(*self.config).clone()
            }),
        }
    }

    /// `text` as [`scrubbing`](Self::scrubbing) says: unchanged without a scrub function.
    pub(crate) fn scrub(&self, text: Bytes) -> Bytes {
        match &self.config.scrub {
            Some(scrub) => scrub(text),
            None => text,
        }
    }

    /// Records a first attempt in the budget.
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.config.budget {
            budget.deposit();
        }
    }

    /// How long rate signals (429, 529) may keep a request retrying.
    pub fn give_up_after(&self) -> Duration {
        self.config.give_up_after
    }

    /// Decides what follows a failed attempt: `Ok` with the wait before the next attempt and
    /// whether the failure counts toward `max_retries`, or `Err` with the error for the
    /// caller.
    pub(crate) fn next(
        &self,
        error: Error,
        tally: Tally,
        id: RequestId,
    ) -> Result<(Duration, bool), Error> {
        let config = &*self.config;
        let attempt = tally.attempt;
        if config.max_retries == 0 {
            // Retry is off, rate signals included: the layer keeps no copy to retry with.
            return Err(error);
        }
        let decision = (config.classifier)(&error, attempt);
        let rate = is_rate_signal(&error);
        // The part of the wait still to be drawn: a server's wait is stretched by up to this
        // much at random (`Backoff::spread`).
        let mut spread = Duration::ZERO;
        let wait = match decision {
            Decision::Fail => {
                if attempt > 1 {
                    tracing::debug!(
                        request = %id,
                        attempts = attempt,
                        kind = error.kind().as_str(),
                        status = error.status().map(|s| s.as_u16()),
                        "not retryable after retries"
                    );
                }
                return Err(error);
            }
            // Held back unsent by one endpoint's limiter, for longer than the call has left:
            // another endpoint takes the retry at once (`moving_held_requests`).
            _ if config.move_held && crate::rate_limit::is_held_back(&error) => {
                if tally.counted >= config.max_retries {
                    return Err(give_up(error, attempt, id, "max_retries"));
                }
                ::metrics::counter!("volley_retries_total", "kind" => error.kind().as_str())
                    .increment(1);
                tracing::debug!(
                    request = %id,
                    attempt,
                    "held back by one endpoint's rate limiter; retrying at another"
                );
                return Ok((Duration::ZERO, true));
            }
            _ if rate && tally.elapsed >= config.give_up_after => {
                return Err(give_up(error, attempt, id, "give_up_after"));
            }
            _ if !rate && tally.counted >= config.max_retries => {
                return Err(give_up(error, attempt, id, "max_retries"));
            }
            Decision::RetryAfter(wait) => wait,
            Decision::Retry => {
                let backoff = config.backoff.delay(attempt - 1);
                match server_wait(&error) {
                    Some(ServerWait::Explicit(wait)) if wait > config.max_retry_after => {
                        return Err(give_up(error, attempt, id, "retry_after_too_long"));
                    }
                    Some(ServerWait::Explicit(wait))
                        if rate && tally.elapsed.saturating_add(wait) > config.give_up_after =>
                    {
                        return Err(give_up(error, attempt, id, "give_up_after"));
                    }
                    Some(server) => {
                        let wait = match server {
                            ServerWait::Explicit(wait) => wait,
                            // OpenAI's reset is the time until the whole minute's quota is
                            // back, not until the next request fits (`1m0s` when it is
                            // empty): only an upper bound, so it is cut to the backoff's
                            // cap (the random stretch below comes on top).
                            ServerWait::Reset(wait) => wait.min(config.backoff.cap),
                        };
                        if backoff >= wait {
                            backoff
                        } else {
                            // Every client the server answered alike was told this instant.
                            spread = config.backoff.spread(wait);
                            wait
                        }
                    }
                    None => backoff,
                }
            }
        };
        if let Some(left) = tally.remaining {
            if wait >= left {
                // The next attempt could not start before the call's deadline.
                return Err(give_up(error, attempt, id, "deadline"));
            }
            // The stretch never takes a retry that fits past the deadline.
            spread = spread.min(left - wait - Duration::from_nanos(1));
        }
        let wait = wait + crate::jitter::up_to(spread);
        // A rate signal is paced by the server's own wait, not multiplied by us: it draws
        // nothing from the budget, which would otherwise turn a provider's 429s into failed
        // requests.
        if !rate
            && let Some(budget) = &config.budget
            && !budget.withdraw()
        {
            return Err(give_up(error, attempt, id, "budget"));
        }
        let kind = error.kind().as_str();
        ::metrics::counter!("volley_retries_total", "kind" => kind).increment(1);
        tracing::debug!(
            request = %id,
            attempt,
            kind,
            status = error.status().map(|s| s.as_u16()),
            delay_ms = wait.as_millis() as u64,
            "retrying"
        );
        Ok((wait, !rate))
    }
}

/// Counts and logs a retryable error that will not be retried, and hands it back.
fn give_up(error: Error, attempts: u32, id: RequestId, reason: &'static str) -> Error {
    let kind = error.kind().as_str();
    ::metrics::counter!("volley_retry_exhausted_total", "kind" => kind, "reason" => reason)
        .increment(1);
    tracing::debug!(
        request = %id,
        attempts,
        kind,
        status = error.status().map(|s| s.as_u16()),
        reason,
        "giving up retrying"
    );
    error
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("Policy")
            .field("max_retries", &c.max_retries)
            .field("backoff_base", &c.backoff.base)
            .field("backoff_cap", &c.backoff.cap)
            .field("max_retry_after", &c.max_retry_after)
            .field("give_up_after", &c.give_up_after)
            .field("budget", &c.budget)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Policy`]. Setters never fail; [`build`](PolicyBuilder::build) checks the budget
/// settings.
#[must_use]
pub struct PolicyBuilder {
    max_retries: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    give_up_after: Duration,
    classifier: Option<Box<Classifier>>,
    budget_enabled: bool,
    budget_ttl: Duration,
    budget_min_per_sec: u32,
    budget_ratio: f32,
}

impl PolicyBuilder {
    fn new() -> PolicyBuilder {
        PolicyBuilder {
            max_retries: 3,
            backoff: Backoff {
                base: Duration::from_millis(500),
                cap: Duration::from_secs(8),
            },
            max_retry_after: Duration::from_secs(60),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            classifier: None,
            budget_enabled: true,
            budget_ttl: Duration::from_secs(10),
            budget_min_per_sec: 10,
            budget_ratio: 0.2,
        }
    }

    /// The most retries after the first attempt; 0 disables retrying altogether (rate
    /// signals, which otherwise do not count toward this number, included) and the budget.
    ///
    /// Default 3, as async-openai (openai-python uses 2). Full jitter waits half the
    /// exponential ceiling on average, so three retries back off for 1.75 s in expectation
    /// (3.5 s at most) with the default base, about what openai-python's two retries with
    /// shortening jitter wait; and the budget keeps the third retry from adding load when a
    /// provider is failing everything.
    pub fn max_retries(mut self, max_retries: u32) -> PolicyBuilder {
        self.max_retries = max_retries;
        self
    }

    /// The backoff ceiling of the first retry; retry `n` (from 0) waits a random time in
    /// `[0, min(cap, base·2^n)]`. Default 500 ms.
    pub fn backoff_base(mut self, base: Duration) -> PolicyBuilder {
        self.backoff.base = base;
        self
    }

    /// The largest backoff ceiling. It also caps a wait derived from a 429's
    /// `x-ratelimit-reset-*` headers (used when the 429 has no `Retry-After`): OpenAI's reset
    /// is the time until the whole minute's quota is back (`1m0s` when it is empty), not until
    /// the next request fits, so it is only an upper bound. And it caps the random stretch of
    /// a server's wait (up to a fifth of the wait). Default 8 s.
    pub fn backoff_cap(mut self, cap: Duration) -> PolicyBuilder {
        self.backoff.cap = cap;
        self
    }

    /// The longest server-requested wait that is honoured. A `Retry-After` (or
    /// `retry-after-ms`) above it ends the retries: the error, which carries the server's
    /// wait in [`Error::retry_after`], goes to the caller. (A wait derived from
    /// `x-ratelimit-reset-*` is capped by [`backoff_cap`](Self::backoff_cap) instead.)
    ///
    /// Default 60 s (openai-python also honours up to 60 s, then falls back to its own short
    /// backoff, which mostly earns another 429). A server that asks for more than a minute is
    /// usually reporting a long quota window; the caller, who sees the wait on the error, can
    /// reschedule the work better than a request holding its place in a batch.
    pub fn max_retry_after(mut self, max: Duration) -> PolicyBuilder {
        self.max_retry_after = max;
        self
    }

    /// How long [rate signals](super::is_rate_signal) (429, 529) may keep one request
    /// retrying, from the start of its first attempt. They do not count toward
    /// [`max_retries`](Self::max_retries): a provider that says "too many, come back in a
    /// second" has not failed the request. Once this much time has passed, or a server's wait
    /// would end after it, the next rate signal goes to the caller. Default
    /// [`DEFAULT_GIVE_UP_AFTER`] (10 minutes).
    pub fn give_up_after(mut self, limit: Duration) -> PolicyBuilder {
        self.give_up_after = limit;
        self
    }

    /// Replaces the classifier: `classifier(error, attempt)` decides whether the failed
    /// attempt number `attempt` (1 for the first) is retried. [`max_retries`] and the budget
    /// still apply on top of it. Delegate to [`classify_default`] or [`classify_safe_only`]
    /// for the cases it does not care about. Default [`classify_default`].
    ///
    /// [`max_retries`]: PolicyBuilder::max_retries
    pub fn classifier<F>(mut self, classifier: F) -> PolicyBuilder
    where
        F: Fn(&Error, u32) -> Decision + Send + Sync + 'static,
    {
        self.classifier = Some(Box::new(classifier));
        self
    }

    /// Whether retries draw on a budget, so a failing provider does not get a retry storm:
    /// when the budget is spent the last error goes to the caller. Default `true`.
    pub fn budget_enabled(mut self, enabled: bool) -> PolicyBuilder {
        self.budget_enabled = enabled;
        self
    }

    /// How long a first attempt counts towards the budget, between 1 s and 60 s. Default 10 s.
    pub fn budget_ttl(mut self, ttl: Duration) -> PolicyBuilder {
        self.budget_ttl = ttl;
        self
    }

    /// Retries per second allowed whatever the traffic, so a client that sends little can
    /// still retry. Default 10.
    pub fn budget_min_per_sec(mut self, min_per_sec: u32) -> PolicyBuilder {
        self.budget_min_per_sec = min_per_sec;
        self
    }

    /// Retries allowed per first attempt, on top of the minimum: 0.2 allows one retry per 5
    /// requests. 0, or between 0.001 and 1000. Default 0.2.
    pub fn budget_ratio(mut self, ratio: f32) -> PolicyBuilder {
        self.budget_ratio = ratio;
        self
    }

    /// Builds the policy. Fails with an [`ErrorKind::Config`] error when the budget is
    /// enabled and its TTL or ratio is out of range.
    pub fn build(self) -> Result<Policy, Error> {
        // With retrying off nothing would ever be withdrawn: skip the deposits too.
        let budget = if self.budget_enabled && self.max_retries > 0 {
            let budget = Budget::new(self.budget_ttl, self.budget_min_per_sec, self.budget_ratio)
                .map_err(|reason| Error::new(ErrorKind::Config, reason))?;
            Some(Arc::new(budget))
        } else {
            None
        };
        Ok(Policy {
            config: Arc::new(Config {
                max_retries: self.max_retries,
                backoff: self.backoff,
                max_retry_after: self.max_retry_after,
                give_up_after: self.give_up_after,
                classifier: self
                    .classifier
                    .map_or_else(|| Arc::new(classify_default) as Arc<Classifier>, Arc::from),
                budget,
                scrub: None,
                move_held: false,
            }),
        })
    }
}

impl fmt::Debug for PolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyBuilder")
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff.base)
            .field("backoff_cap", &self.backoff.cap)
            .field("max_retry_after", &self.max_retry_after)
            .field("give_up_after", &self.give_up_after)
            .field("custom_classifier", &self.classifier.is_some())
            .field("budget_enabled", &self.budget_enabled)
            .field("budget_ttl", &self.budget_ttl)
            .field("budget_min_per_sec", &self.budget_min_per_sec)
            .field("budget_ratio", &self.budget_ratio)
            .finish()
    }
}
