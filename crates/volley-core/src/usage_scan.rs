//! What the dialects' usage scans share: finding the `"usage"` key, the last usage of a body,
//! reading the object after the key (by hand for the plain shape, by serde otherwise:
//! [`object_at`]), and the complete lines of a stream fed in chunks.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use crate::usage_counts::{self, Counts};

/// Finds the key `"usage"` (quoted: an escaped `\"usage\"` inside a JSON string cannot match).
pub(crate) static USAGE_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usage\""));
static USAGE_KEY_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// How much of a line split across chunks is kept: its last bytes. A usage line is a few
/// hundred bytes; a longer line keeps its end, where a usage object sits (the Responses API's
/// `response.completed` event carries the whole response, often more than this, with its
/// `usage` near the end).
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// How many `"usage"` keys the forward search of [`last_in_body`] remembers: a body has one;
/// one with more (a value that is the string `"usage"`, a usage object that is not a `T`)
/// has the rest searched backwards.
const REMEMBERED: usize = 8;

/// The most `"usage"` keys followed by an object that one scan reads: a body or a chunk has
/// one or two, and a server that nests thousands (`{"usage":{"usage":...`) would otherwise
/// have each read to the end of the body, a cost quadratic in its size.
pub(crate) const MAX_TRIES: usize = 16;

/// The most usage objects one scan of a stream's chunk merges (each read at most
/// [`MAX_OBJECT`] bytes): far more than a chunk holds, a bound on what a server can make it
/// cost.
pub(crate) const MAX_READS: usize = 256;

/// The most bytes of a usage object read: a real one is a few hundred. Longer, it is not a
/// usage (and reading it would cost as much as the body).
const MAX_OBJECT: usize = 64 * 1024;

/// The last `"usage"` key of `body` at which `usage_at` reads a usage object (the usage of an
/// answer comes after its content).
///
/// The keys are found with the forward searcher, which is vectorised (the backward one is
/// not: the whole scan of OpenAI's answer went from 287 to 264 ns); the last few are
/// remembered and tried from the last; should they all fail, the keys before them are
/// searched backwards, so a body full of `"usage"` strings costs one pass, not one per key.
pub(crate) fn last_in_body<T>(
    body: &[u8],
    usage_at: impl Fn(&[u8], usize) -> Option<T>,
) -> Option<T> {
    let mut found = [0usize; REMEMBERED];
    let mut count = 0usize;
    for at in USAGE_KEY.find_iter(body) {
        found[count % REMEMBERED] = at;
        count += 1;
    }
    let remembered = count.min(REMEMBERED);
    for back in 1..=remembered {
        let at = found[(count - back) % REMEMBERED];
        if let Some(usage) = usage_at(body, at) {
            return Some(usage);
        }
    }
    if count <= REMEMBERED {
        return None;
    }
    // The oldest remembered key failed too; the keys before it, backwards, up to the bound
    // of keys read.
    let mut end = found[(count - REMEMBERED) % REMEMBERED];
    let mut tries = REMEMBERED;
    while let Some(at) = USAGE_KEY_REV.rfind(&body[..end]) {
        // A key not followed by an object costs nothing to pass over; one that is counts.
        if object_after(body, at).is_some() {
            if tries >= MAX_TRIES {
                return None;
            }
            tries += 1;
        }
        if let Some(usage) = usage_at(body, at) {
            return Some(usage);
        }
        end = at;
    }
    None
}

/// The complete lines of a stream fed in chunks: each chunk's complete lines are handed on
/// in one slice, without a copy; only a line split across chunks is buffered, and of one
/// longer than [`MAX_LINE`] only its last [`MAX_LINE`] to 2 × [`MAX_LINE`] bytes are kept (the
/// line handed on then starts in its middle). A line ends at LF, CR or CRLF, as in an event stream (a CRLF split
/// between chunks only adds an empty line).
#[derive(Debug, Default, Clone)]
pub(crate) struct LineBuffer {
    /// The unfinished last line of the chunks so far (usually empty: servers flush whole
    /// events), or its last bytes (at most 2 × [`MAX_LINE`]).
    pub(crate) partial: Vec<u8>,
}

