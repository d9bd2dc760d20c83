//! # volley-transport
//!
//! The one pooled HTTP client of a Volley process: hyper 1, rustls (ring) for TLS, HTTP/1.1
//! and HTTP/2 (ALPN, or h2c with prior knowledge), gzip and brotli response decoding, bearer
//! authentication, and connection statistics. It implements
//! `tower::Service<volley_core::Request>`, so retry, limits and caching are layered on top by
//! `volley-middleware`; this crate does none of them.
//!
//! Build one [`Transport`] per process and clone it: clones share the pool, the TLS
//! configuration and the counters. A transport per request throws away connections and TLS
//! sessions and is the most common reason clients keep far fewer requests in flight than
//! they were asked to.
//!
//! ```no_run
//! use volley_core::Request;
//! use volley_transport::Transport;
//!
//! # async fn run() -> Result<(), volley_core::Error> {
//! let transport = Transport::builder()
//!     .base_url("https://api.openai.com/v1")
//!     .api_key(std::env::var("OPENAI_API_KEY").unwrap_or_default())
//!     .build()?;
//! let response = transport.send(Request::get("/models")?).await?;
//! let models: serde_json::Value = response.json().await?;
//! println!("{models}");
//! # Ok(())
//! # }
//! ```
//!
//! ## Responses
//! A 2xx or 3xx answer is a [`volley_core::Response`]. Its body is read to the end before the
//! future completes, except for `text/event-stream` answers, which arrive as a stream of
//! chunks. A 4xx or 5xx answer is an [`volley_core::Error`] of kind `Status` (or
//! `RateLimited` for 429) carrying the status, the headers, the parsed provider error and
//! any `Retry-After`.
//!
//! ## Connections
//! HTTP/1.1 (the default) goes through Volley's own pool over hyper's per-connection API: one
//! LIFO list of idle connections for the one origin a transport talks to, a connection back
//! in the list as soon as its body ends (or is dropped after its last event), idle ones
//! closed past [`Builder::pool_idle_timeout`] or beyond [`Builder::pool_max_idle_per_host`],
//! and a request that a reused connection closed under before it was written sent again on
//! another. Compared with hyper-util's generic pool it costs 13–16 % less client CPU per
//! request and opens no extra connection when a stream ends (docs/benchmarks.md). HTTP/2
//! ([`Builder::http2`], [`Builder::http2_prior_knowledge`]) uses hyper-util's pool, which
//! multiplexes streams over one connection per host.
//!
//! ## Features
//! - `webpki-roots` (default): trust the Mozilla root set compiled into the binary.
//! - `native-roots`: allow trusting the operating system's roots
//!   ([`Builder::tls_native_roots`]).
#![deny(missing_docs)]

mod body;
mod builder;
mod connector;
mod error;
mod pool;
mod stats;
mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_http::decompression::Decompression;
use tower_service::Service;
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, Response, Timings};

pub use builder::{Builder, DEFAULT_BASE_URL};
pub use stats::ConnectionStats;

use crate::body::HyperBodyStream;
use crate::connector::Counting;
use crate::pool::{H1Pool, PooledBody, SendError};
use crate::stats::Counters;

/// hyper-util's pool, for the HTTP/2 configurations (it multiplexes streams onto one
/// connection per host).
type LegacyPool = Client<HttpsConnector<Counting<HttpConnector>>, Full<Bytes>>;

/// Where requests go: Volley's own HTTP/1.1 pool (the default), or hyper-util's for HTTP/2.
pub(crate) enum Backend {
    Http1(Arc<H1Pool>),
    Legacy(Box<LegacyPool>),
}

type BackendFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<PooledBody>, SendError>> + Send>>;

impl Service<http::Request<Full<Bytes>>> for &Backend {
    type Response = http::Response<PooledBody>;
    type Error = SendError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> BackendFuture {
        match self {
            Backend::Http1(pool) => Box::pin(pool.clone().send(request)),
            Backend::Legacy(client) => {
                let response = client.request(request);
                Box::pin(async move {
                    response
                        .await
                        .map(|r| r.map(PooledBody::unpooled))
                        .map_err(SendError::Legacy)
                })
            }
        }
    }
}

