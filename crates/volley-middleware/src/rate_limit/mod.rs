//! Requests and tokens per minute (RPM, TPM), paced with GCRA and settled with real usage.
//!
//! [`RateLimit`] asks a [`RateLimiter`] before sending each request and waits as long as it
//! says. [`LocalLimiter`] is the in-process limiter; [`RateLimitLayer::new`] builds one from
//! [`Limits`]. With the `redis` feature, `RedisLimiter` shares one budget between processes
//! through Redis (module `rate_limit::redis`).
//!
//! # Cost
//!
//! A request costs one request and its [`estimated_tokens`](volley_core::Request::estimated_tokens)
//! tokens, charged before it is sent (the `volley` facade sets the estimate to the prompt's
//! estimate plus `max_tokens`). A request whose estimate is above the whole tokens-per-minute
//! limit can never be sent within it: it fails at once with `ErrorKind::InvalidInput` ("request
//! 12 needs an estimated 150 000 tokens, more than the whole tokens-per-minute budget of
//! 100 000") instead of waiting forever.
//!
//! # Pacing and burst
//!
//! Each limit is a bucket that refills continuously at `limit / 60` per second and holds at
//! most its burst, by default one second's worth (`limit / 60`, at least 1): after a quiet
//! spell a second's worth goes at once, then requests are spaced at the limit's rate. A larger
//! burst is opt-in ([`Limits::burst_requests`], [`Limits::burst_tokens`]). A request estimated
//! at more tokens than the burst (but within the minute's budget) waits until the bucket is
//! full, goes, and leaves the bucket in debt, so the requests behind it wait until the debt is
//! repaid: the rate over any window stays within the limit.
//!
//! With both limits a request goes at the latest time either allows, and both record it as
//! sent then. Requests go in the order they called the service (FIFO): a large request queued
//! before small ones goes first, so it cannot starve.
//!
//! Two margins keep a schedule that is exactly at the limit from turning into occasional 429s,
//! because the provider counts a request when it arrives, not when we sent it:
//! [`Limits::jitter_margin`] (25 ms by default) takes that much of the rate off each burst, so
//! requests that queued on the way and arrive together with later ones still fit, and
//! [`Limits::headroom`] (0.5 % by default) aims below each limit. Measured against volley-mock
//! enforcing the same limits over loopback (3 000 requests at 20 000 tokens a second, the
//! estimate equal to the usage, two busy cores): with neither margin each of 6 runs drew 8 to
//! 14 429s, all where the first burst ran out and pacing began, each short by 1 to 2 ms; a
//! 0.5 % or 1 % headroom alone drew 0 to 11, a 10 ms margin 0 to 7, and the 25 ms margin none
//! in 16 runs. The two defaults together made the run about 1 % longer.
//!
//! # Settlement
//!
//! When the response reports its usage, the token charge is corrected to `total_tokens`:
//! unused tokens are given back (unless [`Limits::refund_unused`] is off) and extra ones are
//! charged, which may put the bucket in debt, at most up to a whole minute's tokens (a server
//! may report anything). A complete JSON body is searched for its `"usage"` object without
//! parsing the rest; a stream is scanned for usage chunks as it goes by (the facade asks for
//! `stream_options.include_usage`) and settled with the last one when it ends or is dropped:
//! servers such as vLLM with `continuous_usage_stats` repeat the cumulative usage in every
//! chunk. Without usage the estimate stands. A request that fails before it was sent, or whose
//! caller gives up while it waits, gets its whole cost back; one the provider refused before
//! generating anything (400, 401, 403, 404, 422) gets its tokens back but still counts as a
//! request; a 429, a 5xx or any other error after sending gets nothing back.
//!
//! A request's send time is fixed when it calls the service, so a refund helps the requests
//! that call after it, not those already waiting: a queue of thousands of callers is paced on
//! their estimates. Keep the number of callers bounded (the facade's `fan_out` does), and a
//! refund is used within a fraction of a second.
//!
//! # Below the limiter
//!
//! Whatever delays a request between the limiter and the socket (waiting for a concurrency
//! slot, a connection) makes it reach the provider later than scheduled, and delayed requests
//! can bunch: after a long stall of every slot, the requests that waited for one all go at
//! once. When the concurrency limit binds, the rate is well below its limit and the bucket has
//! room, so this matters only after stalls; a 429 then pauses the queue as described above.
//!
//! # Learning from the provider
//!
//! Every response's `x-ratelimit-*` headers are read (without allocating); Anthropic's
//! `anthropic-ratelimit-*` are read for a request in that dialect, its input- and output-token
//! limits learned as limits of their own (then requests are charged their input and output
//! estimates apart, as with [`Limits::input_tokens`]), and its combined `tokens` quota, whose
//! limit is whichever of those binds, not learned as a total. When
//! `x-ratelimit-remaining-requests` or `-tokens` is 0, the provider's bucket is empty, and ours
//! is emptied too (unless it is already lower); it then refills at the configured rate. The
//! `x-ratelimit-reset-*` that comes with it is deliberately not waited for: OpenAI reports
//! the time until the whole minute's quota is back (`reset-tokens: 6ms` after 16 tokens of
//! 150 000, so `1m0s` when empty), while it accepts the next request as soon as that request's
//! tokens have refilled; pausing until the reset would stall a saturated client for up to a
//! minute each time. A provider that really resets in windows answers the early request with a
//! 429, which is handled next.
//!
//! Providers limit each model apart, so with [`Limits::auto`] (no limit given) a
//! [`LocalLimiter`] learns per model ([`Limits::learn_per_model`]): the layer asks it for the
//! limiter of the model the request's body names ([`RateLimiter::for_request`]), and requests
//! for `gpt-4o-mini` and `gpt-4o` each learn, and are paced by, their own limits, each model
//! with its own slow start. A given limit is the key's, shared by every model.
//!
//! A 429 with `retry-after-ms` / `Retry-After` pauses every send until then, at most
//! [`Limits::max_pause`] (60 s by default), and pushes back every request already waiting by
//! as much, so the queue does not rush the provider the moment the pause ends (when no bucket
//! spaces the sends, because no limit is given and none was learned, each send the pause held
//! goes a random part of a fifth of the pause, at most 8 s, after its end, rather than all at
//! that instant); a 429 that
//! names no empty quota empties both buckets. An overload (a 529, Anthropic's
//! `overloaded_error`) with such a wait pauses every send the same way, without emptying a
//! bucket: the provider said when it will take work again. A request whose
//! [deadline](volley_core::Request::deadline) the wait would pass fails unsent, rate-limited
//! with that wait ([`RateLimiter::acquire_before`]), rather than wait for its caller's timer;
//! a balancer in front marks the endpoint rate-limited for that long. A 2xx whose body is a rate-limit
//! error (a gateway's `{"error": {"code": 429}}` with a 200) counts as a 429. Nothing here
//! makes the limiter looser than configured.
//!
//! # Why not `governor`
//!
//! `governor` implements GCRA well, but: it has no way to give tokens back or charge more
//! after the fact (settlement with real usage is the point of a TPM limiter); its waiters are
//! not served in order, so a large token request can starve behind a stream of small ones;
//! and its async waits use `futures_timer`, which tokio's paused clock does not drive, so
//! the limiter could not be tested in virtual time. The GCRA here is a few lines of
//! arithmetic under a mutex: each request computes its send time and records it at once
//! ("reserve, then sleep until"), which is FIFO by construction, and no lock is held across an
//! await.
//!
//! # Metrics
//!
//! - `volley_rate_limit_wait_seconds` (histogram): how long each request waited.
//! - `volley_rate_limit_too_large_total` (counter): requests refused as larger than a minute.
//! - `volley_rate_limit_pauses_total` (counter): pauses started by a 429 (or an overload that
//!   asked for a wait).
//!
//! The histogram's handle is registered when the layer is applied to a service, so install
//! the `metrics` recorder first; recording a wait then costs no registry lookup.
//!
//! # Examples
//!
//! Defaults: one second's worth of burst, 0.5 % headroom, a 25 ms jitter margin, settlement on.
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_middleware::rate_limit::{Limits, RateLimitLayer};
//! # fn transport() -> tower::util::BoxCloneService<volley_core::Request, volley_core::Response, volley_core::Error> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_req: volley_core::Request| async {
//! #         Err::<volley_core::Response, _>(volley_core::Error::new(volley_core::ErrorKind::Cancelled, "demo"))
//! #     }))
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), volley_core::Error> {
//! let limits = Limits::per_minute().requests(500).tokens(200_000);
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limits)?)
//!     .service(transport());
//! # drop(service);
//! # Ok(())
//! # }
//! ```
//!
//! Customised, and one limiter shared by two stacks that use the same API key:
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_middleware::rate_limit::{Limits, LocalLimiter, RateLimitLayer};
//! # fn transport() -> tower::util::BoxCloneService<volley_core::Request, volley_core::Response, volley_core::Error> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_req: volley_core::Request| async {
//! #         Err::<volley_core::Response, _>(volley_core::Error::new(volley_core::ErrorKind::Cancelled, "demo"))
//! #     }))
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), volley_core::Error> {
//! let limiter = LocalLimiter::new(
//!     Limits::per_minute()
//!         .requests(10_000)
//!         .tokens(2_000_000)
//!         .burst_tokens(200_000)
//!         .headroom(0.02)
//!         .refund_unused(false),
//! )?;
//! let chat = ServiceBuilder::new()
//!     .layer(RateLimitLayer::with_limiter(limiter.clone()))
//!     .service(transport());
//! let batch = ServiceBuilder::new()
//!     .layer(RateLimitLayer::with_limiter(limiter))
//!     .service(transport());
//! # drop((chat, batch));
//! # Ok(())
//! # }
//! ```

mod acquire;
mod future;
mod gcra;
mod layer;
mod learn;
mod limiter;
mod limits;
mod local;
mod loss;
mod per_model;
#[cfg(feature = "redis")]
pub mod redis;
mod settle;

pub use acquire::LocalAcquire;
pub use future::ResponseFuture;
pub use layer::{RateLimit, RateLimitLayer};
pub use limiter::{Cost, Grant, Observation, RateLimiter};
pub use limits::{DEFAULT_HEADROOM, DEFAULT_JITTER_MARGIN, DEFAULT_MAX_PAUSE, Limits};
pub use local::LocalLimiter;
pub(crate) use local::is_held_back;
#[cfg(test)]
pub(crate) use local::{assert_held_past_deadline, past_deadline};
#[cfg(feature = "redis")]
pub use redis::{FailureMode, RedisAcquire, RedisLimiter, RedisLimiterStats, SharedLimits};
