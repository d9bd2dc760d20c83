//! Sending one request: the URI and headers built from the transport's defaults, the call on
//! the backend through decompression, and the answer read as a [`Response`] (or an error
//! status turned into an [`Error`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    PROXY_AUTHORIZATION,
};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tower_http::decompression::{Decompression, ResponseFuture};
use tower_service::Service;
use volley_core::openai::asks_for_stream;
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, RequestId, Response, Timings};

use crate::backend::{Backend, BackendFuture};
use crate::body::HyperBodyStream;
use crate::error;
use crate::inner::Inner;
use crate::proxy::Route;

/// Sends `request` with the transport's settings and waits for the response (its head, and
/// its whole body unless it is an event stream).
///
/// The HTTP request is built, and the backend's future made, when this is called; nothing is
/// sent, counted or timed until the future is polled. The future keeps only what reading the
/// answer needs: an `async fn` keeps its arguments, and every local it moved out of, to its
/// end (the request twice, its parts and the HTTP request: 1 744 bytes per request in
/// flight, against 928 here).
pub(crate) fn send(
    inner: Arc<Inner>,
    request: Request,
) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
    match Sending::start(inner, request) {
        Ok(sending) => Either::Left(sending.answer()),
        Err(e) => Either::Right(std::future::ready(Err(e))),
    }
}

/// A request on its way: what its answer is read with.
pub(crate) struct Sending {
    inner: Arc<Inner>,
    id: RequestId,
    method: Method,
    /// The request's own path and query, for messages (the query is left out of them).
    path: PathAndQuery,
    /// The body, to tell whether the request asked for a stream (a clone of `Bytes` copies
    /// nothing).
    sent_body: Bytes,
    /// Whether the request's `Accept` header asked for an event stream.
    accepts_stream: bool,
    is_head: bool,
    /// A request's own credentials (a tenant's `Authorization`), scrubbed from error bodies
    /// too; empty for plain requests.
    own_secrets: Vec<Bytes>,
    response: ResponseFuture<BackendFuture>,
}

