//! The store interface and the stored value.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use volley_core::cache_key::{CacheKey, CredentialId};
use volley_core::{Body, BodyStream, BoxError, RequestId, Response, Timings};

/// The future a [`CacheStore`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// Where cached responses live: memory ([`MemoryStore`](super::MemoryStore)), disk
/// ([`DiskStore`](super::DiskStore)), or your own (a shared Redis, say).
///
/// A store decides how long entries live; an expired entry must read as absent. Errors are
/// never fatal to a request: the cache layer logs them and treats a failed read as a miss and
/// a failed write as not stored. A store that keeps bytes can use
/// [`CachedResponse::encode`] and [`CachedResponse::decode`].
///
/// Implementations must not block the calling (runtime) thread: move file I/O to
/// `tokio::task::spawn_blocking`.
pub trait CacheStore: Send + Sync {
    /// The entry under `key`, if there is one that has not expired.
    fn get(&self, key: CacheKey) -> StoreFuture<'_, Option<CachedResponse>>;

    /// Stores `value` under `key`, replacing any entry there.
    fn put(&self, key: CacheKey, value: CachedResponse) -> StoreFuture<'_, ()>;

    /// [`get`](CacheStore::get) for a request sent with `credential`: what the cache layer
    /// calls. A store that others can write to (Redis) authenticates its entries with a key
    /// derived from the credential and fails a read whose entry does not authenticate with
    /// [`RejectedEntry`], which the layer counts ([`CacheStats::rejected`]) and treats as a
    /// miss.
    ///
    /// Default: [`get`](CacheStore::get), for stores only this process writes to.
    ///
    /// [`CacheStats::rejected`]: super::CacheStats::rejected
    fn get_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
    ) -> StoreFuture<'_, Option<CachedResponse>> {
        let _ = credential;
        self.get(key)
    }

    /// [`put`](CacheStore::put) for a request sent with `credential` (see
    /// [`get_for`](CacheStore::get_for)).
    ///
    /// Default: [`put`](CacheStore::put).
    fn put_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
        value: CachedResponse,
    ) -> StoreFuture<'_, ()> {
        let _ = credential;
        self.put(key, value)
    }
}

impl<T: CacheStore + ?Sized> CacheStore for Arc<T> {
    fn get(&self, key: CacheKey) -> StoreFuture<'_, Option<CachedResponse>> {
        (**self).get(key)
    }

    fn put(&self, key: CacheKey, value: CachedResponse) -> StoreFuture<'_, ()> {
        (**self).put(key, value)
    }

    fn get_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
    ) -> StoreFuture<'_, Option<CachedResponse>> {
        (**self).get_for(key, credential)
    }

    fn put_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
        value: CachedResponse,
    ) -> StoreFuture<'_, ()> {
        (**self).put_for(key, credential, value)
    }
}

/// The error of a store read whose entry failed authentication (see
/// [`CacheStore::get_for`]): written by someone without the credential, moved from another
/// key, or tampered with. The cache layer counts it and answers as for a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedEntry;

impl fmt::Display for RejectedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a cache entry failed authentication (written without this credential, or altered)",
        )
    }
}

impl std::error::Error for RejectedEntry {}

/// A response as the cache keeps it: status, the headers worth replaying, the whole body,
/// when it was made, and whether it was a stream.
///
/// Only `content-type` is kept of the headers: nothing that could identify a session or carry
/// a credential (`set-cookie`, `authorization`, provider request ids) is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) created: SystemTime,
    pub(super) stream: bool,
}

/// The response headers a cache entry keeps.
const KEPT_HEADERS: [HeaderName; 1] = [CONTENT_TYPE];

/// The header a replayed response carries: `x-volley-cache: hit`.
pub const CACHE_STATUS_HEADER: &str = "x-volley-cache";

