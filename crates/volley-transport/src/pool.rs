//! Volley's own HTTP/1.1 connection pool over hyper's per-connection API
//! (`hyper::client::conn::http1`).
//!
//! A transport talks to one origin, so the pool is one list of idle connections in the order
//! they came back, with no per-request key hashing, no waiter queues and no task spawned per
//! response (hyper-util's legacy pool does all three). A connection goes back to the list the
//! moment its response body has been read to the end, inside the call that read its last
//! byte, so a caller that sends its next request right away finds it there instead of
//! opening another one.
//!
//! - **Checkout**: the most recently used idle connection whose task runs on the caller's
//!   thread, among the [`AFFINITY_WINDOW`] most recently returned; else the most recently
//!   used. One the server closed meanwhile, or idle for longer than the idle timeout, is
//!   dropped and the next is tried; with none left a new connection is opened. Connections
//!   are never shared: HTTP/1.1 carries one request at a time.
//! - **Threads**: a connection's task is spawned on the runtime of the request that opened
//!   it. On a current-thread runtime per thread (`volley bench`), a request sent on a
//!   connection driven by another thread wakes that thread for its request and is woken back
//!   for its answer; preferring the caller's own connections keeps both on one thread as a
//!   rule. The list stays one: a thread with no idle connection of its own takes another's
//!   rather than opening one. On a multi-threaded runtime a task moves between threads and
//!   the preference neither helps nor costs more than the check.
//! - **A request not written is sent again**: a reused connection the server closed just
//!   before the request went out gives the request back (`try_send_request`), and it is sent
//!   on the next connection. Once written it is never sent again here (that is the retry
//!   layer's decision).
//! - **Return**: when the body reaches its end or is dropped. hyper keeps a connection whose
//!   dropped body had fully arrived (a stream dropped after `data: [DONE]`, say) and closes
//!   one with more to come (HTTP/1.1 cannot skip the rest of an answer); the next checkout
//!   waits until the connection is ready, or moves on when it closed. A request cancelled
//!   while in flight closes its connection.
//! - **Idle connections** beyond `pool_max_idle_per_host` are closed; those idle longer than
//!   `pool_idle_timeout` are closed by a background sweep, so a quiet process does not keep
//!   sockets the server has long forgotten.
//! - **The server's idle timeout**: a response's `Keep-Alive: timeout=N` (Node.js servers
//!   send 5 s, Apache its `KeepAliveTimeout`) lowers its connection's idle timeout to a second
//!   less than `N` (half of `N` below 2 s), as undici does: a request written just as the
//!   server closes an idle connection is lost, and counts as sent. `timeout=0` keeps the
//!   connection out of the pool. Per connection: behind a load balancer, backends differ.
//! - **A response framed twice** (`Content-Length` and `Transfer-Encoding`) closes its
//!   connection after it, as RFC 9112 §6.3 asks.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::Uri;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::time::Instant;
use tower_service::Service;

use crate::connector::Connector;
use crate::error::SendError;
use crate::thread_id::this_thread;

type Sender = http1::SendRequest<Full<Bytes>>;

/// How many of the most recently returned idle connections a checkout looks through for one
/// whose task runs on its own thread.
pub(crate) const AFFINITY_WINDOW: usize = 8;

/// The HTTP/1.1 pool of one origin.
pub(crate) struct H1Pool {
    connector: Connector,
    /// `scheme://authority/`: what the connector connects to.
    origin: Uri,
    builder: http1::Builder,
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Option<Duration>,
    sweeper_started: AtomicBool,
}

/// The `Keep-Alive` response header (RFC 2068 19.7.1.1; sent by Node.js and Apache).
const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");

/// Whether a response gives both a `Content-Length` and a `Transfer-Encoding`: hyper reads it
/// by the latter, as RFC 9112 §6.3 says, but a middlebox that read it by the former is out of
/// step with us, and the next response on the connection could be another request's (the
/// shape of request smuggling). The RFC says to close such a connection after the response.
fn framed_twice(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING)
}

struct Idle {
    sender: Sender,
    since: Instant,
    /// How long it may stay idle: the pool's idle timeout, or less when its server said so.
    limit: Option<Duration>,
    /// The thread its task was spawned on (which drives it, on a current-thread runtime).
    home: u32,
}

