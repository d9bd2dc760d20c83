//! What the clones of one [`Transport`](crate::Transport) share: the backend, the base URL
//! (with the common endpoints joined to it once), the default headers and limits, and the
//! joining of a request's path onto the base URL.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Uri};
use volley_core::{Error, ErrorKind};

use crate::backend::Backend;
use crate::stats::Counters;

/// What the clones of one [`Transport`](crate::Transport) share.
pub(crate) struct Inner {
    pub(crate) client: Backend,
    /// The `Host` header of every request (HTTP/1.1 sends origin-form targets).
    pub(crate) host: HeaderValue,
    pub(crate) credential: volley_core::cache_key::CredentialId,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) base_path: String,
    /// The OpenAI endpoints joined with the base path once, so the common requests build
    /// their URI without allocating.
    pub(crate) joined: [(&'static str, PathAndQuery); 3],
    pub(crate) display_base: Arc<str>,
    pub(crate) default_headers: HeaderMap,
    pub(crate) gzip: bool,
    pub(crate) brotli: bool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_error_body_bytes: usize,
    pub(crate) max_body_bytes: usize,
    /// Kept only to scrub it from error bodies a server might echo it in.
    pub(crate) api_key: Option<volley_core::ApiKey>,
}

/// The endpoints whose joined paths are computed once per transport.
const COMMON_PATHS: [&str; 3] = [
    volley_core::openai::CHAT_COMPLETIONS_PATH,
    volley_core::openai::EMBEDDINGS_PATH,
    volley_core::openai::MODELS_PATH,
];

pub(crate) fn joined_paths(base_path: &str) -> [(&'static str, PathAndQuery); 3] {
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
        self.absolute(self.path_for(path)?)
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
    pub(crate) fn path_for(&self, path: &PathAndQuery) -> Result<PathAndQuery, Error> {
        if !path.as_str().starts_with('/') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the request path {:?} does not start with '/'",
                    path.as_str()
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

    /// Replaces the API key with `***` in an error body, should a server echo it.
    pub(crate) fn scrub_key(&self, body: Bytes) -> Bytes {
        let Some(key) = self.api_key.as_ref().map(|k| k.expose().as_bytes()) else {
            return body;
        };
        if key.is_empty() || memchr::memmem::find(&body, key).is_none() {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = memchr::memmem::find(rest, key) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b"***");
            rest = &rest[at + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
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