impl Sending {
    /// Builds the HTTP request and calls the backend with it.
    pub(crate) fn start(inner: Arc<Inner>, request: Request) -> Result<Sending, Error> {
        // Whether an event stream may answer: the `Accept` header is looked at now (it moves
        // into the HTTP request), the body only if a stream comes.
        let accepts_stream = request.headers().contains_key(ACCEPT) && request.expects_stream();
        let sent_body = request.body().clone();
        let own_secrets = volley_core::redact::request_secrets(request.headers());
        let parts = request.into_parts();
        let (id, method, path) = (parts.id, parts.method, parts.path);
        let context = || context(id, &method, &inner, &path);
        let target = inner
            .path_with_body(&path, &parts.body)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, context()).with_source(e))?;
        let forward = matches!(*inner.route, Route::Forward(_));
        let uri = match inner.client {
            // HTTP/1.1 sends the origin form (`/v1/chat/completions`) with a `Host` header, or
            // the absolute form to a forward proxy.
            Backend::Http1(_) if !forward => Uri::from(target),
            _ => inner
                .absolute(target)
                .map_err(|e| Error::new(ErrorKind::InvalidInput, context()).with_source(e))?,
        };
        let is_head = method == Method::HEAD;

        // The body's length, for `Content-Length`; `None` for no body.
        let body_len = (!parts.body.is_empty()).then_some(parts.body.len() as u64);
        let mut http_request = http::Request::new(Full::new(parts.body));
        *http_request.method_mut() = method.clone();
        *http_request.uri_mut() = uri;
        if let Some(len) = body_len
            && parts.headers.is_empty()
        {
            // The usual request, a JSON body with no headers of its own: a copy of the
            // headers worked out once, instead of looking each default up and inserting it;
            // only the length (a placeholder in the copy) is its own.
            let headers = http_request.headers_mut();
            *headers = inner.json_headers.clone();
            headers.insert(CONTENT_LENGTH, content_length(len));
        } else {
            *http_request.headers_mut() = parts.headers;
            let says_length = matches!(method, Method::POST | Method::PUT | Method::PATCH);
            add_headers(http_request.headers_mut(), &inner, body_len, says_length);
        }
        // Makes the backend's future; nothing is sent until it is polled.
        let response = Decompression::new(&inner.client)
            .gzip(inner.gzip)
            .br(inner.brotli)
            .no_deflate()
            .no_zstd()
            .call(http_request);
        Ok(Sending {
            inner,
            id,
            method,
            path,
            sent_body,
            accepts_stream,
            is_head,
            own_secrets,
            response,
        })
    }

    /// Sends the request and reads its answer. The fields are used where they are, not moved
    /// into locals: a local would be a second copy in the future.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would copy `self` into a local"
    )]
    pub(crate) fn answer(self) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        async move {
            let inner = &*self.inner;
            let id = self.id;
            let context = || context(id, &self.method, inner, &self.path);
            inner.counters.requests.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(request = %id, method = %self.method, path = %self.path.path(), "sending");
            let mut timings = Timings::start();
            let response = self
                .response
                .await
                .map_err(|e| error::from_send(e, context(), inner))?;
            timings.first_byte = Some(Instant::now());
            let (head, mut body) = response.into_parts();

            if head.status.is_client_error()
                || head.status.is_server_error()
                || (head.status.is_redirection() && head.status != StatusCode::NOT_MODIFIED)
                || head.status.is_informational()
            {
                // Redirects are not followed: that would send the bearer token to another
                // origin. A 304 answers a conditional request (below). hyper passes on no
                // interim 1xx; a 101 to a request that asked for no upgrade is a server's
                // error (RFC 9110, 15.2.2).
                let (bytes, cut) = read_error_body(&mut body, inner.max_error_body_bytes).await;
                let bytes = if cut {
                    // A key the cut split would leave its first bytes at the end.
                    inner.scrub_cut(bytes, &self.own_secrets)
                } else {
                    inner.scrub(bytes, &self.own_secrets)
                };
                let retry_after =
                    volley_core::headers::retry_after(&head.headers, SystemTime::now());
                tracing::debug!(request = %id, status = %head.status, "error status");
                if let Route::Forward(proxy) = &*inner.route
                    && head.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                {
                    // The forward proxy refused the request: it never reached the server.
                    let context = format!(
                        "{}: {}",
                        context(),
                        crate::proxy::status_message_for(proxy, head.status)
                    );
                    return Err(
                        Error::from_status(head.status, head.headers, b"", None, context)
                            .with_request_sent(false),
                    );
                }
                let context =
                    match redirect_target(&head.status, &head.headers, inner, &self.own_secrets) {
                        Some(to) => format!(
                            "{}, redirected to {to} (redirects are not followed: the API key \
                         would go along)",
                            context()
                        ),
                        None => context(),
                    };
                return Err(Error::from_status(
                    head.status,
                    head.headers,
                    &bytes,
                    retry_after,
                    context,
                ));
            }

            // No body to read, whatever its headers say (and none to decompress).
            if self.is_head
                || head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED
            {
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
                if !self.accepts_stream && !asks_for_stream(&self.sent_body) {
                    // Reading it whole would let the server choose how much memory and time
                    // the request takes; the body is dropped unread, which closes the
                    // connection.
                    return Err(Error::new(
                        ErrorKind::BodyDecode,
                        format!(
                            "{}: the server answered with an event stream (content type \
                             text/event-stream), but the request did not ask for one (no \
                             \"stream\": true, no Accept: text/event-stream); refusing to read it",
                            context()
                        ),
                    ));
                }
                let stream = HyperBodyStream::new(body, id, inner.display_base.clone());
                return Ok(Response::new(
                    head.status,
                    head.headers,
                    Body::Stream(
                        BodyStream::new(stream).with_max_collect_bytes(inner.max_body_bytes),
                    ),
                    timings,
                    id,
                ));
            }

            let bytes = read_body(&mut body, inner, &context).await?;
            timings.done = Some(Instant::now());
            Ok(Response::new(
                head.status,
                head.headers,
                Body::Full(bytes),
                timings,
                id,
            ))
        }
    }
}

