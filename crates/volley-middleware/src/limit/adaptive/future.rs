//! [`ResponseFuture`]: reports the outcome to the control law and moves the permit into a
//! streaming body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use volley_core::{BodyStream, Error, ErrorKind, Response};

use super::controller::Outcome;
use super::shared::{Permit, Shared};
use crate::limit::body::PermitStream;

pin_project! {
    /// The future of [`AdaptiveConcurrencyLimit`](super::AdaptiveConcurrencyLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
        shared: Arc<Shared>,
        sent: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, permit: Permit, shared: Arc<Shared>) -> ResponseFuture<F> {
        ResponseFuture {
            inner,
            permit: Some(permit),
            shared,
            sent: Instant::now(),
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Error>>,
{
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let outcome = match &result {
            Ok(_) => Outcome::Success(this.sent.elapsed()),
            Err(error) if is_overload(error) => Outcome::Overload,
            Err(_) => Outcome::Ignored,
        };
        this.shared.record(*this.sent, outcome);
        let permit = this.permit.take();
        Poll::Ready(result.map(|response| match permit {
            Some(permit) => {
                response.map_stream(|stream| BodyStream::new(PermitStream::new(stream, permit)))
            }
            None => response,
        }))
    }
}

/// Whether an error says the server has more than it can take: 429, 503, 529, a connection
/// that could not be made, a timeout.
pub(super) fn is_overload(error: &Error) -> bool {
    // A used-up quota or a request above a whole per-minute limit (429s no wait heals) say
    // nothing of the server's load: sending less would not help.
    if error.no_wait_helps() {
        return false;
    }
    error.is_rate_limited()
        || error.is_timeout()
        || error.kind() == ErrorKind::Connect
        || error.status().is_some_and(|s| {
            s == StatusCode::SERVICE_UNAVAILABLE
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.as_u16() == 529
        })
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
