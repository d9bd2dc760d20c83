//! Clients sharing a cache and a rate limiter through a real Redis (`REDIS_URL`), against
//! volley-mock over loopback.
//!
//! The tests that need Redis are ignored unless asked for (`-- --include-ignored`, as in CI);
//! asked for without `REDIS_URL`, they fail (volley-testkit's `redis` module).
#![cfg(feature = "redis")]

use std::time::Duration;

use volley::middleware::rate_limit::Limits;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::redis::{FailureMode, RedisLimiter, RedisOptions, RedisStore, SharedLimits};
use volley::{Client, ClientBuilder};
use volley_mock::{MockConfig, MockServer, RateLimits};
use volley_testkit::redis::unique_prefix;
use volley_testkit::require_redis;

const KEY: &str = "sk-volley-facade-redis-test-0123456789";
const HOUR: Duration = Duration::from_secs(3600);

fn request(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

fn builder(server: &MockServer, key: &str) -> ClientBuilder {
    Client::builder().base_url(server.url()).api_key(key)
}

/// A client on a connection of its own to Redis, as a separate process would have.
async fn cached_client(server: &MockServer, key: &str, url: &str, prefix: &str) -> Client {
    let store = RedisStore::connect(RedisOptions::new(url), HOUR)
        .await
        .unwrap()
        .prefix(prefix);
    builder(server, key).cache_store(store).build().unwrap()
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn two_clients_share_cache_entries_through_redis() {
    let url = require_redis!();
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let prefix = unique_prefix("facade-cache");
    let a = cached_client(&server, KEY, &url, &prefix).await;
    let b = cached_client(&server, KEY, &url, &prefix).await;

    let first = a.chat(&request("hello")).await.unwrap();
    let second = b.chat(&request("hello")).await.unwrap();
    assert_eq!(
        server.stats().requests_total,
        1,
        "b was answered from Redis"
    );
    assert_eq!(first.id, second.id);
    assert_eq!(a.cache_stats().unwrap().stores, 1);
    assert_eq!(b.cache_stats().unwrap().hits, 1);

    // Another request is another entry.
    b.chat(&request("something else")).await.unwrap();
    assert_eq!(server.stats().requests_total, 2);
    server.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn two_credentials_never_share_cache_entries() {
    let url = require_redis!();
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let prefix = unique_prefix("facade-credentials");
    let a = cached_client(&server, KEY, &url, &prefix).await;
    let b = cached_client(&server, "sk-another-volley-key-9876", &url, &prefix).await;
    let anonymous = Client::builder()
        .base_url(server.url())
        .cache_store(
            RedisStore::connect(RedisOptions::new(&url), HOUR)
                .await
                .unwrap()
                .prefix(&prefix),
        )
        .build()
        .unwrap();
    for client in [&a, &b, &anonymous] {
        client.chat(&request("hello")).await.unwrap();
        assert_eq!(client.cache_stats().unwrap().misses, 1);
    }
    assert_eq!(server.stats().requests_total, 3);
    // Each hits its own entry now.
    for client in [&a, &b, &anonymous] {
        client.chat(&request("hello")).await.unwrap();
        assert_eq!(client.cache_stats().unwrap().hits, 1);
    }
    assert_eq!(server.stats().requests_total, 3);
    assert_ne!(a.credential_id(), b.credential_id());
    server.shutdown().await;
}

#[tokio::test]
async fn the_builder_names_the_credential_the_client_will_use() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let builder = builder(&server, KEY);
    let id = builder.credential_id().unwrap();
    let client = builder.clone().build().unwrap();
    assert_eq!(client.credential_id(), id);
    // Another key, or another endpoint, is another credential.
    assert_ne!(
        Client::builder()
            .base_url(server.url())
            .api_key("sk-other")
            .credential_id()
            .unwrap(),
        id
    );
    assert_ne!(
        Client::builder()
            .base_url("http://127.0.0.1:1/v1")
            .api_key(KEY)
            .credential_id()
            .unwrap(),
        id
    );
    server.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_a_shared_limiter_stay_under_the_providers_rpm() {
    let url = require_redis!();
    // 600 requests a minute, a second's worth of burst, shared by the clients; the provider
    // (the mock) allows 5 % more, so that "no 429" is about the sharing, not about clocks
    // agreeing to the millisecond (two unshared clients would send twice the limit).
    const RPM: u32 = 600;
    const REQUESTS: usize = 80;
    let server = MockServer::start(MockConfig {
        rate_limits: RateLimits {
            rpm: Some(RPM + RPM / 20),
            // Two seconds' worth: requests spaced correctly but bunched up on the way by a
            // pause on a loaded machine are not refused; two unshared clients still would be
            // within seconds.
            burst_requests: Some((RPM + RPM / 20) / 30),
            ..RateLimits::NONE
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let prefix = unique_prefix("facade-limit");
    // Two clients, as two processes: each its own Redis connection and limiter.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let builder = builder(&server, KEY).concurrency(32).retries(0);
        let limiter = RedisLimiter::connect(
            SharedLimits::new(RedisOptions::new(&url), Limits::per_minute().requests(RPM))
                .prefix(prefix.clone())
                .credential(&builder.credential_id().unwrap())
                .on_failure(FailureMode::FailClosed),
        )
        .await
        .unwrap();
        clients.push(builder.shared_rate_limiter(limiter).build().unwrap());
    }
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let client = clients[i % 2].clone();
            tokio::spawn(async move { client.chat(&request(&format!("n{i}"))).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    for task in tasks {
        tokio::time::timeout_at(deadline, task)
            .await
            .expect("the requests finish within 40 s")
            .unwrap()
            .expect("no request is refused (retries are off, so a 429 would fail it)");
    }
    let stats = server.stats();
    assert_eq!(
        stats.status_count(429),
        0,
        "{:?}",
        stats.responses_by_status
    );
    assert_eq!(stats.status_count(200), REQUESTS as u64);
    server.shutdown().await;
}
