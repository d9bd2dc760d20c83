//! A hostile server against the transport, over real loopback sockets: answers that try to
//! buy unbounded memory (a gigabyte of event stream, bodies past the limits) or to read back
//! credentials (an error body that echoes every header it was sent).
//!
//! The responders here are raw tokio TCP servers written for the test: they produce their
//! bytes lazily, a 64 KiB buffer at a time, and stop as soon as the client hangs up, so a
//! gigabyte is promised but never allocated, and a client that gives up early makes the test
//! quick. Memory is measured as the high-water mark of this process's resident set
//! (`VmHWM`), which also covers every test running beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use volley_core::{ErrorKind, Request};
use volley_transport::Transport;

const GIB: u64 = 1 << 30;
/// The whole process must stay below this, whatever the server sends.
const MAX_RSS_BYTES: u64 = 200 << 20;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

/// What a raw responder answers each connection with.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, `text/event-stream`, `Content-Length` of `len` bytes of `data:` events.
    EventStream { len: u64 },
    /// `200`, `application/json`, a JSON string of `len` bytes.
    Json { len: u64 },
    /// `401` whose JSON error message quotes every request header line.
    EchoHeaders,
}

/// A raw HTTP/1.1 responder on 127.0.0.1 answering every connection with `answer` (one
/// request per connection), counting the body bytes it managed to write.
async fn responder(answer: Answer) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        // Bounded: each test makes a handful of connections.
        for _ in 0..64 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(socket, answer, counter.clone()));
        }
    });
    (url, written)
}

