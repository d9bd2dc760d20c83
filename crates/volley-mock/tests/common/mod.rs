//! Helpers shared by the integration tests: a hyper client, and hand-written HTTP/1.1 over a
//! raw socket where the test needs to see exactly what the server does to the connection.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use volley_mock::{MockConfig, MockServer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client with a pool.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client: one connection carries every request.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub async fn server(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("the mock starts")
}

/// A whole response; `Err` when the request or the body failed.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "invalid JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(serde_json::to_vec(v)?))
        }
        None => Full::new(Bytes::new()),
    };
    let response = client.request(builder.body(body)?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn post(
    client: &HttpClient,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Reply, BoxError> {
    send(client, Method::POST, url, Some(body), headers).await
}

pub async fn get(client: &HttpClient, url: &str) -> Result<Reply, BoxError> {
    send(client, Method::GET, url, None, &[]).await
}

pub fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the mock."}
        ],
        "stream": stream,
    })
}

/// Prompt tokens the mock counts for [`chat_body`]: 14 + 22 bytes of content, / 4.
pub const CHAT_BODY_PROMPT_TOKENS: u64 = 9;

pub fn chat_url(server: &MockServer) -> String {
    format!("{}/chat/completions", server.url())
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
        })
        .collect()
}

/// What a raw HTTP/1.1 exchange produced.
#[derive(Debug)]
pub struct RawOutcome {
    /// Everything the server sent before the connection ended.
    pub received: Vec<u8>,
    /// How the connection ended: `Ok` for a clean EOF.
    pub end: std::io::Result<()>,
}

/// Sends one hand-written HTTP/1.1 request and reads until the server closes (or `limit`).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut received = Vec::new();
    let end = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no end")));
    RawOutcome { received, end }
}

/// A hand-written chat request with `Connection: close`.
pub fn raw_chat_request(extra_headers: &str, stream: bool) -> Vec<u8> {
    let body = serde_json::to_vec(&chat_body(stream)).unwrap();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// Awaits spawned tasks, in order, panicking if one panicked.
pub async fn join_all<T: Send + 'static>(
    handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    // Collect first: the tasks must all be spawned before the first is awaited.
    let handles: Vec<_> = handles.into_iter().collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task panicked"));
    }
    out
}
