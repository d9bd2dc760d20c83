//! Unit tests of the pool's checkout: the path no loopback server can choose to take, a
//! reused connection that ends after the request was queued on it but before it was written;
//! and the order of the idle list (the caller's own connections within the window first,
//! closed and expired ones dropped), on hand-made idle entries.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::{AFFINITY_WINDOW, H1Pool, Idle};
use crate::Transport;
use crate::backend::Backend;
use crate::thread_id::this_thread;

/// A keep-alive server on a plain thread answering every request with a small JSON body;
/// counts connections and requests.
fn server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + length {
                        match socket.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    }
                    buf.drain(..end + 4 + length);
                    r.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"object":"chat.completion","choices":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, connections, requests)
}

#[tokio::test]
async fn a_request_given_back_unwritten_is_sent_on_a_new_connection() {
    let (address, connections, requests) = server();
    let transport = Transport::builder()
        .base_url(format!("http://{address}/v1"))
        .build()
        .unwrap();
    let Backend::Http1(pool) = &transport.inner.client else {
        panic!("plain http:// uses the HTTP/1.1 pool")
    };
    // An idle connection whose task will end with a request queued on it, unwritten: a
    // handshake over an in-memory pipe, its connection polled once (so it asks for a
    // request) and then dropped once the request is queued.
    let (client_io, _server_io) = tokio::io::duplex(4096);
    let (sender, mut connection) = http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(client_io))
        .await
        .unwrap();
    std::future::poll_fn(|cx| {
        assert!(std::pin::Pin::new(&mut connection).poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    pool.recycle(sender, this_thread(), None);

    let request = http::Request::post("/v1/chat/completions")
        .header(http::header::HOST, &address)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let mut send = tokio::spawn(pool.clone().send(request));
    // The send takes the idle connection and queues the request on it, then waits.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let waiting = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut send).poll(cx).is_pending())
    })
    .await;
    assert!(waiting, "the request waits on the connection");
    drop(connection);
    let response = send.await.unwrap().expect("sent again on a new connection");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"object\""));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// The connections of hand-made idle entries, kept so that their senders stay open.
type Held = Vec<(
    http1::Connection<TokioIo<tokio::io::DuplexStream>, Full<Bytes>>,
    tokio::io::DuplexStream,
)>;

/// Puts an idle connection of thread `home` on top of the list, returned now: open (its
/// connection kept in `held`), or closed (its connection dropped).
async fn push_idle(pool: &H1Pool, home: u32, open: bool, held: &mut Held) {
    let (client_io, server_io) = tokio::io::duplex(64);
    let (sender, connection) = http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(client_io))
        .await
        .unwrap();
    if open {
        held.push((connection, server_io));
    } else {
        drop(connection);
        assert!(sender.is_closed());
    }
    pool.lock().push_back(Idle {
        sender,
        since: tokio::time::Instant::now(),
        limit: pool.idle_timeout,
        home,
    });
}

/// A transport whose pool no test request reaches (nothing listens on port 9 of loopback).
fn idle_transport(idle_timeout: Option<std::time::Duration>) -> Transport {
    Transport::builder()
        .base_url("http://127.0.0.1:9/v1")
        .pool_idle_timeout(idle_timeout)
        .build()
        .unwrap()
}

fn http1_pool(transport: &Transport) -> &Arc<H1Pool> {
    let Backend::Http1(pool) = &transport.inner.client else {
        panic!("plain http:// uses the HTTP/1.1 pool")
    };
    pool
}

#[tokio::test]
async fn a_checkout_looks_through_the_window_for_its_own_then_takes_the_newest() {
    let transport = idle_transport(None);
    let pool = http1_pool(&transport);
    let (here, other) = (this_thread(), this_thread() + 1);
    let mut held = Held::new();
    // The caller's own connection, under as many of another thread's as the window holds.
    push_idle(pool, here, true, &mut held).await;
    for _ in 0..AFFINITY_WINDOW {
        push_idle(pool, other, true, &mut held).await;
    }
    let (_, home) = pool.take_idle(here).unwrap();
    assert_eq!(
        home, other,
        "its own is past the window: the newest is taken"
    );
    let (_, home) = pool.take_idle(here).unwrap();
    assert_eq!(home, here, "now its own is within the window");
    assert_eq!(pool.lock().len(), AFFINITY_WINDOW - 1);
}