impl H1Pool {
    pub(crate) fn new(
        connector: Connector,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Option<Duration>,
    ) -> H1Pool {
        H1Pool {
            connector,
            origin,
            builder: http1::Builder::new(),
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            sweeper_started: AtomicBool::new(false),
        }
    }

    /// How long a connection may stay idle: the pool's idle timeout, lowered by what its
    /// server's `Keep-Alive` header said (`server`: a second less than its timeout, half of
    /// it below 2 s, for the time the server's close takes to arrive). `Some(ZERO)`: not at
    /// all.
    fn idle_limit(&self, server: Option<Duration>) -> Option<Duration> {
        let Some(timeout) = server else {
            return self.idle_timeout;
        };
        let allowed = if timeout >= Duration::from_secs(2) {
            timeout - Duration::from_secs(1)
        } else {
            timeout / 2
        };
        Some(self.idle_timeout.map_or(allowed, |ours| ours.min(allowed)))
    }

    /// Sends `request` (origin-form URI, `Host` header set) and waits for the response head.
    ///
    /// An async block, not an `async fn`: the block keeps the request once, where it captured
    /// it, where an `async fn` keeps its argument and the local it moves it into (840 bytes per
    /// request in flight, against 576).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its argument twice"
    )]
    pub(crate) fn send(
        self: Arc<Self>,
        mut request: http::Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<PooledBody>, SendError>> + Send + 'static {
        async move {
            loop {
                let (mut sender, home, reused) = match self.take_idle(this_thread()) {
                    Some((sender, home)) => (sender, home, true),
                    // Boxed: connecting (a TLS handshake, a proxy tunnel) takes a large future
                    // that most requests, which reuse a connection, would otherwise carry and copy.
                    None => {
                        let (sender, home) = Box::pin(self.connect()).await?;
                        (sender, home, false)
                    }
                };
                // Ready at once unless the connection is still finishing the previous exchange
                // (its body was just read or dropped); an error means it closed.
                if let Err(e) = sender.ready().await {
                    if reused {
                        continue;
                    }
                    return Err(SendError::NotSent(e));
                }
                match sender.try_send_request(request).await {
                    Ok(response) => {
                        let (mut head, body) = response.into_parts();
                        crate::send::canonical_content_coding(&mut head.headers);
                        let server_idle = if framed_twice(&head.headers) {
                            // Not reused: see `framed_twice`.
                            Some(Duration::ZERO)
                        } else {
                            head.headers.get(KEEP_ALIVE).and_then(keep_alive_timeout)
                        };
                        let body = PooledBody {
                            body,
                            recycle: Some(Recycle {
                                sender,
                                home,
                                server_idle,
                                pool: self,
                            }),
                        };
                        return Ok(http::Response::from_parts(head, body));
                    }
                    Err(mut e) => match e.take_message() {
                        // A reused connection closed under the request before it was written:
                        // send it on another one.
                        Some(back) if reused => request = back,
                        Some(_) => return Err(SendError::NotSent(e.into_error())),
                        None => return Err(SendError::Sent(e.into_error())),
                    },
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding the lock leaves the list consistent: ignore the poison.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live idle connection, and the thread it came from: the most recently used of those
    /// opened on `here` among the last [`AFFINITY_WINDOW`] returned, else the most recently
    /// used of all.
    fn take_idle(&self, here: u32) -> Option<(Sender, u32)> {
        let mut idle = self.lock();
        // Read once, and only if there is an idle connection to judge.
        let mut now = None;
        let mut at = idle.len();
        let mut looked = 0;
        while at > 0 && looked < AFFINITY_WINDOW {
            at -= 1;
            let entry = &idle[at];
            if entry.sender.is_closed() {
                idle.remove(at);
                continue;
            }
            if expired(entry, &mut now) {
                // The list is in return order: everything below this one is older still, and
                // past its limit as a rule (one whose server allows longer costs a connect).
                idle.drain(..=at);
                break;
            }
            if entry.home == here {
                return idle.remove(at).map(|entry| (entry.sender, entry.home));
            }
            looked += 1;
        }
        // None of the caller's: the newest. The scan went through the top of the list, so what
        // is left there is open and fresh (or the list is empty).
        idle.pop_back().map(|entry| (entry.sender, entry.home))
    }

    /// Puts a connection whose exchange ended back in the list, unless it closed, the list is
    /// full, or its server allows it no idle time (`server_idle`: its `Keep-Alive` timeout).
    fn recycle(&self, sender: Sender, home: u32, server_idle: Option<Duration>) {
        let limit = self.idle_limit(server_idle);
        if sender.is_closed() || limit.is_some_and(|l| l.is_zero()) {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
                limit,
                home,
            });
        }
    }

    /// A new connection, and the thread its task was spawned on.
    async fn connect(self: &Arc<Self>) -> Result<(Sender, u32), SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, connection) = self
            .builder
            .handshake(io)
            .await
            .map_err(SendError::NotSent)?;
        // The connection itself as the task, not an async block awaiting it: the block would
        // hold it twice (the captured value and the awaited one), 1 256 bytes against 624.
        tokio::spawn(connection.map(|closed| {
            if let Err(e) = closed {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        }));
        H1Pool::spawn_sweeper(self);
        Ok((sender, this_thread()))
    }

    /// Starts, once, the task that every half idle timeout (at least a second) closes the idle
    /// connections that timed out or closed. It holds the pool weakly and ends with it.
    fn spawn_sweeper(pool: &Arc<H1Pool>) {
        let Some(timeout) = pool.idle_timeout else {
            return;
        };
        if pool.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<H1Pool> = Arc::downgrade(pool);
        let period = (timeout / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                let expired: Vec<Idle> = {
                    let mut idle = pool.lock();
                    let mut now = None;
                    let keep = idle
                        .iter()
                        .position(|e| !expired(e, &mut now))
                        .unwrap_or(idle.len());
                    let expired = idle.drain(..keep).collect();
                    idle.retain(|e| !e.sender.is_closed());
                    expired
                };
                // Closed outside the lock.
                drop(expired);
            }
        });
    }
}

