//! The response every layer passes back.

use std::fmt;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sync_wrapper::SyncWrapper;

use crate::dialect::{Dialect, TokenUsage};
use crate::sse::EventStream;
use crate::{Error, ErrorKind, RequestId};

/// A successful HTTP response (2xx or 3xx). HTTP error statuses arrive as an [`Error`] of kind
/// `Status` or `RateLimited` instead.
pub struct Response {
    /// Boxed: a response is handed back through the `poll` of every layer of a stack, where a
    /// pointer moves in a register and the whole (240 bytes) took a `memcpy` at each.
    inner: Box<Parts>,
}

/// What a [`Response`] holds.
struct Parts {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    timings: Timings,
    request_id: RequestId,
    /// The usage of a complete body, once scanned, and the dialect it was scanned in: the
    /// layers that need it (metrics, a tokens-per-minute limit) and the caller share one scan.
    usage: OnceLock<(Dialect, Option<TokenUsage>)>,
    /// Whether a complete 2xx body is an error object, once looked at, and in which dialect:
    /// the layers that look (metrics, retry, the rate limiter, the cache) share one look.
    error_reply: OnceLock<(Dialect, bool)>,
}

/// What `look` finds in `dialect`, computed once and kept in `cell` for later calls in the same
/// dialect; a call in another dialect looks again (and keeps nothing).
fn once_per_dialect<T: Copy>(
    cell: &OnceLock<(Dialect, T)>,
    dialect: Dialect,
    look: impl Fn(Dialect) -> T,
) -> T {
    let (looked_in, found) = *cell.get_or_init(|| (dialect, look(dialect)));
    if looked_in == dialect {
        found
    } else {
        look(dialect)
    }
}

/// A response body: complete, or a stream of chunks still arriving.
///
/// Non-streaming responses are read to the end by the transport, so the attempt's timings and
/// any concurrency permit cover the whole body. `text/event-stream` responses arrive as a
/// [`BodyStream`]; whatever holds a permit for them keeps it until the stream ends or is
/// dropped.
pub enum Body {
    /// The whole body.
    Full(Bytes),
    /// Chunks as they arrive.
    Stream(BodyStream),
}

/// A stream of body chunks. Errors in it are of kind `StreamBroken`, `IdleTimeout` or
/// `BodyDecode`.
///
/// A stream carries the most bytes [`Body::collect`] reads from it
/// ([`BodyStream::max_collect_bytes`]): the transport sets its body limit there, and layers
/// that wrap a stream keep it ([`BodyStream::wrap`], [`Response::map_stream`]). Reading the
/// chunks one by one is not limited by it: each server-sent event is bounded by the SSE
/// decoder, and the whole stream by the stream deadline.
pub struct BodyStream {
    /// In a `SyncWrapper`, which only ever hands out `&mut` access: a stream is `Send` but
    /// need not be `Sync`, and with it a [`Response`] is `Sync` all the same (it can sit in
    /// an `Arc`, or across an `.await` in a future that must be `Sync`). So it gives no size
    /// hint: `Stream::size_hint` takes `&self`.
    inner: SyncWrapper<BoxedChunks>,
    max_collect: usize,
}

/// The chunks of a [`BodyStream`], whatever stream yields them.
type BoxedChunks = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send + 'static>>;

/// The default of [`BodyStream::max_collect_bytes`], and of the transport's body limit:
/// 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// When the attempt that produced a response happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// When the request was handed to the connection.
    pub sent: Instant,
    /// When the response head arrived.
    pub first_byte: Option<Instant>,
    /// When the body was complete (`None` for a stream still being read).
    pub done: Option<Instant>,
}

impl Timings {
    /// Timings of a request sent now.
    pub fn start() -> Timings {
        Timings {
            sent: Instant::now(),
            first_byte: None,
            done: None,
        }
    }

    /// Time from sending to the response head.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        self.first_byte
            .map(|t| t.saturating_duration_since(self.sent))
    }

    /// Time from sending to the end of the body.
    pub fn total(&self) -> Option<Duration> {
        self.done.map(|t| t.saturating_duration_since(self.sent))
    }
}

