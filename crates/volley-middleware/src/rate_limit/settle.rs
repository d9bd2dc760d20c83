//! Finding the reported usage in a response, cheaply, to settle a grant with it.
//!
//! Neither path parses the whole response: `memmem` finds the `"usage"` key (SIMD, a few GB/s),
//! and serde reads only the object after it. A key inside a JSON string is escaped (`\"usage\"`)
//! and cannot match; a value `"usage"` is not followed by `:` and is skipped.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;
use volley_core::openai::Usage;
use volley_core::{BodyStream, Error};

use super::{Grant, RateLimiter};

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static USAGE_KEY_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// A partial line longer than this is not a usage line (those are a few hundred bytes): stop
/// buffering it.
const MAX_LINE: usize = 16 * 1024;

/// The total tokens a complete JSON body reports, if it has a `usage` object. The last match
/// wins: OpenAI puts `usage` after the choices, which may quote anything.
pub(super) fn usage_in_body(body: &[u8]) -> Option<u64> {
    let mut end = body.len();
    while let Some(at) = USAGE_KEY_REV.rfind(&body[..end]) {
        if let Some(total) = usage_at(body, at) {
            return Some(total);
        }
        end = at;
    }
    None
}

/// Reads the usage object after the `"usage"` key at `at`; `None` when the value is `null` or
/// not a usage object.
fn usage_at(bytes: &[u8], at: usize) -> Option<u64> {
    let rest = &bytes[at + b"\"usage\"".len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    if !rest.starts_with(b"{") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    // Only the object is read; whatever follows it is never looked at.
    let usage = Usage::deserialize(&mut de).ok()?;
    // Some compatible servers leave out `total_tokens`.
    Some(
        usage
            .total_tokens
            .max(usage.prompt_tokens + usage.completion_tokens),
    )
}

/// Scans a server-sent-events body line by line for a chunk with a usage object (the last
/// chunk, when the request asked for `stream_options.include_usage`).
#[derive(Default)]
pub(super) struct UsageScanner {
    /// The unfinished last line of the chunks so far (usually empty: servers flush whole
    /// events).
    partial: Vec<u8>,
    /// The unfinished line grew past [`MAX_LINE`]; skip to its end.
    skipping: bool,
}

impl UsageScanner {
    /// Feeds the next chunk; returns the total tokens once a usage object is complete.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Option<u64> {
        let mut rest = chunk;
        if !self.partial.is_empty() || self.skipping {
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                self.buffer(rest);
                return None;
            };
            let (head, tail) = rest.split_at(newline + 1);
            rest = tail;
            let found = if self.skipping {
                None
            } else {
                self.partial.extend_from_slice(head);
                usage_in_lines(&self.partial)
            };
            self.partial.clear();
            self.skipping = false;
            if found.is_some() {
                return found;
            }
        }
        let complete = memchr::memrchr(b'\n', rest).map_or(0, |i| i + 1);
        let found = usage_in_lines(&rest[..complete]);
        if found.is_none() {
            self.buffer(&rest[complete..]);
        }
        found
    }

    fn buffer(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.partial = Vec::new();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

/// The first usage object in complete lines.
fn usage_in_lines(lines: &[u8]) -> Option<u64> {
    USAGE_KEY
        .find_iter(lines)
        .find_map(|at| usage_at(lines, at))
}

/// A streaming body that settles its grant when the usage chunk goes by. If the stream ends
/// without one (the request did not ask for it, or the stream broke), the grant is dropped
/// and the estimate stands.
pub(super) struct SettlingStream<L: RateLimiter> {
    inner: BodyStream,
    limiter: L,
    grant: Option<Grant>,
    scanner: UsageScanner,
}

impl<L: RateLimiter> SettlingStream<L> {
    pub(super) fn new(inner: BodyStream, limiter: L, grant: Grant) -> SettlingStream<L> {
        SettlingStream {
            inner,
            limiter,
            grant: Some(grant),
            scanner: UsageScanner::default(),
        }
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
        if let Some(Ok(chunk)) = &item
            && this.grant.is_some()
            && let Some(total) = this.scanner.feed(chunk)
            && let Some(grant) = this.grant.take()
        {
            this.limiter.settle(grant, total);
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"say \\\"usage\\\":{\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5,",
        "\"total_tokens\":14,\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn full_bodies() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"\"usage\": {\"total_tokens\": 1}"}}],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}"#;
        assert_eq!(usage_in_body(body), Some(27));
        let spaced = br#"{"usage" : { "prompt_tokens": 3, "completion_tokens": 4 }, "x": 1}"#;
        assert_eq!(usage_in_body(spaced), Some(7), "total left out");
        assert_eq!(usage_in_body(br#"{"usage":null}"#), None);
        assert_eq!(usage_in_body(br#"{"kind":"usage"}"#), None);
        assert_eq!(usage_in_body(br#"{"usage":{"total_tokens":-1}}"#), None);
        assert_eq!(usage_in_body(b""), None);
        assert_eq!(usage_in_body(br#"{"usage":{"total_tokens":5"#), None, "cut");
    }

    #[test]
    fn stream_in_one_chunk() {
        assert_eq!(UsageScanner::default().feed(STREAM.as_bytes()), Some(14));
        let none = "data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n";
        assert_eq!(UsageScanner::default().feed(none.as_bytes()), None);
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let mut scanner = UsageScanner::default();
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(scanner.feed(b"data: {\"a\":\""), None);
        assert_eq!(scanner.feed(&long), None);
        assert!(scanner.partial.is_empty() && scanner.skipping);
        assert_eq!(
            scanner.feed(b"\"}\ndata: {\"usage\":{\"total_tokens\":3}}\n"),
            Some(3)
        );
    }

    proptest! {
        #[test]
        fn any_split_finds_the_usage(cuts in prop::collection::vec(0usize..STREAM.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut scanner = UsageScanner::default();
            let mut found = None;
            let mut start = 0;
            for end in cuts.into_iter().chain([bytes.len()]) {
                if let Some(total) = scanner.feed(&bytes[start..end]) {
                    prop_assert!(found.is_none(), "found twice");
                    found = Some(total);
                }
                start = end;
            }
            prop_assert_eq!(found, Some(14));
        }
    }
}
