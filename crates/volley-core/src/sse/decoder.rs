//! The sans-io decoder: bytes in, events out.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::event::{Event, Utf8Bytes};
use super::limits::Limits;
use crate::{Error, ErrorKind};

/// A UTF-8 byte order mark; one at the very start of a stream is skipped.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The longest event ID kept ([`Decoder::last_event_id`]); a longer `id:` field is ignored.
/// Real IDs are a number or a UUID.
pub const MAX_ID_BYTES: usize = 1024;

/// The longest `error:` field value kept ([`Decoder::error_field`]); a longer one is ignored.
/// A real one is an error object of a few hundred bytes.
pub const MAX_ERROR_FIELD_BYTES: usize = 64 * 1024;

/// Decodes a `text/event-stream` body into [`Event`]s, following the WHATWG HTML standard's
/// rules for interpreting an event stream. It does no I/O: [`feed`](Decoder::feed) it bytes as
/// they arrive, in chunks split anywhere, and call [`next_event`](Decoder::next_event) until it
/// returns `Ok(None)`.
///
/// Fed bytes are held until `next_event` has consumed them, so feed and drain in turn. Complete
/// lines are parsed straight out of the fed `Bytes`; only a line that straddles two chunks is
/// copied, once.
///
/// There is no "end of input" call: the standard discards an event that was not finished by a
/// blank line when the stream ends, and so does a caller that simply stops.
pub struct Decoder {
    limits: Limits,

    // The unconsumed input is `partial`, then `buf`, then the chunks in `queue`.
    /// The start of a line whose end has not arrived yet. Never holds a line end.
    partial: BytesMut,
    /// The chunk being parsed; complete lines are cut out of it without copying.
    buf: Bytes,
    /// Chunks fed while `buf` still had unconsumed bytes.
    queue: VecDeque<Bytes>,
    /// The last line ended with a CR at the very end of the input: an LF that comes next
    /// completes that line end instead of ending an empty line.
    skip_lf: bool,
    /// How many bytes of a leading BOM have been seen and held back, or `None` once the start
    /// of the stream has been decided.
    bom_held: Option<usize>,

    // The event being built.
    data: Data,
    event_type: Option<Utf8Bytes>,
    retry: Option<Duration>,

    // State that outlives an event. The standard's "last event ID buffer" is `pending_id` when
    // set, `last_event_id` otherwise; it becomes the last event ID string at the next blank line.
    pending_id: Option<Utf8Bytes>,
    last_event_id: Utf8Bytes,
    reconnection_time: Option<Duration>,
    /// The value of the latest `error:` field (not a standard field: see
    /// [`Decoder::error_field`]).
    error_field: Option<Bytes>,
    /// Set when a cap was exceeded: the message of the error every later call returns.
    failed: Option<String>,
}

/// The data buffer of the event being built. A one-line event keeps its value as a slice of the
/// input; only an event with several `data:` lines joins them into a new buffer.
#[derive(Default)]
enum Data {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Decoder {
    /// Creates a decoder with the default [`Limits`] (16 MiB per line and per event).
    pub fn new() -> Decoder {
        Decoder::with_limits(Limits::new())
    }

    /// Creates a decoder with the given caps.
    pub fn with_limits(limits: Limits) -> Decoder {
        Decoder {
            limits,
            partial: BytesMut::new(),
            buf: Bytes::new(),
            queue: VecDeque::new(),
            skip_lf: false,
            bom_held: Some(0),
            data: Data::Empty,
            event_type: None,
            retry: None,
            pending_id: None,
            last_event_id: Utf8Bytes::default(),
            reconnection_time: None,
            error_field: None,
            failed: None,
        }
    }

    /// Adds the next chunk of the stream. Takes the chunk without copying it. Ignored after the
    /// decoder has failed.
    pub fn feed(&mut self, chunk: Bytes) {
        if self.failed.is_some() || chunk.is_empty() {
            return;
        }
        let chunk = match self.bom_held {
            None => chunk,
            Some(held) => match self.strip_bom(held, chunk) {
                Some(chunk) => chunk,
                None => return,
            },
        };
        if self.buf.is_empty() && self.queue.is_empty() {
            self.buf = chunk;
        } else if !chunk.is_empty() {
            self.queue.push_back(chunk);
        }
    }

