//! Helpers shared by the transport's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use volley_core::Request;
use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

pub const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
pub const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;

pub async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config)
        .await
        .expect("the mock server starts on 127.0.0.1:0")
}

pub fn transport(server: &MockServer) -> Transport {
    Transport::builder()
        .base_url(server.url())
        .build()
        .expect("a loopback base URL builds")
}

pub fn chat() -> Request {
    Request::post("/chat/completions", CHAT_BODY).unwrap()
}

pub fn chat_stream() -> Request {
    Request::post("/chat/completions", STREAM_BODY).unwrap()
}

pub fn with_fault(request: Request, fault: &'static str) -> Request {
    request.with_header(
        http::HeaderName::from_static("x-mock-fault"),
        http::HeaderValue::from_static(fault),
    )
}

/// The answer of the recording servers: a minimal chat completion.
const RECORDED_ANSWER: &str =
    r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[]}"#;

/// A loopback server whose connections `serve` answers, each given the list it records what
/// it received into; its origin and that list.
async fn recording(
    serve: impl Fn(tokio::net::TcpStream, Arc<Mutex<Vec<String>>>) + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        // Bounded: the tests open a handful of connections.
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            serve(stream, seen.clone());
        }
    });
    (origin, heads)
}

/// A loopback server that records each request's head (request line and headers, lower-cased)
/// and answers a minimal chat completion.
pub async fn recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    recording(|mut stream, seen| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(head) = volley_testkit::raw::read_request(&mut stream, &mut buf).await
            {
                // Lower-cased whole: the tests' paths and values are lower case.
                seen.lock().unwrap().push(head);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{RECORDED_ANSWER}",
                    RECORDED_ANSWER.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    })
    .await
}

/// A loopback HTTP/2 server (prior knowledge, no TLS) that records each request's headers as
/// it received them, one `name: value` line each in order, and answers a minimal chat
/// completion.
pub async fn h2_recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    recording(|stream, seen| {
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let head = request
                .headers()
                .iter()
                .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("?")))
                .collect::<String>();
            seen.lock().unwrap().push(head);
            let response = http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    RECORDED_ANSWER.as_bytes(),
                )))
                .unwrap();
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service),
        );
    })
    .await
}

/// The value of header `name` (lower case) in a recorded head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}
