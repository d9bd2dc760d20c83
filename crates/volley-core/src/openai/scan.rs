//! Cheap looks inside OpenAI-dialect responses, for middleware that must not parse them:
//! where the usage is, whether a body is an error object, whether a stream was finished.
//!
//! None of these parse a whole body. `memchr` finds the `"usage"` key (SIMD, a few GB/s) and
//! only the object after it is read, skipping every field but the three counts: by hand for
//! the plain shape providers send, by serde for anything else. A scan allocates nothing; the
//! stream scanner keeps a buffer only for a line split across chunks.
//! A key inside a JSON string is escaped (`\"usage\"`) and cannot match; a value `"usage"` is
//! not followed by `:` and is skipped.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;

use crate::usage_counts::{Counts, Found, MAX_KEYS};
use crate::usage_scan::{LineBuffer, USAGE_KEY, last_in_body, object_at};

/// The token counts of a `usage` object; every other field of it is skipped unread.
///
/// Counts a server leaves out are 0 (embeddings have no `completion_tokens`, some compatible
/// servers omit `total_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "NamedCounts")]
#[non_exhaustive]
pub struct UsageCounts {
    /// Tokens in the prompt (input): `prompt_tokens`, or the Responses API's `input_tokens`.
    pub prompt_tokens: u64,
    /// Tokens generated (output): `completion_tokens`, or the Responses API's
    /// `output_tokens`.
    pub completion_tokens: u64,
    /// Prompt plus completion tokens, as the server reported it (0 when left out).
    pub total_tokens: u64,
}

/// The counts under every name they go by: Chat Completions' and the Responses API's
/// (`input_tokens`, `output_tokens`). A server that sends both names has the larger of each
/// pair taken.
#[derive(Deserialize)]
struct NamedCounts {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    // `null` under a Responses name beside Chat Completions' counts is no count: 0.
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl From<NamedCounts> for UsageCounts {
    fn from(n: NamedCounts) -> UsageCounts {
        UsageCounts {
            prompt_tokens: n.prompt_tokens.max(n.input_tokens.unwrap_or(0)),
            completion_tokens: n.completion_tokens.max(n.output_tokens.unwrap_or(0)),
            total_tokens: n.total_tokens,
        }
    }
}

impl Counts for UsageCounts {
    const KEYS: &'static [&'static [u8]] = &[
        b"prompt_tokens",
        b"completion_tokens",
        b"total_tokens",
        b"input_tokens",
        b"output_tokens",
    ];

    fn from_found(found: &[Found; MAX_KEYS]) -> Option<UsageCounts> {
        // A count left out is 0. A `null` one is no count (serde refuses the object): a rate
        // limiter keeps its estimate rather than refund it for an output of "0".
        let count = |found: Found| match found {
            Found::Absent => Some(0),
            Found::Count(n) => Some(n),
            Found::Null => None,
        };
        Some(UsageCounts::from(NamedCounts {
            prompt_tokens: count(found[0])?,
            completion_tokens: count(found[1])?,
            total_tokens: count(found[2])?,
            // As serde reads them: `null` is none.
            input_tokens: match found[3] {
                Found::Count(n) => Some(n),
                Found::Absent | Found::Null => None,
            },
            output_tokens: match found[4] {
                Found::Count(n) => Some(n),
                Found::Absent | Found::Null => None,
            },
        }))
    }
}

impl UsageCounts {
    /// The tokens the request used: `total_tokens`, or the sum of the other two when that is
    /// larger (a server that left the total out). Saturates instead of overflowing: these are
    /// a peer's numbers.
    pub fn total(&self) -> u64 {
        self.total_tokens
            .max(self.prompt_tokens.saturating_add(self.completion_tokens))
    }
}

/// The last complete `usage` object in a complete JSON body (a chat completion, an embeddings
/// response), if there is one.
///
/// The last key `"usage"` of the body is the one read (OpenAI puts it last, after choices
/// that may quote anything), and only the object after it is parsed; a match whose value is
/// `null`, not an object, or cut short is passed over for the one before it.
///
/// ```
/// use volley_core::openai::usage_in_body;
///
/// let body = br#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}"#;
/// assert_eq!(usage_in_body(body).map(|u| u.total()), Some(27));
/// assert_eq!(usage_in_body(br#"{"usage":null}"#), None);
/// ```
pub fn usage_in_body(body: &[u8]) -> Option<UsageCounts> {
    last_in_body(body, object_at::<UsageCounts>)
}

