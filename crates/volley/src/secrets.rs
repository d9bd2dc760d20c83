//! Every endpoint's key scrubbed from provider text about to be shown (an error body or an
//! error event that echoes the key back).

use std::sync::Arc;

use bytes::Bytes;
use volley_core::{Error, ErrorKind};
use volley_transport::Transport;

/// The client's transports, one per endpoint, for their keys.
#[derive(Clone)]
pub(crate) struct Scrubber {
    transports: Arc<[Transport]>,
}

impl Scrubber {
    pub(crate) fn new(first: &Transport, others: &[Transport]) -> Scrubber {
        Scrubber {
            transports: std::iter::once(first).chain(others).cloned().collect(),
        }
    }

    /// `text` with every endpoint's key replaced by `***`.
    pub(crate) fn scrub(&self, text: Bytes) -> Bytes {
        self.transports
            .iter()
            .fold(text, |text, transport| transport.scrub_secrets(text))
    }

    /// The error for a reply (or a stream's event) that is not the JSON expected:
    /// `{context}: {serde's message}`, the message scrubbed of the keys and cut to
    /// [`MAX_DECODE_MESSAGE`] characters. serde quotes the value it could not read (`invalid
    /// type: string "..."`), which a server may fill with anything, an echoed key or
    /// megabytes, so the serde error itself is not kept as the source.
    pub(crate) fn decode_error(
        &self,
        context: std::fmt::Arguments<'_>,
        e: &serde_json::Error,
    ) -> Error {
        let text = self.scrub(Bytes::from(e.to_string()));
        let text = String::from_utf8_lossy(&text);
        let mut cut: String = text.chars().take(MAX_DECODE_MESSAGE).collect();
        if cut.len() < text.len() {
            cut.push_str("...");
        }
        Error::new(ErrorKind::BodyDecode, format!("{context}: {cut}"))
    }
}

/// The most characters of serde's message a decode error keeps.
pub(crate) const MAX_DECODE_MESSAGE: usize = 200;
