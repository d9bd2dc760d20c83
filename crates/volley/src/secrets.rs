//! Every endpoint's key scrubbed from provider text about to be shown (an error body or an
//! error event that echoes the key back).

use std::sync::Arc;

use bytes::Bytes;
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
}
