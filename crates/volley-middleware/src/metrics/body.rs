//! The stream wrapper that records a streaming response's first chunk, usage and outcome.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use volley_core::{BodyStream, Error};

use super::handles::Tracker;
use super::usage;

/// Passes a stream through; the call it belongs to is finished when the stream ends, fails or
/// is dropped (`cancelled`).
pub(crate) struct MetricsBody {
    inner: BodyStream,
    tracker: Tracker,
}

impl MetricsBody {
    pub(crate) fn new(inner: BodyStream, tracker: Tracker) -> MetricsBody {
        MetricsBody { inner, tracker }
    }
}

impl Stream for MetricsBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.tracker.span().clone().entered();
        let item = std::task::ready!(Pin::new(&mut this.inner).poll_next(cx));
        match &item {
            Some(Ok(chunk)) if !chunk.is_empty() => {
                this.tracker.first_byte_now();
                // The usage chunk comes last; a usage object split across two network reads
                // is missed (nothing is counted rather than something wrong).
                if let Some((prompt, completion)) = usage::find(chunk) {
                    this.tracker.tokens(prompt, completion);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => this.tracker.finish(Some(e.kind())),
            None => this.tracker.finish(None),
        }
        Poll::Ready(item)
    }
}
