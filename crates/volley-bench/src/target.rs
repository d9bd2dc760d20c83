//! What a lane sends its requests through: the whole client stack or the bare transport.

use std::future::Future;

use volley::Client;
use volley::core::{Error, Request, Response};
use volley::transport::Transport;

/// What the run measures ([`StackKind`](crate::StackKind)), as the driver holds it.
pub(crate) enum Target {
    /// Boxed: a `Client` is a few hundred bytes and the target is cloned once per lane.
    Full(Box<Client>),
    Bare(Transport),
}

/// What a lane sends its requests with. Lanes are generic over it, so the future of each
/// request in flight is sized for its own sender (the bare transport's is larger than the
/// whole stack's, whose transport future is boxed) rather than for the larger of the two.
pub(crate) trait Sender: Send + Sync + 'static {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send;

    /// `text` without the keys the requests carry (for a server's message kept as an
    /// example: an echoed key must not reach the report).
    fn scrub(&self, text: &str) -> String;
}

impl Sender for Box<Client> {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        Client::send(self, request)
    }

    fn scrub(&self, text: &str) -> String {
        scrubbed(text, |bytes| self.scrub_secrets(bytes))
    }
}

impl Sender for Transport {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        Transport::send(self, request)
    }

    fn scrub(&self, text: &str) -> String {
        scrubbed(text, |bytes| self.scrub_secrets(bytes))
    }
}

/// `text` through a scrubber of bytes.
fn scrubbed(text: &str, scrub: impl FnOnce(bytes::Bytes) -> bytes::Bytes) -> String {
    let bytes = scrub(bytes::Bytes::copy_from_slice(text.as_bytes()));
    String::from_utf8_lossy(&bytes).into_owned()
}
