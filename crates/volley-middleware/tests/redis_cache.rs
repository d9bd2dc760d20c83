//! `RedisStore` against a real Redis (`REDIS_URL`), alone and under the cache layer over
//! volley-mock.
//!
//! The tests that need Redis are ignored unless asked for (`-- --include-ignored`, as in CI);
//! asked for without `REDIS_URL`, they fail (volley-testkit's `redis` module).
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use tower::{Layer, Service, ServiceExt};
use volley_core::cache_key::{CacheKey, CredentialId};
use volley_core::{ApiKey, Error, ErrorKind, Request, Response};
use volley_middleware::cache::{
    CacheLayer, CacheStats, CacheStore, CachedResponse, RedisStore, RejectedEntry,
};
use volley_middleware::redis::{RedisConnection, RedisOptions};
use volley_mock::{MockConfig, MockServer};
use volley_testkit::redis::unique_prefix;
use volley_testkit::require_redis;
use volley_transport::Transport;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const KEY: &str = "sk-volley-redis-cache-test-0123456789";
const HOUR: Duration = Duration::from_secs(3600);
/// The authentication envelope before every stored value: a format byte and a 32-byte MAC.
const ENVELOPE: usize = 33;

async fn store(url: &str, prefix: &str, ttl: Duration) -> RedisStore {
    RedisStore::connect(RedisOptions::new(url), ttl)
        .await
        .unwrap()
        .prefix(prefix)
}

async fn raw_connection(url: &str) -> RedisConnection {
    RedisConnection::connect(&RedisOptions::new(url))
        .await
        .unwrap()
}

fn credential() -> CredentialId {
    CredentialId::from_api_key(&ApiKey::new(KEY))
}

fn key(text: &str) -> CacheKey {
    let request = Request::post("/chat/completions", text.to_owned()).unwrap();
    CacheKey::for_request(&request, &credential())
}

fn entry(body: impl Into<bytes::Bytes>) -> CachedResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    CachedResponse::new(StatusCode::OK, &headers, body.into(), false)
}

fn assert_same(got: Option<CachedResponse>, want: &CachedResponse) {
    let got = got.expect("a hit");
    assert_eq!(got.status(), want.status());
    assert_eq!(got.headers(), want.headers());
    assert_eq!(got.body(), want.body());
    assert_eq!(got.is_stream(), want.is_stream());
}

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn transport(server: &MockServer, key: &str) -> Transport {
    Transport::builder()
        .base_url(server.url())
        .api_key(key)
        .build()
        .unwrap()
}

async fn send<S>(service: &mut S, request: Request) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service.ready().await?.call(request).await
}

fn chat() -> Request {
    Request::post("/chat/completions", CHAT).unwrap()
}

