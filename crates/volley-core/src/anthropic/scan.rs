//! Cheap looks inside Messages API responses, for middleware that must not parse them: the
//! usage of a body or a stream, whether a JSON document is an error, whether a stream ended.
//!
//! As in the OpenAI scans, `memchr` finds the `"usage"` key and only the object after it is
//! read (by hand for the plain shape, by serde for anything else); a key inside a JSON string
//! is escaped and cannot match.

use serde::Deserialize;

use crate::usage_counts::{Counts, Found, MAX_KEYS};
use crate::usage_scan::{
    LineBuffer, MAX_READS, MAX_TRIES, USAGE_KEY, last_in_body, object_after, object_at,
};

/// The counts of an Anthropic `usage` object. In a stream each count is cumulative and a
/// later object may leave some out, so every count is optional and the scanner merges them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct UsageCounts {
    /// `input_tokens`: input neither read from nor written to the prompt cache.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// `cache_creation_input_tokens`: input written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// `cache_read_input_tokens`: input read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    /// `output_tokens`: output, thinking included.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

impl Counts for UsageCounts {
    const KEYS: &'static [&'static [u8]] = &[
        b"input_tokens",
        b"cache_creation_input_tokens",
        b"cache_read_input_tokens",
        b"output_tokens",
    ];

    fn from_found(found: &[Found; MAX_KEYS]) -> Option<UsageCounts> {
        // Left out and `null` are both `None`.
        let count = |found: Found| match found {
            Found::Count(n) => Some(n),
            Found::Absent | Found::Null => None,
        };
        Some(UsageCounts {
            input_tokens: count(found[0]),
            cache_creation_input_tokens: count(found[1]),
            cache_read_input_tokens: count(found[2]),
            output_tokens: count(found[3]),
        })
    }
}

impl UsageCounts {
    /// `self` with every count `later` has replaced by it (stream counts are cumulative).
    fn merged(self, later: UsageCounts) -> UsageCounts {
        UsageCounts {
            input_tokens: later.input_tokens.or(self.input_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            output_tokens: later.output_tokens.or(self.output_tokens),
        }
    }
}

/// The last complete `usage` object of a complete Message body.
///
/// ```
/// use volley_core::anthropic::usage_in_body;
///
/// let body = br#"{"id":"msg_1","content":[],"usage":{"input_tokens":20,"output_tokens":7}}"#;
/// assert_eq!(usage_in_body(body).and_then(|u| u.output_tokens), Some(7));
/// ```
pub fn usage_in_body(body: &[u8]) -> Option<UsageCounts> {
    last_in_body(body, object_at::<UsageCounts>)
}

/// Scans a Messages event stream, chunk by chunk, for its usage: the input counts of
/// `message_start` merged with the cumulative counts of every `message_delta`.
///
/// ```
/// use volley_core::anthropic::UsageScanner;
///
/// let mut scanner = UsageScanner::new();
/// scanner.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
/// assert!(!scanner.output_is_final(), "message_start's output is a placeholder");
/// scanner.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tok");
/// scanner.feed(b"ens\":15}}\n\n");
/// let usage = scanner.finish().unwrap();
/// assert_eq!((usage.input_tokens, usage.output_tokens), (Some(25), Some(15)));
/// assert!(scanner.output_is_final());
/// ```
#[derive(Debug, Default, Clone)]
pub struct UsageScanner {
    lines: LineBuffer,
    merged: Option<UsageCounts>,
    /// Whether a `message_delta` event's usage went by: its `output_tokens` is the count.
    final_output: bool,
}

impl UsageScanner {
    /// A scanner that has seen nothing.
    pub fn new() -> UsageScanner {
        UsageScanner::default()
    }

    /// Scans the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let (merged, last) = (&mut self.merged, &mut self.final_output);
        self.lines
            .feed(chunk, |lines| merge_usages_in(lines, merged, last));
    }

    /// The usage merged from the complete lines so far.
    pub fn last(&self) -> Option<UsageCounts> {
        self.merged
    }

    /// The usage of a stream that has ended, its unterminated last line included.
    pub fn finish(&mut self) -> Option<UsageCounts> {
        let (merged, last) = (&mut self.merged, &mut self.final_output);
        self.lines
            .finish(|line| merge_usages_in(line, merged, last));
        self.merged
    }

    /// Whether the output count is final: a `message_delta` event's usage went by. Before it,
    /// only `message_start`'s placeholder (an output of 1) is known, while the provider counts
    /// every token it generated before a stream is cut.
    pub fn output_is_final(&self) -> bool {
        self.final_output
    }
}

/// Merges every usage object of complete lines into `merged`, in order; notes in
/// `final_output` one on a `message_delta` event's line.
fn merge_usages_in(lines: &[u8], merged: &mut Option<UsageCounts>, final_output: &mut bool) {
    let mut from = 0;
    // Each object read is bounded; so is their number: `MAX_TRIES` that are no usage, and
    // `MAX_READS` usages (a chunk has one or two; a server repeating cumulative usage in
    // every event, more), so the last of a chunk's usages is still read.
    let (mut failed, mut read) = (0, 0);
    while let Some(found) = USAGE_KEY.find(&lines[from..]) {
        let at = from + found;
        if object_after(lines, at).is_some() && (failed >= MAX_TRIES || read >= MAX_READS) {
            return;
        }
        let usage = object_at::<UsageCounts>(lines, at);
        match usage {
            Some(_) => read += 1,
            None if object_after(lines, at).is_some() => failed += 1,
            None => {}
        }
        if let Some(usage) = usage {
            *merged = Some(merged.unwrap_or_default().merged(usage));
            let start = memchr::memrchr(b'\n', &lines[..at]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &lines[at..]).map_or(lines.len(), |i| at + i);
            if memchr::memmem::find(&lines[start..end], b"\"message_delta\"").is_some() {
                *final_output = true;
            }
        }
        from = at + 1;
    }
}

