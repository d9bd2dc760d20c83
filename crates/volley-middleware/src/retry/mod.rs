//! Retrying failed attempts: classification, exponential backoff with full jitter, the
//! server's `Retry-After`, and a retry budget.
//!
//! [`RetryLayer`] wraps a service in [`Retry`], which sends a request again when an attempt
//! fails in a way its [`Policy`] says is worth retrying.
//!
//! # What is retried
//!
//! [`Policy::default`] ([`classify_default`]) retries connection failures, timeouts, a stream
//! broken before its first byte, 429, 408, 409 and every 5xx but 501, 505-508, 510 and 511; never any
//! other 4xx, never invalid input, configuration errors, cancellations, undecodable bodies or
//! TLS failures (a certificate problem does not heal). A provider's `x-should-retry` header
//! wins over the status.
//!
//! A provider may bill an attempt that failed after it was sent: a timeout or a 500 may come
//! after the generation ran. [`Policy::safe_only`] ([`classify_safe_only`]) retries only what
//! cannot have been billed: 429, 529, a 503 with `Retry-After`, a 408 without an error object,
//! Cloudflare's 521-523, 525 and 526, and failures before any byte of the request was sent. The classifier is replaceable ([`PolicyBuilder::classifier`]).
//!
//! # How long it waits
//!
//! Retry `n` (from 0) waits a random time in `[0, min(cap, base·2^n)]` (full jitter: clients
//! that failed together do not retry together), by default base 500 ms and cap 8 s, at most 3
//! retries. When the server said how long to wait and that is longer, its wait wins:
//! `retry-after-ms` or `Retry-After` (seconds or an HTTP date), or for a 429 without them the
//! `x-ratelimit-reset-*` of the exhausted limit, capped at the
//! [`backoff_cap`](PolicyBuilder::backoff_cap) (OpenAI's reset is the time until the whole
//! minute's quota is back, not until the next request fits). A server's wait is stretched at
//! random by up to a fifth of it, at most the backoff cap (a `Retry-After: 5` waits 5 to 6 s):
//! a provider that turned away a burst told every request of it the same instant, and a
//! client that came back exactly then would send the burst again. The stretch never takes a
//! retry that would start before the request's [deadline](volley_core::Request::deadline)
//! past it. A `Retry-After` longer than
//! [`max_retry_after`](PolicyBuilder::max_retry_after) (60 s) ends the retries, and the error,
//! whose [`retry_after`](volley_core::Error::retry_after) says how long the server asked for,
//! goes to the caller. Sleeping uses `tokio::time`, so paused time in tests drives it.
//!
//! # Rate signals
//!
//! A 429 or a 529 ([`is_rate_signal`]) says "too many, come back later", not "this failed":
//! retrying it does not use up `max_retries` and draws nothing from the budget. Such retries
//! are bounded per request by time instead: [`give_up_after`](PolicyBuilder::give_up_after)
//! (10 minutes by default) from the start of the first attempt. 5xx, timeouts and connection
//! failures keep counting toward `max_retries`. Below the retry layer, the rate limiter's
//! shared pause keeps every request, not just the one that got the 429, away until the
//! server's `Retry-After`.
//!
//! # Retry budget
//!
//! Each first attempt deposits in a budget and each retry withdraws from it; by default
//! retries may add 20 % to the traffic, plus 10 per second, over a 10 s window (the defaults
//! of tower's and finagle's budgets). When a provider fails everything, retries stop at that
//! rate instead of multiplying the load, and the last error goes to the caller. The budget
//! belongs to the [`Policy`] and is shared by its clones; it can be disabled.
//!
//! # Streams
//!
//! A streaming response is handed to the caller only once its first chunk has arrived. An
//! error before that (`StreamBroken`, or an `IdleTimeout` from a timeout layer below) counts
//! as a failed attempt and may be retried. A stream that ends without a single byte carries no
//! answer: it fails the attempt as `StreamBroken` too. Once the caller has the first chunk, nothing is
//! retried: a later error reaches the caller through the stream as it is.
//!
//! # Where it goes in the stack
//!
//! Outside the rate and concurrency limits: a request sleeping in backoff holds no slot, and
//! each attempt pays for its own quota. The inner service must be `Clone` (each call keeps a
//! clone to send retries through); the request is cloned once per call, which shares its
//! `Bytes` body. When the first attempt succeeds the layer costs that clone, a budget deposit
//! (one clock read and one atomic update) and a look for an error object in a complete body
//! ([`Response::is_error_reply`](volley_core::Response::is_error_reply): one SIMD search
//! for `"error"`, shared with the other layers that look), and nothing else: its future is a
//! concrete type, not boxed. A stream response is re-wrapped in one boxed stream to give the first chunk
//! back.
//!
//! # Observability
//!
//! Each retry is logged at `debug` (request id, attempt, error kind, status, delay; never a
//! body or a header value) and counted in `volley_retries_total{kind}`. A retryable error
//! that is not retried because of `max_retries`, the budget, a too-long `Retry-After`, rate
//! signals past `give_up_after` or a wait past the request's deadline ([`Request::set_deadline`](volley_core::Request::set_deadline)) is
//! logged with the number of attempts and counted in
//! `volley_retry_exhausted_total{kind, reason}`, with `reason` one of `max_retries`,
//! `budget`, `retry_after_too_long`, `give_up_after`, `deadline`. A request that succeeds after retries logs its attempt
//! count.
//!
//! # Examples
//!
//! The defaults:
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt};
//! use volley_core::{Body, Error, Request, Response, Timings};
//! use volley_middleware::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let provider = tower::service_fn(|request: Request| async move {
//!     let body = Body::Full(r#"{"data":[]}"#.into());
//!     let headers = http::HeaderMap::new();
//!     let status = http::StatusCode::OK;
//!     Ok::<_, Error>(Response::new(status, headers, body, Timings::start(), request.id()))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::default())
//!     .service(provider);
//! let response = service.oneshot(Request::get("/models")?).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! Customised: only retries that cannot have been billed; or a provider-specific status, a
//! faster backoff and no budget:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use volley_core::{Body, Error, Request, Response, Timings};
//! use volley_middleware::retry::{Decision, Policy, RetryLayer, classify_default};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // For callers who must not pay twice for a generation.
//! let _billing_safe = RetryLayer::new(Policy::safe_only());
//!
//! let policy = Policy::builder()
//!     .max_retries(5)
//!     .backoff_base(Duration::from_millis(50))
//!     .backoff_cap(Duration::from_secs(2))
//!     .max_retry_after(Duration::from_secs(30))
//!     .classifier(|error: &Error, attempt: u32| match error.status() {
//!         // This provider answers 529 when it is overloaded.
//!         Some(status) if status.as_u16() == 529 => {
//!             Decision::RetryAfter(Duration::from_millis(10))
//!         }
//!         _ => classify_default(error, attempt),
//!     })
//!     .budget_enabled(false)
//!     .build()?;
//!
//! // A provider that is overloaded on the first attempt. The inner service must be `Clone`.
//! let calls = Arc::new(AtomicU32::new(0));
//! let provider = tower::service_fn(move |request: Request| {
//!     let calls = Arc::clone(&calls);
//!     async move {
//!         if calls.fetch_add(1, Ordering::Relaxed) == 0 {
//!             let status = http::StatusCode::from_u16(529).unwrap();
//!             return Err(Error::from_status(status, http::HeaderMap::new(), b"", None, "demo"));
//!         }
//!         let body = Body::Full("{}".into());
//!         let headers = http::HeaderMap::new();
//!         Ok(Response::new(http::StatusCode::OK, headers, body, Timings::start(), request.id()))
//!     }
//! });
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy))
//!     .service(provider);
//! let response = service.oneshot(Request::post("/chat/completions", "{}")?).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```

