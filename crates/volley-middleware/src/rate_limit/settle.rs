//! Settling a grant with the usage the response reports.
//!
//! The usage is found by the request's [`Dialect`], whose scans parse no more than the usage
//! objects: [`Dialect::usage_in_body`] for a complete body, a [`UsageScanner`] fed every chunk
//! of a stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use volley_core::dialect::UsageScanner;
use volley_core::{BodyStream, Dialect, Error};

use super::{Grant, RateLimiter};

/// A streaming body that settles its grant with the last usage it carried, when it ends or is
/// dropped. The last, not the first: servers such as vLLM with `continuous_usage_stats` send
/// the cumulative usage in every chunk. If no usage went by (the request did not ask for it,
/// or the stream broke before it), or not the final output count, the grant is dropped and the
/// estimate stands. An OpenAI stream dropped before its end (`[DONE]`) may have carried only a
/// running count (`continuous_usage_stats`, the generation still going): that count is
/// charged when it passes the estimate, and refunds nothing when it does not.
pub(super) struct SettlingStream<L: RateLimiter> {
    inner: BodyStream,
    limiter: L,
    /// `None` once settled.
    grant: Option<Grant>,
    scanner: UsageScanner,
    dialect: Dialect,
    /// A chunk read ended the stream (its end-of-stream event); OpenAI's only.
    complete: bool,
}

impl<L: RateLimiter> SettlingStream<L> {
    pub(super) fn new(
        inner: BodyStream,
        limiter: L,
        grant: Grant,
        dialect: Dialect,
    ) -> SettlingStream<L> {
        SettlingStream {
            inner,
            limiter,
            grant: Some(grant),
            scanner: dialect.usage_scanner(),
            dialect,
            complete: false,
        }
    }

    /// `ended`: the body reached its end.
    fn settle(&mut self, ended: bool) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        // An Anthropic stream cut before its `message_delta` has only `message_start`'s output
        // of 1, while the provider counts all it generated: the estimate stands, as without
        // any usage.
        let Some(usage) = self
            .scanner
            .finish()
            .filter(|_| self.scanner.output_is_final())
        else {
            return;
        };
        if ended || self.complete || self.dialect == Dialect::Anthropic {
            self.limiter.settle_usage(grant, usage);
            return;
        }
        // A running count: charged where it passes the estimate, never refunded, bucket by
        // bucket (input and output limits hold their own estimates, a tokens limit the
        // total). The output makes up what the total lacks.
        let cost = grant.cost();
        let mut floor = usage;
        floor.input = usage.input.max(cost.input_tokens);
        floor.output = usage.output.max(cost.output_tokens);
        floor.output = floor
            .output
            .saturating_add(cost.tokens.saturating_sub(floor.total()));
        self.limiter.settle_usage(grant, floor);
    }
}

// Nothing in the stream is pinned structurally: the inner body is boxed, and the limiter and
// grant are plain values.
impl<L: RateLimiter> Unpin for SettlingStream<L> {}

impl<L: RateLimiter> Stream for SettlingStream<L> {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = ready!(Pin::new(&mut this.inner).poll_next(cx));
        match &item {
            Some(Ok(chunk)) if this.grant.is_some() => {
                this.scanner.feed(chunk);
                // OpenAI's alone (an Anthropic count is final by `message_delta`), and sticky:
                // a comment or keep-alive after the end does not undo it.
                if !this.complete && this.dialect == Dialect::OpenAi {
                    this.complete = this.dialect.stream_complete(chunk);
                }
            }
            Some(_) => {}
            None => this.settle(true),
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<L: RateLimiter> Drop for SettlingStream<L> {
    fn drop(&mut self) {
        // Dropped before its end (a caller that stops at `data: [DONE]`, or gives up): the
        // usage seen so far is the best account there is, though for an OpenAI stream cut
        // before `[DONE]` only as a floor.
        self.settle(false);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use volley_core::RequestId;

    use super::*;
    use crate::rate_limit::{Cost, Limits, LocalLimiter};

    /// The settling stream passes the chunks through.
    #[tokio::test]
    async fn chunks_pass_through() {
        let limiter = LocalLimiter::new(Limits::per_minute().requests(600)).unwrap();
        let cost = Cost {
            requests: 1,
            ..Cost::ZERO
        };
        let grant = limiter.acquire(RequestId::from_u64(1), cost).await.unwrap();
        let chunks = ["data: a\n\n", "data: b\n\n", "data: [DONE]\n\n"]
            .map(|c| Ok::<_, Error>(Bytes::from_static(c.as_bytes())));
        let inner = BodyStream::new(futures_util::stream::iter(chunks));
        let mut stream = SettlingStream::new(inner, limiter, grant, Dialect::OpenAi);
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, b"data: a\n\ndata: b\n\ndata: [DONE]\n\n");
    }
}
