//! A sans-io decoder for server-sent events (`text/event-stream`), the format of streamed LLM
//! responses.
//!
//! [`Decoder`] turns bytes into [`Event`]s and does no I/O; [`EventStream`] wraps any stream of
//! body chunks (`Result<Bytes, Error>`) and yields events, without needing a runtime.
//!
//! Decoding follows the WHATWG HTML standard's rules for interpreting an event stream
//! exactly: LF, CRLF and lone CR line ends (a CRLF split between two chunks is one line end), one
//! leading byte order mark skipped, `:` comments, `event`, `data` (several lines joined with
//! `\n`), `id` (ignored when it contains U+0000, remembered across events) and `retry` (digits
//! only) fields (one departure: an `id` longer than [`MAX_ID_BYTES`] is ignored too, as a
//! hostile server's 16 MiB ID would be kept for the whole stream), unknown fields ignored
//! (one kept aside, not dispatched: llama.cpp's `error:` line, [`Decoder::error_field`]), an event dispatched at a blank line only when it has
//! data, and an unfinished event at the end of the stream discarded. Invalid UTF-8 is decoded
//! with U+FFFD replacement characters. Input may be split at any byte, even inside a UTF-8
//! character, and decodes the same.
//!
//! It is built for throughput: complete lines are parsed straight out of the input `Bytes`, and
//! the data of a one-line event is a slice of the input, not a copy. [`Limits`] caps the length
//! of a line and the size of an event (16 MiB each by default), so a misbehaving server
//! cannot make it buffer without bound.
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use volley_core::sse::Decoder;
//!
//! let mut decoder = Decoder::new();
//! let mut content = String::new();
//! // Chunks as the network delivers them: split anywhere, even inside a line.
//! for chunk in [
//!     &b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\nda"[..],
//!     b"ta: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\ndata: [DONE]\n\n",
//! ] {
//!     decoder.feed(Bytes::copy_from_slice(chunk));
//!     while let Some(event) = decoder.next_event()? {
//!         if event.is_done() {
//!             break;
//!         }
//!         let chunk: serde_json::Value = serde_json::from_str(event.data()).unwrap();
//!         content += chunk["choices"][0]["delta"]["content"].as_str().unwrap_or("");
//!     }
//! }
//! assert_eq!(content, "Hello");
//! # Ok::<(), volley_core::Error>(())
//! ```

mod decoder;
mod event;
mod limits;
mod stream;
#[cfg(test)]
mod tests;

pub use decoder::{Decoder, MAX_ERROR_FIELD_BYTES, MAX_ID_BYTES};
pub use event::Event;
pub use limits::Limits;
pub use stream::EventStream;