impl CachedResponse {
    /// An entry made now from a response's parts; `headers` are filtered to the kept ones.
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes, stream: bool) -> Self {
        let mut kept = HeaderMap::new();
        for name in &KEPT_HEADERS {
            if let Some(value) = headers.get(name) {
                kept.insert(name.clone(), value.clone());
            }
        }
        CachedResponse {
            status,
            headers: kept,
            body,
            created: SystemTime::now(),
            stream,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The kept headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body (for a stream, every server-sent event as it arrived).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When the response was received.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Whether the response was a stream; it is replayed as one.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The response a hit answers with: every timing set to now, the body a stream of its
    /// events when the original was a stream.
    pub(crate) fn into_response(self, id: RequestId) -> Response {
        let now = std::time::Instant::now();
        let timings = Timings {
            sent: now,
            first_byte: Some(now),
            done: Some(now),
        };
        let mut headers = self.headers;
        headers.insert(
            HeaderName::from_static(CACHE_STATUS_HEADER),
            HeaderValue::from_static("hit"),
        );
        let body = if self.stream {
            Body::Stream(BodyStream::new(futures_util::stream::iter(
                EventChunks(self.body).map(Ok::<_, volley_core::Error>),
            )))
        } else {
            Body::Full(self.body)
        };
        Response::new(self.status, headers, body, timings, id)
    }

    /// The approximate memory an entry takes, for size-bounded stores.
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 128
    }
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("stream", &self.stream)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Splits a stored event stream back into one chunk per event, without copying.
struct EventChunks(Bytes);

impl Iterator for EventChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.0.is_empty() {
            return None;
        }
        let end = event_end(&self.0).unwrap_or(self.0.len());
        Some(self.0.split_to(end))
    }
}

/// Where the first event of `bytes` ends: after the blank line that closes it. Lines end at
/// LF, CR or CRLF, as in an event stream, so a blank line is any two line ends in a row
/// (`\n\n`, `\r\n\r\n`, `\r\r`).
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    // Whether `at` starts a line that follows a line end.
    let mut line_start = false;
    while let Some(found) = memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
        let i = at + found;
        if i > at {
            line_start = false;
        }
        let len = if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        if line_start {
            return Some(i + len);
        }
        line_start = true;
        at = i + len;
    }
    None
}

pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: bool) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert("set-cookie", HeaderValue::from_static("session=secret"));
        headers.insert("x-request-id", HeaderValue::from_static("req_123"));
        CachedResponse::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(b"data: 1\n\ndata: [DONE]\n\n"),
            stream,
        )
    }

    /// An event ends at a blank line, whatever the line ends: LF, CRLF or CR.
    #[test]
    fn events_are_split_at_blank_lines_of_any_line_end() {
        for (stream, events) in [
            ("data: 1\n\ndata: 2\n\n", vec!["data: 1\n\n", "data: 2\n\n"]),
            (
                "data: 1\r\n\r\ndata: 2\r\n\r\n",
                vec!["data: 1\r\n\r\n", "data: 2\r\n\r\n"],
            ),
            ("data: 1\r\rdata: 2\r\r", vec!["data: 1\r\r", "data: 2\r\r"]),
            (
                "event: a\r\ndata: 1\r\n\r\ndata: 2",
                vec!["event: a\r\ndata: 1\r\n\r\n", "data: 2"],
            ),
        ] {
            let chunks: Vec<Bytes> = EventChunks(Bytes::from(stream)).collect();
            assert_eq!(chunks, events, "{stream:?}");
        }
    }

    #[test]
    fn only_content_type_is_kept() {
        let e = entry(false);
        assert_eq!(e.headers().len(), 1);
        assert_eq!(e.headers()[CONTENT_TYPE], "text/event-stream");
    }

    #[test]
    fn entries_round_trip_to_the_millisecond() {
        for stream in [false, true] {
            let e = entry(stream);
            let back = CachedResponse::decode(&e.encode()).unwrap();
            assert_eq!(back.status(), e.status());
            assert_eq!(back.headers(), e.headers());
            assert_eq!(back.body(), e.body());
            assert_eq!(back.is_stream(), stream);
            assert_eq!(unix_millis(back.created()), unix_millis(e.created()));
        }
    }

    #[test]
    fn damaged_bytes_are_an_error() {
        let bytes = entry(true).encode();
        for cut in 0..bytes.len() {
            assert!(
                CachedResponse::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CachedResponse::decode(&longer).is_err());
        let mut flags = bytes;
        flags[4] = 7;
        assert!(CachedResponse::decode(&flags).is_err());
    }

    #[test]
    fn any_creation_time_decodes_without_panicking() {
        let mut bytes = entry(false).encode();
        // The creation time follows the magic, the flags and the status.
        for millis in [0, 1, u64::from(u32::MAX), i64::MAX as u64, u64::MAX] {
            bytes[7..15].copy_from_slice(&millis.to_le_bytes());
            if let Ok(back) = CachedResponse::decode(&bytes) {
                assert_eq!(unix_millis(back.created()), millis);
            }
        }
    }

    #[test]
    fn streams_replay_one_chunk_per_event() {
        let chunks: Vec<Bytes> =
            EventChunks(Bytes::from_static(b"data: 1\n\ndata: 2\n\ntail")).collect();
        assert_eq!(chunks, ["data: 1\n\n", "data: 2\n\n", "tail"]);
    }
}