/// The pooled HTTP client. Cheap to clone; clones share everything.
///
/// See the [crate docs](crate) for what it does and does not do.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    client: Backend,
    /// The `Host` header of every request (HTTP/1.1 sends origin-form targets).
    host: HeaderValue,
    credential: volley_core::cache_key::CredentialId,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    /// The OpenAI endpoints joined with the base path once, so the common requests build
    /// their URI without allocating.
    joined: [(&'static str, PathAndQuery); 3],
    display_base: Arc<str>,
    default_headers: HeaderMap,
    gzip: bool,
    brotli: bool,
    counters: Arc<Counters>,
    max_error_body_bytes: usize,
    max_body_bytes: usize,
    /// Kept only to scrub it from error bodies a server might echo it in.
    api_key: Option<volley_core::ApiKey>,
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

/// The future of [`Transport::call`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

impl Transport {
    /// A builder with defaults (base URL [`DEFAULT_BASE_URL`], no key).
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Sends one request.
    pub fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send {
        send(self.inner.clone(), request)
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
        Box::pin(send(self.inner.clone(), request))
    }
}

async fn send(inner: Arc<Inner>, request: Request) -> Result<Response, Error> {
    let parts = request.into_parts();
    let id = parts.id;
    // The query is left out of messages and logs: some providers take the key there.
    let context = || {
        format!(
            "request {id} {} {}{}",
            parts.method.as_str(),
            inner.display_base,
            parts.path.path()
        )
    };
    let path = inner
        .path_for(&parts.path)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, context()).with_source(e))?;
    let uri = match inner.client {
        // HTTP/1.1 sends the origin form (`/v1/chat/completions`) with a `Host` header.
        Backend::Http1(_) => Uri::from(path),
        Backend::Legacy(_) => inner
            .absolute(path)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, context()).with_source(e))?,
    };
    let is_head = parts.method == Method::HEAD;

    let has_body = !parts.body.is_empty();
    let mut http_request = http::Request::new(Full::new(parts.body));
    *http_request.method_mut() = parts.method.clone();
    *http_request.uri_mut() = uri;
    *http_request.headers_mut() = parts.headers;
    let headers = http_request.headers_mut();
    headers.reserve(inner.default_headers.len() + 4);
    if matches!(inner.client, Backend::Http1(_)) && !headers.contains_key(HOST) {
        headers.insert(HOST, inner.host.clone());
    }
    for (name, value) in &inner.default_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    if has_body && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    inner.counters.requests.fetch_add(1, Ordering::Relaxed);
    tracing::trace!(request = %id, method = %parts.method, path = %parts.path.path(), "sending");
    let mut timings = Timings::start();
    let mut decompress = Decompression::new(&inner.client)
        .gzip(inner.gzip)
        .br(inner.brotli)
        .no_deflate()
        .no_zstd();
    let response = decompress
        .call(http_request)
        .await
        .map_err(|e| error::from_send(e, context()))?;
    timings.first_byte = Some(Instant::now());
    let (head, body) = response.into_parts();

    if head.status.is_client_error()
        || head.status.is_server_error()
        || head.status.is_redirection()
    {
        // Redirects are not followed: that would send the bearer token to another origin.
        let bytes = read_error_body(body, inner.max_error_body_bytes).await;
        let bytes = inner.scrub_key(bytes);
        let retry_after = volley_core::headers::retry_after(&head.headers, SystemTime::now());
        tracing::debug!(request = %id, status = %head.status, "error status");
        return Err(Error::from_status(
            head.status,
            head.headers,
            &bytes,
            retry_after,
            context(),
        ));
    }

    // No body to read (and none to decompress: tower-http fails on an empty gzip body).
    if is_head || head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
        timings.done = Some(Instant::now());
        return Ok(Response::new(
            head.status,
            head.headers,
            Body::Full(Bytes::new()),
            timings,
            id,
        ));
    }

    if is_event_stream(&head.headers) {
        let stream = HyperBodyStream::new(body, id, inner.display_base.clone());
        return Ok(Response::new(
            head.status,
            head.headers,
            Body::Stream(BodyStream::new(stream)),
            timings,
            id,
        ));
    }

    let bytes = match Limited::new(body, inner.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(Error::new(
                ErrorKind::BodyDecode,
                format!(
                    "{}: the response body is larger than the limit of {} bytes",
                    context(),
                    inner.max_body_bytes
                ),
            ));
        }
        Err(e) => return Err(error::from_body(e, &context())),
    };
    timings.done = Some(Instant::now());
    Ok(Response::new(
        head.status,
        head.headers,
        Body::Full(bytes),
        timings,
        id,
    ))
}

/// Reads an error body up to `max` bytes, keeping what arrived when it is longer or breaks
/// off: the status is what matters, the provider's message is a bonus.
async fn read_error_body<B>(body: B, max: usize) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    while buf.len() < max {
        match body.as_mut().frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = max - buf.len();
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    buf.freeze()
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

impl Inner {
    #[cfg(test)]
    fn uri_for(&self, path: &PathAndQuery) -> Result<Uri, Error> {
        self.absolute(self.path_for(path)?)
    }

    /// The absolute URI of a joined path.
    fn absolute(&self, path_and_query: PathAndQuery) -> Result<Uri, Error> {
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
    fn path_for(&self, path: &PathAndQuery) -> Result<PathAndQuery, Error> {
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
    fn scrub_key(&self, body: Bytes) -> Bytes {
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

    #[test]
    fn event_stream_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(!is_event_stream(&h));
    }

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
