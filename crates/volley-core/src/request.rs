//! The request every layer passes along.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use serde::Serialize;

use crate::{Dialect, Error, ErrorKind};

/// A process-unique number that follows a request through every layer, log line and error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// Allocates the next id. Ids are unique within the process and increase.
    pub fn next() -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RequestId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// An id chosen by the caller (a batch line number, say).
    pub const fn from_u64(id: u64) -> RequestId {
        RequestId(id)
    }

    /// The number inside.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One HTTP request to an LLM API, relative to the transport's base URL.
///
/// The body is [`Bytes`]: serialise once, and every retry clones it for free. Cloning a
/// request with no extra headers allocates nothing. Credentials are not part of a request:
/// the transport adds them, so a request can be logged, cached or retried without carrying a
/// secret.
///
/// ```
/// use volley_core::Request;
/// use volley_core::openai::{ChatCompletionRequest, ChatMessage};
///
/// let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hi")]);
/// let request = Request::post_json("/chat/completions", &chat).unwrap();
/// assert_eq!(request.path(), "/chat/completions");
/// assert!(request.body().starts_with(b"{"));
/// ```
#[derive(Clone)]
pub struct Request {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
    id: RequestId,
    estimated_tokens: u32,
    /// Which repetition of an identical request this is ([`Request::with_repeat`]).
    repeat: u32,
    dialect: Dialect,
    deadline: Option<Instant>,
}

impl Request {
    /// A request with an empty body. `path` is relative to the base URL (`/chat/completions`
    /// against `https://api.openai.com/v1`), and may carry a query string.
    pub fn new(method: Method, path: PathAndQuery) -> Request {
        Request {
            method,
            path,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            id: RequestId::next(),
            estimated_tokens: 0,
            repeat: 0,
            dialect: Dialect::OpenAi,
            deadline: None,
        }
    }

    /// A `GET` of `path`.
    pub fn get(path: &str) -> Result<Request, Error> {
        Ok(Request::new(Method::GET, parse_path(path)?))
    }

    /// A `POST` of `body`, already serialised as JSON, to `path`.
    ///
    /// No `Content-Type` header is stored in the request: the transport sends
    /// `application/json` for any non-empty body without a content type of its own, which
    /// keeps the request's header map empty and its clones (one per retry) allocation-free.
    pub fn post(path: &str, body: impl Into<Bytes>) -> Result<Request, Error> {
        Ok(Request::new(Method::POST, parse_path(path)?).with_body(body))
    }

    /// A `POST` of `value` serialised as JSON to `path`.
    pub fn post_json<T: Serialize + ?Sized>(path: &str, value: &T) -> Result<Request, Error> {
        let body = serde_json::to_vec(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "serialising the JSON body for {}",
                    crate::redact::quoted_path(path)
                ),
            )
            .with_source(e)
        })?;
        Request::post(path, body)
    }

    /// Replaces the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// Replaces the correlation id.
    #[must_use]
    pub fn with_id(mut self, id: RequestId) -> Request {
        self.id = id;
        self
    }

    /// Sets the estimated token cost (prompt plus the most the reply may use) that rate
    /// limiters charge before the request is sent.
    #[must_use]
    pub fn with_estimated_tokens(mut self, tokens: u32) -> Request {
        self.estimated_tokens = tokens;
        self
    }

    /// Marks this request as the `n`-th repetition of an identical request asked again on
    /// purpose: another sample of the same prompt (at a temperature above 0, say), where a
    /// cache must not answer with the first one's reply. A response cache keys each
    /// repetition apart ([`CacheKey::for_request`](crate::cache_key::CacheKey::for_request)):
    /// repetition `n` of a later run meets the answer stored for repetition `n`, not the
    /// first. `volley run` numbers the repeated lines of its input so.
    ///
    /// Default: 0, the first (its key is that of a request that never heard of repeats).
    #[must_use]
    pub fn with_repeat(mut self, n: u32) -> Request {
        self.repeat = n;
        self
    }

    /// Which repetition of an identical request this is: 0 unless
    /// [`with_repeat`](Self::with_repeat) said.
    pub fn repeat(&self) -> u32 {
        self.repeat
    }

    /// Sets the wire dialect of the body and of its answer, which layers ask for usage,
    /// errors and rate-limit headers (see [`crate::dialect`]).
    ///
    /// Default: [`Dialect::OpenAi`].
    #[must_use]
    pub fn with_dialect(mut self, dialect: Dialect) -> Request {
        self.dialect = dialect;
        self
    }

    /// The wire dialect of the body and of its answer.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sets when the caller stops waiting for this request: the retry layer makes no retry
    /// whose wait would end at or past it, and hands on the error that asked for it (a 429
    /// whose `Retry-After` is longer than the time left) rather than have the caller's
    /// timer end the call as a timeout; the in-process rate limiter fails a request it
    /// would hold until or past it, unsent, as rate-limited: at once when it comes, or, for
    /// one already waiting when a 429's pause pushes it back past it, at the time it was to
    /// be sent. `volley`'s `Client` sets it from its deadline when a call starts.
    ///
    /// Default: none.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at;
    }

    /// When the caller stops waiting for this request, if it said ([`set_deadline`](Self::set_deadline)).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Adds a header. Headers set here win over the transport's defaults.
    #[must_use]
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Request {
        self.headers.insert(name, value);
        self
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path and query, relative to the base URL.
    pub fn path(&self) -> &str {
        self.path.as_str()
    }

    /// The path and query as the `http` type.
    pub fn path_and_query(&self) -> &PathAndQuery {
        &self.path
    }

    /// Extra headers of this request.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Mutable access to the extra headers.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the request asks for a streamed (`text/event-stream`) answer: its `Accept`
    /// header names `text/event-stream`, or its JSON body sets `"stream": true` (see
    /// [`crate::openai::asks_for_stream`]). The transport refuses an event stream sent in
    /// answer to a request that did not ask for one, which a hostile or broken server could
    /// otherwise use to hold a slot and memory without bound.
    pub fn expects_stream(&self) -> bool {
        let accepts = self
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
        accepts || crate::openai::asks_for_stream(&self.body)
    }

    /// The correlation id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The estimated token cost (0 when unknown).
    pub fn estimated_tokens(&self) -> u32 {
        self.estimated_tokens
    }

    /// Takes the request apart, for the transport that turns it into an HTTP request.
    pub fn into_parts(self) -> RequestParts {
        RequestParts {
            method: self.method,
            path: self.path,
            headers: self.headers,
            body: self.body,
            id: self.id,
            estimated_tokens: self.estimated_tokens,
            dialect: self.dialect,
        }
    }
}

