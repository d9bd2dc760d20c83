//! A hyper body as a stream of `Bytes` chunks with Volley errors.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::Body as HttpBody;
use volley_core::{BoxError, Error, RequestId};

pin_project_lite::pin_project! {
    /// Yields the data frames of a response body, skipping trailers.
    pub(crate) struct HyperBodyStream<B> {
        #[pin]
        body: B,
        id: RequestId,
        base: std::sync::Arc<str>,
        done: bool,
    }
}

impl<B> HyperBodyStream<B> {
    pub(crate) fn new(body: B, id: RequestId, base: std::sync::Arc<str>) -> HyperBodyStream<B> {
        HyperBodyStream {
            body,
            id,
            base,
            done: false,
        }
    }
}

impl<B> Stream for HyperBodyStream<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    let context = format!("request {} stream from {}", this.id, this.base);
                    return Poll::Ready(Some(Err(crate::error::from_body(e, &context))));
                }
            }
        }
    }
}
