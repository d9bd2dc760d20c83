//! The listening server: socket set-up, the accept loop, per-connection tasks, and shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::conn::ResetHandle;
use crate::service::MockService;
use crate::shared::Shared;
use crate::stats::run_sampler;
use crate::{MockConfig, Stats};

/// The accept backlog: thousands of clients may connect at the same instant.
const BACKLOG: i32 = 4096;

/// HTTP/2 streams allowed per connection: far more than any test or benchmark opens, so one
/// connection can carry every request.
const MAX_CONCURRENT_STREAMS: u32 = 100_000;

/// A running mock server. See the [crate docs](crate) for what it serves.
///
/// Dropping it aborts every task at once; [`shutdown`](Self::shutdown) lets in-flight
/// responses finish first.
pub struct MockServer {
    addr: SocketAddr,
    /// Serving HTTPS ([`MockServer::start_tls`](crate::MockServer::start_tls)).
    tls: bool,
    shared: Arc<Shared>,
    state: watch::Sender<RunState>,
    accept_task: Option<JoinHandle<()>>,
    sampler_task: JoinHandle<()>,
}

/// Where the server is in its life; every task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    /// Stop accepting; let connections finish what they are doing.
    Draining,
    /// Drop everything now.
    Abort,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` with a free port. Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let server = volley_mock::MockServer::start(volley_mock::MockConfig::default()).await?;
    /// println!("OpenAI base URL: {}", server.url()); // http://127.0.0.1:PORT/v1
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// An invalid `config` (`InvalidInput`), or the socket cannot be bound.
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a server on `addr` (port 0 picks a free one). Must be called within a tokio
    /// runtime. The server answers HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same
    /// port.
    ///
    /// # Errors
    /// An invalid `config` (`InvalidInput`), or the socket cannot be bound.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        Self::bind_with(addr, config, None).await
    }

    /// [`MockServer::bind`], serving TLS when an acceptor is given.
    pub(crate) async fn bind_with(
        addr: SocketAddr,
        config: MockConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> io::Result<MockServer> {
        config.validate()?;
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (state, state_rx) = watch::channel(RunState::Running);

        let mut builder = auto::Builder::new(Executor {
            state: state_rx.clone(),
        });
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // Resetting streams is a feature here (the `reset` fault), not abuse to guard
            // against.
            .max_local_error_reset_streams(None)
            .max_pending_accept_reset_streams(None);

        let sampler_task = tokio::spawn(run_sampler(shared.clone()));
        let serves_tls = tls.is_some();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            Arc::new(builder),
            state_rx,
            tls,
        ));
        tracing::debug!(%addr, "volley-mock: listening");
        Ok(MockServer {
            addr,
            tls: serves_tls,
            shared,
            state,
            accept_task: Some(accept_task),
            sampler_task,
        })
    }

    /// Serves on `addr` until `shutdown` completes, then shuts down gracefully and returns the
    /// final statistics. For a command-line server: pass e.g. `tokio::signal::ctrl_c()`
    /// mapped to `()`. Use [`bind`](Self::bind) instead to learn the address first.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub async fn run_until(
        addr: SocketAddr,
        config: MockConfig,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<Stats> {
        let server = Self::bind(addr, config).await?;
        shutdown.await;
        let stats = server.stats();
        server.shutdown().await;
        Ok(stats)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `/v1` included: `http://127.0.0.1:PORT/v1` (`https://` when
    /// serving TLS). When bound to an unspecified address (`0.0.0.0`, `::`) the URL names the
    /// loopback address instead.
    pub fn url(&self) -> String {
        let ip = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(a) if a.ip().is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            a => a.ip(),
        };
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Starts a new statistics window (as `POST /stats/reset` does) and returns the last
    /// snapshot of the old one. Counters and the timeline restart from zero; `in_flight` keeps
    /// counting what is still running, and the peak restarts from it. The per-request RNG
    /// restarts too, so a phase after a reset replays the same sequence of draws.
    pub fn reset_stats(&self) -> Stats {
        self.shared.reset()
    }

    /// The `x-client-request-id` of every API request received since the start or the last
    /// reset, in arrival order (an empty string for a request without one), when
    /// [`MockConfig::journal`] is on; empty otherwise. `GET /journal` serves the same list.
    pub fn journal(&self) -> Vec<String> {
        self.shared.journal()
    }

    /// The `x-client-request-id` of every API request whose successful (2xx) answer was
    /// completely written, in that order, when [`MockConfig::journal`] is on; empty otherwise.
    /// An answer is recorded when its last byte is handed to the connection, just before the
    /// client can read it, so a client that dies at that moment may have missed an answer
    /// recorded here (a test that counts answers sent again then counts one too many, never
    /// one too few). An answer cut by a fault is not recorded. Cleared with the journal.
    pub fn answered(&self) -> Vec<String> {
        self.shared.answered()
    }

    /// Stops accepting, lets in-flight responses finish for up to
    /// [`MockConfig::shutdown_grace`] (idle connections close at once, HTTP/2 clients get a
    /// GOAWAY), then drops whatever is left.
    pub async fn shutdown(mut self) {
        self.state.send_replace(RunState::Draining);
        if let Some(task) = self.accept_task.take() {
            // The accept loop bounds its own drain by the grace period.
            let _ = task.await;
        }
        self.state.send_replace(RunState::Abort);
        self.sampler_task.abort();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.state.send_replace(RunState::Abort);
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        self.sampler_task.abort();
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted CLI server rebind at once despite connections in TIME_WAIT. (On
    // Windows the option means something else, so it stays off there.)
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<Executor>>,
    mut state: watch::Receiver<RunState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    let for_connections = state.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        shared.clone(),
                        builder.clone(),
                        for_connections.clone(),
                        tls.clone(),
                    ));
                }
                Err(err) => accept_error(err).await,
            },
            // Reap finished connections so the set stays as small as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = wait_until(&mut state, |s| s != RunState::Running) => break,
        }
    }
    drop(listener);
    let grace = shared.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "volley-mock: shutdown grace over, dropping connections"
        );
    }
    // Dropping the set aborts what is left.
}

