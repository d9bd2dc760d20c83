//! What the clones of one [`Transport`](crate::Transport) share: the backend, the base URL
//! (with the common endpoints joined to it once), the default headers and limits, and the
//! joining of a request's path onto the base URL.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Uri};
use volley_core::{Error, ErrorKind};

use crate::backend::Backend;
use crate::provider::{AzureShape, azure_path};
use crate::proxy::Route;
use crate::stats::Counters;

/// What the clones of one [`Transport`](crate::Transport) share.
pub(crate) struct Inner {
    pub(crate) client: Backend,
    /// What Azure OpenAI asks of each URL (`api-version`, deployments); `None` for OpenAI.
    pub(crate) azure: Option<AzureShape>,
    /// How connections are opened: directly, or through which proxy.
    pub(crate) route: Arc<Route>,
    /// The `Host` header of every request (HTTP/1.1 sends origin-form targets).
    pub(crate) host: HeaderValue,
    pub(crate) credential: volley_core::cache_key::CredentialId,
    /// The credential narrowed by the settings that shape an answer (API versions, beta
    /// features): what cache entries are keyed by.
    pub(crate) cache_id: volley_core::cache_key::CredentialId,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) base_path: String,
    /// The OpenAI endpoints joined with the base path once, so the common requests build
    /// their URI without allocating.
    pub(crate) joined: [(&'static str, PathAndQuery); 4],
    pub(crate) display_base: Arc<str>,
    pub(crate) default_headers: HeaderMap,
    /// Every header of a request with a JSON body and no headers of its own (the usual one):
    /// `Host`, the defaults, a forward proxy's credentials, `Content-Type`; cloned per request.
    pub(crate) json_headers: HeaderMap,
    pub(crate) gzip: bool,
    pub(crate) brotli: bool,
    /// Whether HTTP/2 is spoken without asking
    /// ([`Builder::http2_prior_knowledge`](crate::Builder::http2_prior_knowledge)): a server
    /// that answers in HTTP/1.1 is then told apart in the error.
    pub(crate) http2_only: bool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_error_body_bytes: usize,
    pub(crate) max_body_bytes: usize,
    /// The budget of [`Builder::max_buffered_bytes`](crate::Builder::max_buffered_bytes), and
    /// what the clones of this transport are buffering now.
    pub(crate) max_buffered_bytes: usize,
    pub(crate) buffered: std::sync::atomic::AtomicUsize,
    /// The API key and the credential-like default headers (each value, and the token after
    /// its scheme: `Bearer sk-..` gives `sk-..` too), kept only to scrub them from error
    /// bodies a server might echo them in.
    pub(crate) secrets: Vec<Bytes>,
}

pub(crate) use volley_core::redact::secrets_of;

/// The endpoints whose joined paths are computed once per transport.
const COMMON_PATHS: [&str; 4] = [
    volley_core::openai::CHAT_COMPLETIONS_PATH,
    volley_core::openai::EMBEDDINGS_PATH,
    volley_core::openai::MODELS_PATH,
    volley_core::anthropic::MESSAGES_PATH,
];

pub(crate) fn joined_paths(base_path: &str) -> [(&'static str, PathAndQuery); 4] {
    COMMON_PATHS.map(|path| {
        let joined = format!("{base_path}{path}");
        let joined = PathAndQuery::from_maybe_shared(Bytes::from(joined))
            .unwrap_or_else(|_| PathAndQuery::from_static(path));
        (path, joined)
    })
}

impl Inner {
    #[cfg(test)]
    fn uri_for(&self, path: &PathAndQuery) -> Result<Uri, Error> {
        self.absolute(self.path_with_body(path, &Bytes::new())?)
    }

    /// The absolute URI of a joined path.
    pub(crate) fn absolute(&self, path_and_query: PathAndQuery) -> Result<Uri, Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "the joined URL is invalid").with_source(e)
            })
    }

    /// The base path joined with a request's path and query.
    ///
    /// Azure's conventions apply when the provider is Azure (`api-version`, and the deployment
    /// named by the body's `model`).
    pub(crate) fn path_with_body(
        &self,
        path: &PathAndQuery,
        body: &Bytes,
    ) -> Result<PathAndQuery, Error> {
        if let Some(azure) = &self.azure
            && path.as_str().starts_with('/')
        {
            return azure_path(azure, &self.base_path, path, body);
        }
        if !path.as_str().starts_with('/') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the request path {} does not start with '/'",
                    volley_core::redact::quoted_path(path.as_str())
                ),
            ));
        }
        let invalid = |e: http::Error| {
            Error::new(ErrorKind::InvalidInput, "the joined URL is invalid").with_source(e)
        };
        Ok(if self.base_path.is_empty() {
            path.clone()
        } else if let Some((_, joined)) = self.joined.iter().find(|(p, _)| *p == path.as_str()) {
            joined.clone()
        } else {
            let mut joined = String::with_capacity(self.base_path.len() + path.as_str().len());
            joined.push_str(&self.base_path);
            joined.push_str(path.as_str());
            PathAndQuery::from_maybe_shared(Bytes::from(joined)).map_err(|e| invalid(e.into()))?
        })
    }

    /// Replaces the API key and the credential-like default headers with `***` in an error
    /// body, should a server echo them.
    pub(crate) fn scrub_key(&self, body: Bytes) -> Bytes {
        self.scrub(body, &[])
    }

    /// [`Inner::scrub_key`], and `extra` secrets too (a request's own credential headers).
    /// Longer secrets go first, so a token is never half-replaced by a shorter one inside it.
    pub(crate) fn scrub(&self, body: Bytes, extra: &[Bytes]) -> Bytes {
        volley_core::redact::scrub_secrets(body, self.secrets.iter().chain(extra))
    }

    /// [`Inner::scrub`] for a body cut short: the first bytes of a secret the cut split go
    /// too ([`volley_core::redact::scrub_secrets_cut`]).
    pub(crate) fn scrub_cut(&self, body: Bytes, extra: &[Bytes]) -> Bytes {
        volley_core::redact::scrub_secrets_cut(body, self.secrets.iter().chain(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transport;

    #[test]
    fn paths_join_the_base_path() {
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9/prefix/v1/")
            .build()
            .unwrap();
        let uri = t
            .inner
            .uri_for(&PathAndQuery::from_static("/chat/completions?x=1"))
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9/prefix/v1/chat/completions?x=1"
        );
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9")
            .build()
            .unwrap();
        let uri = t
            .inner
            .uri_for(&PathAndQuery::from_static("/v1/models"))
            .unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9/v1/models");
    }

    #[test]
    fn echoed_keys_are_scrubbed_from_error_bodies() {
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9/v1")
            .api_key("sk-echo")
            .build()
            .unwrap();
        let body = Bytes::from_static(br#"{"error":{"message":"bad key sk-echo and sk-echo!"}}"#);
        let scrubbed = t.inner.scrub_key(body);
        assert_eq!(
            &scrubbed[..],
            br#"{"error":{"message":"bad key *** and ***!"}}"#
        );
        let clean = Bytes::from_static(b"nothing here");
        assert_eq!(t.inner.scrub_key(clean.clone()).as_ptr(), clean.as_ptr());
    }

    #[test]
    fn echoed_credential_headers_are_scrubbed_too() {
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9/v1")
            .default_header(
                http::HeaderName::from_static("api-key"),
                HeaderValue::from_static("azure-secret-1"),
            )
            .default_header(
                http::HeaderName::from_static("cookie"),
                HeaderValue::from_static("session=cookie-secret"),
            )
            .build()
            .unwrap();
        let mut extra = Vec::new();
        secrets_of(b"Bearer tenant-token-9", &mut extra);
        let body = Bytes::from_static(
            br#"{"error":{"message":"azure-secret-1 / session=cookie-secret / tenant-token-9"}}"#,
        );
        let scrubbed = t.inner.scrub(body, &extra);
        assert_eq!(&scrubbed[..], br#"{"error":{"message":"*** / *** / ***"}}"#);
    }

    #[test]
    fn common_paths_are_joined_once() {
        let t = Transport::builder()
            .base_url("http://127.0.0.1:9/v1")
            .build()
            .unwrap();
        let chat = PathAndQuery::from_static("/chat/completions");
        let a = t.inner.uri_for(&chat).unwrap();
        assert_eq!(a.path(), "/v1/chat/completions");
        let b = t.inner.uri_for(&chat).unwrap();
        // Both share the pre-joined bytes: no allocation per request.
        assert_eq!(a.path().as_ptr(), b.path().as_ptr());
        let err = t
            .inner
            .uri_for(&PathAndQuery::from_static("?x=1"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
