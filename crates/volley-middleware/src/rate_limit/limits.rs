//! [`Limits`]: what a rate limiter enforces.

use std::time::Duration;

/// The headroom used unless [`Limits::headroom`] says otherwise: aim at 99.5 % of each limit.
pub const DEFAULT_HEADROOM: f64 = 0.005;

/// The jitter margin used unless [`Limits::jitter_margin`] says otherwise: 25 ms.
pub const DEFAULT_JITTER_MARGIN: Duration = Duration::from_millis(25);

/// The longest pause a 429 can impose unless [`Limits::max_pause`] says otherwise: 60 s, the
/// retry policy's default `max_retry_after`.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Requests and tokens per minute, with their bursts: the configuration of a
/// [`LocalLimiter`](super::LocalLimiter) or a [`RateLimitLayer`](super::RateLimitLayer).
///
/// Setters never fail; a limiter checks the values when it is built.
///
/// ```
/// use std::time::Duration;
/// use volley_middleware::rate_limit::Limits;
///
/// // Defaults: one second's worth of burst, 0.5 % headroom, a 25 ms jitter margin, unused
/// // tokens refunded.
/// let tier = Limits::per_minute().requests(500).tokens(200_000);
///
/// // Customised: a larger burst, more margin for a distant provider, and no refunds for a
/// // provider that charges the estimate up front.
/// let strict = Limits::per_minute()
///     .requests(10_000)
///     .tokens(2_000_000)
///     .burst_requests(500)
///     .burst_tokens(100_000)
///     .headroom(0.02)
///     .jitter_margin(Duration::from_millis(100))
///     .refund_unused(false);
/// # let _ = (tier, strict);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Limits {
    pub(super) requests: Option<u64>,
    pub(super) tokens: Option<u64>,
    pub(super) burst_requests: Option<u64>,
    pub(super) burst_tokens: Option<u64>,
    pub(super) headroom: f64,
    pub(super) jitter_margin: Duration,
    pub(super) max_pause: Duration,
    pub(super) refund_unused: bool,
    pub(super) learn_requests: bool,
    pub(super) learn_tokens: bool,
    pub(super) per_model: bool,
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
}

impl Limits {
    /// No limit yet: add [`requests`](Self::requests) and/or [`tokens`](Self::tokens).
    pub fn per_minute() -> Limits {
        Limits {
            requests: None,
            tokens: None,
            burst_requests: None,
            burst_tokens: None,
            headroom: DEFAULT_HEADROOM,
            jitter_margin: DEFAULT_JITTER_MARGIN,
            max_pause: DEFAULT_MAX_PAUSE,
            refund_unused: true,
            learn_requests: false,
            learn_tokens: false,
            per_model: false,
            input_tokens: None,
            output_tokens: None,
        }
    }

    /// No limit given: both are learned from the provider's headers
    /// ([`learn_requests`](Self::learn_requests), [`learn_tokens`](Self::learn_tokens)), and
    /// a 429 pauses every send until its `Retry-After` meanwhile. What the `volley` facade
    /// uses when no limit is set.
    ///
    /// ```
    /// use volley_middleware::rate_limit::Limits;
    ///
    /// // Requests per minute given, tokens per minute learned.
    /// let limits = Limits::auto().requests(500);
    /// assert!(limits.learns_tokens());
    /// ```
    pub fn auto() -> Limits {
        Limits::per_minute()
            .learn_requests(true)
            .learn_tokens(true)
            .learn_per_model(true)
    }

    /// The limits of the shorthand settings (the builder's `rpm`/`tpm`/`input_tpm`/
    /// `output_tpm`, the CLI's `--rpm`/`--tpm`/`--input-tpm`/`--output-tpm`), in one place:
    /// a request or token limit left out (`None`) is learned from the provider's headers,
    /// `Some(0)` is none and not learned; input and output token limits are never learned (0
    /// or `None` is none). `None` when nothing is limited or learned.
    ///
    /// ```
    /// use volley_middleware::rate_limit::Limits;
    ///
    /// let limits = Limits::from_settings(Some(600), None, None, None).unwrap();
    /// assert_eq!(limits.requests_per_minute(), Some(600));
    /// assert!(limits.learns_tokens() && !limits.learns_requests());
    /// assert!(Limits::from_settings(Some(0), Some(0), None, Some(0)).is_none());
    /// ```
    pub fn from_settings(
        rpm: Option<u32>,
        tpm: Option<u64>,
        input_tpm: Option<u64>,
        output_tpm: Option<u64>,
    ) -> Option<Limits> {
        let mut limits = Limits::auto()
            .learn_requests(rpm.is_none())
            .learn_tokens(tpm.is_none());
        if let Some(n) = rpm.filter(|n| *n > 0) {
            limits = limits.requests(n);
        }
        if let Some(n) = tpm.filter(|n| *n > 0) {
            limits = limits.tokens(n);
        }
        if let Some(n) = input_tpm.filter(|n| *n > 0) {
            limits = limits.input_tokens(n);
        }
        if let Some(n) = output_tpm.filter(|n| *n > 0) {
            limits = limits.output_tokens(n);
        }
        limits.is_active().then_some(limits)
    }