async fn serve(mut socket: TcpStream, answer: Answer, written: Arc<AtomicU64>) {
    let Some(head) = volley_testkit::raw::read_request_head(&mut socket).await else {
        return;
    };
    let (status, content_type, len) = match answer {
        Answer::EventStream { len } => ("200 OK", "text/event-stream", len),
        Answer::Json { len } => ("200 OK", "application/json", len),
        Answer::EchoHeaders => {
            let quoted = serde_json::to_string(&head).unwrap();
            let body = format!(r#"{{"error":{{"message":{quoted},"type":"auth"}}}}"#);
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            return;
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\n\
         connection: close\r\n\r\n"
    );
    if socket.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    let chunk = match answer {
        Answer::EventStream { .. } => event_chunk(),
        _ => json_chunk(),
    };
    let mut left = len;
    if let Answer::Json { .. } = answer {
        // A JSON string: an opening quote, filler, a closing quote.
        left -= 2;
        if socket.write_all(b"\"").await.is_err() {
            return;
        }
    }
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if socket.write_all(&chunk[..n]).await.is_err() {
            // The client hung up: stop producing.
            return;
        }
        written.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
    }
    if let Answer::Json { .. } = answer {
        let _ = socket.write_all(b"\"").await;
    }
}

/// Reads the request head (up to the blank line), and the body when it is short; returns the
/// head's text.
/// 64 KiB of complete `data:` events.
fn event_chunk() -> Vec<u8> {
    let event = format!("data: {{\"x\":\"{}\"}}\n\n", "a".repeat(1000));
    event.as_bytes().repeat(64 * 1024 / event.len() + 1)[..64 * 1024].to_vec()
}

fn json_chunk() -> Vec<u8> {
    vec![b'a'; 64 * 1024]
}

/// The most resident memory this process has used so far, from `/proc/self/status`.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

fn transport(url: &str) -> Transport {
    Transport::builder().base_url(url).build().unwrap()
}

#[tokio::test]
async fn a_gigabyte_of_event_stream_answering_a_plain_request_fails_at_once() {
    let (url, written) = responder(Answer::EventStream { len: GIB }).await;
    let request = Request::post("/chat/completions", CHAT).unwrap();
    // What `Client::chat()` does: send, then read the body whole.
    let result = match transport(&url).oneshot(request).await {
        Ok(response) => response.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    let err = result.expect_err("a stream nobody asked for is an error");
    assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
    assert!(
        err.to_string().contains("did not ask for one"),
        "the error says why: {err}"
    );
    let peak = peak_rss_bytes();
    println!(
        "1 GiB event stream to a plain request: {} bytes written before the client hung up, \
         peak RSS {} MiB",
        written.load(Ordering::Relaxed),
        peak >> 20
    );
    assert!(peak < MAX_RSS_BYTES, "peak RSS {} MiB", peak >> 20);
    assert!(written.load(Ordering::Relaxed) < GIB);
}

#[tokio::test]
async fn reading_a_stream_whole_stops_at_the_body_limit() {
    let (url, written) = responder(Answer::EventStream { len: GIB }).await;
    let transport = Transport::builder()
        .base_url(&url)
        .max_body_bytes(8 << 20)
        .build()
        .unwrap();
    let request = Request::post("/chat/completions", CHAT_STREAM).unwrap();
    let response = transport
        .oneshot(request)
        .await
        .expect("a stream was asked for");
    assert!(response.is_stream());
    let err = response
        .bytes()
        .await
        .expect_err("a gigabyte is over the limit");
    assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
    assert!(err.to_string().contains("8388608 bytes"), "{err}");
    let peak = peak_rss_bytes();
    println!(
        "1 GiB event stream read whole: stopped after {} bytes, peak RSS {} MiB",
        written.load(Ordering::Relaxed),
        peak >> 20
    );
    assert!(peak < MAX_RSS_BYTES, "peak RSS {} MiB", peak >> 20);
}

#[tokio::test]
async fn an_event_stream_is_accepted_when_the_request_asks_by_accept_header() {
    let (url, _) = responder(Answer::EventStream { len: 64 << 10 }).await;
    let request = Request::post("/v1/events", "{}").unwrap().with_header(
        http::header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    let response = transport(&url).oneshot(request).await.unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 64 << 10);
}

#[tokio::test]
async fn buffered_bodies_share_one_budget_that_failures_give_back() {
    let (url, _) = responder(Answer::Json { len: 3 << 20 }).await;
    let tight = Transport::builder()
        .base_url(&url)
        .max_body_bytes(16 << 20)
        .max_buffered_bytes(2 << 20)
        .build()
        .unwrap();
    for _ in 0..3 {
        // Each attempt fails on the budget and gives back what it held: the third is refused
        // for the same reason as the first, not because the first two leaked.
        let request = Request::post("/chat/completions", CHAT).unwrap();
        let err = tight.clone().oneshot(request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
        assert!(err.to_string().contains("max_buffered_bytes"), "{err}");
    }
    let roomy = Transport::builder()
        .base_url(&url)
        .max_buffered_bytes(4 << 20)
        .build()
        .unwrap();
    for _ in 0..3 {
        let request = Request::post("/chat/completions", CHAT).unwrap();
        let body = roomy.clone().oneshot(request).await.unwrap().bytes().await;
        assert_eq!(body.unwrap().len(), 3 << 20);
    }
}

#[tokio::test]
async fn credential_headers_echoed_in_an_error_body_are_scrubbed() {
    let (url, _) = responder(Answer::EchoHeaders).await;
    let transport = Transport::builder()
        .base_url(&url)
        .api_key("sk-client-key-0001")
        .default_header(
            HeaderName::from_static("api-key"),
            HeaderValue::from_static("azure-default-secret-0002"),
        )
        .build()
        .unwrap();
    let request = Request::post("/chat/completions", CHAT)
        .unwrap()
        .with_header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tenant-secret-0003"),
        )
        .with_header(
            http::header::COOKIE,
            HeaderValue::from_static("session=cookie-secret-0004"),
        );
    let err = transport.oneshot(request).await.unwrap_err();
    let shown = format!("{err} {err:?} {:?}", err.api_error());
    // The server did quote the headers (so the test can fail), and every secret is gone.
    assert!(shown.contains("authorization"), "{shown}");
    for secret in [
        "tenant-secret-0003",
        "azure-default-secret-0002",
        "cookie-secret-0004",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}