    /// Adds the next chunk of the stream, copying it. Prefer [`feed`](Decoder::feed) when the
    /// bytes are already in a `Bytes`.
    pub fn feed_slice(&mut self, chunk: &[u8]) {
        if self.failed.is_none() && !chunk.is_empty() {
            self.feed(Bytes::copy_from_slice(chunk));
        }
    }

    /// Decodes the next event from the input fed so far. `Ok(None)` means more input is needed.
    ///
    /// # Errors
    /// An error of kind [`ErrorKind::BodyDecode`] when a line or an event exceeds its cap (the
    /// message names the cap and its size). The decoder is then unusable: input it holds is
    /// dropped, later input is ignored, and every later call returns an error with the same
    /// kind and message.
    ///
    /// Nothing else is an error: every byte sequence is a valid event stream to the standard
    /// (invalid UTF-8 is replaced, unknown fields are ignored).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        if let Some(message) = &self.failed {
            return Err(Error::new(ErrorKind::BodyDecode, message.clone()));
        }
        let result = loop {
            match self.next_line() {
                Ok(Some(line)) => match self.process_line(line) {
                    Ok(None) => continue,
                    other => break other,
                },
                other => break other.map(|_| None),
            }
        };
        result.map_err(|message| self.fail(message))
    }

    /// The last event ID string: the ID of the most recently dispatched event, or of a blank
    /// line that followed an `id:` field. Send it as `Last-Event-ID` when reconnecting. Empty
    /// until the server sets one.
    pub fn last_event_id(&self) -> &str {
        self.last_event_id.as_str()
    }

    /// The reconnection time the server asked for with its latest valid `retry:` field, or
    /// `None` if it never sent one.
    pub fn reconnection_time(&self) -> Option<Duration> {
        self.reconnection_time
    }

    /// The value of the latest `error:` line, when the stream had one. `error` is not a field
    /// of the standard, which ignores it (so does [`next_event`](Decoder::next_event): no event
    /// comes of it), but llama.cpp's server (before it moved to `data: {"error": ..}`, and
    /// forks and servers built on that code still) reports a failure inside a stream as
    /// `error: {"code":500,"message":"..","type":"server_error"}` and then ends the stream:
    /// kept aside, a caller can say why the stream stopped. An empty value, or one longer
    /// than [`MAX_ERROR_FIELD_BYTES`], is not kept.
    ///
    /// ```
    /// use volley_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::new();
    /// decoder.feed_slice(b"data: {}\n\nerror: {\"message\":\"slot unavailable\"}\n\n");
    /// assert!(decoder.next_event()?.is_some());
    /// assert!(decoder.next_event()?.is_none());
    /// assert_eq!(decoder.error_field(), Some(&b"{\"message\":\"slot unavailable\"}"[..]));
    /// # Ok::<(), volley_core::Error>(())
    /// ```
    pub fn error_field(&self) -> Option<&[u8]> {
        self.error_field.as_deref()
    }

    /// Returns the next complete line, without its line end, or `None` when the input holds no
    /// complete line. An incomplete line is moved into `partial` to wait for its end.
    fn next_line(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let Some(&first) = self.buf.first() else {
                match self.queue.pop_front() {
                    Some(chunk) => self.buf = chunk,
                    None => {
                        // Release the chunk's storage while we wait for more input.
                        self.buf = Bytes::new();
                        return Ok(None);
                    }
                }
                continue;
            };
            if self.skip_lf {
                self.skip_lf = false;
                if first == b'\n' {
                    self.buf.advance(1);
                    continue;
                }
            }
            let line = if first == b'\n' || first == b'\r' {
                // Every event ends with an empty line: spare it the search and the slicing.
                if self.partial.is_empty() {
                    Bytes::new()
                } else {
                    self.take_partial()
                }
            } else {
                let Some(end) = memchr::memchr2(b'\n', b'\r', &self.buf) else {
                    self.check_line(self.buf.len())?;
                    self.partial.extend_from_slice(&self.buf);
                    self.buf = Bytes::new();
                    continue;
                };
                self.check_line(end)?;
                if self.partial.is_empty() {
                    self.buf.split_to(end)
                } else {
                    self.partial.extend_from_slice(&self.buf[..end]);
                    self.buf.advance(end);
                    self.take_partial()
                }
            };
            // `buf` now starts with the CR or LF that ended the line.
            let cr = self.buf[0] == b'\r';
            self.buf.advance(1);
            if cr {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            return Ok(Some(line));
        }
    }

    /// Takes the line completed in `partial`. Its spare capacity is kept for the next line that
    /// straddles two chunks, unless an unusually long line grew it: then it is let go, so one
    /// long line does not pin a large buffer for the rest of the stream.
    fn take_partial(&mut self) -> Bytes {
        const KEEP_CAPACITY: usize = 64 * 1024;
        let line = self.partial.split().freeze();
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = BytesMut::new();
        }
        line
    }

    /// Fails if a line whose `len` bytes sit in `buf`, after those in `partial`, is too long.
    fn check_line(&self, len: usize) -> Result<(), String> {
        let total = self.partial.len() + len;
        if total > self.limits.max_line_bytes {
            return Err(format!(
                "server-sent event line of at least {total} bytes exceeds the max_line_bytes \
                 limit of {} bytes",
                self.limits.max_line_bytes
            ));
        }
        Ok(())
    }

    /// Interprets one line; returns the event when the line is blank and dispatches one.
    fn process_line(&mut self, mut line: Bytes) -> Result<Option<Event>, String> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        // Nearly every line of an LLM stream is `data:`; skip the search for the colon.
        let (name_end, mut value_start) = if line.starts_with(b"data:") {
            (4, 5)
        } else {
            match memchr::memchr(b':', &line) {
                Some(0) => return Ok(None), // a comment
                Some(colon) => (colon, colon + 1),
                None => (line.len(), line.len()),
            }
        };
        if line.get(value_start) == Some(&b' ') {
            value_start += 1;
        }
        match &line[..name_end] {
            b"data" => {
                line.advance(value_start);
                self.push_data(line)?;
            }
            b"event" => {
                line.advance(value_start);
                self.event_type = (!line.is_empty()).then(|| Utf8Bytes::from_lossy(line));
            }
            b"id" => {
                let value = &line[value_start..];
                // An ID is kept for the rest of the stream, and copied into every event: one
                // longer than any real one (a hostile server's 16 MiB) is ignored as one with
                // a NUL is, instead of held that long.
                if value.len() <= MAX_ID_BYTES && memchr::memchr(0, value).is_none() {
                    // Copied: the ID outlives the chunk, which need not stay alive for it.
                    self.pending_id = Some(Utf8Bytes::from_lossy(Bytes::copy_from_slice(value)));
                }
            }
            b"retry" => {
                if let Some(millis) = parse_retry(&line[value_start..]) {
                    let retry = Duration::from_millis(millis);
                    self.retry = Some(retry);
                    self.reconnection_time = Some(retry);
                }
            }
            b"error" => {
                let value = &line[value_start..];
                // An empty one says nothing.
                if !value.is_empty() && value.len() <= MAX_ERROR_FIELD_BYTES {
                    // Copied, as an ID is: it is read after the chunk is gone.
                    self.error_field = Some(Bytes::copy_from_slice(value));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// Appends one `data:` value to the event being built, checking the event cap first.
    fn push_data(&mut self, value: Bytes) -> Result<(), String> {
        let len = match &self.data {
            Data::Empty => value.len(),
            Data::One(first) => first.len() + 1 + value.len(),
            Data::Many(joined) => joined.len() + 1 + value.len(),
        };
        if len > self.limits.max_event_bytes {
            return Err(format!(
                "server-sent event data of at least {len} bytes exceeds the max_event_bytes \
                 limit of {} bytes",
                self.limits.max_event_bytes
            ));
        }
        self.data = match mem::take(&mut self.data) {
            Data::Empty => Data::One(value),
            Data::One(first) => {
                let mut joined = BytesMut::with_capacity(len);
                joined.extend_from_slice(&first);
                joined.put_u8(b'\n');
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.put_u8(b'\n');
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
        };
        Ok(())
    }

    /// Handles a blank line: the standard's "dispatch the event" steps.
    fn dispatch(&mut self) -> Option<Event> {
        // The last event ID string is set even when nothing is dispatched.
        if let Some(id) = self.pending_id.take() {
            self.last_event_id = id;
        }
        let retry = self.retry.take();
        let event_type = self.event_type.take();
        let data = match mem::take(&mut self.data) {
            Data::Empty => return None,
            Data::One(data) => data,
            Data::Many(data) => data.freeze(),
        };
        Some(Event {
            event_type: event_type.unwrap_or(Utf8Bytes::MESSAGE),
            data: Utf8Bytes::from_lossy(data),
            id: self.last_event_id.cheap_clone(),
            retry,
        })
    }

    /// Skips one leading BOM, which may arrive split over several chunks. `held` BOM bytes have
    /// been seen and held back so far. Returns what is left of `chunk` to parse, or `None` while
    /// it is still undecided whether the stream starts with a BOM.
    fn strip_bom(&mut self, held: usize, mut chunk: Bytes) -> Option<Bytes> {
        let rest = &BOM[held..];
        let n = rest.len().min(chunk.len());
        if chunk[..n] == rest[..n] {
            if n < rest.len() {
                self.bom_held = Some(held + n);
                return None;
            }
            chunk.advance(n);
            self.bom_held = None;
            return Some(chunk);
        }
        // Not a BOM after all: the bytes held back are data and come first.
        self.bom_held = None;
        if held > 0 {
            self.buf = Bytes::from_static(&BOM[..held]);
        }
        Some(chunk)
    }

    /// Puts the decoder in its failed state, dropping what it buffered.
    fn fail(&mut self, message: String) -> Error {
        let error = Error::new(ErrorKind::BodyDecode, message.clone());
        self.failed = Some(message);
        self.partial = BytesMut::new();
        self.buf = Bytes::new();
        self.queue = VecDeque::new();
        self.data = Data::Empty;
        self.event_type = None;
        error
    }
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffered =
            self.partial.len() + self.buf.len() + self.queue.iter().map(Bytes::len).sum::<usize>();
        f.debug_struct("Decoder")
            .field("limits", &self.limits)
            .field("buffered", &buffered)
            .field("last_event_id", &self.last_event_id())
            .field("reconnection_time", &self.reconnection_time)
            .field("error_field", &self.error_field.is_some())
            .field("failed", &self.failed.is_some())
            .finish()
    }
}

/// Parses a `retry:` value: only ASCII digits (at least one) count; anything else is ignored.
/// Values too large for `u64` milliseconds saturate.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |millis, digit| {
        millis
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one at a time, draining events after each.
    fn decode_with(decoder: &mut Decoder, chunks: &[&[u8]]) -> Vec<Event> {
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.feed(Bytes::copy_from_slice(chunk));
            while let Some(event) = decoder.next_event().unwrap() {
                events.push(event);
            }
        }
        events
    }

    fn decode(chunks: &[&[u8]]) -> Vec<Event> {
        decode_with(&mut Decoder::new(), chunks)
    }

    /// Decodes `input` whole, then split at every byte, and checks both agree.
    fn decode_all(input: &[u8]) -> Vec<Event> {
        let whole = decode(&[input]);
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(&bytewise), whole, "bytewise decoding differs");
        whole
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().map(Event::data).collect()
    }

    #[test]
    fn spec_multi_line_data_is_joined() {
        let events = decode_all(b"data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(data(&events), ["YHOO\n+2\n10"]);
        assert_eq!(events[0].event_type(), "message");
        assert_eq!(events[0].id(), "");
        assert_eq!(events[0].retry(), None);
    }

    #[test]
    fn spec_comments_ids_and_unfinished_event() {
        let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        let mut decoder = Decoder::new();
        let events = decode_with(&mut decoder, &[stream]);
        assert_eq!(data(&events), ["first event", "second event"]);
        assert_eq!(events[0].id(), "1");
        assert_eq!(events[1].id(), "");
        assert_eq!(decoder.last_event_id(), "");
        // The blank line that finishes the last block dispatches it.
        let events = decode_with(&mut decoder, &[b"\n"]);
        assert_eq!(data(&events), [" third event"]);
        assert_eq!(decode_all(stream).len(), 2);
    }

    #[test]
    fn spec_empty_data_lines() {
        let events = decode_all(b"data\n\ndata\ndata\n\ndata:\n");
        assert_eq!(data(&events), ["", "\n"]);
    }

    #[test]
    fn one_leading_space_is_removed() {
        let events = decode_all(b"data:test\n\ndata: test\n\ndata:  test\n\ndata: \n\n");
        assert_eq!(data(&events), ["test", "test", " test", ""]);
        let events = decode_all(b"data: a:b: c\n\ndata:\ttab\n\n");
        assert_eq!(data(&events), ["a:b: c", "\ttab"]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let events =
            decode_all(b": hi\n:\nfoo: bar\nDATA: upper\n data: lead\ndata : x\nbar\ndata: ok\n\n");
        assert_eq!(data(&events), ["ok"]);
        assert_eq!(events[0].event_type(), "message");
    }

    /// llama.cpp's `error:` line dispatches nothing, as the standard says; its value is kept
    /// aside, the latest one, whole even when split across chunks; one past the cap is not.
    #[test]
    fn an_error_line_dispatches_nothing_and_is_kept_aside() {
        let mut decoder = Decoder::new();
        assert_eq!(decoder.error_field(), None);
        let events = decode_with(
            &mut decoder,
            &[
                b"data: a\n\nerror: {\"message\":\"fir",
                b"st\"}\n\nerror:{\"message\":\"second\"}\r\n\r\n",
            ],
        );
        assert_eq!(data(&events), ["a"]);
        assert_eq!(
            decoder.error_field(),
            Some(&b"{\"message\":\"second\"}"[..])
        );
        let long = format!("error: {}\n\n", "x".repeat(MAX_ERROR_FIELD_BYTES + 1));
        decode_with(&mut decoder, &[long.as_bytes(), b"error:\nerror: \n\n"]);
        assert_eq!(
            decoder.error_field(),
            Some(&b"{\"message\":\"second\"}"[..])
        );
        // Only a field named exactly `error`.
        let mut other = Decoder::new();
        decode_with(&mut other, &[b"errors: x\nError: y\nerror_: z\n\n"]);
        assert_eq!(other.error_field(), None);
    }

    #[test]
    fn line_ends_lf_crlf_and_cr() {
        for input in [
            &b"data: a\ndata: b\n\n"[..],
            b"data: a\r\ndata: b\r\n\r\n",
            b"data: a\rdata: b\r\r",
            b"data: a\r\ndata: b\r\r\n",
            b"data: a\rdata: b\n\r",
        ] {
            assert_eq!(data(&decode_all(input)), ["a\nb"], "{input:?}");
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let events = decode(&[b"data: a\r", b"\ndata: b\r", b"\n", b"\r", b"\n"]);
        assert_eq!(data(&events), ["a\nb"]);
        // The LF that would complete a CRLF may come after several empty chunks.
        let events = decode(&[b"data: a\r", b"", b"\n\n"]);
        assert_eq!(data(&events), ["a"]);
    }

    #[test]
    fn a_cr_at_the_end_of_input_ends_its_line_at_once() {
        let mut decoder = Decoder::new();
        decoder.feed(Bytes::from_static(b"data: a\n\r"));
        assert_eq!(decoder.next_event().unwrap().unwrap().data(), "a");
        // A CR that is followed by another CR is a line end plus an empty line.
        decoder.feed(Bytes::from_static(b"data: b\r"));
        assert_eq!(decoder.next_event().unwrap(), None);
        decoder.feed(Bytes::from_static(b"\r"));
        assert_eq!(decoder.next_event().unwrap().unwrap().data(), "b");
    }

    #[test]
    fn one_leading_bom_is_skipped() {
        assert_eq!(data(&decode_all(b"\xEF\xBB\xBFdata: x\n\n")), ["x"]);
        // Only one: a second BOM belongs to the first field's name.
        assert!(decode_all(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n").is_empty());
        assert_eq!(
            data(&decode(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"])),
            ["x"]
        );
        // A BOM anywhere but the start is data.
        assert_eq!(data(&decode_all(b"data: \xEF\xBB\xBFx\n\n")), ["\u{FEFF}x"]);
    }

    #[test]
    fn a_bom_prefix_that_is_not_a_bom_is_kept() {
        // The two held-back bytes become part of the first line, a field nobody knows.
        let events = decode(&[b"\xEF", b"\xBB", b"data: x\n\ndata: y\n\n"]);
        assert_eq!(data(&events), ["y"]);
        let events = decode_all(b"\xEF\xBB:\ndata: y\n\n");
        assert_eq!(data(&events), ["y"]);
        let events = decode_all(b"\xEF\ndata: y\n\n");
        assert_eq!(data(&events), ["y"]);
    }

    #[test]
    fn ids_persist_and_ids_with_nul_are_ignored() {
        let mut decoder = Decoder::new();
        let events = decode_with(
            &mut decoder,
            &[b"id: 5\ndata: a\n\ndata: b\n\nid: 6\0x\ndata: c\n\nid\ndata: d\n\n"],
        );
        let ids: Vec<&str> = events.iter().map(Event::id).collect();
        assert_eq!(ids, ["5", "5", "5", ""]);
        assert_eq!(decoder.last_event_id(), "");
    }

    /// An ID longer than [`MAX_ID_BYTES`] is ignored, as one with a NUL is: it would be kept
    /// for the rest of the stream.
    #[test]
    fn ids_longer_than_the_cap_are_ignored() {
        let mut decoder = Decoder::new();
        let long = format!("id: {}\ndata: b\n\n", "x".repeat(MAX_ID_BYTES + 1));
        let most = format!("id: {}\ndata: c\n\n", "y".repeat(MAX_ID_BYTES));
        let events = decode_with(
            &mut decoder,
            &[b"id: 5\ndata: a\n\n", long.as_bytes(), most.as_bytes()],
        );
        let ids: Vec<usize> = events.iter().map(|e| e.id().len()).collect();
        assert_eq!(ids, [1, 1, MAX_ID_BYTES]);
    }

    #[test]
    fn the_last_event_id_is_set_at_every_blank_line() {
        let mut decoder = Decoder::new();
        // A block with an id and no data dispatches nothing but still sets the ID.
        assert!(decode_with(&mut decoder, &[b"id: 9\n\n"]).is_empty());
        assert_eq!(decoder.last_event_id(), "9");
        // An id in an unfinished block does not count yet.
        assert!(decode_with(&mut decoder, &[b"id: 10\ndata: x\n"]).is_empty());
        assert_eq!(decoder.last_event_id(), "9");
        let events = decode_with(&mut decoder, &[b"\n"]);
        assert_eq!(events[0].id(), "10");
        assert_eq!(decoder.last_event_id(), "10");
    }

    #[test]
    fn retry_takes_digits_only() {
        let mut decoder = Decoder::new();
        let events = decode_with(&mut decoder, &[b"retry: 1500\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events[0].retry(), Some(Duration::from_millis(1500)));
        assert_eq!(events[1].retry(), None);
        assert_eq!(
            decoder.reconnection_time(),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            &b"retry: 15a\n"[..],
            b"retry: -1\n",
            b"retry: 1.5\n",
            b"retry:  15\n",
            b"retry:\n",
            b"retry\n",
            b"retry: \xD9\xA1\n", // an Arabic-Indic digit is not an ASCII digit
        ] {
            let events = decode_with(&mut decoder, &[bad, b"data: c\n\n"]);
            assert_eq!(events[0].retry(), None, "{bad:?}");
            assert_eq!(
                decoder.reconnection_time(),
                Some(Duration::from_millis(1500))
            );
        }
        // A retry in a block without data still sets the reconnection time.
        assert!(decode_with(&mut decoder, &[b"retry:0\n\n"]).is_empty());
        assert_eq!(decoder.reconnection_time(), Some(Duration::ZERO));
        decode_with(&mut decoder, &[b"retry: 99999999999999999999999\n\n"]);
        assert_eq!(
            decoder.reconnection_time(),
            Some(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn blocks_without_data_dispatch_nothing_and_reset_the_type() {
        let events = decode_all(b"event: foo\n\n\n\n:c\n\ndata: x\n\n");
        assert_eq!(data(&events), ["x"]);
        assert_eq!(events[0].event_type(), "message");
    }

    #[test]
    fn event_types() {
        let events = decode_all(
            b"event: add\ndata: 1\n\nevent:\ndata: 2\n\nevent: a\nevent: b\ndata: 3\n\nevent: x\nevent:\ndata: 4\n\n",
        );
        let types: Vec<&str> = events.iter().map(Event::event_type).collect();
        assert_eq!(types, ["add", "message", "b", "message"]);
        assert_eq!(data(&events), ["1", "2", "3", "4"]);
    }

    #[test]
    fn explicit_message_type_equals_the_default() {
        let explicit = decode_all(b"event: message\ndata: x\n\n");
        assert_eq!(explicit, decode_all(b"data: x\n\n"));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let events = decode_all(b"event: t\xFF\ndata: a\xFFb\ndata: \xE2\x82\nid: \xC3\n\n");
        assert_eq!(events[0].data(), "a\u{FFFD}b\n\u{FFFD}");
        assert_eq!(events[0].event_type(), "t\u{FFFD}");
        assert_eq!(events[0].id(), "\u{FFFD}");
        assert_eq!(
            std::str::from_utf8(events[0].data_bytes()).unwrap(),
            events[0].data()
        );
    }

    #[test]
    fn multi_byte_characters_split_across_chunks() {
        let events = decode_all("data: é€😀\nevent: ü\n\n".as_bytes());
        assert_eq!(data(&events), ["é€😀"]);
        assert_eq!(events[0].event_type(), "ü");
    }

    #[test]
    fn done_sentinel() {
        let events = decode_all(b"data: {}\n\ndata: [DONE]\n\n");
        assert!(!events[0].is_done());
        assert!(events[1].is_done());
    }

    #[test]
    fn one_line_data_is_a_slice_of_the_input() {
        let input = Bytes::from_static(b"data: {\"a\":1}\n\nevent: e\ndata: x\n\n");
        let range = input.as_ptr_range();
        let mut decoder = Decoder::new();
        decoder.feed(input.clone());
        for _ in 0..2 {
            let event = decoder.next_event().unwrap().unwrap();
            assert!(range.contains(&event.data_bytes().as_ptr()), "{event:?}");
        }
        assert_eq!(decoder.next_event().unwrap(), None);
    }

    #[test]
    fn chunks_fed_without_draining_are_queued_in_order() {
        let mut decoder = Decoder::new();
        for chunk in [
            &b"data: a"[..],
            b"b\r",
            b"",
            b"\ndata: c\n",
            b"\n",
            b"data: d\n\n",
        ] {
            decoder.feed(Bytes::copy_from_slice(chunk));
        }
        decoder.feed_slice(b"data: e\n\n");
        let mut events = Vec::new();
        while let Some(event) = decoder.next_event().unwrap() {
            events.push(event);
        }
        assert_eq!(data(&events), ["ab\nc", "d", "e"]);
    }

    #[test]
    fn a_long_straddling_line_does_not_pin_its_buffer() {
        let mut decoder = Decoder::new();
        let long = format!("data: {}", "x".repeat(200_000));
        let (head, tail) = long.as_bytes().split_at(100_000);
        let events = decode_with(&mut decoder, &[head, tail, b"\n\n"]);
        assert_eq!(events[0].data().len(), 200_000);
        assert!(decoder.partial.capacity() <= 64 * 1024);
        let events = decode_with(&mut decoder, &[b"data: a", b"b\n\n"]);
        assert_eq!(data(&events), ["ab"]);
    }

    #[test]
    fn debug_sums_up_the_state_without_the_bytes() {
        let mut decoder = Decoder::new();
        decoder.feed_slice(b"id: 7\n\ndata: secret");
        assert!(decoder.next_event().unwrap().is_none());
        // Held across all three places: the partial line, the chunk being parsed, the queue.
        decoder.feed_slice(b"-token");
        decoder.feed_slice(b"\n");
        let debug = format!("{decoder:?}");
        assert!(debug.contains("buffered: 19,"), "{debug}");
        assert!(debug.contains(r#"last_event_id: "7""#), "{debug}");
        assert!(debug.contains("failed: false"), "{debug}");
        assert!(
            !debug.contains("secret") && !debug.contains("token"),
            "{debug}"
        );
    }

    #[test]
    fn decoders_and_events_can_cross_threads() {
        fn check<T: Send + Sync + Unpin + 'static>() {}
        check::<Decoder>();
        check::<Event>();
    }

    fn limited(line: usize, event: usize) -> Decoder {
        Decoder::with_limits(Limits::new().max_line_bytes(line).max_event_bytes(event))
    }

    #[test]
    fn default_limits() {
        let decoder = Decoder::new();
        assert_eq!(decoder.limits.max_line_bytes, 16 << 20);
        assert_eq!(decoder.limits.max_event_bytes, 16 << 20);
        assert_eq!(Limits::default(), Limits::new());
    }

    #[test]
    fn a_line_exactly_at_the_cap_is_allowed() {
        // "data: 0123" is 10 bytes; the line end does not count.
        for input in [
            &b"data: 0123\r\n\r\n"[..],
            b"data: 0123\r\r",
            b"data: 0123\n\n",
        ] {
            let events = decode_with(&mut limited(10, 100), &[input]);
            assert_eq!(data(&events), ["0123"]);
            let bytewise: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                data(&decode_with(&mut limited(10, 100), &bytewise)),
                ["0123"]
            );
        }
    }

    fn assert_cap_error(error: &Error, cap: &str, size: usize) {
        assert_eq!(error.kind(), ErrorKind::BodyDecode);
        let text = error.to_string();
        assert!(text.contains(cap), "{text}");
        assert!(text.contains(&format!("limit of {size} bytes")), "{text}");
    }

    #[test]
    fn a_line_over_the_cap_fails_and_the_decoder_stays_failed() {
        let mut decoder = limited(10, 100);
        decoder.feed(Bytes::from_static(
            b"data: ok\n\ndata: 01234\n\ndata: more\n\n",
        ));
        assert_eq!(decoder.next_event().unwrap().unwrap().data(), "ok");
        let error = decoder.next_event().unwrap_err();
        assert_cap_error(&error, "max_line_bytes", 10);
        decoder.feed(Bytes::from_static(b"data: x\n\n"));
        let again = decoder.next_event().unwrap_err();
        assert_eq!(again.kind(), ErrorKind::BodyDecode);
        assert_eq!(again.to_string(), error.to_string());
        assert!(format!("{decoder:?}").contains("buffered: 0"));
    }

    #[test]
    fn an_endless_line_fails_before_its_end_arrives() {
        // Comments count too, and the check happens without a line end.
        let mut decoder = limited(10, 100);
        decoder.feed(Bytes::from_static(b": 12345678"));
        assert_eq!(decoder.next_event().unwrap(), None);
        decoder.feed(Bytes::from_static(b"9"));
        assert_cap_error(&decoder.next_event().unwrap_err(), "max_line_bytes", 10);
        // Within one chunk as well.
        let mut decoder = limited(10, 100);
        decoder.feed(Bytes::from_static(b"\n\n: 123456789"));
        assert_cap_error(&decoder.next_event().unwrap_err(), "max_line_bytes", 10);
    }

    #[test]
    fn an_event_exactly_at_the_cap_is_allowed() {
        // "aa\nbb" is 5 bytes.
        let input = b"data: aa\ndata: bb\n\ndata: 12345\n\n";
        let events = decode_with(&mut limited(100, 5), &[input]);
        assert_eq!(data(&events), ["aa\nbb", "12345"]);

        let mut decoder = limited(100, 4);
        decoder.feed(Bytes::from_static(b"data: 1234\n\ndata: aa\ndata: bb\n\n"));
        assert_eq!(decoder.next_event().unwrap().unwrap().data(), "1234");
        assert_cap_error(&decoder.next_event().unwrap_err(), "max_event_bytes", 4);
        let mut decoder = limited(100, 4);
        decoder.feed(Bytes::from_static(b"data: 12345\n"));
        assert_cap_error(&decoder.next_event().unwrap_err(), "max_event_bytes", 4);
    }

    #[test]
    fn empty_data_lines_count_toward_the_event_cap() {
        // Four empty data lines make "\n\n\n" (3 bytes); a fifth would make 4.
        let events = decode_with(&mut limited(100, 3), &[b"data\ndata\ndata\ndata\n\n"]);
        assert_eq!(data(&events), ["\n\n\n"]);
        let mut decoder = limited(100, 3);
        decoder.feed(Bytes::from_static(b"data\ndata\ndata\ndata\ndata\n\n"));
        assert_cap_error(&decoder.next_event().unwrap_err(), "max_event_bytes", 3);
    }
}