/// Whether a JSON document (a body, or one event's data) is a Messages API error:
/// an object whose first key is `"type"` with the value `"error"`. Leading white space is
/// allowed; only the first key is looked at.
///
/// ```
/// use volley_core::anthropic::looks_like_error;
///
/// assert!(looks_like_error(br#"{"type":"error","error":{"type":"overloaded_error"}}"#));
/// assert!(!looks_like_error(br#"{"type":"message","content":[]}"#));
/// ```
pub fn looks_like_error(json: &[u8]) -> bool {
    json.trim_ascii_start()
        .strip_prefix(b"{")
        .map(<[u8]>::trim_ascii_start)
        .and_then(|rest| rest.strip_prefix(b"\"type\""))
        .map(<[u8]>::trim_ascii_start)
        .and_then(|rest| rest.strip_prefix(b":"))
        .is_some_and(|value| value.trim_ascii_start().starts_with(b"\"error\""))
}

/// Whether the last event of an event stream (the body so far, or its tail) is
/// `message_stop`: its last `data:` line is `{"type":"message_stop"}` (white space allowed).
/// A stream that stops without it ended early.
///
/// ```
/// use volley_core::anthropic::ends_with_message_stop;
///
/// assert!(ends_with_message_stop(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
/// assert!(!ends_with_message_stop(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"));
/// ```
pub fn ends_with_message_stop(body: &[u8]) -> bool {
    let body = body.trim_ascii_end();
    // The last line, whichever of LF, CR or CRLF ends the one before it.
    let start = memchr::memrchr2(b'\n', b'\r', body).map_or(0, |i| i + 1);
    let Some(data) = body[start..].strip_prefix(b"data:") else {
        return false;
    };
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    compact == br#"{"type":"message_stop"}"#
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"say \\\"usage\\\":{\\\"output_tokens\\\":99}\"}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> UsageCounts {
        UsageCounts {
            input_tokens: Some(25),
            cache_creation_input_tokens: None,
            cache_read_input_tokens: Some(100),
            output_tokens: Some(15),
        }
    }

    #[test]
    fn bodies() {
        let body = br#"{"content":[{"type":"text","text":"\"usage\":{}"}],"usage":{"input_tokens":3,"output_tokens":4,"server_tool_use":{"web_search_requests":0}}}"#;
        let usage = usage_in_body(body).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (Some(3), Some(4))
        );
        assert_eq!(usage_in_body(br#"{"usage":null}"#), None);
        assert_eq!(usage_in_body(b"nope"), None);
    }

    #[test]
    fn input_from_start_output_from_the_last_delta() {
        let mut scanner = UsageScanner::new();
        scanner.feed(STREAM.as_bytes());
        assert_eq!(scanner.finish(), Some(expected()));
        assert!(ends_with_message_stop(STREAM.as_bytes()));
    }

    /// A chunk holding many usage-bearing events (cumulative usage repeated in each): the
    /// last is still read, past the bound on objects that are no usage.
    #[test]
    fn the_last_of_many_usages_in_a_chunk_counts() {
        let mut chunk = String::new();
        for n in 1..=40 {
            chunk += &format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{}},\"usage\":{{\"output_tokens\":{n}}}}}\n\n"
            );
        }
        let mut scanner = UsageScanner::new();
        scanner.feed(chunk.as_bytes());
        assert_eq!(scanner.finish().unwrap().output_tokens, Some(40));
        assert!(scanner.output_is_final());
    }

    #[test]
    fn errors_and_ends() {
        assert!(looks_like_error(b" { \"type\" : \"error\", \"error\": {}}"));
        assert!(!looks_like_error(br#"{"error":{},"type":"error"}"#));
        assert!(!looks_like_error(b""));
        assert!(ends_with_message_stop(
            b"data: { \"type\": \"message_stop\" }"
        ));
        assert!(!ends_with_message_stop(
            b"data: {\"type\":\"message_stop\"}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n"
        ));
        assert!(!ends_with_message_stop(b""));
        // Lines may end with a lone CR, as the event-stream format allows.
        assert!(ends_with_message_stop(
            b"event: message_stop\rdata: {\"type\":\"message_stop\"}\r\r"
        ));
        let cr = STREAM.replace('\n', "\r");
        assert!(ends_with_message_stop(cr.as_bytes()));
        let mut scanner = UsageScanner::new();
        scanner.feed(cr.as_bytes());
        assert_eq!(
            scanner.finish(),
            Some(expected()),
            "the usage of a CR stream"
        );
    }

    proptest! {
        #[test]
        fn any_split_finds_the_usage(cuts in prop::collection::vec(0usize..STREAM.len(), 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut scanner = UsageScanner::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([bytes.len()]) {
                scanner.feed(&bytes[start..end]);
                start = end;
            }
            prop_assert_eq!(scanner.finish(), Some(expected()));
        }
    }
}
