//! [`ResponseFuture`]: the inner call raced against the first-byte and attempt deadlines.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use volley_core::{BodyStream, Error, RequestId, Response};

use super::body::TimeoutBody;
use super::deadline::{FirstChunk, deadline};
use super::layer::Limits;

pin_project! {
    /// The future of [`Timeout`](super::Timeout): the inner future, raced against the
    /// time-to-first-byte and whole-attempt deadlines. A streaming response comes out with its
    /// body wrapped, so the first-chunk, idle and whole-stream deadlines apply while it is read.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // One timer, at the earlier of the two deadlines: before the head arrives both run
        // from the call, so whichever is due first is the one that ends the attempt.
        #[pin]
        timer: Option<Sleep>,
        due: Option<FirstChunk>,
        id: RequestId,
        limits: Limits,
        start: Option<Instant>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        id: RequestId,
        limits: Limits,
        start: Option<Instant>,
    ) -> ResponseFuture<F> {
        let due = FirstChunk::earliest(&limits);
        let timer = start
            .zip(due)
            .map(|(start, due)| sleep_until(deadline(start, due.limit())));
        ResponseFuture {
            inner,
            timer,
            due,
            id,
            limits,
            start,
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
        // A response that is ready wins over a deadline that passed at the same time.
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let response = result?;
            return Poll::Ready(Ok(match (*this.start, response.is_stream()) {
                (Some(start), true) => wrap_stream(response, *this.id, this.limits, start),
                _ => response,
            }));
        }
        if let (Some(sleep), Some(due)) = (this.timer.as_pin_mut(), *this.due) {
            ready!(sleep.poll(cx));
            return Poll::Ready(Err(due.error(*this.id)));
        }
        Poll::Pending
    }
}

/// Moves the deadlines that outlive the head into the body of a streaming response.
fn wrap_stream(response: Response, id: RequestId, limits: &Limits, start: Instant) -> Response {
    response.map_stream(|stream| wrap_body(stream, id, limits, start))
}

fn wrap_body(stream: BodyStream, id: RequestId, limits: &Limits, start: Instant) -> BodyStream {
    // The first chunk is due by the earlier of the two deadlines; on a tie the more precise
    // first-byte error is reported.
    let first_chunk = FirstChunk::earliest(limits).map(|due| (deadline(start, due.limit()), due));
    let total = limits
        .stream_total
        .map(|limit| (deadline(start, limit), limit));
    stream.wrap(|s| TimeoutBody::new(s, id, first_chunk, limits.idle, total))
}
