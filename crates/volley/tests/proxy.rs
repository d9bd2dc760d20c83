//! The facade through a real forward proxy (tinyproxy) to a TLS server whose CA the test
//! made: many requests at once, all answered, every connection one tunnel; and Azure
//! OpenAI's conventions set through the builder.

use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{Client, Provider};
use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::require_tinyproxy;
use volley_testkit::tls::TestPki;

fn chat(i: usize) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("line {i}"))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_at_256_through_an_authenticating_proxy_all_succeed() {
    let proxy = require_tinyproxy!(Some(("volley", "s3cret-proxy-pw")));
    let pki = TestPki::new("facade-load");
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .unwrap();
    let server = MockServer::start_tls(
        MockConfig {
            // Long enough that a loaded machine has many requests in flight at once.
            latency: "250ms".parse().unwrap(),
            ..MockConfig::default()
        },
        tls,
    )
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .tls_ca_file(pki.ca_file())
        .proxy(proxy.url())
        .concurrency(256)
        .build()
        .unwrap();
    let requests: Vec<_> = (0..2000).map(chat).collect();
    let replies = client.fan_out_chat_collect(&requests, 256).await;
    let failed: Vec<_> = replies.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let stats = server.stats();
    assert_eq!(stats.requests_total, 2000);
    // Many were in flight at once through the one proxy (not one at a time).
    assert!(stats.peak_in_flight >= 64, "peak {}", stats.peak_in_flight);
    let port = server.addr().port();
    let tunnels = proxy
        .requests()
        .iter()
        .filter(|l| **l == format!("CONNECT 127.0.0.1:{port} HTTP/1.1"))
        .count();
    assert_eq!(tunnels as u64, client.connection_stats().opened);
    assert!(tunnels <= 256, "{tunnels} tunnels for 256 slots");
}

/// A proxy that refuses the credentials refuses them every time: with the retries that only
/// resend what cannot have been billed (the tunnel was refused, so nothing reached the
/// server), the tunnel is still asked for once, not once per retry.
#[tokio::test]
async fn a_proxy_that_refuses_the_credentials_is_asked_once() {
    let proxy = require_tinyproxy!(Some(("volley", "s3cret-proxy-pw")));
    let wrong = proxy.url().replace("s3cret-proxy-pw", "not-the-password");
    let pki = TestPki::new("refused-tunnel");
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .unwrap();
    let server = MockServer::start_tls(MockConfig::default(), tls)
        .await
        .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .tls_ca_file(pki.ca_file())
        .proxy(wrong)
        .retry_policy(volley::middleware::retry::Policy::safe_only())
        .build()
        .unwrap();
    let err = client.chat(&chat(0)).await.unwrap_err();
    assert!(
        matches!(err.status().map(|s| s.as_u16()), Some(401 | 407)),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    let tunnels = proxy
        .requests()
        .iter()
        .filter(|l| l.starts_with("CONNECT "))
        .count();
    assert_eq!(tunnels, 1, "{:?}", proxy.requests());
    assert_eq!(server.stats().requests_total, 0);
}

#[tokio::test]
async fn azure_through_the_builder() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some("azure-facade-key".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .provider(Provider::Azure)
        .azure_endpoint(format!("http://{}", server.addr()))
        .azure_deployment("gpt-4o-mini")
        .api_key("azure-facade-key")
        .api_version("2024-10-21")
        .build()
        .unwrap();
    assert!(
        client
            .base_url()
            .ends_with("/openai/deployments/gpt-4o-mini")
    );
    client.chat(&chat(0)).await.unwrap();
    assert!(!format!("{client:?}").contains("azure-facade-key"));
}
