//! The [`RateLimiter`] trait and the values that cross it.

use std::future::Future;
use std::time::Duration;

use http::HeaderMap;
use volley_core::Dialect;
use volley_core::dialect::TokenUsage;
use volley_core::headers::RateLimitInfo;
use volley_core::{Error, Request, RequestId};

/// A rate limiter the [`RateLimit`](super::RateLimit) layer asks before each send.
///
/// The layer calls [`acquire`](Self::acquire) with the request's cost and sends once the
/// returned future gives a [`Grant`]. Afterwards it hands the grant back exactly once: to
/// [`settle`](Self::settle) when the provider reported the real usage, to
/// [`release`](Self::release) when the request was never sent, or it drops it (the estimate
/// stands). For a request the provider refused before generating anything (400, 401, 403,
/// 404, 422) it releases a grant of the tokens alone (`requests: 0`): the request counted,
/// its tokens did not. [`observe`](Self::observe) passes on what responses said about the provider's own
/// limits.
///
/// `acquire` returns a future so that a shared limiter (Redis, with leases fetched in
/// batches) can make a network round trip; `settle`, `release` and `observe` must not block:
/// a networked limiter records them and sends them with its next batch. Implementations are
/// cheap to clone (an `Arc` inside) and clones share their state.
///
/// [`LocalLimiter`](super::LocalLimiter) is the in-process implementation.
pub trait RateLimiter: Clone + Send + Sync + 'static {
    /// The future of [`acquire`](Self::acquire). A limiter that needs I/O can use
    /// `Pin<Box<dyn Future<Output = Result<Grant, Error>> + Send>>`.
    type Acquire: Future<Output = Result<Grant, Error>> + Send + 'static;

    /// Waits until request `id` may be sent with `cost`, then grants it. Requests are granted
    /// in the order `acquire` was called. Fails at once, with `ErrorKind::InvalidInput`, for a
    /// cost that no wait can satisfy. Dropping the future before it completes gives the
    /// reservation back.
    fn acquire(&self, id: RequestId, cost: Cost) -> Self::Acquire;

    /// [`acquire`](Self::acquire) for a request whose caller stops waiting at `deadline`
    /// ([`Request::deadline`](volley_core::Request::deadline)). A limiter that knows when
    /// the request would go may fail it, unsent, when that is at or past the deadline (a 429
    /// paused the queue, or the limit is used up for longer than the caller waits), rather
    /// than hold it until the caller's timer ends the call: an `ErrorKind::RateLimited` error
    /// whose [`retry_after`](Error::retry_after) is the wait it would have had, not marked
    /// sent ([`Error::is_request_sent`]). [`LocalLimiter`](super::LocalLimiter) fails it at
    /// once when it comes, the shared limiter on Redis when its send time comes back (its
    /// reservation given back), and both fail one already waiting when a pause pushes it past
    /// the deadline at the time it was to be sent. A request that can go at once goes,
    /// deadline or not.
    /// Default: [`acquire`](Self::acquire), the deadline unread.
    fn acquire_before(
        &self,
        id: RequestId,
        cost: Cost,
        deadline: Option<std::time::Instant>,
    ) -> Self::Acquire {
        let _ = deadline;
        self.acquire(id, cost)
    }

    /// Corrects the token charge of a sent request to what the provider reported it used.
    fn settle(&self, grant: Grant, actual_tokens: u64);

    /// Gives back the cost of `grant`: the whole cost of a request that was granted but never
    /// sent, or, in a grant with `requests: 0`, the tokens of one that was refused before any
    /// generation.
    fn release(&self, grant: Grant);

    /// Told of a sent request whose caller gave up before its outcome (a timeout above the
    /// layer, a hedge that lost the race): the provider may have counted it, so nothing is
    /// given back, but no answer will come from it. A limiter in its slow start lets the
    /// next waiting request probe in its place. Default: nothing.
    fn abandon(&self, grant: Grant) {
        let _ = grant;
    }

    /// Learns from a response's rate-limit headers, or from a 429.
    fn observe(&self, observation: &Observation);

    /// Whether [`observe`](Self::observe) wants every outcome of a sent request (to learn
    /// limits, or end a slow start), not only the [relevant](Observation::is_relevant) ones.
    /// Default `false`.
    fn learns(&self) -> bool {
        false
    }

    /// The limiter that paces `request`: itself, or, for a limiter that keeps limits per
    /// model ([`Limits::learn_per_model`](super::Limits::learn_per_model)), the one of the
    /// model the request names. The layer asks once per request, before
    /// [`acquire`](Self::acquire), and hands the grant and what the answer says to the limiter
    /// returned. Default: a clone of itself.
    fn for_request(&self, request: &Request) -> Self {
        let _ = request;
        self.clone()
    }

    /// Whether this limiter limits input and output tokens apart (Anthropic's ITPM and
    /// OTPM), or may still learn such limits from its first answer, so that
    /// [`Cost::input_tokens`] and [`Cost::output_tokens`] must be estimated (the request's
    /// [`Dialect`] reads its body once). Default `false`.
    fn splits_tokens(&self) -> bool {
        false
    }

    /// [`settle`](Self::settle) with the usage split into input and output, for a limiter
    /// that [splits tokens](Self::splits_tokens). Default: `settle` with the total.
    fn settle_usage(&self, grant: Grant, usage: TokenUsage) {
        self.settle(grant, usage.total());
    }
}

