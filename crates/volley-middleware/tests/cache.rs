//! The cache layer end to end over real sockets (volley-mock + volley-transport), and its
//! timing and size bounds with a mock inner service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};
use volley_core::cache_key::{CacheKey, CredentialId};
use volley_core::{ApiKey, Body, BodyStream, Error, ErrorKind, Request, Response, Timings};
use volley_middleware::cache::{CacheLayer, CacheStats, DiskStore, MemoryStore};
use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const KEY: &str = "sk-volley-cache-test-0123456789abcdef";
const HOUR: Duration = Duration::from_secs(3600);

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn transport(server: &MockServer) -> Transport {
    Transport::builder()
        .base_url(server.url())
        .api_key(KEY)
        .build()
        .unwrap()
}

fn chat() -> Request {
    Request::post("/chat/completions", CHAT).unwrap()
}

fn with_header(request: Request, name: &'static str, value: &'static str) -> Request {
    request.with_header(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

fn credential() -> CredentialId {
    CredentialId::from_api_key(&ApiKey::new(KEY))
}

fn stats(hits: u64, misses: u64, stores: u64) -> CacheStats {
    CacheStats {
        hits,
        misses,
        stores,
        ..CacheStats::default()
    }
}

async fn send<S>(service: &mut S, request: Request) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service.ready().await?.call(request).await
}

#[tokio::test]
async fn a_hit_returns_identical_bytes_without_reaching_the_server() {
    let server = mock().await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential());
    let mut service = layer.layer(transport(&server));

    let first = send(&mut service, chat()).await.unwrap();
    assert!(first.headers().get("x-volley-cache").is_none());
    let content_type = first.headers()[http::header::CONTENT_TYPE].clone();
    let first = first.bytes().await.unwrap();

    let again = chat();
    let id = again.id();
    let second = send(&mut service, again).await.unwrap();
    assert_eq!(second.request_id(), id);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-volley-cache"], "hit");
    assert_eq!(second.headers()[http::header::CONTENT_TYPE], content_type);
    assert!(!second.is_stream());
    assert_eq!(second.bytes().await.unwrap(), first);

    // Key order and white space do not matter.
    let reordered = Request::post(
        "/chat/completions",
        r#"{ "messages": [{"content": "Say hello", "role": "user"}], "model": "gpt-4o-mini" }"#,
    )
    .unwrap();
    let third = send(&mut service, reordered).await.unwrap();
    assert_eq!(third.bytes().await.unwrap(), first);

    assert_eq!(server.stats().requests_total, 1);
    assert_eq!(layer.stats(), stats(2, 1, 1));
    assert_eq!(service.stats(), layer.stats());
    server.shutdown().await;
}