/// Scans a server-sent-events body, chunk by chunk as it arrives, for `usage` objects, and
/// keeps the last one seen.
///
/// A usage object split across chunks is found once its line is complete. The last one wins:
/// OpenAI sends one usage chunk at the end (with `stream_options.include_usage`), while servers
/// such as vLLM with `continuous_usage_stats` send the cumulative usage in every chunk, so the
/// value to account for is the one at the end of the stream (or when it is dropped), never the
/// first.
///
/// ```
/// use volley_core::openai::UsageScanner;
///
/// let mut scanner = UsageScanner::new();
/// scanner.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tok");
/// assert_eq!(scanner.last(), None);
/// scanner.feed(b"ens\":1}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n");
/// scanner.feed(b"data: [DONE]\n\n");
/// assert_eq!(scanner.finish().map(|u| u.total()), Some(5));
/// ```
#[derive(Debug, Default, Clone)]
pub struct UsageScanner {
    lines: LineBuffer,
    last: Option<UsageCounts>,
}

impl UsageScanner {
    /// A scanner that has seen nothing.
    pub fn new() -> UsageScanner {
        UsageScanner::default()
    }

    /// Scans the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let last = &mut self.last;
        self.lines.feed(chunk, |lines| {
            if let Some(usage) = last_usage_in(lines) {
                *last = Some(usage);
            }
        });
    }

    /// The last usage object seen in a complete line so far.
    pub fn last(&self) -> Option<UsageCounts> {
        self.last
    }

    /// The last usage object of a stream that has ended, its unterminated last line included.
    pub fn finish(&mut self) -> Option<UsageCounts> {
        let last = &mut self.last;
        self.lines.finish(|line| {
            if let Some(usage) = last_usage_in(line) {
                *last = Some(usage);
            }
        });
        self.last
    }
}

/// Whether a JSON document (a complete response body, or one server-sent event's data) is an
/// OpenAI-dialect error object: an object whose first key is `"error"`, with a value other
/// than one Python reads as false (`null`, `false`, `0`, `""`, `{}`, `[]`), as openai-python
/// reads a stream's events. Leading white space is allowed.
///
/// Some servers send an error this way with a 200 status, or as an event of a 200 stream
/// (vLLM ends a failed stream with `data: {"error": {...}}` and then `data: [DONE]`). Only the
/// first key is looked at, so the check costs a few byte comparisons whatever the size of the
/// body: OpenAI and the compatible servers put `error` first (usually alone), and an answer
/// does not start with it.
///
/// ```
/// use volley_core::openai::looks_like_error;
///
/// assert!(looks_like_error(b"\n {\"error\": {\"message\": \"overloaded\"}}"));
/// assert!(!looks_like_error(br#"{"id":"x","choices":[]}"#));
/// assert!(!looks_like_error(br#"{"error":null,"choices":[]}"#));
/// assert!(!looks_like_error(br#"{"error":false,"choices":[]}"#));
/// ```
pub fn looks_like_error(json: &[u8]) -> bool {
    let Some(rest) = json.trim_ascii_start().strip_prefix(b"{") else {
        return false;
    };
    let Some(rest) = rest.trim_ascii_start().strip_prefix(b"\"error\"") else {
        return false;
    };
    rest.trim_ascii_start().starts_with(b":") && !falsy_value_follows(rest)
}

/// Whether what follows a key (`rest`, starting at the white space or colon after its closing
/// quote) is `:` and then a value Python reads as false: `null`, `false`, a zero, `""`, `{}`
/// or `[]`, each a whole token. openai-python raises for a stream event whose `error` is
/// truthy and passes over the others (`"error": false` and `"error": ""` from some gateways
/// mean no error), and so does this crate.
pub(crate) fn falsy_value_follows(rest: &[u8]) -> bool {
    let Some(value) = rest.trim_ascii_start().strip_prefix(b":") else {
        return false;
    };
    let value = value.trim_ascii_start();
    // A token ends where a delimiter or the end of the document comes.
    let ends = |after: &[u8]| {
        after
            .trim_ascii_start()
            .first()
            .is_none_or(|b| matches!(b, b',' | b'}' | b']'))
    };
    for word in [&b"null"[..], b"false", b"\"\""] {
        if let Some(after) = value.strip_prefix(word) {
            return ends(after);
        }
    }
    if let Some(open) = value.first().filter(|b| matches!(b, b'{' | b'[')) {
        let close = if *open == b'{' { b'}' } else { b']' };
        return value[1..]
            .trim_ascii_start()
            .strip_prefix(&[close][..])
            .is_some_and(ends);
    }
    // A number whose digits are all zero: `0`, `-0`, `0.0`, `0e5`.
    let number = value.strip_prefix(b"-").unwrap_or(value);
    let len = number
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
        .unwrap_or(number.len());
    let (token, after) = number.split_at(len);
    let mantissa = token
        .split(|b| matches!(b, b'e' | b'E'))
        .next()
        .unwrap_or(b"");
    !mantissa.is_empty()
        && mantissa.first().is_some_and(u8::is_ascii_digit)
        && mantissa.iter().all(|b| matches!(b, b'0' | b'.'))
        && ends(after)
}

