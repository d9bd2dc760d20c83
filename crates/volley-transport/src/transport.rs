//! [`Transport`]: the client handle (an `Arc` of the [`Inner`] state its clones share), its
//! public methods, and the `tower::Service` implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tower_service::Service;
use volley_core::{Error, Request, Response};

use crate::inner::Inner;
use crate::send;
use crate::stats::ConnectionStats;

/// The pooled HTTP client. Cheap to clone; clones share everything.
///
/// See the [crate docs](crate) for what it does and does not do.
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Arc<Inner>,
}

/// The future of [`Transport::call`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

impl Transport {
    /// Sends one request.
    pub fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        send::send(self.inner.clone(), request)
    }

    /// Connection counters so far.
    pub fn stats(&self) -> ConnectionStats {
        self.inner.counters.snapshot()
    }

    /// Who this transport calls as, and where: a hash of the base URL, the API key and any
    /// credential-like default header (`api-key`, `OpenAI-Organization`, ...). Caches key
    /// their entries with it so that answers never cross endpoints or accounts; the key
    /// itself cannot be recovered from it.
    pub fn credential_id(&self) -> volley_core::cache_key::CredentialId {
        self.inner.credential
    }

    /// What caches key this transport's entries by: its [`credential_id`](Self::credential_id)
    /// narrowed by the settings that shape an answer (Azure's `api-version`, Anthropic's
    /// version and beta features), so that clients differing in them never share entries. (A
    /// shared rate limit is kept by the credential alone: the provider's budget is the key's,
    /// whatever the version.)
    pub fn cache_id(&self) -> volley_core::cache_key::CredentialId {
        self.inner.cache_id
    }

    /// Replaces the API key with `***` wherever it occurs in `text`: for provider text that
    /// is about to be shown (a server or proxy may echo the key).
    pub fn scrub_secrets(&self, text: Bytes) -> Bytes {
        self.inner.scrub_key(text)
    }

    /// The base URL requests are sent to (`https://api.openai.com/v1`).
    pub fn base_url(&self) -> &str {
        &self.inner.display_base
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.inner.display_base)
            // Shown as `http://***@host:port`: never the password.
            .field("proxy", &self.inner.route.proxy().map(|p| p.display()))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Service<Request> for Transport {
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    /// Always ready: the pool has no limit of its own. Put a concurrency limit in front.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> ResponseFuture {
        // The request is built first, then the allocation is made, so that an optimised build
        // constructs the future in it: `Box::pin(send(..))` built the future on the stack and
        // copied all of it into the box, 232 instructions of `memcpy` per request under
        // callgrind when it was 2 KiB.
        match send::Sending::start(self.inner.clone(), request) {
            Ok(sending) => {
                let future = Box::write(Box::new_uninit(), sending.answer());
                Box::into_pin(future)
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_key() {
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9/v1")
            .api_key("sk-secret-debug")
            .build()
            .unwrap();
        let text = format!(
            "{t:?} {:?}",
            Transport::builder().api_key("sk-secret-debug")
        );
        assert!(!text.contains("sk-secret-debug"), "{text}");
    }
}