/// What a request's messages and logs call it. The query is left out: some providers take
/// the key there.
fn context(id: RequestId, method: &Method, inner: &Inner, path: &PathAndQuery) -> String {
    format!(
        "request {id} {} {}{}",
        method.as_str(),
        inner.display_base,
        path.path()
    )
}

/// Adds to a request's own `headers` what the transport sends with every request: `Host`
/// (HTTP/1.1), the default headers, the forward proxy's credentials, and a JSON content type
/// and length for a body; a header the request set itself is left as it is.
///
/// Without a body, a request whose method `says_length` (POST, PUT, PATCH) gets
/// `Content-Length: 0` (RFC 9110, 8.6): hyper's HTTP/1.1 sends no length for an empty body,
/// and some front ends answer 411 without one.
fn add_headers(headers: &mut HeaderMap, inner: &Inner, body_len: Option<u64>, says_length: bool) {
    headers.reserve(inner.default_headers.len() + 5);
    if matches!(inner.client, Backend::Http1(_)) && !headers.contains_key(HOST) {
        headers.insert(HOST, inner.host.clone());
    }
    for (name, value) in &inner.default_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Route::Forward(proxy) = &*inner.route
        && let Some(auth) = proxy.basic_auth()
    {
        headers.insert(PROXY_AUTHORIZATION, auth.clone());
    }
    match body_len {
        Some(len) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            if !headers.contains_key(CONTENT_LENGTH) {
                headers.insert(CONTENT_LENGTH, content_length(len));
            }
        }
        None if says_length && !headers.contains_key(CONTENT_LENGTH) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        None => {}
    }
}

/// The `Content-Length` of a body of `len` bytes. Set here, it spares hyper formatting one
/// for every request (two allocations and a reallocation); the last value is kept per
/// thread, and a load of similar requests repeats it, so a hit costs a reference count.
fn content_length(len: u64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((n, value)) if *n == len => value.clone(),
        _ => {
            let mut digits = itoa::Buffer::new();
            // An exact-size buffer: cloning it shares it, nothing is copied or shrunk.
            let bytes = Bytes::copy_from_slice(digits.format(len).as_bytes());
            let value =
                HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from(len));
            *last = Some((len, value.clone()));
            value
        }
    })
}

/// The headers of a request with a body and no headers of its own, worked out once per
/// transport by [`add_headers`].
pub(crate) fn json_headers(inner: &Inner) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // A placeholder length: each request replaces it in place, so the copy never grows.
    add_headers(&mut headers, inner, Some(0), true);
    // What tower-http's decompression would add to each request: in the copy, the request's
    // header list does not grow (a copy has no spare room: a reallocation of 832 bytes per
    // request, alive while it is in flight). tower-http leaves a header that is there alone.
    if let Some(accept) = accept_encoding(inner.gzip, inner.brotli) {
        headers.entry(ACCEPT_ENCODING).or_insert(accept);
    }
    headers
}

/// Gives an answer's `Content-Encoding` the spelling tower-http's decompression knows.
///
/// Content codings are case-insensitive, and `x-gzip` is gzip (RFC 9110, 8.4.1), but the
/// decompression matches the exact lower-case names only: an answer sent as `GZIP` or `x-gzip`
/// would be handed on still compressed and fail as JSON. The backends call this on every
/// answer's head before the decompression sees it. The usual values cost one lookup; a value
/// that is no content coding tower-http decodes is left as it is (the body is then read as
/// sent).
pub(crate) fn canonical_content_coding(headers: &mut HeaderMap) {
    let Some(value) = headers.get_mut(CONTENT_ENCODING) else {
        return;
    };
    let token = value.as_bytes();
    if matches!(token, b"gzip" | b"br" | b"identity") {
        return;
    }
    let token = token.trim_ascii();
    let canonical = if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip")
    {
        "gzip"
    } else if token.eq_ignore_ascii_case(b"br") {
        "br"
    } else if token.eq_ignore_ascii_case(b"deflate") {
        "deflate"
    } else if token.eq_ignore_ascii_case(b"zstd") {
        "zstd"
    } else if token.eq_ignore_ascii_case(b"identity") {
        "identity"
    } else {
        return;
    };
    *value = HeaderValue::from_static(canonical);
}

