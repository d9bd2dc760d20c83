//! [`ResponseFuture`] and the lookup, forward and store logic behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::CACHE_CONTROL;
use http::{HeaderMap, Method};
use tower::ServiceExt;
use tower_service::Service;
use volley_core::cache_key::CacheKey;
use volley_core::{Body, Error, Request, Response};

use super::layer::Shared;
use super::record::RecordingBody;
use super::store::{CACHE_STATUS_HEADER, CachedResponse, RejectedEntry};

/// The future of [`Cache`](super::Cache). Boxed: the cache sits outermost, once per request,
/// where one allocation is lost in the noise of hashing the request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

/// Bodies larger than this are hashed on the blocking pool: parsing and re-serialising
/// megabytes of JSON would hold a runtime thread for milliseconds.
const HASH_INLINE_MAX: usize = 256 << 10;

/// What a request's `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    /// Read and write.
    Normal,
    /// `no-cache`: do not answer from the cache, but store the fresh response.
    Refresh,
    /// `no-store`: bypass the cache entirely.
    Bypass,
}

pub(crate) async fn respond<S>(
    shared: Arc<Shared>,
    inner: S,
    request: Request,
) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    let directive = directive(request.headers());
    if directive == Directive::Bypass || !cacheable(&request) {
        return inner.oneshot(request).await.map(unmarked);
    }
    let id = request.id();
    let dialect = request.dialect();
    let key = key_of(&request, &shared).await;
    // The credential the request is really sent with: the client's, narrowed by the
    // request's own credential headers. Stores others can write to authenticate entries with
    // a key derived from it.
    let credential = shared.credential.with_request_headers(request.headers());

    if directive == Directive::Normal {
        match shared.store.get_for(key, &credential).await {
            Ok(Some(entry)) => {
                shared.counters.hit();
                tracing::debug!(request = %id, "cache hit");
                return Ok(entry.into_response(id));
            }
            Ok(None) => {}
            Err(e) if e.is::<RejectedEntry>() => {
                shared.counters.rejected();
                tracing::warn!(request = %id, error = %e, "cache entry rejected; a miss");
            }
            Err(e) => shared
                .counters
                .store_failed("cache read failed; a miss", &e),
        }
    }
    shared.counters.miss();
    let response = unmarked(inner.oneshot(request).await?);
    // 200 alone: a 202 is a job's placeholder, a 206 part of an answer, a 204 none.
    if response.status() != http::StatusCode::OK || forbids_store(response.headers()) {
        return Ok(response);
    }

    // Some servers answer an error with a 2xx status (looked at once for every layer).
    let error_reply = response.is_error_reply(dialect);
    let (head, body) = response.into_parts();
    let body = match body {
        Body::Full(bytes) => {
            // Nor is a proxy's or a firewall's page (HTML, or nothing) that came with a 200
            // an answer to keep.
            if bytes.len() <= shared.max_entry_bytes && is_json_document(&bytes) && !error_reply {
                let entry = CachedResponse::new(head.status, &head.headers, bytes.clone(), false);
                // On a task of its own: a caller that gives up meanwhile (a deadline) does not
                // stop the write, so the answer it paid for is in the cache for the next try.
                // Outside a runtime (a layer driven by another executor), in place.
                let writing = Arc::clone(&shared);
                let write = async move {
                    match writing.store.put_for(key, &credential, entry).await {
                        Ok(()) => writing.counters.stored(),
                        Err(e) => writing.counters.store_failed("cache write failed", &e),
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let _ = runtime.spawn(write).await;
                    }
                    Err(_) => write.await,
                }
            }
            Body::Full(bytes)
        }
        Body::Stream(stream) if shared.cache_streams => {
            let recording =
                stream.wrap(|s| RecordingBody::new(s, shared, key, credential, &head, dialect));
            Body::Stream(recording)
        }
        body @ Body::Stream(_) => body,
    };
    Ok(Response::from_parts(head, body))
}