/// Whether `entry` has been idle for longer than its limit, as of `now` (the clock is read
/// into it the first time it is needed).
fn expired(entry: &Idle, now: &mut Option<Instant>) -> bool {
    entry.limit.is_some_and(|limit| {
        let now = *now.get_or_insert_with(Instant::now);
        now.saturating_duration_since(entry.since) > limit
    })
}

/// The `timeout=N` parameter of a `Keep-Alive` header value (`timeout=5, max=100`), in
/// seconds; `None` without one, or with one that is not a whole number.
fn keep_alive_timeout(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    text.split(',').find_map(|param| {
        let (name, secs) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = secs.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

impl fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Pool")
            .field("idle", &self.lock().len())
            .finish_non_exhaustive()
    }
}

struct Recycle {
    sender: Sender,
    /// The thread whose runtime drives the connection.
    home: u32,
    /// The idle timeout its server stated in the response's `Keep-Alive` header, if any.
    server_idle: Option<Duration>,
    pool: Arc<H1Pool>,
}

pin_project_lite::pin_project! {
    /// A response body that gives its connection back to the pool when it reaches its end
    /// or is dropped.
    ///
    /// Streams are usually dropped as soon as their last event (`data: [DONE]`) is read,
    /// before the end of the chunked encoding behind it is polled. hyper then reads what has
    /// already arrived of the body and keeps the connection if that was its end, or closes
    /// it. Either way the sender goes back to the list: the next checkout waits for the
    /// connection to be ready, and drops it if it closed instead.
    pub(crate) struct PooledBody {
        #[pin]
        body: Incoming,
        recycle: Option<Recycle>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            PooledBody::finish(this.project().recycle);
        }
    }
}

impl PooledBody {
    /// A body whose connection is not this pool's (hyper-util's pool manages it).
    pub(crate) fn unpooled(body: Incoming) -> PooledBody {
        PooledBody {
            body,
            recycle: None,
        }
    }

    fn finish(recycle: &mut Option<Recycle>) {
        if let Some(Recycle {
            sender,
            home,
            server_idle,
            pool,
        }) = recycle.take()
        {
            pool.recycle(sender, home, server_idle);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => PooledBody::finish(this.recycle),
            // The connection is no good after an error.
            Poll::Ready(Some(Err(_))) => drop(this.recycle.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