/// Whether the last event of a server-sent-events body (the whole body so far, or just its
/// tail) is the OpenAI dialect's end-of-stream sentinel, `data: [DONE]` (or `data:[DONE]`),
/// alone on its line. Trailing white space is allowed.
///
/// A stream that stops without it ended early, however cleanly the connection closed.
///
/// ```
/// use volley_core::openai::ends_with_done;
///
/// assert!(ends_with_done(b"data: {}\n\ndata: [DONE]\n\n"));
/// assert!(!ends_with_done(b"data: [DONE]\n\ndata: {}\n\n"));
/// ```
pub fn ends_with_done(body: &[u8]) -> bool {
    let body = body.trim_ascii_end();
    let Some(line) = body
        .strip_suffix(b"[DONE]")
        .and_then(|b| b.strip_suffix(b":").or_else(|| b.strip_suffix(b": ")))
        .and_then(|b| b.strip_suffix(b"data"))
    else {
        return false;
    };
    matches!(line.last(), None | Some(b'\n' | b'\r'))
}

/// The last usage object in complete lines.
fn last_usage_in(lines: &[u8]) -> Option<UsageCounts> {
    // Most chunks have no usage at all: one forward SIMD search rules them out before the
    // backwards walk.
    USAGE_KEY.find(lines)?;
    usage_in_body(lines)
}

