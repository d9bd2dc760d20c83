//! A usage object's counts read by hand, for the shape every provider sends: an object of
//! plain keys whose counts are integers, beside other fields (nested details objects,
//! strings, numbers, `null`). serde_json's derived reader took about 1 500 instructions for a
//! three-count object (a quarter of them per key string); this takes a fraction of that.
//!
//! It is only ever sure of what serde would read the same way: it accepts a subset of JSON
//! (no escapes, ASCII strings, no duplicate count, integers as counts, at most
//! [`MAX_DEPTH`] levels of nesting) and gives up on anything else, and the caller then asks
//! serde ([`crate::usage_scan::object_at`]). Giving up costs a few bytes' scan; a wrong
//! answer cannot happen on input it accepts (test
//! `the_fast_reader_agrees_with_serde_wherever_it_answers`).

use serde::de::DeserializeOwned;

/// Nesting deeper than this is left to serde (usage details are one level deep).
const MAX_DEPTH: u8 = 8;

/// The most counts a usage type reads.
pub(crate) const MAX_KEYS: usize = 5;

/// What the object held for one of the keys asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The key is not in the object.
    Absent,
    /// The key's value is `null`.
    Null,
    /// The key's value is an integer that fits a `u64`.
    Count(u64),
}

/// A usage type that can be read by hand as well as by serde.
pub(crate) trait Counts: DeserializeOwned {
    /// The keys of the counts, in the order [`Counts::from_found`] takes them; at most
    /// [`MAX_KEYS`].
    const KEYS: &'static [&'static [u8]];

    /// The usage from what the object held for each key, or `None` when serde would have to
    /// decide (a `null` where a count is required, say).
    fn from_found(found: &[Found; MAX_KEYS]) -> Option<Self>;
}

/// What a usage object starting at `object` (its `{`) holds for each of `keys`; `None` when
/// the object is not of the plain shape this reads (serde decides then). Whatever follows the
/// object's closing brace is not looked at, as with serde.
pub(crate) fn read(object: &[u8], keys: &[&[u8]]) -> Option<[Found; MAX_KEYS]> {
    // More keys than slots would index past `found` below: refuse them rather than panic.
    if keys.len() > MAX_KEYS {
        return None;
    }
    let mut reader = Reader {
        bytes: object,
        at: 0,
    };
    let mut found = [Found::Absent; MAX_KEYS];
    reader.byte(b'{')?;
    reader.items(b'}', |reader| {
        let key = reader.member()?;
        match keys.iter().position(|k| *k == key) {
            Some(index) => {
                // serde refuses a repeated field: let it.
                if found[index] != Found::Absent {
                    return None;
                }
                found[index] = if reader.peek()? == b'n' {
                    reader.literal(b"null")?;
                    Found::Null
                } else {
                    Found::Count(reader.count()?)
                };
                Some(())
            }
            None => reader.skip_value(0),
        }
    })?;
    Some(found)
}

/// The usage of type `T` in the object starting at `object`, read by hand; `None` when serde
/// has to decide.
pub(crate) fn counts<T: Counts>(object: &[u8]) -> Option<T> {
    const {
        assert!(
            T::KEYS.len() <= MAX_KEYS,
            "a usage type reads at most MAX_KEYS counts"
        )
    };
    T::from_found(&read(object, T::KEYS)?)
}

/// A cursor over the bytes; every method returns `None` on anything it does not accept,
/// the end of the input included.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string of printable ASCII without escapes; its content.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let rest = &self.bytes[self.at..];
        let content = &rest[..memchr::memchr(b'"', rest)?];
        // Escapes (an escaped quote included: the quote found is then not the end),
        // control characters (which JSON refuses) and non-ASCII (which serde checks is
        // UTF-8) are serde's to judge. Not short-circuited, so it is checked a vector at a
        // time.
        let plain = content.iter().fold(true, |plain, &b| {
            plain & (0x20..0x7f).contains(&b) & (b != b'\\')
        });
        if !plain {
            return None;
        }
        self.at += content.len() + 1;
        Some(content)
    }

    /// Digits: a non-negative integer without leading zeros that fits a `u64` (a fraction or
    /// an exponent makes it a float, which serde judges).
    fn count(&mut self) -> Option<u64> {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        Some(value)
    }

    /// Skips digits; `None` when there are none.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    /// Skips a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.at += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// The items of an object or array whose opening bracket was just read, each read by
    /// `item` (whitespace around it skipped), separated by commas, up to `close`: no trailing
    /// comma, as JSON has none.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            self.whitespace();
            item(self)?;
            self.whitespace();
            match self.next()? {
                b',' => {}
                byte if byte == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// An object member's key and the colon after it (whitespace around it skipped); the key.
    fn member(&mut self) -> Option<&'a [u8]> {
        let key = self.string()?;
        self.whitespace();
        self.byte(b':')?;
        self.whitespace();
        Some(key)
    }

    /// Skips one value of any kind, nested `depth` levels inside the usage object.
    fn skip_value(&mut self, depth: u8) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.at += 1;
                self.items(b'}', |reader| {
                    reader.member()?;
                    reader.skip_value(depth + 1)
                })
            }
            b'[' => {
                self.at += 1;
                self.items(b']', |reader| reader.skip_value(depth + 1))
            }
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            _ => self.number(),
        }
    }
}

#[cfg(test)]
#[path = "usage_counts_tests.rs"]
mod tests;
