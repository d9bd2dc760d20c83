//! [`ResponseFuture`]: the inner call, measured.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use volley_core::{Body, Dialect, Error, Response};

use super::body::MetricsBody;
use super::handles::Tracker;

pin_project! {
    /// The future of [`Metrics`](super::Metrics). A streaming response comes out with its body
    /// wrapped, so the call is measured to the end of the stream.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tracker: Option<Tracker>,
        dialect: Dialect,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, tracker: Tracker, dialect: Dialect) -> ResponseFuture<F> {
        ResponseFuture {
            inner,
            tracker: Some(tracker),
            dialect,
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
        let result = match this.tracker {
            Some(tracker) => {
                let _entered = tracker.span().enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        // Polled after completion: nothing more to record.
        let Some(mut tracker) = this.tracker.take() else {
            return Poll::Ready(result);
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                tracker.finish(Some(e.kind()));
                return Poll::Ready(Err(e));
            }
        };
        if !response.is_stream() {
            // The transport timed the head; a cached answer's timings are all "now".
            let timings = *response.timings();
            match timings.first_byte {
                Some(at) => tracker.first_byte(at.saturating_duration_since(tracker.started())),
                None => tracker.first_byte_now(),
            }
            // The usage is scanned once per response: the caller and the other layers get
            // the same scan.
            if response.status().is_success()
                && tracker.counts_tokens()
                && !(tracker.sees_replays() && is_replay(&response))
                && let Some(usage) = response.usage(*this.dialect)
            {
                tracker.tokens(usage.input.saturating_add(usage.cache_read), usage.output);
            }
            // A 2xx whose body is an error object (gateways answer so) failed; its kind is
            // the one the facade gives it.
            let error = match response.body() {
                Body::Full(bytes) if response.is_error_reply(*this.dialect) => {
                    Some(this.dialect.error_in_answer(bytes, "answer").kind())
                }
                _ => None,
            };
            // The body is complete: it ended when the transport read its last byte, so the
            // clock need not be read again.
            tracker.finish_at(error, timings.done);
            return Poll::Ready(Ok(response));
        }
        let dialect = *this.dialect;
        let count_tokens =
            tracker.counts_tokens() && !(tracker.sees_replays() && is_replay(&response));
        Poll::Ready(Ok(response.map_stream(|stream| {
            stream.wrap(|s| MetricsBody::new(s, tracker, dialect, count_tokens))
        })))
    }
}

/// Whether `response` is the cache's replay of an earlier answer (`x-volley-cache: hit`; the
/// cache layer removes a server's own header of that name, so this is asked only with a cache
/// inside): its usage was billed once, when the answer first came, and is not counted again.
fn is_replay(response: &Response) -> bool {
    response
        .headers()
        .get(crate::cache::CACHE_STATUS_HEADER)
        .is_some_and(|v| v == "hit")
}
