//! Sending one request: the URI and headers built from the transport's defaults, the call on
//! the backend through decompression, and the answer read as a [`Response`] (or an error
//! status turned into an [`Error`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tower_http::decompression::Decompression;
use tower_service::Service;
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, Response, Timings};

use crate::backend::Backend;
use crate::body::HyperBodyStream;
use crate::error;
use crate::inner::Inner;

/// Sends `request` with the transport's settings and waits for the response (its head, and
/// its whole body unless it is an event stream).
pub(crate) async fn send(inner: Arc<Inner>, request: Request) -> Result<Response, Error> {
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
        Backend::Http2(_) => inner
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
}