    /// Whether these limits limit or learn anything.
    pub fn is_active(&self) -> bool {
        self.requests_per_minute().is_some()
            || self.tokens_per_minute().is_some()
            || self.input_tokens_per_minute().is_some()
            || self.output_tokens_per_minute().is_some()
            || self.learns_requests()
            || self.learns_tokens()
    }

    /// Requests per minute (RPM); every request costs one. Must be at least 1. Default: no
    /// request limit.
    pub fn requests(mut self, per_minute: u32) -> Limits {
        self.requests = Some(u64::from(per_minute));
        self
    }

    /// Tokens per minute (TPM); a request costs its
    /// [`estimated_tokens`](volley_core::Request::estimated_tokens) up front, settled with the
    /// reported usage afterwards. Must be at least 1. Default: no token limit.
    pub fn tokens(mut self, per_minute: u64) -> Limits {
        self.tokens = Some(per_minute);
        self
    }

    /// Input tokens per minute (Anthropic's ITPM), apart from [`tokens`](Self::tokens): a
    /// request costs its prompt estimate up front, settled with the input tokens the answer
    /// reports (tokens read from a prompt cache do not count, as Anthropic counts them). Must
    /// be at least 1; the burst is one second's worth. Default: no input-token limit.
    pub fn input_tokens(mut self, per_minute: u64) -> Limits {
        self.input_tokens = Some(per_minute);
        self
    }

    /// Output tokens per minute (Anthropic's OTPM): a request costs its output budget
    /// (`max_tokens`) up front, settled with the output tokens the answer reports. Must be at
    /// least 1; the burst is one second's worth. Default: no output-token limit.
    pub fn output_tokens(mut self, per_minute: u64) -> Limits {
        self.output_tokens = Some(per_minute);
        self
    }

    /// The input-token limit per minute, if any.
    pub fn input_tokens_per_minute(&self) -> Option<u64> {
        self.input_tokens
    }

    /// The output-token limit per minute, if any.
    pub fn output_tokens_per_minute(&self) -> Option<u64> {
        self.output_tokens
    }

    /// How many requests may go at once after a quiet spell: the bucket's capacity. Between 1
    /// and the requests per minute. Default: one second's worth, `rpm / 60` (at least 1).
    pub fn burst_requests(mut self, burst: u32) -> Limits {
        self.burst_requests = Some(u64::from(burst));
        self
    }

    /// How many tokens may go at once after a quiet spell. Between 1 and the tokens per minute.
    /// A request estimated above the burst (but within the minute's budget) still goes: it
    /// waits for a full bucket and leaves it in debt. Default: one second's worth, `tpm / 60`
    /// (at least 1).
    pub fn burst_tokens(mut self, burst: u64) -> Limits {
        self.burst_tokens = Some(burst);
        self
    }

    /// The fraction of each limit, and of each burst, kept in reserve: with `0.005` the
    /// limiter aims at 99.5 % of the provider's rate, so small differences in how the two
    /// sides count time cannot add up. In `[0, 0.5]`. Default [`DEFAULT_HEADROOM`] (0.5 %).
    pub fn headroom(mut self, fraction: f64) -> Limits {
        self.headroom = fraction;
        self
    }

    /// How much later than the requests before it a request may reach the provider: each
    /// burst shrinks by this much of its rate. The provider counts a request when it arrives,
    /// not when we sent it; when the requests of a burst queue on the way (at the provider or
    /// in the network) and the first paced request after them does not, they arrive closer
    /// together than they were sent, and a schedule exactly at the limit gets a few 429s. At
    /// 20 000 tokens a second, 25 ms is 500 tokens of a 20 000-token burst. Default
    /// [`DEFAULT_JITTER_MARGIN`] (25 ms).
    pub fn jitter_margin(mut self, margin: Duration) -> Limits {
        self.jitter_margin = margin;
        self
    }

    /// The longest a 429's `retry-after-ms` / `Retry-After` (or an overload's) may pause every
    /// send. A longer
    /// wait is cut to this: one response asking for a day (a daily quota, or a misbehaving
    /// gateway) must not freeze every later request, and the retry policy gives such a request
    /// back to its caller anyway. After a capped pause the provider answers a request that is
    /// still too early with another 429, which pauses again. Default [`DEFAULT_MAX_PAUSE`]
    /// (60 s).
    pub fn max_pause(mut self, max: Duration) -> Limits {
        self.max_pause = max;
        self
    }

    /// Whether tokens reserved but not used (the reported usage is below the estimate) are
    /// given back. Usage above the estimate is always charged. Turn refunds off for a provider
    /// that charges the estimate (`max_tokens`) up front and keeps it. Default `true`.
    pub fn refund_unused(mut self, refund: bool) -> Limits {
        self.refund_unused = refund;
        self
    }

