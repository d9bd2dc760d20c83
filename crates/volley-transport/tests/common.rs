//! Helpers shared by the transport's integration tests.
#![allow(dead_code, unreachable_pub)]

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
