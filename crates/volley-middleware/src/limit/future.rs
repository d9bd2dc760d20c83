//! [`ResponseFuture`]: moves the permit into a streaming body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use volley_core::{Error, Response};

use super::body::PermitStream;

pin_project! {
    /// The future of [`ConcurrencyLimit`](super::ConcurrencyLimit). It holds the request's
    /// permit; a complete response releases it, a streaming response carries it in its body.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, permit: OwnedSemaphorePermit) -> ResponseFuture<F> {
        ResponseFuture {
            inner,
            permit: Some(permit),
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
        let permit = this.permit.take();
        // A complete body: the work is done, and dropping `permit` as this closure returns
        // frees the slot. A stream takes the permit along until it ends or is dropped.
        Poll::Ready(result.map(|response| match permit {
            Some(permit) => {
                response.map_stream(|stream| stream.wrap(|s| PermitStream::new(s, permit)))
            }
            None => response,
        }))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