#[tokio::test]
async fn closed_connections_are_dropped_and_not_counted_in_the_window() {
    let transport = idle_transport(None);
    let pool = http1_pool(&transport);
    let (here, other) = (this_thread(), this_thread() + 1);
    let mut held = Held::new();
    push_idle(pool, here, true, &mut held).await;
    for _ in 0..2 * AFFINITY_WINDOW {
        push_idle(pool, other, false, &mut held).await;
    }
    let (sender, home) = pool.take_idle(here).unwrap();
    assert_eq!(home, here);
    assert!(!sender.is_closed());
    assert_eq!(pool.lock().len(), 0, "the closed ones went");
    assert!(pool.take_idle(here).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_and_every_older_one_are_dropped_at_checkout() {
    let transport = idle_transport(Some(std::time::Duration::from_secs(10)));
    let pool = http1_pool(&transport);
    let (here, other) = (this_thread(), this_thread() + 1);
    let mut held = Held::new();
    push_idle(pool, here, true, &mut held).await;
    push_idle(pool, here, true, &mut held).await;
    tokio::time::advance(std::time::Duration::from_secs(11)).await;
    push_idle(pool, other, true, &mut held).await;
    // The caller's own two are past the idle timeout: the other thread's fresh one is taken,
    // and the expired ones are gone.
    let (_, home) = pool.take_idle(here).unwrap();
    assert_eq!(home, other);
    assert_eq!(pool.lock().len(), 0);
    // Expired on top: everything goes, and nothing is taken.
    push_idle(pool, other, true, &mut held).await;
    push_idle(pool, here, true, &mut held).await;
    tokio::time::advance(std::time::Duration::from_secs(11)).await;
    assert!(pool.take_idle(here).is_none());
    assert_eq!(pool.lock().len(), 0);
}

#[test]
fn the_keep_alive_timeout_is_read_from_its_parameter() {
    use super::keep_alive_timeout;
    use std::time::Duration;
    let read = |v: &'static str| keep_alive_timeout(&http::HeaderValue::from_static(v));
    assert_eq!(read("timeout=5, max=1000"), Some(Duration::from_secs(5)));
    assert_eq!(read("max=100, Timeout = 15"), Some(Duration::from_secs(15)));
    assert_eq!(read("timeout=\"3\""), Some(Duration::from_secs(3)));
    assert_eq!(read("max=100"), None);
    assert_eq!(read("timeout=1.5"), None);
    assert_eq!(read("timeouts=4"), None);
}

#[tokio::test]
async fn the_servers_keep_alive_timeout_lowers_the_idle_limit_and_never_raises_it() {
    use std::time::Duration;
    let secs = Duration::from_secs;
    let transport = idle_transport(Some(secs(90)));
    let pool = http1_pool(&transport);
    assert_eq!(pool.idle_limit(None), Some(secs(90)));
    assert_eq!(pool.idle_limit(Some(secs(5))), Some(secs(4)));
    assert_eq!(
        pool.idle_limit(Some(secs(1))),
        Some(Duration::from_millis(500))
    );
    assert_eq!(pool.idle_limit(Some(secs(600))), Some(secs(90)));
    assert_eq!(pool.idle_limit(Some(secs(0))), Some(Duration::ZERO));
    let forever = idle_transport(None);
    assert_eq!(
        http1_pool(&forever).idle_limit(Some(secs(5))),
        Some(secs(4))
    );
}

/// Each connection keeps its own server's limit (backends behind one load balancer differ),
/// and one whose server allows no idle time is not kept at all.
#[tokio::test(start_paused = true)]
async fn each_connection_keeps_its_own_servers_limit() {
    use std::time::Duration;
    let transport = idle_transport(Some(Duration::from_secs(90)));
    let pool = http1_pool(&transport);
    let here = this_thread();
    let mut held = Held::new();
    for server_idle in [Some(60), Some(0), Some(5)] {
        push_idle(pool, here, true, &mut held).await;
        let Idle { sender, home, .. } = pool.lock().pop_back().unwrap();
        pool.recycle(sender, home, server_idle.map(Duration::from_secs));
    }
    assert_eq!(pool.lock().len(), 2, "timeout=0 was not kept");
    tokio::time::advance(Duration::from_secs(10)).await;
    // The 5 s one (on top) is past its 4 s: it goes, and the older one with it.
    assert!(pool.take_idle(here).is_none());
    push_idle(pool, here, true, &mut held).await;
    let Idle { sender, home, .. } = pool.lock().pop_back().unwrap();
    pool.recycle(sender, home, Some(Duration::from_secs(60)));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(pool.take_idle(here).is_some(), "59 s allowed");
}