/// The parts of a [`Request`], from [`Request::into_parts`]. (No `Debug`: the body is a
/// prompt and the headers may carry credentials.)
#[non_exhaustive]
pub struct RequestParts {
    /// The HTTP method.
    pub method: Method,
    /// The path and query, relative to the base URL.
    pub path: PathAndQuery,
    /// Extra headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The correlation id.
    pub id: RequestId,
    /// The estimated token cost.
    pub estimated_tokens: u32,
    /// The wire dialect.
    pub dialect: Dialect,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body (a prompt) and header values are left out: Debug output ends up in logs.
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("path", &DebugPath(&self.path))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("estimated_tokens", &self.estimated_tokens)
            .field("repeat", &self.repeat)
            .finish()
    }
}

/// The path with its query shown as `?***`: some providers take the key in the query
/// (`?api-key=...`), and `Debug` output ends up in logs.
struct DebugPath<'a>(&'a PathAndQuery);

impl fmt::Debug for DebugPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.query() {
            Some(_) => write!(f, "\"{}?***\"", self.0.path()),
            None => write!(f, "{:?}", self.0.path()),
        }
    }
}

fn parse_path(path: &str) -> Result<PathAndQuery, Error> {
    // Messages show the path without its query, which may carry a key (`?api-key=...`).
    let shown = || crate::redact::quoted_path(path);
    if !path.starts_with('/') {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("request path {} must start with '/'", shown()),
        ));
    }
    // The parser's own error is left out: it could quote the query.
    PathAndQuery::try_from(path).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("request path {} is not a valid URL path", shown()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_increase() {
        let a = RequestId::next();
        let b = RequestId::next();
        assert!(b > a);
        assert_eq!(RequestId::from_u64(7).to_string(), "7");
    }

    #[test]
    fn post_keeps_the_header_map_empty() {
        let r = Request::post("/embeddings", &b"{}"[..]).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert!(r.headers().is_empty());
        assert_eq!(r.body().as_ref(), b"{}");
    }

    #[test]
    fn paths_are_validated() {
        let err = Request::get("models").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("must start with '/'"));
        assert!(Request::get("/models?limit=2").is_ok());
        assert!(Request::get("/bad path").is_err());
        for bad in [
            "models?api-key=sk-path-secret",
            "/bad path?api-key=sk-path-secret",
        ] {
            let err = Request::get(bad).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("sk-path-secret"), "{shown}");
            assert!(shown.contains("?***"), "{shown}");
        }
        // A body that cannot be serialised (a map with keys that are not strings): the error
        // names the path without its query.
        let body = std::collections::BTreeMap::from([((1, 2), 3)]);
        let err = Request::post_json("/chat?api-key=sk-path-secret", &body).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("sk-path-secret"), "{shown}");
        assert!(shown.contains("\"/chat?***\""), "{shown}");
    }

    #[test]
    fn clones_share_the_body() {
        let r = Request::post("/x", vec![1u8; 1024])
            .unwrap()
            .with_estimated_tokens(12);
        let c = r.clone();
        assert_eq!(r.body().as_ptr(), c.body().as_ptr());
        assert_eq!(c.estimated_tokens(), 12);
        assert_eq!(c.id(), r.id());
    }

    #[test]
    fn debug_leaves_out_body_and_header_values() {
        let r = Request::post("/x", &b"secret prompt"[..])
            .unwrap()
            .with_header(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer sk-should-not-show"),
            );
        let text = format!("{r:?}");
        assert!(!text.contains("secret prompt"), "{text}");
        assert!(!text.contains("sk-should-not-show"), "{text}");
        assert!(text.contains("body_len: 13"), "{text}");
        let r = Request::get("/deployments/x/chat?api-version=1&api-key=sk-query-secret").unwrap();
        let text = format!("{r:?}");
        assert!(!text.contains("sk-query-secret"), "{text}");
        assert!(
            text.contains(r#"path: "/deployments/x/chat?***""#),
            "{text}"
        );
    }

    #[test]
    fn stream_expectation_comes_from_accept_or_the_body() {
        let post = |body: &'static str| Request::post("/chat/completions", body).unwrap();
        assert!(post(r#"{"model":"m","stream":true}"#).expects_stream());
        assert!(post("{\"stream\" :\n true}").expects_stream());
        assert!(!post(r#"{"model":"m","stream":false}"#).expects_stream());
        assert!(!post(r#"{"model":"m"}"#).expects_stream());
        // A string that mentions the field is escaped JSON, not the field.
        assert!(!post(r#"{"content":"\"stream\": true"}"#).expects_stream());
        let accept = Request::get("/events").unwrap().with_header(
            http::header::ACCEPT,
            HeaderValue::from_static("Text/Event-Stream"),
        );
        assert!(accept.expects_stream());
    }
}