async fn accept_error(err: io::Error) {
    match err.kind() {
        // The peer gave up before we accepted: nothing to do.
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => {}
        // Typically out of file descriptors: back off instead of spinning.
        _ => {
            tracing::warn!(%err, "volley-mock: accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<Executor>>,
    state: watch::Receiver<RunState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Small SSE frames must leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    shared.counters.connection_opened();
    let _open = ConnectionOpen(shared.clone());
    let service = MockService::new(shared, ResetHandle::new(&stream));
    match tls {
        None => serve_io(TokioIo::new(stream), service, &builder, state).await,
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => serve_io(TokioIo::new(stream), service, &builder, state).await,
            Err(err) => tracing::debug!(%err, "volley-mock: TLS handshake failed"),
        },
    }
}

/// Serves one connection (plain or TLS) until it ends or the server stops.
async fn serve_io<I>(
    io: TokioIo<I>,
    service: MockService,
    builder: &auto::Builder<Executor>,
    mut state: watch::Receiver<RunState>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::trace!(%err, "volley-mock: connection ended with an error");
            }
            return;
        }
        () = wait_until(&mut state, |s| s != RunState::Running) => {}
    }
    connection.as_mut().graceful_shutdown();
    // Bounded: the accept loop aborts this task when the grace period is over.
    let _ = connection.await;
}

/// Counts a connection as open until dropped (also when its task is aborted).
struct ConnectionOpen(Arc<Shared>);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.counters.connection_closed();
    }
}

/// Runs hyper's HTTP/2 stream tasks, dropping them when the server is dropped or its
/// shutdown grace is over (they live outside the connection tasks).
#[derive(Clone)]
struct Executor {
    state: watch::Receiver<RunState>,
}

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let mut state = self.state.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = future => {}
                () = wait_until(&mut state, |s| s == RunState::Abort) => {}
            }
        });
    }
}

/// Waits until the state satisfies `done`, or until the server is gone.
async fn wait_until(state: &mut watch::Receiver<RunState>, done: impl Fn(RunState) -> bool) {
    // The borrow `wait_for` returns is not `Send`; drop it here rather than hold it in a
    // `select!` output.
    let _ = state.wait_for(|s| done(*s)).await.map(|_| ());
}
