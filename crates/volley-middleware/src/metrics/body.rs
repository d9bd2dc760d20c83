//! The stream wrapper that records a streaming response's first chunk, usage and outcome.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use volley_core::dialect::UsageScanner;
use volley_core::{BodyStream, Dialect, Error, ErrorKind};

use super::handles::Tracker;

/// How much of the stream's end is kept to recognise the end-of-stream event when the stream
/// is dropped: `data: [DONE]` or `data: {"type":"message_stop"}`, with room for white space
/// and `\r\n\r\n`.
const TAIL: usize = 48;

/// Passes a stream through; the call it belongs to is finished when the stream ends, fails or
/// is dropped. Dropped right after its `data: [DONE]` event (callers stop reading there, before
/// the body's end is polled), the call was a success; dropped earlier, it was `cancelled`. A
/// stream that carried an error event (a 200 whose stream then failed) is that error's kind,
/// however it ends.
pub(crate) struct MetricsBody {
    inner: BodyStream,
    tracker: Tracker,
    /// Finds the usage; the last one seen is counted once, when the call finishes.
    usage: Option<UsageScanner>,
    tail: Tail,
    dialect: Dialect,
    /// The kind of the first error event the stream carried.
    failed: Option<ErrorKind>,
    /// Whether the next chunk starts a line (the stream's start, or the last chunk ended
    /// one): a chunk that starts inside a line is looked at from its first line end on.
    line_start: bool,
}

impl MetricsBody {
    /// `count_tokens`: whether the usage the stream carries is counted (the request scope's,
    /// and not the cache's replay).
    pub(crate) fn new(
        inner: BodyStream,
        tracker: Tracker,
        dialect: Dialect,
        count_tokens: bool,
    ) -> MetricsBody {
        let usage = count_tokens.then(|| dialect.usage_scanner());
        MetricsBody {
            inner,
            tracker,
            usage,
            tail: Tail::default(),
            dialect,
            failed: None,
            line_start: true,
        }
    }

    /// Notes the first error event of `chunk`: an `error` event, or data that is an error
    /// object (vLLM's and OpenRouter's mid-stream errors). A chunk that never says `error`
    /// costs one SIMD search; an event split across chunks is not seen (servers flush an
    /// error event whole). The part of a line that began in an earlier chunk is skipped: the
    /// end of an answer's text that says `error: ..` is no llama.cpp error line.
    fn look_for_error(&mut self, chunk: &[u8]) {
        let line_start = std::mem::replace(
            &mut self.line_start,
            chunk.last().is_some_and(|&b| b == b'\n' || b == b'\r'),
        );
        if self.failed.is_some() {
            return;
        }
        let lines = if line_start {
            chunk
        } else {
            match memchr::memchr2(b'\n', b'\r', chunk) {
                Some(end) => &chunk[end + 1..],
                None => return,
            }
        };
        if let Some(error) = self.dialect.error_at_stream_start(lines, "stream") {
            self.failed = Some(error.kind());
        }
    }

    /// Counts the last usage seen (cumulative when a server repeats it in every chunk), once.
    fn count_tokens(&mut self) {
        if let Some(usage) = self.usage.take().and_then(|mut scanner| scanner.finish()) {
            self.tracker
                .tokens(usage.input.saturating_add(usage.cache_read), usage.output);
        }
    }
}

/// The last bytes of a stream, up to [`TAIL`]; copied from each chunk, never allocated.
struct Tail {
    /// Right-aligned: the bytes are `bytes[TAIL - len..]`.
    bytes: [u8; TAIL],
    len: usize,
}

// By hand: `Default` is derived for arrays of at most 32 elements.
impl Default for Tail {
    fn default() -> Tail {
        Tail {
            bytes: [0; TAIL],
            len: 0,
        }
    }
}

impl Tail {
    fn keep(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL {
            self.bytes.copy_from_slice(&chunk[chunk.len() - TAIL..]);
        } else {
            self.bytes.copy_within(chunk.len().., 0);
            self.bytes[TAIL - chunk.len()..].copy_from_slice(chunk);
        }
        self.len = (self.len + chunk.len()).min(TAIL);
    }

    fn get(&self) -> &[u8] {
        &self.bytes[TAIL - self.len..]
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
                if let Some(scanner) = &mut this.usage {
                    scanner.feed(chunk);
                }
                this.look_for_error(chunk);
                this.tail.keep(chunk);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                this.count_tokens();
                this.tracker.finish(Some(this.failed.unwrap_or(e.kind())));
            }
            None => {
                this.count_tokens();
                this.tracker.finish(this.failed);
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for MetricsBody {
    fn drop(&mut self) {
        // After an error or the end this is a no-op: the tokens were counted and the tracker
        // ignores a second outcome.
        self.count_tokens();
        if self.failed.is_some() {
            // The caller stopped at the error event (as `ChatStream` does).
            self.tracker.finish(self.failed);
        } else if self.dialect.stream_complete(self.tail.get()) {
            self.tracker.finish(None);
        }
        // Otherwise the tracker's own drop records `cancelled`.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_in_order() {
        let mut tail = Tail::default();
        assert_eq!(tail.get(), b"");
        tail.keep(b"ab");
        tail.keep(b"cd");
        assert_eq!(tail.get(), b"abcd");
        let long: Vec<u8> = (0..TAIL as u8 + 8).collect();
        tail.keep(&long);
        assert_eq!(tail.get(), &long[8..]);
        tail.keep(b"xyz");
        assert_eq!(&tail.get()[..TAIL - 3], &long[11..]);
        assert_eq!(&tail.get()[TAIL - 3..], b"xyz");
    }
}
