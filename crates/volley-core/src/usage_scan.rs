//! What the dialects' usage scans share: finding the `"usage"` key, the last usage of a body,
//! and the complete lines of a stream fed in chunks. Each dialect reads the object after the
//! key its own way.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

/// Finds the key `"usage"` (quoted: an escaped `\"usage\"` inside a JSON string cannot match).
pub(crate) static USAGE_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usage\""));
static USAGE_KEY_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// A partial line longer than this is not a usage line (those are a few hundred bytes): the
/// buffer stops keeping it and skips to its end.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// The last `"usage"` key of `body` at which `usage_at` reads a usage object, searched from
/// the end (the usage of an answer comes after its content).
pub(crate) fn last_in_body<T>(
    body: &[u8],
    usage_at: impl Fn(&[u8], usize) -> Option<T>,
) -> Option<T> {
    let mut end = body.len();
    while let Some(at) = USAGE_KEY_REV.rfind(&body[..end]) {
        if let Some(usage) = usage_at(body, at) {
            return Some(usage);
        }
        end = at;
    }
    None
}

/// The complete lines of a stream fed in chunks: each chunk's complete lines are handed on
/// in one slice, without a copy; only a line split across chunks is buffered, and one longer
/// than [`MAX_LINE`] is skipped to its end.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineBuffer {
    /// The unfinished last line of the chunks so far (usually empty: servers flush whole
    /// events).
    pub(crate) partial: Vec<u8>,
    /// The unfinished line grew past [`MAX_LINE`]; skip to its end.
    pub(crate) skipping: bool,
}

impl LineBuffer {
    /// Feeds the next chunk; `lines` gets the lines it completes (one or more, each ending
    /// with `\n`), in order.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut lines: impl FnMut(&[u8])) {
        let mut rest = chunk;
        if !self.partial.is_empty() || self.skipping {
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                self.buffer(rest);
                return;
            };
            let (head, tail) = rest.split_at(newline + 1);
            rest = tail;
            if !self.skipping {
                self.partial.extend_from_slice(head);
                lines(&self.partial);
            }
            self.partial.clear();
            self.skipping = false;
        }
        let complete = memchr::memrchr(b'\n', rest).map_or(0, |i| i + 1);
        if complete > 0 {
            lines(&rest[..complete]);
        }
        self.buffer(&rest[complete..]);
    }

    /// The stream ended: `lines` gets its unterminated last line, unless it was skipped, and
    /// the buffer is empty again.
    pub(crate) fn finish(&mut self, mut lines: impl FnMut(&[u8])) {
        if !self.skipping && !self.partial.is_empty() {
            lines(&self.partial);
        }
        self.partial = Vec::new();
        self.skipping = false;
    }

    fn buffer(&mut self, bytes: &[u8]) {
        if self.skipping || bytes.is_empty() {
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

/// The object after the `"usage"` key found at `at`, read as a `T` and nothing more
/// (whatever follows it is never looked at); `None` when it is not an object, not a `T`, or
/// cut short.
pub(crate) fn object_at<T: serde::de::DeserializeOwned>(bytes: &[u8], at: usize) -> Option<T> {
    let rest = bytes[at + b"\"usage\"".len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    if !rest.starts_with(b"{") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    T::deserialize(&mut de).ok()
}