/// Whether a JSON request body sets `"stream": true` at any depth (white space allowed
/// around the colon). A cheap look, no parse: a key inside a JSON string is escaped
/// (`\"stream\"`) and cannot match. A nested `"stream": true` in some other object also reads
/// as a stream request, which only ever allows a stream, never refuses one.
pub fn asks_for_stream(body: &[u8]) -> bool {
    static STREAM_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"stream\""));
    STREAM_KEY.find_iter(body).any(|at| {
        let rest = body[at + 8..].trim_ascii_start();
        rest.strip_prefix(b":")
            .is_some_and(|value| value.trim_ascii_start().starts_with(b"true"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(prompt: u64, completion: u64, total: u64) -> UsageCounts {
        UsageCounts {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
        }
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"say \\\"usage\\\":{\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5,",
        "\"total_tokens\":14,\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// vLLM with `continuous_usage_stats`: the cumulative usage in every chunk.
    const CONTINUOUS: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn full_bodies() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"\"usage\": {\"total_tokens\": 1}"}}],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}"#;
        assert_eq!(usage_in_body(body), Some(counts(20, 7, 27)));
        let spaced = br#"{"usage" : { "prompt_tokens": 3, "completion_tokens": 4 }, "x": 1}"#;
        assert_eq!(
            usage_in_body(spaced).map(|u| u.total()),
            Some(7),
            "total left out"
        );
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(usage_in_body(embeddings), Some(counts(8, 0, 8)));
        assert_eq!(usage_in_body(br#"{"usage":null}"#), None);
        assert_eq!(usage_in_body(br#"{"kind":"usage"}"#), None);
        assert_eq!(usage_in_body(br#"{"usage":{"total_tokens":-1}}"#), None);
        assert_eq!(usage_in_body(b""), None);
        assert_eq!(usage_in_body(b"not json"), None);
        assert_eq!(usage_in_body(br#"{"usage":{"total_tokens":5"#), None, "cut");
        assert_eq!(usage_in_body(br#"{"usage":"#), None);
        // A cut or null last match falls back to the complete one before it.
        let two = br#"{"usage":{"total_tokens":5}} {"usage":null}"#;
        assert_eq!(usage_in_body(two), Some(counts(0, 0, 5)));
    }

    #[test]
    fn totals_saturate() {
        let body = br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#;
        assert_eq!(usage_in_body(body).map(|u| u.total()), Some(u64::MAX));
    }

    #[test]
    fn a_stream_in_one_chunk() {
        let mut scanner = UsageScanner::new();
        scanner.feed(STREAM.as_bytes());
        assert_eq!(scanner.last(), Some(counts(9, 5, 14)));
        let mut none = UsageScanner::new();
        none.feed(b"data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n");
        assert_eq!(none.finish(), None);
    }

    #[test]
    fn the_last_usage_wins() {
        let mut scanner = UsageScanner::new();
        for event in CONTINUOUS.split_inclusive("\n\n") {
            scanner.feed(event.as_bytes());
        }
        assert_eq!(scanner.finish(), Some(counts(9, 3, 12)));
        let mut scanner = UsageScanner::new();
        scanner.feed(CONTINUOUS.as_bytes());
        assert_eq!(scanner.last(), Some(counts(9, 3, 12)), "in one chunk too");
    }

    #[test]
    fn an_unterminated_last_line_counts_at_the_end() {
        let mut scanner = UsageScanner::new();
        scanner.feed(
            b"data: {\"usage\":{\"total_tokens\":3}}\n\ndata: {\"usage\":{\"total_tokens\":4}}",
        );
        assert_eq!(scanner.last(), Some(counts(0, 0, 3)));
        assert_eq!(scanner.finish(), Some(counts(0, 0, 4)));
    }

    /// Lines ending with a lone CR (the event-stream format allows LF, CR or CRLF) are lines:
    /// a long CR-only stream is not one overlong line whose usage is skipped.
    #[test]
    fn lines_may_end_with_cr() {
        let filler = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\r\r",
            "x".repeat(1000)
        );
        let stream = format!("{}{}", filler.repeat(40), STREAM.replace('\n', "\r"));
        assert!(stream.len() > crate::usage_scan::MAX_LINE);
        for chunk in [7, 100, 4096, stream.len()] {
            let mut scanner = UsageScanner::new();
            for piece in stream.as_bytes().chunks(chunk) {
                scanner.feed(piece);
            }
            assert_eq!(
                scanner.finish(),
                Some(counts(9, 5, 14)),
                "chunks of {chunk}"
            );
        }
        let crlf = STREAM.replace('\n', "\r\n");
        let mut scanner = UsageScanner::new();
        for piece in crlf.as_bytes().chunks(3) {
            scanner.feed(piece);
        }
        assert_eq!(scanner.finish(), Some(counts(9, 5, 14)));
    }

    /// A line longer than the buffer keeps its end, where the usage is: the Responses API's
    /// `response.completed` event carries the whole response, its `usage` near the end,
    /// with `input_tokens` and `output_tokens` for counts.
    #[test]
    fn overlong_lines_keep_their_end() {
        let text = "x".repeat(crate::usage_scan::MAX_LINE * 3);
        let completed = format!(
            "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"content\":[{{\"text\":\"{text}\"}}]}}],\"usage\":{{\"input_tokens\":36,\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":87,\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":123}},\"user\":null}}}}\n\n"
        );
        for chunk in [100, 4096, crate::usage_scan::MAX_LINE + 1, completed.len()] {
            let mut scanner = UsageScanner::new();
            for piece in completed.as_bytes().chunks(chunk) {
                scanner.feed(piece);
                assert!(scanner.lines.partial.len() <= 2 * crate::usage_scan::MAX_LINE);
            }
            assert_eq!(
                scanner.last(),
                Some(counts(36, 87, 123)),
                "chunks of {chunk}"
            );
        }
        // Unterminated, it counts at the end.
        let mut scanner = UsageScanner::new();
        for piece in completed.trim_end().as_bytes().chunks(1000) {
            scanner.feed(piece);
        }
        assert_eq!(scanner.last(), None);
        assert_eq!(scanner.finish(), Some(counts(36, 87, 123)));
        // The next line after a long one is read as usual.
        let mut scanner = UsageScanner::new();
        scanner.feed(b"data: {\"a\":\"");
        scanner.feed(text.as_bytes());
        scanner.feed(b"\"}\ndata: {\"usage\":{\"total_tokens\":3}}\n");
        assert_eq!(scanner.last(), Some(counts(0, 0, 3)));
        assert!(scanner.lines.partial.is_empty());
    }

    #[test]
    fn responses_api_counts_are_prompt_and_completion() {
        let body = br#"{"id":"resp_1","object":"response","error":null,"output":[],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":4},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":10},"total_tokens":123}}"#;
        assert_eq!(usage_in_body(body), Some(counts(36, 87, 123)));
        // serde's reading (escapes send the by-hand reader to it) agrees.
        let escaped =
            br#"{"usage":{"input_tokens":36,"note":"\u0041","output_tokens":87,"total_tokens":123}}"#;
        assert_eq!(usage_in_body(escaped), Some(counts(36, 87, 123)));
        // A server that sends both names: the larger of each pair.
        let both = br#"{"usage":{"prompt_tokens":5,"input_tokens":5,"completion_tokens":2,"output_tokens":2,"total_tokens":7}}"#;
        assert_eq!(usage_in_body(both), Some(counts(5, 2, 7)));
        let via_serde = br#"{"usage":{"prompt_tokens":5,"input_tokens":5,"x":"\u0041","completion_tokens":2,"output_tokens":2}}"#;
        assert_eq!(usage_in_body(via_serde), Some(counts(5, 2, 0)));
        // A `null` under a Responses name beside the chat counts does not lose them.
        let nulls = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"input_tokens":null,"output_tokens":null}}"#;
        assert_eq!(usage_in_body(nulls), Some(counts(10, 5, 0)));
        let nulls_serde = br#"{"usage":{"prompt_tokens":10,"x":"\u0041","completion_tokens":5,"input_tokens":null}}"#;
        assert_eq!(usage_in_body(nulls_serde), Some(counts(10, 5, 0)));
    }

    #[test]
    fn error_objects() {
        assert!(looks_like_error(br#"{"error":{"message":"no"}}"#));
        assert!(looks_like_error(b" \r\n\t{ \"error\" : \"text\" }"));
        assert!(looks_like_error(br#"{"error":{"message":"no"},"id":"x"}"#));
        assert!(looks_like_error(br#"{"error":nullish}"#), "not JSON null");
        assert!(!looks_like_error(br#"{"error":null}"#));
        assert!(!looks_like_error(br#"{"error" : null , "id":"x"}"#));
        assert!(!looks_like_error(br#"{"error":false,"id":"x"}"#));
        assert!(!looks_like_error(br#"{"error": "" }"#));
        assert!(!looks_like_error(br#"{"error":{ },"id":"x"}"#));
        assert!(!looks_like_error(br#"{"error":0}"#));
        assert!(looks_like_error(br#"{"error":"false"}"#));
        assert!(looks_like_error(br#"{"error":0.1}"#));
        assert!(
            looks_like_error(br#"{"error":falsehood}"#),
            "not JSON false"
        );
        assert!(!looks_like_error(br#"{"id":"x","error":{"message":"no"}}"#));
        assert!(!looks_like_error(br#"{"errors":[]}"#));
        assert!(!looks_like_error(br#"["error"]"#));
        assert!(!looks_like_error(br#"{"error""#));
        assert!(!looks_like_error(b""));
    }

    #[test]
    fn done_is_recognised_at_the_end_only() {
        assert!(ends_with_done(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(ends_with_done(b"data:[DONE]\r\n\r\n"));
        assert!(ends_with_done(b"data: [DONE]"));
        assert!(ends_with_done(b"\rdata: [DONE]\n"));
        assert!(!ends_with_done(b"data: [DONE]\n\ndata: {}\n\n"));
        assert!(!ends_with_done(b"data: {}\n\n"));
        assert!(!ends_with_done(b"xdata: [DONE]\n\n"));
        assert!(!ends_with_done(b"data:  [DONE]\n\n"));
        assert!(!ends_with_done(b"[DONE]\n\n"));
        assert!(!ends_with_done(b""));
    }

    /// Cuts `text` at `cuts` and feeds the pieces; returns the last usage.
    fn scan_in_pieces(text: &str, cuts: Vec<usize>) -> Option<UsageCounts> {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let bytes = text.as_bytes();
        let mut scanner = UsageScanner::new();
        let mut start = 0;
        for end in cuts.into_iter().chain([bytes.len()]) {
            scanner.feed(&bytes[start..end]);
            start = end;
        }
        scanner.finish()
    }

    proptest! {
        #[test]
        fn any_split_finds_the_usage(cuts in prop::collection::vec(0usize..STREAM.len(), 0..8)) {
            prop_assert_eq!(scan_in_pieces(STREAM, cuts), Some(counts(9, 5, 14)));
        }

        #[test]
        fn any_split_finds_the_last_usage(
            cuts in prop::collection::vec(0usize..CONTINUOUS.len(), 0..8),
        ) {
            prop_assert_eq!(scan_in_pieces(CONTINUOUS, cuts), Some(counts(9, 3, 12)));
        }
    }
}