    /// Whether a request limit is learned from `x-ratelimit-limit-requests` when none is
    /// given ([`requests`](Self::requests) wins over it). The window is inferred from the
    /// `remaining` and `reset` headers (a minute, an hour or a day; a minute when they do not
    /// say), the limit follows the header when it changes, and until the first answer arrives
    /// only four requests are sent (a slow start, so a run does not open with a burst of
    /// 429s).
    /// Default `false` ([`Limits::auto`]: `true`).
    pub fn learn_requests(mut self, learn: bool) -> Limits {
        self.learn_requests = learn;
        self
    }

    /// Whether a token limit is learned from `x-ratelimit-limit-tokens` when none is given, as
    /// [`learn_requests`](Self::learn_requests) does for requests. Requests cost their
    /// [`estimated_tokens`](volley_core::Request::estimated_tokens) once it is known. The
    /// input- and output-token limits a provider states apart (Anthropic's
    /// `anthropic-ratelimit-input-tokens-limit` and `-output-tokens-limit`) are learned with
    /// it, each unless given ([`input_tokens`](Self::input_tokens),
    /// [`output_tokens`](Self::output_tokens)). Default `false` ([`Limits::auto`]: `true`).
    pub fn learn_tokens(mut self, learn: bool) -> Limits {
        self.learn_tokens = learn;
        self
    }

    /// Whether an in-process limiter learns a limit per model (the request body's `"model"`):
    /// OpenAI and Anthropic limit each model apart, so requests for `gpt-4o-mini` and
    /// `gpt-4o` each learn, and are paced by, their own limits, each model with its own slow
    /// start. Only when every limit is learned (none given): a given limit is the key's, shared
    /// by every model. A shared limiter (`RedisLimiter`) keeps one learned limit per
    /// credential whatever this says. Default `false` ([`Limits::auto`]: `true`).
    pub fn learn_per_model(mut self, per_model: bool) -> Limits {
        self.per_model = per_model;
        self
    }

    /// Whether limits are learned per model: asked for, something is learned, and no limit
    /// is given.
    pub fn learns_per_model(&self) -> bool {
        self.per_model
            && (self.learn_requests || self.learn_tokens)
            && self.requests.is_none()
            && self.tokens.is_none()
            && self.input_tokens.is_none()
            && self.output_tokens.is_none()
    }

    /// Whether the request limit is learned: asked for, and none given.
    pub fn learns_requests(&self) -> bool {
        self.learn_requests && self.requests.is_none()
    }

    /// Whether the token limit is learned: asked for, and none given.
    pub fn learns_tokens(&self) -> bool {
        self.learn_tokens && self.tokens.is_none()
    }

    /// Which limits are learned, in the order requests, tokens, input tokens, output tokens:
    /// asked for, and none given.
    pub(crate) fn learned_dimensions(&self) -> [bool; 4] {
        [
            self.learns_requests(),
            self.learns_tokens(),
            self.learn_tokens && self.input_tokens.is_none(),
            self.learn_tokens && self.output_tokens.is_none(),
        ]
    }

    /// The request limit per minute, if any.
    pub fn requests_per_minute(&self) -> Option<u64> {
        self.requests
    }

    /// The token limit per minute, if any.
    pub fn tokens_per_minute(&self) -> Option<u64> {
        self.tokens
    }

    /// Checks the values and resolves the defaults: `(limit, burst)` for requests and tokens.
    pub(super) fn resolve(&self) -> Result<Resolved, String> {
        if !(0.0..=0.5).contains(&self.headroom) {
            return Err(format!("headroom {} is not in [0, 0.5]", self.headroom));
        }
        let requests = dimension("requests", self.requests, self.burst_requests)?;
        let tokens = dimension("tokens", self.tokens, self.burst_tokens)?;
        let input = dimension("input tokens", self.input_tokens, None)?;
        let output = dimension("output tokens", self.output_tokens, None)?;
        Ok(Resolved {
            requests,
            tokens,
            input,
            output,
        })
    }
}

impl Default for Limits {
    /// The same as [`Limits::per_minute`]: nothing limited.
    fn default() -> Limits {
        Limits::per_minute()
    }
}

/// Limits with their defaults applied: `(per minute, burst)` per dimension.
pub(super) struct Resolved {
    pub(super) requests: Option<(u64, u64)>,
    pub(super) tokens: Option<(u64, u64)>,
    pub(super) input: Option<(u64, u64)>,
    pub(super) output: Option<(u64, u64)>,
}

fn dimension(
    name: &str,
    limit: Option<u64>,
    burst: Option<u64>,
) -> Result<Option<(u64, u64)>, String> {
    let Some(limit) = limit else {
        return match burst {
            Some(_) => Err(format!(
                "a {name} burst is set but no {name}-per-minute limit"
            )),
            None => Ok(None),
        };
    };
    if limit == 0 {
        return Err(format!("{name} per minute must be at least 1"));
    }
    let burst = burst.unwrap_or((limit / 60).max(1));
    if !(1..=limit).contains(&burst) {
        return Err(format!(
            "the {name} burst {burst} is not between 1 and the limit of {limit} per minute"
        ));
    }
    Ok(Some((limit, burst)))
}
