//! One client serving many tenants, and servers that try to hold a slot, over real loopback
//! sockets.
//!
//! The server here is a raw tokio responder written for the test: it answers each request
//! with the `Authorization` header it received, so an answer served to the wrong tenant shows
//! in its body, not only in a counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::header::AUTHORIZATION;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use volley::{Client, ErrorKind, Request};
use volley_middleware::cache::CACHE_STATUS_HEADER;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"same prompt"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

#[derive(Clone, Copy)]
enum Answer {
    /// `200` JSON naming the `Authorization` header received.
    EchoTenant,
    /// `200` event stream dripping one event every `every` (at most `events` of them).
    Drip { every: Duration, events: u32 },
}

/// A raw HTTP/1.1 responder on 127.0.0.1, one request per connection; counts requests.
async fn responder(answer: Answer) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(socket, answer));
        }
    });
    (url, requests)
}

async fn serve(mut socket: TcpStream, answer: Answer) {
    let Some(head) = volley_testkit::raw::read_request_head(&mut socket).await else {
        return;
    };
    match answer {
        Answer::EchoTenant => {
            let tenant = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("none");
            let body = format!(
                r#"{{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"for {tenant}"}},"finish_reason":"stop"}}]}}"#
            );
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Answer::Drip { every, events } => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..events {
                let event = "data: {}\n\n";
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }
    }
}

fn as_tenant(tenant: &'static str) -> Request {
    Request::post("/chat/completions", CHAT)
        .unwrap()
        .with_header(AUTHORIZATION, HeaderValue::from_static(tenant))
}

async fn answer_text(client: &Client, request: Request) -> (String, bool) {
    let response = client.send(request).await.unwrap();
    let hit = response.headers().contains_key(CACHE_STATUS_HEADER);
    let body = response.bytes().await.unwrap();
    (String::from_utf8(body.to_vec()).unwrap(), hit)
}

#[tokio::test]
async fn two_tenants_on_one_cached_client_never_see_each_others_answers() {
    let (url, requests) = responder(Answer::EchoTenant).await;
    let client = Client::builder()
        .base_url(&url)
        .api_key("sk-gateway-default")
        .cache_memory(1 << 20, Duration::from_secs(600))
        .build()
        .unwrap();

    let (a, hit) = answer_text(&client, as_tenant("Bearer tenant-a")).await;
    assert!(a.contains("for Bearer tenant-a") && !hit, "{a}");
    // Tenant A again: from the cache.
    let (again, hit) = answer_text(&client, as_tenant("Bearer tenant-a")).await;
    assert!(hit && again == a);
    // Tenant B, same prompt, same client: its own answer from the server.
    let (b, hit) = answer_text(&client, as_tenant("Bearer tenant-b")).await;
    assert!(!hit, "tenant B was served from the cache: {b}");
    assert!(b.contains("for Bearer tenant-b"), "{b}");
    // The client's own key is a third namespace.
    let plain = Request::post("/chat/completions", CHAT).unwrap();
    let (own, hit) = answer_text(&client, plain).await;
    assert!(
        !hit && own.contains("for Bearer sk-gateway-default"),
        "{own}"
    );
    assert_eq!(requests.load(Ordering::Relaxed), 3);
    let stats = client.cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 3));
}

#[tokio::test]
async fn a_stream_that_drips_forever_is_cut_by_the_stream_deadline() {
    // One event every 20 ms keeps the idle deadline (120 s) from ever firing; at most 1 500
    // events bound the server to 30 s should the client not give up.
    let (url, _) = responder(Answer::Drip {
        every: Duration::from_millis(20),
        events: 1_500,
    })
    .await;
    let client = Client::builder()
        .base_url(&url)
        .stream_timeout(Duration::from_millis(300))
        .retries(0)
        .build()
        .unwrap();
    let request = Request::post("/chat/completions", CHAT_STREAM).unwrap();
    let response = client.send(request).await.unwrap();
    let err = response.bytes().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn streams_have_a_total_deadline_by_default() {
    let builder = format!("{:?}", Client::builder());
    assert!(
        builder.contains(&format!(
            "stream_total: Some({:?})",
            volley::DEFAULT_STREAM_TIMEOUT
        )),
        "{builder}"
    );
}
