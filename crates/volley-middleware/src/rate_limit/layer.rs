//! [`RateLimitLayer`] and the [`RateLimit`] service.

use std::fmt;
use std::task::{Context, Poll};

use metrics::Histogram;
use tower_layer::Layer;
use tower_service::Service;
use volley_core::{Error, Request, Response};

use super::{Limits, LocalLimiter, RateLimiter, ResponseFuture};

/// How long each request waited for the limiter.
const WAIT_SECONDS: &str = "volley_rate_limit_wait_seconds";

/// Applies [`RateLimit`] with one shared limiter.
///
/// Every service the layer builds, and every clone of those, draws from the same budget.
#[derive(Clone)]
pub struct RateLimitLayer<L = LocalLimiter> {
    limiter: L,
}

impl RateLimitLayer {
    /// A layer with a new in-process [`LocalLimiter`] enforcing `limits`.
    ///
    /// # Errors
    /// As [`LocalLimiter::new`]: `ErrorKind::Config` for limits that make no sense.
    pub fn new(limits: Limits) -> Result<RateLimitLayer, Error> {
        Ok(RateLimitLayer {
            limiter: LocalLimiter::new(limits)?,
        })
    }
}

impl<L: RateLimiter> RateLimitLayer<L> {
    /// A layer over an existing limiter (shared with other layers, or not in-process).
    pub fn with_limiter(limiter: L) -> RateLimitLayer<L> {
        RateLimitLayer { limiter }
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }
}

impl<S, L: RateLimiter> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimit<S, L>;

    fn layer(&self, inner: S) -> RateLimit<S, L> {
        RateLimit::new(inner, self.limiter.clone())
    }
}

impl<L: fmt::Debug> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish()
    }
}

/// Waits for the rate limiter before sending each request, and settles its cost with the
/// usage the provider reports. See the [module docs](super).
///
/// Always ready: the wait depends on the request, so it happens in the response future, and
/// the inner service is asked for readiness only once the wait is over (a request waiting for
/// its turn holds no concurrency slot). The inner service is cloned per request for that, as
/// tower's `Oneshot` does.
#[derive(Clone)]
pub struct RateLimit<S, L = LocalLimiter> {
    inner: S,
    limiter: L,
    /// `volley_rate_limit_wait_seconds`, registered once so that recording a wait costs no
    /// registry lookup.
    wait: Histogram,
}

impl<S, L: RateLimiter> RateLimit<S, L> {
    /// Wraps `inner` with `limiter`.
    ///
    /// The `volley_rate_limit_wait_seconds` histogram is registered here (as the layer applies
    /// itself) with the `metrics` recorder in force: install the recorder first.
    pub fn new(inner: S, limiter: L) -> RateLimit<S, L> {
        RateLimit {
            inner,
            limiter,
            wait: metrics::histogram!(WAIT_SECONDS),
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, L> Service<Request> for RateLimit<S, L>
where
    S: Service<Request, Response = Response, Error = Error> + Clone,
    L: RateLimiter,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S, L>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The reservation is made here, synchronously, so requests are served in call order.
        ResponseFuture::new(
            self.limiter.clone(),
            self.inner.clone(),
            request,
            self.wait.clone(),
        )
    }
}

impl<S: fmt::Debug, L: fmt::Debug> fmt::Debug for RateLimit<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish()
    }
}
