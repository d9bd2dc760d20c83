//! [`AdaptiveConcurrencyLimit`]: takes a permit in `poll_ready`, reports each outcome.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tower_service::Service;
use volley_core::{Error, Request, Response};

use super::ResponseFuture;
use super::shared::{Permit, Shared};
use crate::limit::acquire::Acquire;

/// Lets at most the current adaptive limit of requests be in flight, and moves the limit
/// with what the answers say. See the [module docs](super).
///
/// Clones share the limit; each clone waits for its own permit.
pub struct AdaptiveConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    state: Acquire,
}

impl<S> AdaptiveConcurrencyLimit<S> {
    pub(super) fn with_shared(inner: S, shared: Arc<Shared>) -> AdaptiveConcurrencyLimit<S> {
        AdaptiveConcurrencyLimit {
            inner,
            shared,
            state: Acquire::Idle,
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now, across every service sharing this limit.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
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

impl<S> Service<Request> for AdaptiveConcurrencyLimit<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.state.poll(&self.shared.semaphore, cx));
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = self.state.take("AdaptiveConcurrencyLimit");
        let permit = Permit::new(permit, self.shared.clone());
        ResponseFuture::new(self.inner.call(request), permit, self.shared.clone())
    }
}

impl<S: Clone> Clone for AdaptiveConcurrencyLimit<S> {
    /// A clone shares the limit but not a permit this service holds.
    fn clone(&self) -> Self {
        AdaptiveConcurrencyLimit::with_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for AdaptiveConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLimit")
            .field("inner", &self.inner)
            .field("limit", &self.limit())
            .field("max", &self.shared.max)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}