impl Response {
    /// Assembles a response.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Body,
        timings: Timings,
        request_id: RequestId,
    ) -> Response {
        Response {
            inner: Box::new(Parts {
                status,
                headers,
                body,
                timings,
                request_id,
                usage: OnceLock::new(),
                error_reply: OnceLock::new(),
            }),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }

    /// The body.
    pub fn body(&self) -> &Body {
        &self.inner.body
    }

    /// When the attempt happened.
    pub fn timings(&self) -> &Timings {
        &self.inner.timings
    }

    /// The id of the request this answers.
    pub fn request_id(&self) -> RequestId {
        self.inner.request_id
    }

    /// The token usage a complete body reports, read in `dialect` ([`Dialect::usage_in_body`]);
    /// `None` for a stream, or a body without a usage object.
    ///
    /// The body is scanned once: later calls (the metrics layer, a tokens-per-minute limit,
    /// the caller) get the first call's answer. A call in another dialect scans again.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{HeaderMap, StatusCode};
    /// use volley_core::{Body, Dialect, RequestId, Response, Timings};
    ///
    /// let body = r#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":7}}"#;
    /// let response = Response::new(
    ///     StatusCode::OK,
    ///     HeaderMap::new(),
    ///     Body::Full(Bytes::from_static(body.as_bytes())),
    ///     Timings::start(),
    ///     RequestId::next(),
    /// );
    /// let usage = response.usage(Dialect::OpenAi).unwrap();
    /// assert_eq!((usage.input, usage.output), (20, 7));
    /// ```
    pub fn usage(&self, dialect: Dialect) -> Option<TokenUsage> {
        let Body::Full(bytes) = &self.inner.body else {
            return None;
        };
        once_per_dialect(&self.inner.usage, dialect, |d| d.usage_in_body(bytes))
    }

    /// Whether this is a 2xx response whose complete body is an error object
    /// ([`Dialect::is_error_reply`]: a gateway's 200 with `{"error": ..}`). `false` for a
    /// stream and for any other status.
    ///
    /// Looked at once: later calls (the metrics, retry, rate-limit and cache layers, the
    /// caller) get the first call's answer. A call in another dialect looks again.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{HeaderMap, StatusCode};
    /// use volley_core::{Body, Dialect, RequestId, Response, Timings};
    ///
    /// let body = Bytes::from_static(br#"{"error":{"message":"upstream failed","code":502}}"#);
    /// let response = Response::new(
    ///     StatusCode::OK,
    ///     HeaderMap::new(),
    ///     Body::Full(body),
    ///     Timings::start(),
    ///     RequestId::next(),
    /// );
    /// assert!(response.is_error_reply(Dialect::OpenAi));
    /// ```
    pub fn is_error_reply(&self, dialect: Dialect) -> bool {
        let Body::Full(bytes) = &self.inner.body else {
            return false;
        };
        if !self.inner.status.is_success() {
            return false;
        }
        once_per_dialect(&self.inner.error_reply, dialect, |d| {
            d.is_error_reply(bytes)
        })
    }

    /// Whether the body is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.inner.body, Body::Stream(_))
    }

    /// Splits the response into its head and body, for layers that wrap the body.
    pub fn into_parts(self) -> (ResponseHead, Body) {
        let Parts {
            status,
            headers,
            body,
            timings,
            request_id,
            ..
        } = *self.inner;
        (
            ResponseHead {
                status,
                headers,
                timings,
                request_id,
            },
            body,
        )
    }

    /// Reassembles a response from [`Response::into_parts`].
    pub fn from_parts(head: ResponseHead, body: Body) -> Response {
        Response::new(
            head.status,
            head.headers,
            body,
            head.timings,
            head.request_id,
        )
    }

    /// Wraps a streaming body with `wrap` (to hold a permit, watch a deadline, count chunks);
    /// a complete body is returned unchanged.
    pub fn map_stream(mut self, wrap: impl FnOnce(BodyStream) -> BodyStream) -> Response {
        // Taken out and put back (wrapped, if a stream) in the same box.
        let body = std::mem::replace(&mut self.inner.body, Body::Full(Bytes::new()));
        self.inner.body = match body {
            Body::Stream(stream) => {
                let max = stream.max_collect;
                Body::Stream(wrap(stream).with_max_collect_bytes(max))
            }
            full => full,
        };
        self
    }

    /// A copy of the response when its body is complete; `None` for streams.
    pub fn try_clone(&self) -> Option<Response> {
        let parts = &self.inner;
        match &parts.body {
            Body::Full(bytes) => Some(Response {
                inner: Box::new(Parts {
                    status: parts.status,
                    headers: parts.headers.clone(),
                    body: Body::Full(bytes.clone()),
                    timings: parts.timings,
                    request_id: parts.request_id,
                    usage: parts.usage.clone(),
                    error_reply: parts.error_reply.clone(),
                }),
            }),
            Body::Stream(_) => None,
        }
    }

    /// The whole body, reading a stream to its end if needed.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        self.inner.body.collect().await
    }

    /// The body parsed as JSON (reading a stream to its end if needed).
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let Parts {
            body,
            request_id: id,
            ..
        } = *self.inner;
        let bytes = body.collect().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::BodyDecode,
                format!("request {id}: decoding the JSON response body"),
            )
            .with_source(e)
        })
    }

    /// The body as server-sent events. A complete body is decoded as one chunk.
    pub fn events(self) -> EventStream<BodyStream> {
        EventStream::new(self.inner.body.into_stream())
    }

    /// [`events`](Response::events) with other caps on a line and an event than the
    /// defaults ([`Limits`](crate::sse::Limits)).
    pub fn events_with_limits(self, limits: crate::sse::Limits) -> EventStream<BodyStream> {
        EventStream::with_limits(self.inner.body.into_stream(), limits)
    }
}