fn stats(hits: u64, misses: u64, stores: u64) -> CacheStats {
    CacheStats {
        hits,
        misses,
        stores,
        ..CacheStats::default()
    }
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn entries_round_trip() {
    let url = require_redis!();
    let store = store(&url, &unique_prefix("round-trip"), HOUR).await;
    let value = entry(r#"{"id":"chatcmpl-1","choices":[]}"#);
    assert!(store.get(key("a")).await.unwrap().is_none());
    store.put(key("a"), value.clone()).await.unwrap();
    assert_same(store.get(key("a")).await.unwrap(), &value);
    assert!(store.get(key("b")).await.unwrap().is_none());

    // A replaced entry reads as the new one.
    let newer = entry(r#"{"id":"chatcmpl-2"}"#);
    store.put(key("a"), newer.clone()).await.unwrap();
    assert_same(store.get(key("a")).await.unwrap(), &newer);

    // The key is the prefix and the cache key in hex: nothing of the request or the API key.
    let redis_key = store.redis_key(&key("a"));
    assert!(
        redis_key.ends_with(&format!(":cache:{}", key("a"))),
        "{redis_key}"
    );
    assert!(!redis_key.contains(KEY));
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let url = require_redis!();
    let prefix = unique_prefix("ttl");
    let store = store(&url, &prefix, Duration::from_millis(300)).await;
    store.put(key("a"), entry("{}")).await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(store.redis_key(&key("a")))
        .query_async(&mut raw_connection(&url).await)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 300, "PTTL {pttl}");
    assert!(store.get(key("a")).await.unwrap().is_some());
    // Redis expires the entry on its own clock, which no paused test clock can drive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.get(key("a")).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the entry did not expire");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A zero TTL keeps nothing (Redis refuses PX 0; the store does not ask).
    let none = self::store(&url, &prefix, Duration::ZERO).await;
    none.put(key("b"), entry("{}")).await.unwrap();
    assert!(none.get(key("b")).await.unwrap().is_none());
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn large_entries_are_stored_compressed() {
    let url = require_redis!();
    let store = store(&url, &unique_prefix("compress"), HOUR)
        .await
        .compress_above(1024);
    let raw = raw_connection(&url).await;
    let strlen = |store: &RedisStore, key: CacheKey| {
        let command = redis::cmd("STRLEN").arg(store.redis_key(&key)).clone();
        let mut raw = raw.clone();
        async move { command.query_async::<usize>(&mut raw).await.unwrap() }
    };

    // Small: stored as encoded, behind the envelope (a format byte and a 32-byte MAC) and the
    // one format byte.
    let small = entry(r#"{"id":"x"}"#);
    store.put(key("small"), small.clone()).await.unwrap();
    assert_eq!(
        strlen(&store, key("small")).await,
        ENVELOPE + 1 + small.encode().len()
    );
    assert_same(store.get(key("small")).await.unwrap(), &small);

    // Large and repetitive, as JSON is: a fraction of its size.
    let body = r#"{"role":"assistant","content":"the same words again and again"}"#.repeat(2000);
    let large = entry(body.clone());
    store.put(key("large"), large.clone()).await.unwrap();
    let stored = strlen(&store, key("large")).await;
    assert!(
        stored * 4 < body.len(),
        "{stored} bytes stored for a {} byte body",
        body.len()
    );
    assert_same(store.get(key("large")).await.unwrap(), &large);

    // Compression off: the whole encoding.
    let plain = store.clone().compress_above(usize::MAX);
    plain.put(key("plain"), large.clone()).await.unwrap();
    assert_eq!(
        strlen(&plain, key("plain")).await,
        ENVELOPE + 1 + large.encode().len()
    );
    assert_same(plain.get(key("plain")).await.unwrap(), &large);
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn unknown_formats_read_as_misses_and_damage_as_errors() {
    let url = require_redis!();
    let store = store(&url, &unique_prefix("format"), HOUR).await;
    let mut raw = raw_connection(&url).await;
    let mut future_format = vec![42_u8];
    future_format.extend_from_slice(&entry("{}").encode());
    let _: () = redis::cmd("SET")
        .arg(store.redis_key(&key("future")))
        .arg(future_format)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(store.get(key("future")).await.unwrap().is_none());

    let _: () = redis::cmd("SET")
        .arg(store.redis_key(&key("damaged")))
        .arg(&[0_u8, 1, 2, 3][..])
        .query_async(&mut raw)
        .await
        .unwrap();
    // The cache layer logs the error and treats it as a miss.
    assert!(store.get(key("damaged")).await.is_err());
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn two_stores_on_separate_connections_share_entries() {
    let url = require_redis!();
    let prefix = unique_prefix("shared");
    let a = store(&url, &prefix, HOUR).await;
    let b = store(&url, &prefix, HOUR).await;
    let value = entry(r#"{"id":"chatcmpl-shared"}"#.repeat(100));
    a.put(key("q"), value.clone()).await.unwrap();
    assert_same(b.get(key("q")).await.unwrap(), &value);

    // Another prefix is another cache.
    let other = store(&url, &unique_prefix("other"), HOUR).await;
    assert!(other.get(key("q")).await.unwrap().is_none());
}

/// On a Redis Cluster: stores connected through different seed nodes share entries, each
/// key on the node its slot names.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_share_entries_on_a_redis_cluster() {
    let _url = require_redis!();
    let cluster = volley_testkit::redis::RedisCluster::start(3);
    let seeds = cluster.urls();
    let prefix = unique_prefix("cluster");
    let connect = async |seed: &str| {
        RedisStore::connect(RedisOptions::new(seed).cluster(true), HOUR)
            .await
            .unwrap()
            .prefix(&prefix)
    };
    let a = connect(&seeds[0]).await;
    let b = connect(&seeds[2]).await;
    for n in 0..20 {
        let value = entry(format!(r#"{{"id":"chatcmpl-{n}"}}"#).repeat(50));
        a.put(key(&n.to_string()), value.clone()).await.unwrap();
        assert_same(b.get(key(&n.to_string())).await.unwrap(), &value);
    }
    assert!(b.get(key("absent")).await.unwrap().is_none());
}

/// A cluster reached in plain text through a loopback seed whose nodes it names elsewhere
/// is refused before the client connects to them, as a plain remote URL is; allowed, it is
/// not refused for that.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_cluster_naming_a_remote_node_is_refused() {
    let _url = require_redis!();
    let cluster = volley_testkit::redis::RedisCluster::start_with(
        3,
        &[
            "--cluster-announce-hostname",
            "redis.example",
            "--cluster-preferred-endpoint-type",
            "hostname",
        ],
    );
    let seed = cluster.urls()[0].clone();
    let err = RedisConnection::connect(&RedisOptions::new(seed.clone()).cluster(true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("redis.example"), "{err}");
    // Allowed, the check is skipped (connecting to redis.example then fails, or not: this
    // machine has no resolver to ask).
    let allowed = RedisOptions::new(seed)
        .cluster(true)
        .allow_plain_redis(true);
    if let Err(e) = RedisConnection::connect(&allowed).await {
        assert_ne!(e.kind(), ErrorKind::Config, "{e}");
    }
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn a_second_identical_request_is_a_hit_that_never_reaches_the_server() {
    let url = require_redis!();
    let server = mock().await;
    let prefix = unique_prefix("layer");
    let layer = CacheLayer::new(store(&url, &prefix, HOUR).await, credential());
    let mut service = layer.layer(transport(&server, KEY));

    let first = send(&mut service, chat()).await.unwrap();
    assert!(first.headers().get("x-volley-cache").is_none());
    let first = first.bytes().await.unwrap();
    let second = send(&mut service, chat()).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-volley-cache"], "hit");
    assert_eq!(second.bytes().await.unwrap(), first);
    assert_eq!(server.stats().requests_total, 1);
    assert_eq!(layer.stats(), stats(1, 1, 1));

    // A second process would be a second layer over its own connection: it hits too.
    let elsewhere = CacheLayer::new(store(&url, &prefix, HOUR).await, credential());
    let mut other = elsewhere.layer(transport(&server, KEY));
    let third = send(&mut other, chat()).await.unwrap();
    assert_eq!(third.headers()["x-volley-cache"], "hit");
    assert_eq!(server.stats().requests_total, 1);
    server.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn two_credentials_never_share_entries() {
    let url = require_redis!();
    let server = mock().await;
    let store = store(&url, &unique_prefix("credentials"), HOUR).await;
    let other_key = "sk-another-volley-key-9876543210";
    let a = CacheLayer::new(store.clone(), credential());
    let b = CacheLayer::new(
        store.clone(),
        CredentialId::from_api_key(&ApiKey::new(other_key)),
    );
    let mut service_a = a.layer(transport(&server, KEY));
    let mut service_b = b.layer(transport(&server, other_key));
    send(&mut service_a, chat()).await.unwrap();
    send(&mut service_b, chat()).await.unwrap();
    assert_eq!(server.stats().requests_total, 2);
    assert_eq!(a.stats(), stats(0, 1, 1));
    assert_eq!(b.stats(), stats(0, 1, 1));
    // Each now hits its own entry.
    send(&mut service_a, chat()).await.unwrap();
    send(&mut service_b, chat()).await.unwrap();
    assert_eq!(server.stats().requests_total, 2);
    assert_eq!(a.stats(), stats(1, 1, 1));
    assert_eq!(b.stats(), stats(1, 1, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_at_connect_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let options = RedisOptions::new("redis://:hunter2@127.0.0.1:1/0")
        .connect_timeout(Duration::from_millis(500));
    let error = RedisStore::connect(options, HOUR).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
}

/// What someone with write access to the Redis can do: write an answer of their choosing under
/// the key a victim's request will read, bare or copied from an entry sealed for their own
/// credential. Each is refused, counted, and the request goes to the provider.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn forged_and_foreign_entries_are_rejected_and_counted() {
    let url = require_redis!();
    let server = mock().await;
    let prefix = unique_prefix("poison");
    let victim = CacheLayer::new(store(&url, &prefix, HOUR).await, credential());
    let mut service = victim.layer(transport(&server, KEY));
    let victim_key = CacheKey::for_request(&chat(), &credential());
    let redis_key = store(&url, &prefix, HOUR).await.redis_key(&victim_key);
    let mut raw = raw_connection(&url).await;
    let poison = entry(r#"{"choices":[{"message":{"content":"POISONED"}}]}"#);

    // 1. A bare value in the old, unauthenticated layout.
    let mut bare = vec![0_u8];
    bare.extend_from_slice(&poison.encode());
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(bare)
        .query_async(&mut raw)
        .await
        .unwrap();
    let answer = send(&mut service, chat())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&answer).contains("POISONED"));
    assert_eq!(server.stats().requests_total, 1);
    assert_eq!(victim.stats().rejected, 1);

    // 2. An entry the attacker sealed with their own credential, copied to the victim's key.
    let attacker = CredentialId::from_api_key(&ApiKey::new("sk-attacker-0000000000"));
    let attacker_store = store(&url, &prefix, HOUR).await;
    let attacker_key = CacheKey::for_request(&chat(), &attacker);
    attacker_store
        .put_for(attacker_key, &attacker, poison.clone())
        .await
        .unwrap();
    let sealed: Vec<u8> = redis::cmd("GET")
        .arg(attacker_store.redis_key(&attacker_key))
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(sealed)
        .query_async(&mut raw)
        .await
        .unwrap();
    let answer = send(&mut service, chat())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&answer).contains("POISONED"));
    assert_eq!(server.stats().requests_total, 2);
    let stats = victim.stats();
    assert_eq!((stats.rejected, stats.hits, stats.misses), (2, 0, 2));

    // 3. The victim's own (re-stored) entry still serves it.
    let hit = send(&mut service, chat()).await.unwrap();
    assert_eq!(hit.headers()["x-volley-cache"], "hit");
    assert_eq!(server.stats().requests_total, 2);
    server.shutdown().await;
}

/// `n` bytes lz4 cannot shrink (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Someone who can write to the Redis can make a value huge: a store reads at most its
/// `max_value_bytes` (and one byte more) and refuses a longer value, even one that
/// authenticates (here sealed by a store allowed more); it does not write one either.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn values_longer_than_the_cap_are_refused_and_not_stored() {
    let url = require_redis!();
    let prefix = unique_prefix("cap");
    let mut raw = raw_connection(&url).await;
    let big = entry(noise(64 * 1024));
    let roomy = store(&url, &prefix, HOUR).await;
    roomy
        .put_for(key("big"), &credential(), big.clone())
        .await
        .unwrap();
    assert_same(
        roomy.get_for(key("big"), &credential()).await.unwrap(),
        &big,
    );

    let tight = store(&url, &prefix, HOUR).await.max_value_bytes(16 * 1024);
    let error = tight
        .get_for(key("big"), &credential())
        .await
        .expect_err("a value above the cap is refused");
    assert!(error.downcast_ref::<RejectedEntry>().is_some(), "{error}");

    // A value that compresses below the cap but is above it uncompressed (64 KiB of one
    // letter, a few hundred bytes in lz4) is refused as well, read or written: a reader would
    // allocate its whole length.
    let inflating = entry("a".repeat(64 * 1024));
    roomy
        .put_for(key("inflating"), &credential(), inflating.clone())
        .await
        .unwrap();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(roomy.redis_key(&key("inflating")))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(stored.len() < 16 * 1024, "{}", stored.len());
    let error = tight
        .get_for(key("inflating"), &credential())
        .await
        .expect_err("a value that inflates above the cap is refused");
    assert!(error.downcast_ref::<RejectedEntry>().is_some(), "{error}");
    // Neither is written by the store with the cap.
    for (name, value) in [("also-big", big), ("also-inflating", inflating)] {
        tight
            .put_for(key(name), &credential(), value)
            .await
            .unwrap();
        let exists: u64 = redis::cmd("EXISTS")
            .arg(tight.redis_key(&key(name)))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{name}: a value above the cap is not stored");
    }

    // Below the cap, both ways work.
    let small = entry(noise(8 * 1024));
    tight
        .put_for(key("small"), &credential(), small.clone())
        .await
        .unwrap();
    assert_same(
        tight.get_for(key("small"), &credential()).await.unwrap(),
        &small,
    );
}

/// An entry older than the reading store's ttl is a miss although Redis still has it (it was
/// written with a longer ttl, or put back after Redis expired it): its age is the time it
/// was made, which its MAC covers.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn entries_older_than_the_ttl_read_as_misses() {
    let url = require_redis!();
    let prefix = unique_prefix("age");
    let writer = store(&url, &prefix, HOUR).await;
    let value = entry("{}");
    writer
        .put_for(key("a"), &credential(), value.clone())
        .await
        .unwrap();
    let short = store(&url, &prefix, Duration::from_millis(200)).await;
    // Real time: an entry's age is read off the wall clock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        short
            .get_for(key("a"), &credential())
            .await
            .unwrap()
            .is_none(),
        "an entry older than the ttl is a miss"
    );
    // It is there, and valid for a store that keeps entries longer.
    assert_same(
        writer.get_for(key("a"), &credential()).await.unwrap(),
        &value,
    );
}

/// The failure path, on a Redis of the test's own that it kills mid-run: every request is
/// still answered (uncached) while Redis is down, and caching resumes once it is back.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn a_redis_killed_mid_run_leaves_requests_answered_uncached() {
    let _ = require_redis!();
    let mut redis = volley_testkit::redis::RedisServer::start(None);
    let server = mock().await;
    let options = RedisOptions::new(redis.url()).response_timeout(Duration::from_millis(200));
    let store = RedisStore::connect(options, HOUR).await.unwrap();
    let layer = CacheLayer::new(store, credential());
    let mut service = layer.layer(transport(&server, KEY));

    send(&mut service, chat())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let hit = send(&mut service, chat()).await.unwrap();
    assert_eq!(hit.headers()["x-volley-cache"], "hit");
    assert_eq!(server.stats().requests_total, 1);

    redis.kill();
    for n in 0..5_u64 {
        let response = send(&mut service, chat())
            .await
            .expect("a request goes on when its cache is down");
        assert!(response.headers().get("x-volley-cache").is_none());
        response.bytes().await.unwrap();
        assert_eq!(server.stats().requests_total, 2 + n);
    }
    let down = layer.stats();
    assert_eq!((down.hits, down.misses), (1, 6));

    // Back (empty): the connection comes back on its own and the cache fills again. The
    // reconnect happens in the background, so allow a bounded number of rounds for it.
    redis.restart();
    let mut hit = false;
    for _ in 0..50 {
        let response = send(&mut service, chat()).await.unwrap();
        if response.headers().contains_key("x-volley-cache") {
            hit = true;
            break;
        }
        response.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hit, "the cache works again once Redis is back");
    server.shutdown().await;
}

#[tokio::test]
async fn plain_redis_to_a_remote_host_is_refused() {
    let err = RedisStore::connect(RedisOptions::new("redis://:pw@192.0.2.7:6379"), HOUR)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("refusing plain redis://"), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
}

/// `rediss://` to a Redis whose certificate a private CA signed: refused under the operating
/// system's roots, connected with that CA given, and the store works over it.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let _ = require_redis!();
    let pki = volley_testkit::tls::TestPki::new("redis");
    let redis = volley_testkit::redis::RedisServer::start_tls(&pki);
    assert!(redis.url().starts_with("rediss://"));
    let err = RedisConnection::connect(&RedisOptions::new(redis.url()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");

    let err = RedisConnection::connect(&RedisOptions::new(redis.url()).tls_ca_pem("not a PEM"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    let options = RedisOptions::new(redis.url()).tls_ca_pem(pki.ca_pem.clone());
    let store = RedisStore::connect(options, HOUR)
        .await
        .unwrap()
        .prefix(unique_prefix("rediss"));
    let value = entry(r#"{"over":"tls"}"#);
    store
        .put_for(key("tls"), &credential(), value.clone())
        .await
        .unwrap();
    assert_same(
        store.get_for(key("tls"), &credential()).await.unwrap(),
        &value,
    );
}