/// What one request costs a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Cost {
    /// Requests: 1 for every request.
    pub requests: u32,
    /// Tokens: the prompt estimate plus the most the reply may use.
    pub tokens: u64,
    /// Input tokens, for an input-tokens limit: the prompt estimate (0 unless the limiter
    /// [splits tokens](RateLimiter::splits_tokens)).
    pub input_tokens: u64,
    /// Output tokens, for an output-tokens limit: the most the reply may use (0 unless the
    /// limiter [splits tokens](RateLimiter::splits_tokens)).
    pub output_tokens: u64,
}

impl Cost {
    /// What a reservation of this cost took where only the token buckets `buckets` (tokens,
    /// input tokens, output tokens) exist: nothing of a token dimension without a bucket (a
    /// limit still to be learned: the slow start's probes), so that its settlement charges the
    /// whole usage once the limit is known and never refunds tokens it did not take.
    pub(crate) fn reserved_in(self, buckets: [bool; 3]) -> Cost {
        let kept = |exists: bool, n: u64| if exists { n } else { 0 };
        Cost {
            requests: self.requests,
            tokens: kept(buckets[0], self.tokens),
            input_tokens: kept(buckets[1], self.input_tokens),
            output_tokens: kept(buckets[2], self.output_tokens),
        }
    }

    /// Nothing.
    pub const ZERO: Cost = Cost {
        requests: 0,
        tokens: 0,
        input_tokens: 0,
        output_tokens: 0,
    };

    /// One request and its [`estimated_tokens`](Request::estimated_tokens).
    pub fn of(request: &Request) -> Cost {
        Cost {
            requests: 1,
            tokens: u64::from(request.estimated_tokens()),
            ..Cost::ZERO
        }
    }

    /// [`Cost::of`], with the input and output tokens its dialect estimates from the body
    /// ([`Dialect::estimate_body`]).
    pub fn split_of(request: &Request) -> Cost {
        let estimate = request.dialect().estimate_body(request.body());
        Cost {
            input_tokens: u64::from(estimate.input),
            output_tokens: u64::from(estimate.output),
            ..Cost::of(request)
        }
    }
}

/// Permission to send one request, from [`RateLimiter::acquire`].
#[derive(Debug)]
pub struct Grant {
    cost: Cost,
    waited: Duration,
    /// Granted by a shared limiter's local fallback, so its settlement goes back there.
    fallback: bool,
}

impl Grant {
    /// A grant for `cost`, after waiting `waited`.
    pub fn new(cost: Cost, waited: Duration) -> Grant {
        Grant {
            cost,
            waited,
            fallback: false,
        }
    }

    /// The same grant, marked as granted by a shared limiter's local fallback.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn marked_fallback(mut self) -> Grant {
        self.fallback = true;
        self
    }

    /// Whether a shared limiter's local fallback granted it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// A grant of `cost` from the same limiter, after the same wait (a refusal gives back the
    /// tokens alone).
    pub(crate) fn with_cost(&self, cost: Cost) -> Grant {
        Grant {
            cost,
            waited: self.waited,
            fallback: self.fallback,
        }
    }

    /// The cost charged up front.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// How long the request waited for it.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// What a response (or a 429) said about the provider's own limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Observation {
    /// The `x-ratelimit-*` headers.
    pub info: RateLimitInfo,
    /// Whether the provider answered 429, or a 2xx whose body is a rate-limit error.
    pub rate_limited: bool,
    /// How long the provider asked every request to wait (`retry-after-ms`, `Retry-After`),
    /// when it said so with a 429 or an overload (529, Anthropic's `overloaded_error`): the
    /// limiter pauses every send that long (at most [`Limits::max_pause`]).
    ///
    /// [`Limits::max_pause`]: super::Limits::max_pause
    pub retry_after: Option<Duration>,
}

impl Observation {
    /// What a successful response's headers say.
    pub fn from_headers(headers: &HeaderMap) -> Observation {
        Observation::from_headers_in(Dialect::OpenAi, headers)
    }