mod backoff;
mod budget;
mod classify;
mod future;
mod layer;
mod policy;
#[cfg(test)]
mod tests;

use std::task::{Context, Poll};

use tower_service::Service;
use volley_core::{Error, Request, Response};

pub use self::classify::{Decision, classify_default, classify_safe_only, is_rate_signal};
pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::{DEFAULT_GIVE_UP_AFTER, Policy, PolicyBuilder};

/// Retries the requests of an inner service according to a [`Policy`]. Built by
/// [`RetryLayer`] or [`Retry::new`].
///
/// The inner service must be `Clone`: each call takes the clone that was made ready and
/// sends its retries through it, leaving a fresh clone behind for the next call.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Policy,
}

impl<S> Retry<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: Policy) -> Retry<S> {
        Retry { inner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for Retry<S>
where
    S: Service<Request, Response = Response, Error = Error> + Clone,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> ResponseFuture<S> {
        let id = request.id();
        self.policy.deposit();
        if self.policy.max_retries() == 0 {
            // No retry: nothing to keep for one, so no clone of the stack below.
            let future = self.inner.call(request);
            return ResponseFuture::new(None, self.policy.clone(), None, id, future);
        }
        // `self.inner` is the clone that `poll_ready` made ready: call that one, keep it for
        // the retries, and leave a fresh clone for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let copy = request.clone();
        let future = inner.call(request);
        ResponseFuture::new(Some(inner), self.policy.clone(), Some(copy), id, future)
    }
}
