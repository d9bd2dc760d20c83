//! [`ConcurrencyLimit`]: takes a permit in `poll_ready`, hands it to the response.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::Semaphore;
use tower_service::Service;
use volley_core::{Error, Request, Response};

use super::ResponseFuture;
use super::acquire::Acquire;

/// Lets at most a fixed number of requests be in flight, counting a streaming response until
/// its body ends or is dropped. See the [module docs](super).
///
/// Clones share the budget; each clone waits for its own permit.
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    max: usize,
    state: Acquire,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner` with a budget of `max` slots of its own. To share one budget between
    /// several services, build them from one [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
    ///
    /// # Panics
    /// If `max` is 0 or above tokio's `Semaphore::MAX_PERMITS`.
    pub fn new(inner: S, max: usize) -> ConcurrencyLimit<S> {
        assert!(
            max > 0,
            "a concurrency limit of 0 would never send anything"
        );
        ConcurrencyLimit::with_semaphore(inner, Arc::new(Semaphore::new(max)), max)
    }

    pub(super) fn with_semaphore(
        inner: S,
        semaphore: Arc<Semaphore>,
        max: usize,
    ) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            semaphore,
            max,
            state: Acquire::Idle,
        }
    }

    /// The configured number of slots.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots free right now, across every service sharing this budget.
    pub fn available_permits(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Slots taken right now: requests in flight, plus services made ready but not yet called.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service (releasing a permit this service holds).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for ConcurrencyLimit<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.state.poll(&self.semaphore, cx));
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = self.state.take("ConcurrencyLimit");
        ResponseFuture::new(self.inner.call(request), permit)
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    /// A clone shares the budget but not a permit this service holds.
    fn clone(&self) -> Self {
        ConcurrencyLimit::with_semaphore(self.inner.clone(), self.semaphore.clone(), self.max)
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .field("available", &self.available_permits())
            .field("holds_permit", &self.state.holds_permit())
            .finish()
    }
}