    /// What a successful response's headers say, read as `dialect` sends them
    /// (`x-ratelimit-*`, `anthropic-ratelimit-*`).
    pub fn from_headers_in(dialect: Dialect, headers: &HeaderMap) -> Observation {
        Observation {
            info: dialect.rate_limits(headers, std::time::SystemTime::now()),
            rate_limited: false,
            retry_after: None,
        }
    }

    /// What an error says: its headers, and for a 429 the wait it asked for. `None` when the
    /// error carries neither (a connect error, a timeout).
    pub fn from_error(error: &Error) -> Option<Observation> {
        let observation = Observation::of_error(error);
        observation.is_relevant().then_some(observation)
    }

    /// What an error says, even when that is nothing: for a limiter that
    /// [learns](RateLimiter::learns) from every outcome.
    pub fn of_error(error: &Error) -> Observation {
        Observation::of_error_in(Dialect::OpenAi, error)
    }

    /// [`Observation::of_error`], its headers read as `dialect` sends them.
    pub fn of_error_in(dialect: Dialect, error: &Error) -> Observation {
        let info = error
            .headers()
            .map(|headers| dialect.rate_limits(headers, std::time::SystemTime::now()))
            .unwrap_or_default();
        // An overloaded provider that says when to come back says it for every request, as a
        // 429 does; without a wait it only slows the adaptive concurrency and the retries of
        // each request. (Not a 503: one replica or load balancer in trouble says nothing of
        // the provider, and would pause every endpoint and process sharing the limiter.)
        let asks_everyone = error.is_rate_limited() || error.is_overloaded();
        Observation {
            info,
            rate_limited: error.is_rate_limited(),
            retry_after: error.retry_after().filter(|_| asks_everyone),
        }
    }

    /// Whether this can change a limiter's state: a 429, a wait asked of every request, or a
    /// quota reported as used up. Anything else is skipped without taking a lock.
    pub fn is_relevant(&self) -> bool {
        self.rate_limited
            || self.retry_after.is_some()
            || self.info.remaining_requests == Some(0)
            || self.token_quota_empty()
    }

    /// Whether a token quota is reported used up: the total, the input or the output tokens.
    fn token_quota_empty(&self) -> bool {
        let info = &self.info;
        [
            info.remaining_tokens,
            info.remaining_input_tokens,
            info.remaining_output_tokens,
        ]
        .contains(&Some(0))
    }

    /// Which of the provider's quotas this says are used up, for every limiter to empty the
    /// matching bucket: a quota reported at zero is; and a 429 that names no empty quota still
    /// means one of them is, without saying which, so then both are.
    pub(crate) fn empty_quotas(&self) -> EmptyQuotas {
        let requests = self.info.remaining_requests == Some(0);
        // Every token bucket is emptied by any empty token quota: the limiter does not keep
        // them apart (an input-token quota used up also holds back the output tokens).
        let tokens = self.token_quota_empty();
        let unnamed = self.rate_limited && !requests && !tokens;
        EmptyQuotas {
            requests: requests || unnamed,
            tokens: tokens || unnamed,
        }
    }
}

/// The quotas an [`Observation`] says are used up ([`Observation::empty_quotas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EmptyQuotas {
    /// The requests-per-minute quota.
    pub(crate) requests: bool,
    /// The tokens-per-minute quota.
    pub(crate) tokens: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(rate_limited: bool, requests: Option<u64>, tokens: Option<u64>) -> Observation {
        Observation {
            info: RateLimitInfo {
                remaining_requests: requests,
                remaining_tokens: tokens,
                ..RateLimitInfo::default()
            },
            rate_limited,
            retry_after: None,
        }
    }

    fn empty(requests: bool, tokens: bool) -> EmptyQuotas {
        EmptyQuotas { requests, tokens }
    }

    #[test]
    fn a_429_naming_no_empty_quota_empties_both() {
        for unnamed in [
            observation(true, None, None),
            observation(true, Some(3), None),
            observation(true, Some(3), Some(900)),
        ] {
            assert_eq!(unnamed.empty_quotas(), empty(true, true), "{unnamed:?}");
        }
    }

    #[test]
    fn a_named_empty_quota_empties_only_its_bucket() {
        assert_eq!(
            observation(true, Some(0), Some(900)).empty_quotas(),
            empty(true, false)
        );
        assert_eq!(
            observation(true, None, Some(0)).empty_quotas(),
            empty(false, true)
        );
        assert_eq!(
            observation(false, Some(0), Some(0)).empty_quotas(),
            empty(true, true)
        );
        // A success with quota left, or with no headers, empties nothing.
        assert_eq!(
            observation(false, Some(3), Some(900)).empty_quotas(),
            empty(false, false)
        );
        assert_eq!(
            observation(false, None, None).empty_quotas(),
            empty(false, false)
        );
    }
}
