//! The facade's default stack (retry, limits, timeouts, cache) against volley-mock over real
//! loopback sockets.

use std::time::Duration;

use volley::middleware::retry::Policy;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{Client, ErrorKind, Request};
use volley_mock::{MockConfig, MockServer};

fn request(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

fn fast_retries(max: u32) -> Policy {
    Policy::builder()
        .max_retries(max)
        .backoff_base(Duration::from_millis(1))
        .backoff_cap(Duration::from_millis(20))
        .budget_enabled(false)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_until_every_request_succeeds() {
    let server = MockServer::start(MockConfig {
        faults: "429=0.3,500=0.1".parse().unwrap(),
        retry_after: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(64)
        .retry_policy(fast_retries(20))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(&request(&format!("n{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every request ends in success");
    }
    let stats = server.stats();
    let attempts = client.connection_stats().requests;
    assert_eq!(stats.requests_total, attempts, "the mock saw every attempt");
    assert!(attempts > 2_000, "faults forced retries: {attempts}");
    assert_eq!(stats.status_count(200), 2_000);
}

#[tokio::test]
async fn a_401_is_tried_once_and_a_400_is_not_retried() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some("sk-right".to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .api_key("sk-wrong")
        .retry_policy(fast_retries(5))
        .build()
        .unwrap();
    let err = client.chat(&request("x")).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 401);
    assert_eq!(server.stats().requests_total, 1);

    let good = Client::builder()
        .base_url(server.url())
        .api_key("sk-right")
        .retry_policy(fast_retries(5))
        .build()
        .unwrap();
    let bad_json = Request::post("/chat/completions", "{not json").unwrap();
    let err = good.send(bad_json).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 400);
    assert_eq!(server.stats().requests_total, 2);
}

#[tokio::test]
async fn a_stalled_server_times_out_with_its_own_kind() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .retries(0)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let stalled = Request::post("/chat/completions", r#"{"model":"m","messages":[]}"#)
        .unwrap()
        .with_header(
            http::HeaderName::from_static("x-mock-fault"),
            http::HeaderValue::from_static("stall"),
        );
    let err = client.send(stalled).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn the_memory_cache_answers_repeats_without_a_request() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let build = |key: &str| {
        Client::builder()
            .base_url(server.url())
            .api_key(key)
            .cache_memory(16 << 20, Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let client = build("sk-one");
    let first = client.chat(&request("same")).await.unwrap();
    let second = client.chat(&request("same")).await.unwrap();
    assert_eq!(first.id, second.id, "the same reply, byte for byte");
    assert_eq!(server.stats().requests_total, 1);
    let stats = client.cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 1));

    // Another key never sees the first key's entries, even with the same request.
    let other = build("sk-two");
    other.chat(&request("same")).await.unwrap();
    assert_eq!(server.stats().requests_total, 2);
}

#[test]
fn the_disk_cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A restart talks to the same endpoint: the cache is keyed by base URL and key, so the
    // mock listens on the same port both times.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let run = |expect_requests: u64| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = MockServer::bind(addr, MockConfig::default()).await.unwrap();
            let client = Client::builder()
                .base_url(server.url())
                .api_key("sk-disk")
                .cache_disk(dir.path(), Duration::from_secs(3600))
                .build()
                .unwrap();
            let reply = client.chat(&request("persist me")).await.unwrap();
            assert_eq!(server.stats().requests_total, expect_requests);
            server.shutdown().await;
            reply.text().unwrap().to_owned()
        })
    };
    let first = run(1);
    let second = run(0);
    assert_eq!(first, second);

    // The same directory used against another endpoint (another port) does not answer from
    // the first endpoint's entries.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let other = MockServer::start(MockConfig::default()).await.unwrap();
        let client = Client::builder()
            .base_url(other.url())
            .api_key("sk-disk")
            .cache_disk(dir.path(), Duration::from_secs(3600))
            .build()
            .unwrap();
        client.chat(&request("persist me")).await.unwrap();
        assert_eq!(other.stats().requests_total, 1);
    });
}

/// A balanced client may answer from any of its endpoints: its cache namespace is theirs
/// together, not its first endpoint's, so a client of that first endpoint alone (keyless
/// here) is never answered with what the other endpoint's key paid for.
#[tokio::test]
async fn a_balanced_clients_cache_is_not_its_first_endpoints() {
    use volley::Endpoint;
    use volley::middleware::cache::MemoryStore;
    let a = MockServer::start(MockConfig::default()).await.unwrap();
    let b = MockServer::start(MockConfig::default()).await.unwrap();
    let store = MemoryStore::new(1 << 20, Duration::from_secs(60));
    let balanced = Client::builder()
        .endpoint(Endpoint::new(a.url()))
        .endpoint(Endpoint::new(b.url()).api_key("sk-b-paid"))
        .cache_store(store.clone())
        .build()
        .unwrap();
    balanced.chat(&request("whose answer?")).await.unwrap();
    let sent = || a.stats().requests_total + b.stats().requests_total;
    assert_eq!(sent(), 1);
    let only_a = Client::builder()
        .base_url(a.url())
        .cache_store(store.clone())
        .build()
        .unwrap();
    only_a.chat(&request("whose answer?")).await.unwrap();
    assert_eq!(
        sent(),
        2,
        "the balanced client's entry answered a client of one endpoint"
    );
    // The balanced client itself still hits its own entry.
    balanced.chat(&request("whose answer?")).await.unwrap();
    assert_eq!(sent(), 2);
}

/// Clients that differ only in a setting that shapes the answer (here Anthropic's API version)
/// do not share cache entries; clients that agree on it do.
#[tokio::test]
async fn an_api_version_is_part_of_the_cache_namespace() {
    use volley::anthropic::{InputMessage, MessagesRequest};
    use volley::middleware::cache::MemoryStore;
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let store = MemoryStore::new(1 << 20, Duration::from_secs(60));
    let client = |version: &str| {
        Client::builder()
            .provider(volley::Provider::Anthropic)
            .base_url(server.url())
            .api_key("sk-ant-same")
            .anthropic_version(version)
            .cache_store(store.clone())
            .build()
            .unwrap()
    };
    let ask = MessagesRequest::new("claude", 16, vec![InputMessage::user("versioned")]);
    client("2023-06-01").messages(&ask).await.unwrap();
    client("2023-06-01").messages(&ask).await.unwrap();
    assert_eq!(server.stats().requests_total, 1, "the same version shares");
    client("2026-10-21").messages(&ask).await.unwrap();
    assert_eq!(server.stats().requests_total, 2, "another version does not");
    // The credential, by which a shared rate limit is kept, is the key's whatever the version.
    assert_eq!(
        client("2023-06-01").credential_id(),
        client("2026-10-21").credential_id()
    );
}
