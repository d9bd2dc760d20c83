//! The connector's wrappers: one counts connections opened and closed, one keeps a TLS
//! session out of line.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use futures_util::future::MapOk;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

use crate::proxy::Dial;
use crate::stats::Counters;

/// The connector both pools open connections with: TCP (counted), then TLS when the scheme
/// asks for it, the TLS session boxed.
pub(crate) type Connector = BoxTls<HttpsConnector<Counting<Dial>>>;

/// Wraps hyper-rustls' connector so that its connections are [`Stream`]s: a plain connection
/// inline, a TLS one boxed.
///
/// hyper-rustls' `MaybeHttpsStream` holds the TLS session inline (1 128 bytes with our TCP
/// stream, of which plain text uses 56), and a connection's task holds its stream inline:
/// every plain-text connection would carry a kilobyte it never uses, 11 MB at 10 000
/// connections. A TLS session is boxed once per connection; its reads and writes go through
/// one more pointer, which its encryption dwarfs.
///
/// It also bounds the TLS handshake, which hyper-rustls does not: a server that accepts the
/// TCP connection and never answers the `ClientHello` (a black-holed load balancer) would
/// otherwise hold the attempt until its own deadline, and the failure would read as a request
/// sent. The handshake gets `limit` from the moment the connection under it is ready (the
/// TCP connection, or a proxy's tunnel: [`Counting`] marks it), so name resolution and the
/// phases before, which have bounds of their own, take none of it; when it passes, the
/// connection fails with [`HandshakeTimedOut`], which nothing was sent through.
#[derive(Clone, Debug)]
pub(crate) struct BoxTls<C> {
    inner: C,
    limit: Option<std::time::Duration>,
}

impl<C> BoxTls<C> {
    /// `limit`: the TLS handshake's bound, `None` for none; `tls`: whether the scheme is
    /// `https` (plain text has no handshake).
    pub(crate) fn new(inner: C, limit: Option<std::time::Duration>, tls: bool) -> BoxTls<C> {
        BoxTls {
            inner,
            limit: limit.filter(|_| tls),
        }
    }
}

/// When the connection under a TLS handshake was ready, set by [`Counting`]'s future.
type ReadyAt = std::sync::Arc<std::sync::OnceLock<tokio::time::Instant>>;

thread_local! {
    /// Hands [`BoxTls::call`]'s mark to the [`Counting::call`] that hyper-rustls makes inside
    /// it, on the same thread, before returning.
    static READY_AT: std::cell::RefCell<Option<ReadyAt>> = const { std::cell::RefCell::new(None) };
}

impl<C, T> Service<Uri> for BoxTls<C>
where
    C: Service<Uri, Response = MaybeHttpsStream<T>>,
    C::Error: From<HandshakeTimedOut>,
{
    type Response = Stream<T>;
    type Error = C::Error;
    type Future = Connecting<MapOk<C::Future, fn(MaybeHttpsStream<T>) -> Stream<T>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let ready_at = self.limit.map(|_| {
            let mark = ReadyAt::default();
            READY_AT.with(|slot| *slot.borrow_mut() = Some(mark.clone()));
            mark
        });
        let inner = self.inner.call(uri).map_ok(Stream::from as fn(_) -> _);
        // Taken by `Counting::call` already; cleared in case the call returned early.
        READY_AT.with(|slot| slot.borrow_mut().take());
        Connecting {
            inner,
            deadline: self.limit.zip(ready_at).map(|(limit, ready_at)| Deadline {
                limit,
                ready_at,
                sleep: None,
            }),
        }
    }
}

/// The handshake's bound: armed once the connection under it is ready.
pub(crate) struct Deadline {
    limit: std::time::Duration,
    ready_at: ReadyAt,
    // Boxed: `Sleep` is not `Unpin`, and this is made once per connection.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

pin_project_lite::pin_project! {
    /// The future of [`BoxTls`]: the connection, or [`HandshakeTimedOut`] when the handshake
    /// outlasts its bound.
    pub(crate) struct Connecting<F> {
        #[pin]
        inner: F,
        deadline: Option<Deadline>,
    }
}

impl<F, R, E> Future for Connecting<F>
where
    F: Future<Output = Result<R, E>>,
    E: From<HandshakeTimedOut>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(deadline) = this.deadline {
            // The connection under the handshake became ready during the poll above (or an
            // earlier one): the handshake's time starts there.
            if deadline.sleep.is_none()
                && let Some(&at) = deadline.ready_at.get()
            {
                deadline.sleep = Some(Box::pin(tokio::time::sleep_until(at + deadline.limit)));
            }
            if let Some(sleep) = &mut deadline.sleep
                && sleep.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(HandshakeTimedOut(deadline.limit).into()));
            }
        }
        Poll::Pending
    }
}