/// Everything of a [`Response`] but its body.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// When the attempt happened.
    pub timings: Timings,
    /// The id of the request this answers.
    pub request_id: RequestId,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("request_id", &self.inner.request_id)
            .field("status", &self.inner.status)
            .field("body", &self.inner.body)
            .field("timings", &self.inner.timings)
            .finish_non_exhaustive()
    }
}

impl Body {
    /// Reads the body to its end: at most the stream's
    /// [`max_collect_bytes`](BodyStream::max_collect_bytes), so a server that streams without
    /// end cannot exhaust memory.
    ///
    /// # Errors
    /// The stream's own errors, and `ErrorKind::BodyDecode` when it grows past its limit.
    pub async fn collect(self) -> Result<Bytes, Error> {
        match self {
            Body::Full(bytes) => Ok(bytes),
            Body::Stream(mut stream) => {
                let max = stream.max_collect;
                let mut buf = BytesMut::new();
                while let Some(chunk) =
                    std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
                {
                    let chunk = chunk?;
                    if chunk.len() > max - buf.len() {
                        return Err(Error::new(
                            ErrorKind::BodyDecode,
                            format!(
                                "the streamed response body is larger than the limit of {max} \
                                 bytes for reading it whole"
                            ),
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf.freeze())
            }
        }
    }

    /// The body as a stream (a complete body becomes a stream of one chunk).
    pub fn into_stream(self) -> BodyStream {
        match self {
            Body::Stream(stream) => stream,
            Body::Full(bytes) => {
                let mut once = Some(bytes);
                BodyStream::new(futures_core_stream_fn(move || once.take().map(Ok)))
            }
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Full(bytes) => write!(f, "Full({} bytes)", bytes.len()),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl BodyStream {
    /// Boxes a stream of chunks.
    pub fn new<S>(stream: S) -> BodyStream
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        BodyStream {
            inner: SyncWrapper::new(Box::pin(stream)),
            max_collect: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Sets the most bytes [`Body::collect`] reads from this stream.
    ///
    /// Default: [`DEFAULT_MAX_BODY_BYTES`] (64 MiB); the transport sets its own body limit.
    #[must_use]
    pub fn with_max_collect_bytes(mut self, max: usize) -> BodyStream {
        self.max_collect = max;
        self
    }

    /// The most bytes [`Body::collect`] reads from this stream.
    pub fn max_collect_bytes(&self) -> usize {
        self.max_collect
    }

    /// Wraps this stream (to hold a permit, watch a deadline, count chunks), keeping its
    /// [`max_collect_bytes`](BodyStream::max_collect_bytes).
    pub fn wrap<S>(self, wrap: impl FnOnce(BodyStream) -> S) -> BodyStream
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
    {
        let max = self.max_collect;
        BodyStream::new(wrap(self)).with_max_collect_bytes(max)
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.get_mut().as_mut().poll_next(cx)
    }
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyStream")
    }
}

impl From<BodyStream> for Body {
    fn from(stream: BodyStream) -> Body {
        Body::Stream(stream)
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Full(bytes)
    }
}

/// A stream from a closure that is always ready.
fn futures_core_stream_fn<F>(next: F) -> impl Stream<Item = Result<Bytes, Error>> + Send
where
    F: FnMut() -> Option<Result<Bytes, Error>> + Send + Unpin,
{
    struct FnStream<F>(F);
    impl<F> Stream for FnStream<F>
    where
        F: FnMut() -> Option<Result<Bytes, Error>> + Unpin,
    {
        type Item = Result<Bytes, Error>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready((self.0)())
        }
    }
    FnStream(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Waker;

    /// A response, its body and the event stream over it can be shared between threads
    /// (`Sync`), not only moved: a stream that is only `Send` is wrapped.
    #[test]
    fn responses_and_their_streams_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Response>();
        check::<Body>();
        check::<BodyStream>();
        check::<EventStream<BodyStream>>();
        // A stream that is `Send` but not `Sync` (a `Cell` inside) still makes one.
        let cell = std::cell::Cell::new(0u8);
        let stream = futures_util::stream::poll_fn(move |_| {
            cell.set(cell.get() + 1);
            Poll::Ready(None::<Result<Bytes, Error>>)
        });
        let body = BodyStream::new(stream);
        let shared = std::sync::Arc::new(body);
        std::thread::spawn(move || drop(shared)).join().unwrap();
    }

    fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn response(body: Body) -> Response {
        Response::new(
            StatusCode::OK,
            HeaderMap::new(),
            body,
            Timings::start(),
            RequestId::from_u64(3),
        )
    }

    #[test]
    fn json_of_a_full_body() {
        let r = response(Body::Full(Bytes::from_static(br#"{"a":1}"#)));
        let v: serde_json::Value = block_on(r.json()).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn json_errors_name_the_request() {
        let r = response(Body::Full(Bytes::from_static(b"{")));
        let err = block_on(r.json::<serde_json::Value>()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyDecode);
        assert!(err.to_string().contains("request 3"), "{err}");
    }

    #[test]
    fn stream_bodies_collect_and_keep_errors() {
        let chunks = vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"c"))];
        let mut it = chunks.into_iter();
        let body = Body::Stream(BodyStream::new(futures_core_stream_fn(move || it.next())));
        assert_eq!(block_on(body.collect()).unwrap(), "abc");

        let chunks = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(Error::new(ErrorKind::StreamBroken, "cut")),
        ];
        let mut it = chunks.into_iter();
        let body = Body::Stream(BodyStream::new(futures_core_stream_fn(move || it.next())));
        let err = block_on(body.collect()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StreamBroken);
    }

    #[test]
    fn collect_stops_at_the_limit_and_wrapping_keeps_it() {
        // An endless stream of 1 KiB chunks: collect must give up, not grow without end.
        let endless = || {
            BodyStream::new(futures_core_stream_fn(|| {
                Some(Ok(Bytes::from_static(&[b'x'; 1024])))
            }))
        };
        let body = Body::Stream(endless().with_max_collect_bytes(10_000));
        let err = block_on(body.collect()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyDecode);
        assert!(err.to_string().contains("10000 bytes"), "{err}");

        let wrapped = endless().with_max_collect_bytes(4096).wrap(|s| s);
        assert_eq!(wrapped.max_collect_bytes(), 4096);
        let mapped = response(Body::Stream(endless().with_max_collect_bytes(2048)))
            .map_stream(BodyStream::new);
        match mapped.body() {
            Body::Stream(s) => assert_eq!(s.max_collect_bytes(), 2048),
            Body::Full(_) => unreachable!("a stream stays a stream"),
        }
        // Exactly at the limit is fine.
        let mut left = 4;
        let four = BodyStream::new(futures_core_stream_fn(move || {
            (left > 0).then(|| {
                left -= 1;
                Ok(Bytes::from_static(&[b'y'; 1024]))
            })
        }));
        let body = Body::Stream(four.with_max_collect_bytes(4096));
        assert_eq!(block_on(body.collect()).unwrap().len(), 4096);
    }

    #[test]
    fn only_full_responses_clone() {
        let r = response(Body::Full(Bytes::from_static(b"x")));
        assert!(r.try_clone().is_some());
        let s = response(Body::Full(Bytes::new()).into_stream().into());
        assert!(s.try_clone().is_none());
        assert!(s.is_stream());
    }

    #[test]
    fn map_stream_wraps_only_streams() {
        let full = response(Body::Full(Bytes::from_static(b"x")));
        let full = full.map_stream(|_| panic!("a complete body is not wrapped"));
        assert!(!full.is_stream());
        let mut wrapped = false;
        let stream = response(Body::Full(Bytes::from_static(b"x")).into_stream().into());
        let stream = stream.map_stream(|s| {
            wrapped = true;
            s
        });
        assert!(wrapped && stream.is_stream());
        assert_eq!(block_on(stream.bytes()).unwrap(), "x");
    }

    #[test]
    fn timings_measure_from_sent() {
        let mut t = Timings::start();
        assert_eq!(t.total(), None);
        t.first_byte = Some(t.sent + Duration::from_millis(5));
        t.done = Some(t.sent + Duration::from_millis(9));
        assert_eq!(t.time_to_first_byte(), Some(Duration::from_millis(5)));
        assert_eq!(t.total(), Some(Duration::from_millis(9)));
    }
}