/// The `Accept-Encoding` tower-http's decompression sends with gzip and brotli as set (it
/// never offers deflate or zstd here), or `None` with neither.
fn accept_encoding(gzip: bool, brotli: bool) -> Option<HeaderValue> {
    let value = match (gzip, brotli) {
        (true, true) => "gzip,br",
        (true, false) => "gzip",
        (false, true) => "br",
        (false, false) => return None,
    };
    Some(HeaderValue::from_static(value))
}

/// Reads a successful body whole, within the body limit and the transport's budget of
/// buffered bytes (after decompression: a small compressed body can expand enormously).
///
/// The body is borrowed, not moved in: it stays where the caller's future holds it, instead of
/// being copied into this future and again into a pinned place (392 bytes for the usual
/// decompressing body; the transport's future shrank from 2 128 to 1 736 bytes).
async fn read_body<B>(
    body: &mut B,
    inner: &Inner,
    context: &(dyn Fn() -> String + Sync),
) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<volley_core::BoxError>,
{
    let mut held = Held { inner, bytes: 0 };
    // A small body arrives in one chunk, kept as it is (no copy). From the second chunk on,
    // each is copied into one buffer as it arrives: a list of chunks would cost a slice (32
    // bytes) per chunk beside the data, and keep hyper's read buffers alive, so a server
    // sending a body one byte per chunk would make 64 MiB of data cost gigabytes.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error::from_body(e.into(), &context()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.len() > inner.max_body_bytes - held.bytes {
            return Err(Error::new(
                ErrorKind::BodyDecode,
                format!(
                    "{}: the response body is larger than the limit of {} bytes",
                    context(),
                    inner.max_body_bytes
                ),
            ));
        }
        held.take(data.len(), context)?;
        if let Some(buf) = &mut rest {
            buf.extend_from_slice(&data);
        } else if let Some(one) = first.take() {
            // What is here and what the body says remains (its length, when the server
            // said it), within the limit and what the budget has left: a server that
            // announces 64 MiB and sends less reserves no more than the budget allows.
            let left = inner
                .max_buffered_bytes
                .saturating_sub(inner.buffered.load(Ordering::Relaxed));
            let hint = usize::try_from(body.size_hint().lower())
                .unwrap_or(usize::MAX)
                .min(left)
                .saturating_add(held.bytes)
                .min(inner.max_body_bytes);
            let mut buf = bytes::BytesMut::with_capacity(hint);
            buf.extend_from_slice(&one);
            buf.extend_from_slice(&data);
            rest = Some(buf);
        } else {
            first = Some(data);
        }
    }
    Ok(match (rest, first) {
        // Grown by doubling (a decompressed body comes in 4 KiB frames and says no length):
        // the spare room would stay with the answer as long as it is kept.
        (Some(buf), _) if buf.capacity() - buf.len() > buf.len() / 4 => {
            Bytes::copy_from_slice(&buf)
        }
        (Some(buf), _) => buf.freeze(),
        // One chunk (the usual case for a small body) is handed on without a copy.
        (None, Some(one)) => one,
        (None, None) => Bytes::new(),
    })
}

/// Bytes of one body counted against [`Inner::max_buffered_bytes`]; given back when dropped
/// (the body is complete, failed, or its request was cancelled).
struct Held<'a> {
    inner: &'a Inner,
    bytes: usize,
}

