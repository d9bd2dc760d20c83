//! One decoded event, and the validated-UTF-8 byte string it is made of.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// One dispatched server-sent event.
///
/// Its strings are slices of the decoder's input where possible (a single-line `data:` field is
/// never copied), so cloning an `Event` is cheap and holding one keeps the input chunk it came
/// from alive.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub(super) event_type: Utf8Bytes,
    pub(super) data: Utf8Bytes,
    pub(super) id: Utf8Bytes,
    pub(super) retry: Option<Duration>,
}

impl Event {
    /// The event type: the value of the block's last non-empty `event:` field, or `"message"`
    /// when it had none.
    pub fn event_type(&self) -> &str {
        self.event_type.as_str()
    }

    /// The event's data: the values of its `data:` fields joined with `\n`.
    pub fn data(&self) -> &str {
        self.data.as_str()
    }

    /// The event's data as bytes, for parsers that take `Bytes` or `&[u8]`. Always valid UTF-8
    /// (invalid input was decoded with U+FFFD replacement characters, as the standard says).
    pub fn data_bytes(&self) -> &Bytes {
        self.data.as_bytes()
    }

    /// The last event ID when this event was dispatched: the value of the most recent `id:`
    /// field of the stream, in this event or an earlier one. Empty when the server never sent
    /// one (or reset it with an empty `id:`).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The reconnection time this event's own `retry:` field asked for, if it had a valid one.
    /// The decoder remembers the latest value across events
    /// ([`Decoder::reconnection_time`](super::Decoder::reconnection_time)).
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Whether this is OpenAI's end-of-stream sentinel, `data: [DONE]`, trailing white space
    /// allowed (`data: [DONE] `, as some servers send it; openai-python accepts it too).
    ///
    /// ```
    /// use volley_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.feed_slice(b"data: [DONE] \n\ndata: [DONE]x\n\n");
    /// assert!(decoder.next_event().unwrap().unwrap().is_done());
    /// assert!(!decoder.next_event().unwrap().unwrap().is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.data.as_bytes().as_ref().trim_ascii_end() == b"[DONE]"
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Event");
        d.field("event_type", &self.event_type())
            .field("data", &self.data());
        if !self.id.as_bytes().is_empty() {
            d.field("id", &self.id());
        }
        if let Some(retry) = self.retry {
            d.field("retry", &retry);
        }
        d.finish()
    }
}

/// Bytes that are known to be valid UTF-8, so they can be lent out as `&str` without checking
/// again: the data of an event is validated once, when it is dispatched.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// The default event type. Static, so attaching it to an event costs no reference count.
    pub(super) const MESSAGE: Utf8Bytes = Utf8Bytes(Bytes::from_static(b"message"));

    /// Takes `bytes` as they are when they are valid UTF-8 (no copy), and otherwise decodes
    /// them with U+FFFD replacement characters into a new buffer.
    pub(super) fn from_lossy(bytes: Bytes) -> Utf8Bytes {
        if bytes.is_ascii() || std::str::from_utf8(&bytes).is_ok() {
            Utf8Bytes(bytes)
        } else {
            Utf8Bytes(Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
        }
    }

    /// Clones without the call through `Bytes`' vtable when empty, the usual case for IDs:
    /// the call and the store-forwarding stall of its result cost as much as the rest of the
    /// per-event work.
    pub(super) fn cheap_clone(&self) -> Utf8Bytes {
        if self.0.is_empty() {
            Utf8Bytes::default()
        } else {
            self.clone()
        }
    }

    pub(super) fn as_str(&self) -> &str {
        // SAFETY: the field is private and every constructor checks or produces valid UTF-8
        // (`from_lossy` validates or converts; `MESSAGE` and `Default` are ASCII or empty);
        // `Bytes` is immutable, so the contents cannot change afterwards. Checking again here
        // would validate every event's data twice on the hot path.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub(super) fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &'static [u8]) -> Event {
        Event {
            event_type: Utf8Bytes::MESSAGE,
            data: Utf8Bytes::from_lossy(Bytes::from_static(data)),
            id: Utf8Bytes::default(),
            retry: None,
        }
    }

    #[test]
    fn valid_utf8_is_not_copied() {
        let input = Bytes::from_static("héllo".as_bytes());
        let text = Utf8Bytes::from_lossy(input.clone());
        assert_eq!(text.as_str(), "héllo");
        assert_eq!(text.as_bytes().as_ptr(), input.as_ptr());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let text = Utf8Bytes::from_lossy(Bytes::from_static(b"a\xffb\xe2\x82"));
        assert_eq!(text.as_str(), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn done_is_the_sentinel_with_trailing_white_space_at_most() {
        assert!(event(b"[DONE]").is_done());
        assert!(event(b"[DONE] ").is_done());
        assert!(event(b"[DONE]\r").is_done());
        assert!(!event(b" [DONE]").is_done());
        assert!(!event(b"[DONE]!").is_done());
        assert!(!event(b"{\"done\":true}").is_done());
        assert!(!event(b"").is_done());
    }

    #[test]
    fn debug_shows_text() {
        let text = format!("{:?}", event(b"hi"));
        assert_eq!(text, r#"Event { event_type: "message", data: "hi" }"#);
    }
}