/// Whether `request` asks for a generation, whose answer can be kept: a `POST` to chat or
/// legacy completions, messages, responses, embeddings or moderations (Azure's deployment
/// paths and a query string included). Not a `GET` (a job's status, polled until it changes),
/// not another `POST` (creating a batch, a file, a thread's message, a cancellation must reach
/// the provider each time), and not a Responses request run in the background
/// (`"background": true`, polled for its result).
fn cacheable(request: &Request) -> bool {
    const GENERATIONS: [&str; 6] = [
        "/chat/completions",
        "/completions",
        "/messages",
        "/responses",
        "/embeddings",
        "/moderations",
    ];
    if request.method() != Method::POST {
        return false;
    }
    let path = request.path_and_query().path();
    let path = path.strip_suffix('/').unwrap_or(path);
    // The Assistants API's `POST /threads/{id}/messages` adds a message to a thread.
    if !GENERATIONS.iter().any(|end| path.ends_with(end)) || path.contains("/threads/") {
        return false;
    }
    !(path.ends_with("/responses") && runs_in_background(request.body()))
}

/// Whether a Responses request body sets `"background": true` at its top level.
fn runs_in_background(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Top {
        #[serde(default)]
        background: Option<bool>,
    }
    memchr::memmem::find(body, b"\"background\"").is_some()
        && serde_json::from_slice::<Top>(body).is_ok_and(|top| top.background == Some(true))
}

/// Whether `bytes` start, after white space, as a JSON object or array does: what every
/// generation endpoint answers. An HTML page or an empty body is not kept.
fn is_json_document(bytes: &[u8]) -> bool {
    matches!(bytes.trim_ascii_start().first(), Some(b'{' | b'['))
}

/// `response` without a [`CACHE_STATUS_HEADER`] of the server's: only this layer's replays
/// say they are hits (a server, or a gateway built on Volley, may send one of its own).
fn unmarked(response: Response) -> Response {
    if !response.headers().contains_key(CACHE_STATUS_HEADER) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    head.headers.remove(CACHE_STATUS_HEADER);
    Response::from_parts(head, body)
}

async fn key_of(request: &Request, shared: &Shared) -> CacheKey {
    let credential = shared.credential;
    if request.body().len() <= HASH_INLINE_MAX {
        return CacheKey::for_request(request, &credential);
    }
    // Cloning a request copies no body bytes.
    let owned = request.clone();
    let hash = move || CacheKey::for_request(&owned, &credential);
    match tokio::task::spawn_blocking(hash).await {
        Ok(key) => key,
        // The hash cannot panic short of running out of memory; hash inline if it did.
        Err(_) => CacheKey::for_request(request, &credential),
    }
}

fn directive(headers: &HeaderMap) -> Directive {
    let mut directive = Directive::Normal;
    for token in cache_control_tokens(headers) {
        if token.eq_ignore_ascii_case("no-store") {
            return Directive::Bypass;
        }
        if token.eq_ignore_ascii_case("no-cache") {
            directive = Directive::Refresh;
        }
    }
    directive
}

/// Whether the server said its response must not be kept.
fn forbids_store(headers: &HeaderMap) -> bool {
    cache_control_tokens(headers)
        .any(|t| t.eq_ignore_ascii_case("no-store") || t.eq_ignore_ascii_case("private"))
}

fn cache_control_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split('=').next().unwrap_or("").trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use volley_core::Dialect;

    #[test]
    fn error_objects_are_found_whatever_the_order_of_their_keys() {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            for body in [
                &br#"{"error":{"message":"m"}}"#[..],
                br#"{"request_id":"r","error":{"message":"m"}}"#,
                br#"{"error":{"type":"overloaded_error","message":"m"},"type":"error"}"#,
            ] {
                assert!(
                    dialect.is_error_reply(body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
            for body in [
                &br#"{"id":"resp_1","object":"response","error":null,"output":[]}"#[..],
                br#"{"id":"c","choices":[{"message":{"content":"an error occurred"}}]}"#,
                br#"{"type":"message","content":[{"type":"text","text":"error"}]}"#,
                br#"not json"#,
            ] {
                assert!(
                    !dialect.is_error_reply(body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn directives_are_read_from_every_cache_control_value() {
        assert_eq!(directive(&headers(&[])), Directive::Normal);
        assert_eq!(directive(&headers(&["max-age=0"])), Directive::Normal);
        assert_eq!(directive(&headers(&["No-Cache"])), Directive::Refresh);
        assert_eq!(
            directive(&headers(&["no-cache", "no-store"])),
            Directive::Bypass
        );
        assert_eq!(
            directive(&headers(&["max-age=5, no-store"])),
            Directive::Bypass
        );
        assert!(forbids_store(&headers(&["private, max-age=10"])));
        assert!(!forbids_store(&headers(&["public, max-age=10"])));
    }
}