impl LineBuffer {
    /// Feeds the next chunk; `lines` gets the lines it completes (one or more, each ending
    /// with `\n` or `\r`), in order.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut lines: impl FnMut(&[u8])) {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let Some(newline) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.buffer(rest);
                return;
            };
            let (head, tail) = rest.split_at(newline + 1);
            rest = tail;
            self.buffer(head);
            lines(&self.partial);
            self.partial.clear();
        }
        let complete = memchr::memrchr2(b'\n', b'\r', rest).map_or(0, |i| i + 1);
        if complete > 0 {
            lines(&rest[..complete]);
        }
        self.buffer(&rest[complete..]);
    }

    /// The stream ended: `lines` gets its unterminated last line (or that line's tail), and
    /// the buffer is empty again.
    pub(crate) fn finish(&mut self, mut lines: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            lines(&self.partial);
        }
        self.partial = Vec::new();
    }

    /// Appends to the unfinished line, keeping at least its last [`MAX_LINE`] bytes and at
    /// most twice that: the buffer is cut back to [`MAX_LINE`] only when it would pass twice
    /// that, so a long line fed in tiny chunks costs a constant copy per byte, not
    /// [`MAX_LINE`] per chunk.
    fn buffer(&mut self, bytes: &[u8]) {
        if bytes.len() >= MAX_LINE {
            self.partial.clear();
            self.partial
                .extend_from_slice(&bytes[bytes.len() - MAX_LINE..]);
            return;
        }
        if self.partial.len() + bytes.len() > 2 * MAX_LINE {
            self.partial.drain(..self.partial.len() - MAX_LINE);
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// What follows the `"usage"` key found at `at` and its colon, when that is an object.
pub(crate) fn object_after(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = bytes[at + b"\"usage\"".len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    rest.starts_with(b"{").then_some(rest)
}

/// The object after the `"usage"` key found at `at`, read as a `T` and nothing more
/// (whatever follows it is never looked at); `None` when it is not an object, not a `T`, or
/// cut short. The plain shape every provider sends is read by hand
/// ([`usage_counts`](crate::usage_counts)); serde reads anything else.
pub(crate) fn object_at<T: Counts>(bytes: &[u8], at: usize) -> Option<T> {
    let rest = object_after(bytes, at)?;
    let rest = &rest[..rest.len().min(MAX_OBJECT)];
    if let Some(usage) = usage_counts::counts::<T>(rest) {
        return Some(usage);
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    T::deserialize(&mut de).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai;

    /// A server that nests thousands of usage keys (`{"usage":{"usage":...`) has at most
    /// `MAX_TRIES` of them read, each at most `MAX_OBJECT` bytes: the scan stays linear in the
    /// body, where reading each to the end of the body was quadratic (hours for 9 MB).
    #[test]
    fn nested_usage_keys_are_read_a_bounded_number_of_times() {
        let depth = 20_000;
        let body = "{\"usage\":".repeat(depth) + &"}".repeat(depth);
        let tries = std::cell::Cell::new(0usize);
        let found = last_in_body(body.as_bytes(), |bytes, at| {
            tries.set(tries.get() + 1);
            object_at::<openai::UsageCounts>(bytes, at)
        });
        assert_eq!(found, None);
        assert!(tries.get() <= MAX_TRIES + 1, "{} keys read", tries.get());
        // Through the public scans too (the stream scanners share the bound).
        assert_eq!(openai::usage_in_body(body.as_bytes()), None);
        let mut scanner = crate::Dialect::Anthropic.usage_scanner();
        scanner.feed(format!("data: {body}\n\n").as_bytes());
        assert_eq!(scanner.finish(), None);
        // A usage object longer than the bound is no usage.
        let padded = format!(
            "{{\"usage\":{{\"prompt_tokens\":5,\"pad\":\"{}\"}}}}",
            "x".repeat(MAX_OBJECT)
        );
        assert_eq!(openai::usage_in_body(padded.as_bytes()), None);
    }

    #[test]
    fn the_last_usage_is_found_past_many_keys_that_are_not_usages() {
        // A usage, then more `"usage"` strings than the forward search remembers.
        let mut body = String::from(r#"{"usage":{"prompt_tokens":5},"notes":["#);
        for i in 0..(REMEMBERED * 3) {
            body += &format!("{}\"usage\"", if i == 0 { "" } else { "," });
        }
        body += "]}";
        let usage = openai::usage_in_body(body.as_bytes()).unwrap();
        assert_eq!(usage.prompt_tokens, 5);
        // The same with fewer than it remembers.
        let few = r#"{"usage":{"prompt_tokens":4},"notes":["usage","usage"]}"#;
        assert_eq!(
            openai::usage_in_body(few.as_bytes()).unwrap().prompt_tokens,
            4
        );
        // Two usages: the last one wins.
        let two = r#"{"usage":{"prompt_tokens":1},"x":"usage","usage":{"prompt_tokens":2}}"#;
        assert_eq!(
            openai::usage_in_body(two.as_bytes()).unwrap().prompt_tokens,
            2
        );
        // A last usage that is not an object: the one before it.
        let last_null = r#"{"usage":{"prompt_tokens":1},"usage":null}"#;
        assert_eq!(
            openai::usage_in_body(last_null.as_bytes())
                .unwrap()
                .prompt_tokens,
            1
        );
        assert_eq!(openai::usage_in_body(br#"{"usage":"usage"}"#), None);
        assert_eq!(openai::usage_in_body(b""), None);
    }
}
