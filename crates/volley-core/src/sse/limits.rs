//! Caps that keep a misbehaving server from making the decoder buffer without bound.

/// Size caps for a [`Decoder`](super::Decoder) or [`EventStream`](super::EventStream).
///
/// A line or an event larger than its cap makes the decoder fail with an error of kind
/// [`ErrorKind::BodyDecode`](crate::ErrorKind::BodyDecode) that names the cap; a size exactly
/// at the cap is allowed. The defaults are far above what chat-completion streams send (their
/// events are a few hundred bytes, rarely over 64 KiB) and still bound the memory one stream
/// can take. Raise them for streams that carry large payloads in one event, such as
/// base64-encoded images.
///
/// ```
/// use volley_core::sse::{Decoder, Limits};
///
/// let limits = Limits::new()
///     .max_line_bytes(64 * 1024)
///     .max_event_bytes(256 * 1024);
/// let decoder = Decoder::with_limits(limits);
/// # drop(decoder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Limits {
    pub(super) max_line_bytes: usize,
    pub(super) max_event_bytes: usize,
}

impl Limits {
    /// The default line cap: 16 MiB, the event cap, since an event's data is usually one
    /// line: a streamed image in base64 (OpenRouter's `delta.images`, the Responses API's
    /// `response.completed` with an `image_generation_call` result) passes 4 MiB.
    pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
    /// The default event cap: 16 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

    /// The default caps: 16 MiB per line and per event.
    pub const fn new() -> Limits {
        Limits {
            max_line_bytes: Limits::DEFAULT_MAX_LINE_BYTES,
            max_event_bytes: Limits::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// The longest line accepted, in bytes, not counting its line end. The check is made as
    /// soon as that many bytes of a line have arrived without a line end, so an endless line is
    /// caught before it is buffered. Every field counts, comments included, and for a `data:`
    /// line the field name and colon count too.
    ///
    /// Default: 16 MiB ([`Limits::DEFAULT_MAX_LINE_BYTES`]).
    pub const fn max_line_bytes(mut self, bytes: usize) -> Limits {
        self.max_line_bytes = bytes;
        self
    }

    /// The largest data of one event accepted, in bytes: the values of its `data:` fields
    /// joined with `\n`, exactly as [`Event::data`](super::Event::data) would return it. The
    /// check is made as each `data:` line arrives, before it is buffered.
    ///
    /// Default: 16 MiB ([`Limits::DEFAULT_MAX_EVENT_BYTES`]).
    pub const fn max_event_bytes(mut self, bytes: usize) -> Limits {
        self.max_event_bytes = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new()
    }
}
