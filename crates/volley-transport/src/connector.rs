//! A connector wrapper that counts connections opened and closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

use crate::proxy::Dial;
use crate::stats::Counters;

/// The connector both pools open connections with: TCP (counted), then TLS when the scheme
/// asks for it.
pub(crate) type Connector = HttpsConnector<Counting<Dial>>;

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
        let connecting = self.inner.call(uri);
        let counters = self.counters.clone();
        let proxied = self.proxied;
        // Boxed once per new connection, never per request.
        Box::pin(async move {
            let io = connecting.await?;
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
