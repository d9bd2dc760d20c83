//! Unit tests of the pool's checkout: the path no loopback server can choose to take, a
//! reused connection that ends after the request was queued on it but before it was written.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::this_thread;
use crate::Transport;
use crate::backend::Backend;

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
    pool.recycle(sender, this_thread());

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
