//! A streaming body that holds a concurrency permit (or any guard: the balancer's count of a
//! stream in flight) until it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::OwnedSemaphorePermit;
use volley_core::{BodyStream, Error};

/// Releases its permit when the stream returns `None` or an error, or when it is dropped,
/// whichever comes first.
pub(crate) struct PermitStream<P = OwnedSemaphorePermit> {
    inner: BodyStream,
    permit: Option<P>,
}

impl<P> PermitStream<P> {
    pub(crate) fn new(inner: BodyStream, permit: P) -> PermitStream<P> {
        PermitStream {
            inner,
            permit: Some(permit),
        }
    }
}

impl<P: Unpin> Stream for PermitStream<P> {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(Pin::new(&mut self.inner).poll_next(cx));
        // An error ends a body stream as surely as `None`: nothing more will be read from the
        // connection for this request, so the slot is free.
        if !matches!(item, Some(Ok(_))) {
            self.permit = None;
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
