//! What a lane sends its requests through: the whole client stack or the bare transport.

use volley::Client;
use volley::core::{Error, Request, Response};
use volley::transport::Transport;

/// What sends the requests.
#[derive(Clone)]
pub(crate) enum Target {
    /// Boxed: a `Client` is a few hundred bytes and the target is cloned once per lane.
    Full(Box<Client>),
    Bare(Transport),
}

impl Target {
    pub(crate) async fn send(&self, request: Request) -> Result<Response, Error> {
        match self {
            Target::Full(client) => client.send(request).await,
            Target::Bare(transport) => transport.send(request).await,
        }
    }
}