#[tokio::test]
async fn two_credentials_never_share_entries() {
    let server = mock().await;
    let store = Arc::new(MemoryStore::new(1 << 20, HOUR));
    let a = CacheLayer::new(store.clone(), credential());
    let b = CacheLayer::new(
        store.clone(),
        CredentialId::from_api_key(&ApiKey::new("sk-another-key")),
    );
    let anonymous = CacheLayer::new(store, CredentialId::anonymous());
    for layer in [&a, &b, &anonymous] {
        let mut service = layer.layer(transport(&server));
        send(&mut service, chat()).await.unwrap();
        assert_eq!(layer.stats(), stats(0, 1, 1));
    }
    assert_eq!(server.stats().requests_total, 3);
    // Each credential now hits its own entry.
    let mut service = a.layer(transport(&server));
    send(&mut service, chat()).await.unwrap();
    assert_eq!(a.stats(), stats(1, 1, 1));
    assert_eq!(server.stats().requests_total, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn no_store_bypasses_and_no_cache_refreshes() {
    let server = mock().await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential());
    let mut service = layer.layer(transport(&server));
    for _ in 0..2 {
        let request = with_header(chat(), "cache-control", "no-store");
        send(&mut service, request).await.unwrap();
    }
    assert_eq!(server.stats().requests_total, 2);
    assert_eq!(layer.stats(), stats(0, 0, 0));

    // no-cache goes to the server but stores the answer, which later requests hit.
    let request = with_header(chat(), "cache-control", "no-cache");
    send(&mut service, request).await.unwrap();
    assert_eq!(layer.stats(), stats(0, 1, 1));
    send(&mut service, chat()).await.unwrap();
    assert_eq!(layer.stats(), stats(1, 1, 1));
    // no-store is not answered from the cache either.
    let request = with_header(chat(), "cache-control", "no-store");
    let response = send(&mut service, request).await.unwrap();
    assert!(response.headers().get("x-volley-cache").is_none());
    assert_eq!(server.stats().requests_total, 4);
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_not_cached() {
    let server = mock().await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential());
    let mut service = layer.layer(transport(&server));
    for _ in 0..2 {
        let request = with_header(chat(), "x-mock-fault", "500");
        let err = send(&mut service, request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status);
    }
    assert_eq!(server.stats().requests_total, 2);
    assert_eq!(layer.stats(), stats(0, 2, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn a_cached_stream_is_replayed_as_the_same_stream() {
    let server = mock().await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential()).cache_streams(true);
    let mut service = layer.layer(transport(&server));
    let stream_request = || Request::post("/chat/completions", STREAM).unwrap();

    let first = send(&mut service, stream_request()).await.unwrap();
    assert!(first.is_stream());
    let first = first.bytes().await.unwrap();
    assert!(first.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(layer.stats(), stats(0, 1, 1));

    let replay = send(&mut service, stream_request()).await.unwrap();
    assert!(replay.is_stream(), "a cached stream replays as a stream");
    let Body::Stream(mut body) = replay.into_parts().1 else {
        unreachable!("checked above");
    };
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        chunks.push(chunk.unwrap());
    }
    assert!(chunks.len() > 2, "one chunk per event: {}", chunks.len());
    assert_eq!(chunks.concat(), first);
    assert_eq!(server.stats().requests_total, 1);

    // The same request without stream caching reaches the server and is not stored.
    let plain = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential());
    let mut service = plain.layer(transport(&server));
    for _ in 0..2 {
        send(&mut service, stream_request())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    assert_eq!(plain.stats(), stats(0, 2, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_read_up_to_done_is_stored() {
    let server = mock().await;
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential()).cache_streams(true);
    let mut service = layer.layer(transport(&server));
    let response = send(
        &mut service,
        Request::post("/chat/completions", STREAM).unwrap(),
    )
    .await
    .unwrap();
    let mut events = response.events();
    while let Some(event) = events.next().await {
        if event.unwrap().is_done() {
            break;
        }
    }
    drop(events);
    // The store write runs on a spawned task.
    for _ in 0..10_000 {
        if layer.stats().stores == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.stats(), stats(0, 1, 1));
    server.shutdown().await;
}

/// An inner service that counts its calls and answers 200 with `body`: a stream of one chunk
/// per event when `stream`, else a complete body.
fn answering(
    calls: Arc<AtomicU64>,
    body: &'static str,
    stream: bool,
) -> impl Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send + 'static
{
    service_fn(move |request: Request| {
        calls.fetch_add(1, Ordering::SeqCst);
        let body = if stream {
            let events = body.split_inclusive("\n\n").map(|e| Ok(Bytes::from(e)));
            let events: Vec<Result<Bytes, Error>> = events.collect();
            Body::Stream(BodyStream::new(futures_util::stream::iter(events)))
        } else {
            Body::Full(Bytes::from_static(body.as_bytes()))
        };
        async move {
            Ok(Response::new(
                StatusCode::OK,
                http::HeaderMap::new(),
                body,
                Timings::start(),
                request.id(),
            ))
        }
    })
}

/// Sends the same request twice through a fresh cache over `answering(body, stream)`, reading
/// each answer to its end; returns the stats and how many calls reached the inner service.
async fn twice(body: &'static str, stream: bool) -> (CacheStats, u64) {
    let calls = Arc::new(AtomicU64::new(0));
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential()).cache_streams(true);
    let mut service = layer.layer(answering(calls.clone(), body, stream));
    for _ in 0..2 {
        let response = send(&mut service, chat()).await.unwrap();
        assert_eq!(response.bytes().await.unwrap(), body);
    }
    (layer.stats(), calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_stream_is_stored_only_when_it_ended_with_done() {
    let complete = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
    assert_eq!(twice(complete, true).await, (stats(1, 1, 1), 1));
    // Ended cleanly at the transport level, but the server never finished the answer.
    let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    assert_eq!(twice(cut, true).await, (stats(0, 2, 0), 2));
    // An error event in a 200 stream, then `[DONE]` (as vLLM ends a failed stream).
    let failed = "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n";
    assert_eq!(twice(failed, true).await, (stats(0, 2, 0), 2));
    let failed = "data: {\"choices\":[]}\n\nevent: error\ndata: {\"message\":\"overloaded\"}\n\ndata: [DONE]\n\n";
    assert_eq!(twice(failed, true).await, (stats(0, 2, 0), 2));
}

#[tokio::test]
async fn a_successful_status_with_an_error_body_is_not_stored() {
    let error =
        "\n  {\"error\": {\"message\": \"The server is overloaded\", \"type\": \"server_error\"}}";
    assert_eq!(twice(error, false).await, (stats(0, 2, 0), 2));
    // A null `error` is no error.
    let answer = r#"{"error":null,"id":"x","choices":[]}"#;
    assert_eq!(twice(answer, false).await, (stats(1, 1, 1), 1));
}

#[test]
fn the_disk_cache_survives_a_restart_and_never_holds_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime().block_on(async {
        let server = mock().await;
        let store = DiskStore::open(dir.path(), HOUR).unwrap();
        let layer = CacheLayer::new(store, credential()).cache_streams(true);
        let mut service = layer.layer(transport(&server));
        let body = send(&mut service, chat())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let stream = Request::post("/chat/completions", STREAM).unwrap();
        send(&mut service, stream)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(layer.stats(), stats(0, 2, 2));
        server.shutdown().await;
        body
    });

    // A new process, as far as the cache can tell: a new runtime, store and server.
    runtime().block_on(async {
        let server = mock().await;
        let store = DiskStore::open(dir.path(), HOUR).unwrap();
        let layer = CacheLayer::new(store, credential());
        let mut service = layer.layer(transport(&server));
        let hit = send(&mut service, chat()).await.unwrap();
        assert_eq!(hit.bytes().await.unwrap(), first);
        let stream = Request::post("/chat/completions", STREAM).unwrap();
        let replay = send(&mut service, stream).await.unwrap();
        assert!(replay.is_stream());
        assert_eq!(server.stats().requests_total, 0);
        assert_eq!(layer.stats(), stats(2, 0, 0));
        server.shutdown().await;
    });

    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        assert!(
            !contains(&bytes, KEY.as_bytes()),
            "the API key is stored on disk"
        );
        assert!(!contains(&bytes, credential().as_bytes()));
        assert!(contains(&bytes, b"token0"), "the responses are on disk");
    }
    assert!(files > 0);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An inner service that counts its calls and answers `{"n":<call>}` of `size` bytes.
fn counting(
    calls: Arc<AtomicU64>,
    size: usize,
) -> impl Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send + 'static
{
    service_fn(move |request: Request| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let mut body = format!("{{\"n\":{n}}}").into_bytes();
        body.resize(size.max(body.len()), b' ');
        async move {
            Ok(Response::new(
                StatusCode::OK,
                http::HeaderMap::new(),
                Body::Full(Bytes::from(body)),
                Timings::start(),
                request.id(),
            ))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn memory_entries_expire_after_their_ttl() {
    let calls = Arc::new(AtomicU64::new(0));
    let layer = CacheLayer::new(
        MemoryStore::new(1 << 20, Duration::from_secs(60)),
        credential(),
    );
    let mut service = layer.layer(counting(calls.clone(), 0));
    send(&mut service, chat()).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    let body = send(&mut service, chat())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, r#"{"n":0}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    let body = send(&mut service, chat())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, r#"{"n":1}"#, "the entry expired");
    assert_eq!(layer.stats(), stats(1, 2, 2));
}

#[tokio::test]
async fn the_memory_size_bound_evicts() {
    let calls = Arc::new(AtomicU64::new(0));
    let store = Arc::new(MemoryStore::new(8 << 10, HOUR));
    let layer = CacheLayer::new(store.clone(), credential());
    let mut service = layer.layer(counting(calls, 1024));
    for i in 0..32 {
        let request = Request::post("/embeddings", format!("{{\"input\":{i}}}")).unwrap();
        send(&mut service, request).await.unwrap();
    }
    store.run_pending_tasks().await;
    assert!(
        store.weighted_size() <= 8 << 10,
        "{}",
        store.weighted_size()
    );
    assert!(store.entry_count() < 32);
    assert!(store.entry_count() >= 1);
    // Larger than the whole store: never kept.
    let big = MemoryStore::new(512, HOUR);
    let layer = CacheLayer::new(big.clone(), credential());
    let mut service = layer.layer(counting(Arc::new(AtomicU64::new(0)), 1024));
    send(&mut service, chat()).await.unwrap();
    big.run_pending_tasks().await;
    assert_eq!(big.entry_count(), 0);
}

#[tokio::test]
async fn bodies_above_the_entry_limit_are_not_stored() {
    let calls = Arc::new(AtomicU64::new(0));
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential()).max_entry_bytes(100);
    let mut service = layer.layer(counting(calls.clone(), 101));
    send(&mut service, chat()).await.unwrap();
    send(&mut service, chat()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.stats(), stats(0, 2, 0));
}

fn key(body: &str) -> CacheKey {
    let request = Request::post("/chat/completions", body.to_owned()).unwrap();
    CacheKey::for_request(&request, &CredentialId::anonymous())
}

/// A JSON object of `fields`, in the given order, with `gap` around every token.
fn object(fields: &[(String, i64)], gap: &str) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{gap}\"{k}\"{gap}:{gap}{v}{gap}"))
        .collect();
    format!("{{{}}}", parts.join(","))
}

proptest! {
    #[test]
    fn the_key_ignores_order_and_white_space_but_not_values(
        fields in prop::collection::btree_map("[a-z_]{1,12}", any::<i64>(), 1..8),
        gap in "[ \t\n\r]{0,3}",
        rotate in 0usize..8,
        changed in 0usize..8,
    ) {
        let fields: Vec<(String, i64)> = fields.into_iter().collect();
        let mut shuffled = fields.clone();
        shuffled.rotate_left(rotate % fields.len());
        shuffled.reverse();
        prop_assert_eq!(key(&object(&fields, "")), key(&object(&shuffled, &gap)));

        let mut different = fields.clone();
        let i = changed % different.len();
        different[i].1 = different[i].1.wrapping_add(1);
        prop_assert_ne!(key(&object(&fields, "")), key(&object(&different, &gap)));
    }
}

/// The requests a scripted server saw, as their request lines (`post /v1/x http/1.1`).
type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// A server on loopback answering by path: an HTML page with a 200 under `/v1/html/`, a 202
/// under `/v1/accepted/`, a job's status for `GET /v1/responses/r1` (`queued`, then
/// `completed`), and a chat completion otherwise.
async fn scripted() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let port = volley_testkit::raw::serve(move |head| {
        let line = head.lines().next().unwrap_or_default().to_owned();
        let earlier = {
            let mut log = log.lock().unwrap();
            let earlier = log.iter().filter(|l| **l == line).count();
            log.push(line.clone());
            earlier
        };
        let answer = r#"{"id":"c","object":"chat.completion","choices":[]}"#;
        if line.contains("/v1/html/") {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 20\r\n\r\n<html>blocked</html>"
                .to_vec()
        } else if line.contains("/v1/accepted/") {
            volley_testkit::raw::json_response("202 Accepted", &[], answer)
        } else if line.starts_with("get /v1/responses/r1") {
            let status = if earlier == 0 { "queued" } else { "completed" };
            let body = format!(r#"{{"id":"r1","object":"response","status":"{status}"}}"#);
            volley_testkit::raw::json_response("200 OK", &[], &body)
        } else {
            volley_testkit::raw::json_response("200 OK", &[], answer)
        }
    })
    .await;
    (port, seen)
}

/// Only what answers a generation is kept: a 200 whose body is a JSON document, to a `POST`
/// for chat, completions, messages, responses (not run in the background), embeddings or
/// moderations. A proxy's HTML page with a 200, a 202, a job's status polled with `GET`, a
/// batch created with `POST`, a message added to a thread, and a background response each
/// reach the server every time.
#[tokio::test]
async fn only_json_answers_to_generations_are_kept() {
    let (port, seen) = scripted().await;
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    let layer = CacheLayer::new(MemoryStore::new(1 << 20, HOUR), credential());
    let mut service = layer.clone().layer(transport);
    let background = r#"{"model":"o3","input":"hi","background":true}"#;
    let requests = || {
        [
            Request::post("/html/chat/completions", CHAT).unwrap(),
            Request::post("/accepted/chat/completions", CHAT).unwrap(),
            Request::get("/responses/r1").unwrap(),
            Request::post("/batches", r#"{"input_file_id":"f"}"#).unwrap(),
            Request::post("/threads/t1/messages", r#"{"role":"user","content":"hi"}"#).unwrap(),
            Request::post("/responses", background).unwrap(),
            Request::post("/responses", r#"{"model":"o3","input":"hi"}"#).unwrap(),
            chat(),
        ]
    };
    let mut statuses = Vec::new();
    for round in 0..2 {
        for request in requests() {
            let response = send(&mut service, request).await.unwrap();
            if round == 1 && response.headers().contains_key("x-volley-cache") {
                statuses.push("hit".to_owned());
            }
            let body = response.bytes().await.unwrap();
            if body.starts_with(b"{\"id\":\"r1\"") {
                statuses.push(String::from_utf8_lossy(&body).into_owned());
            }
        }
    }
    let seen = seen.lock().unwrap().clone();
    let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("/v1/html/"), 2, "{seen:?}");
    assert_eq!(count("/v1/accepted/"), 2, "{seen:?}");
    assert_eq!(count("get /v1/responses/r1"), 2, "{seen:?}");
    assert_eq!(count("/v1/batches"), 2, "{seen:?}");
    assert_eq!(count("/v1/threads/t1/messages"), 2, "{seen:?}");
    // Two background requests and one plain one: its repeat is a hit, as the chat's is.
    assert_eq!(count("post /v1/responses "), 3, "{seen:?}");
    assert_eq!(count("post /v1/chat/completions "), 1, "{seen:?}");
    assert!(statuses[1].contains("completed"), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "hit").count(), 2);
    assert_eq!(layer.stats().stores, 2);
}

/// A store whose writes take `delay`.
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
}

impl volley_middleware::cache::CacheStore for SlowStore {
    fn get(
        &self,
        key: CacheKey,
    ) -> volley_middleware::cache::StoreFuture<'_, Option<volley_middleware::cache::CachedResponse>>
    {
        self.inner.get(key)
    }

    fn put(
        &self,
        key: CacheKey,
        value: volley_middleware::cache::CachedResponse,
    ) -> volley_middleware::cache::StoreFuture<'_, ()> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.put(key, value).await
        })
    }
}

/// A caller that gives up while the answer is being stored (a deadline) does not stop the
/// write: the answer it paid for is a hit for its next try, never sent for again.
#[tokio::test]
async fn a_write_outlives_a_caller_that_gave_up() {
    let server = mock().await;
    let store = SlowStore {
        inner: MemoryStore::new(1 << 20, HOUR),
        delay: Duration::from_millis(300),
    };
    let layer = CacheLayer::new(store, credential());
    let mut service = layer.clone().layer(transport(&server));
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), send(&mut service, chat())).await;
    assert!(
        gave_up.is_err(),
        "the write holds the answer back for 300 ms"
    );
    assert_eq!(server.stats().requests_total, 1);
    // The write goes on without the caller.
    for _ in 0..100 {
        if layer.stats().stores == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(layer.stats().stores, 1);
    let again = send(&mut service, chat()).await.unwrap();
    assert!(again.headers().contains_key("x-volley-cache"));
    assert_eq!(server.stats().requests_total, 1);
}