impl Held<'_> {
    fn take(&mut self, n: usize, context: &(dyn Fn() -> String + Sync)) -> Result<(), Error> {
        let max = self.inner.max_buffered_bytes;
        let taken = self
            .inner
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(n).filter(|total| *total <= max)
            });
        match taken {
            Ok(_) => {
                self.bytes += n;
                Ok(())
            }
            Err(now) => Err(Error::new(
                ErrorKind::BodyDecode,
                format!(
                    "{}: reading this body would take the response bytes buffered by this \
                     client to more than {max} (now {now}); raise max_buffered_bytes or lower \
                     the concurrency",
                    context()
                ),
            )),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.inner.buffered.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads an error body up to `max` bytes, keeping what arrived when it is longer or breaks
/// off: the status is what matters, the provider's message is a bonus. Also says whether the
/// body was cut at `max` (it had more).
async fn read_error_body<B>(body: &mut B, max: usize) -> (Bytes, bool)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut buf = bytes::BytesMut::new();
    let mut cut = false;
    while buf.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = max - buf.len();
                    cut |= data.len() > room;
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            // Broken off: whatever came last may be the first bytes of a key.
            Some(Err(_)) => {
                cut = true;
                break;
            }
            None => break,
        }
    }
    // Full, with more to come that is not read (a body exactly `max` long is whole).
    cut |= buf.len() == max && !body.is_end_stream();
    (buf.freeze(), cut)
}

/// Where a redirect points, for its error's message: the `Location` without user
/// information, query or fragment (a signed URL's token, a password), scrubbed of the
/// client's secrets, at most 200 characters. `None` for a status that is no redirect, or a
/// `Location` that is missing or not text.
fn redirect_target(
    status: &StatusCode,
    headers: &HeaderMap,
    inner: &Inner,
    own_secrets: &[Bytes],
) -> Option<String> {
    if !status.is_redirection() || *status == StatusCode::NOT_MODIFIED {
        return None;
    }
    let location = headers.get(http::header::LOCATION)?.to_str().ok()?.trim();
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let mut location = &location[..end];
    let mut kept = String::with_capacity(location.len());
    // `scheme://user:password@host/...` or `//user@host/...`: an authority follows a `//`
    // that opens the reference or ends a scheme, and ends at the next `/`. A `//` later in a
    // path (`/v1//a@b`) opens none.
    let scheme_end = location
        .find(':')
        .filter(|&colon| !location[..colon].contains('/'))
        .map_or(0, |colon| colon + 1);
    let opens_authority = location[scheme_end..].starts_with("//");
    if let Some(start) = opens_authority.then_some(scheme_end) {
        let authority_end = location[start + 2..]
            .find('/')
            .map_or(location.len(), |i| start + 2 + i);
        if let Some(at) = location[start + 2..authority_end].rfind('@') {
            kept.push_str(&location[..start + 2]);
            location = &location[start + 2 + at + 1..];
        }
    }
    kept.push_str(location);
    if kept.is_empty() {
        return None;
    }
    let scrubbed = inner.scrub(Bytes::from(kept), own_secrets);
    let text = String::from_utf8_lossy(&scrubbed);
    Some(match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    })
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    const EVENT_STREAM: &[u8] = b"text/event-stream";
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        // The media type, before any parameters, compared as bytes (no UTF-8 check, no
        // split: this runs for every answer).
        let value = v.as_bytes();
        let end = memchr::memchr(b';', value).unwrap_or(value.len());
        value[..end].trim_ascii().eq_ignore_ascii_case(EVENT_STREAM)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_codings_get_tower_https_spelling() {
        let canonical = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(value));
            canonical_content_coding(&mut headers);
            headers[CONTENT_ENCODING].to_str().unwrap().to_owned()
        };
        for (sent, read) in [
            ("gzip", "gzip"),
            ("GZIP", "gzip"),
            (" x-gzip ", "gzip"),
            ("X-Gzip", "gzip"),
            ("BR", "br"),
            ("Deflate", "deflate"),
            ("ZSTD", "zstd"),
            ("Identity", "identity"),
            // Not a coding tower-http decodes, or a list of them: left as sent.
            ("x-compress", "x-compress"),
            ("gzip, br", "gzip, br"),
        ] {
            assert_eq!(canonical(sent), read, "{sent:?}");
        }
        let mut none = HeaderMap::new();
        canonical_content_coding(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn event_stream_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(&h));
        for (value, stream) in [
            ("Text/Event-Stream", true),
            (" text/event-stream ;charset=utf-8", true),
            ("text/event-stream;", true),
            ("text/event-streams", false),
            ("text/event", false),
            ("", false),
            ("application/json", false),
            ("application/json; x=text/event-stream", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_event_stream(&h), stream, "{value:?}");
        }
    }
}