/// The TLS handshake did not finish within its bound (see [`BoxTls`]).
#[derive(Debug)]
pub(crate) struct HandshakeTimedOut(pub(crate) std::time::Duration);

impl std::fmt::Display for HandshakeTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the TLS handshake did not finish within {:?}", self.0)
    }
}

impl std::error::Error for HandshakeTimedOut {}

/// A connection: plain text inline, TLS boxed (see [`BoxTls`]).
pub(crate) enum Stream<T> {
    Plain(T),
    Tls(Box<MaybeHttpsStream<T>>),
}

impl<T> From<MaybeHttpsStream<T>> for Stream<T> {
    fn from(stream: MaybeHttpsStream<T>) -> Stream<T> {
        match stream {
            MaybeHttpsStream::Http(plain) => Stream::Plain(plain),
            tls => Stream::Tls(Box::new(tls)),
        }
    }
}

impl<T: Read + Write + Connection + Unpin> Connection for Stream<T> {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            // hyper-rustls reports HTTP/2 when ALPN chose it.
            Stream::Tls(s) => s.connected(),
        }
    }
}

impl<T: Read + Write + Connection + Unpin> Read for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<T: Read + Write + Connection + Unpin> Write for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// Wraps a connector so that every connection it opens is counted, and counted again when it
/// is dropped (closed).
#[derive(Clone)]
pub(crate) struct Counting<C> {
    inner: C,
    counters: Arc<Counters>,
    /// Connections go to a forward proxy (requests in absolute form).
    proxied: bool,
}

impl<C> Counting<C> {
    pub(crate) fn new(inner: C, counters: Arc<Counters>, proxied: bool) -> Counting<C> {
        Counting {
            inner,
            counters,
            proxied,
        }
    }
}

impl<C> Service<Uri> for Counting<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Set when a TLS handshake follows (see `BoxTls`): marked when the connection is ready.
        let ready_at = READY_AT.with(|slot| slot.borrow_mut().take());
        let connecting = self.inner.call(uri);
        let counters = self.counters.clone();
        let proxied = self.proxied;
        // Boxed once per new connection, never per request.
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(mark) = ready_at {
                let _ = mark.set(tokio::time::Instant::now());
            }
            counters.opened.fetch_add(1, Ordering::Relaxed);
            Ok(Counted {
                io,
                counters,
                proxied,
            })
        })
    }
}

/// A connection that tells the counters when it closes.
pub(crate) struct Counted<T> {
    io: T,
    counters: Arc<Counters>,
    proxied: bool,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        // hyper-util's pool keeps absolute-form request targets on proxied connections.
        self.io.connected().proxy(self.proxied)
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The handshake's bound starts when the connection under it is ready: time spent before
    /// (resolving the name, connecting, a proxy's handshake) takes none of it.
    #[tokio::test(start_paused = true)]
    async fn the_handshake_bound_starts_when_the_connection_is_ready() {
        let ready_at = ReadyAt::default();
        let mark = ready_at.clone();
        let started = tokio::time::Instant::now();
        let inner = async move {
            // 500 ms to get a connection, then a handshake that never ends.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = mark.set(tokio::time::Instant::now());
            std::future::pending::<Result<(), BoxedTimeout>>().await
        };
        let connecting = Connecting {
            inner,
            deadline: Some(Deadline {
                limit: Duration::from_millis(300),
                ready_at,
                sleep: None,
            }),
        };
        let err = connecting.await.unwrap_err();
        assert_eq!(err.0.0, Duration::from_millis(300));
        assert_eq!(started.elapsed(), Duration::from_millis(800));
    }

    #[derive(Debug)]
    struct BoxedTimeout(HandshakeTimedOut);

    impl From<HandshakeTimedOut> for BoxedTimeout {
        fn from(e: HandshakeTimedOut) -> BoxedTimeout {
            BoxedTimeout(e)
        }
    }
}
