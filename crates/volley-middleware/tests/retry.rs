//! The retry layer over a real transport and the mock server, on loopback sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower::{Service, ServiceBuilder, ServiceExt};
use volley_core::{Error, ErrorKind, Request, Response};
use volley_middleware::retry::{Policy, RetryLayer};
use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true}"#;

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config)
        .await
        .expect("the mock server starts on 127.0.0.1:0")
}

fn transport(server: &MockServer) -> Transport {
    Transport::builder()
        .base_url(server.url())
        .build()
        .expect("a loopback base URL builds")
}

fn chat() -> Request {
    Request::post("/chat/completions", CHAT_BODY).unwrap()
}

fn with_fault(request: Request, fault: &'static str) -> Request {
    request.with_header(
        http::HeaderName::from_static("x-mock-fault"),
        http::HeaderValue::from_static(fault),
    )
}

/// A fast policy: 1 ms base, 20 ms cap.
fn fast() -> volley_middleware::retry::PolicyBuilder {
    Policy::builder()
        .backoff_base(Duration::from_millis(1))
        .backoff_cap(Duration::from_millis(20))
}

/// What [`stack`] returns: a cloneable service, as the facade's stack is.
trait Stack:
    Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send + 'static
{
}

impl<S> Stack for S where
    S: Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send + 'static
{
}

/// Retry over a counter of attempts over the transport: the stack a user would build.
fn stack(transport: &Transport, policy: Policy) -> (impl Stack, Arc<AtomicU64>) {
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&attempts);
    let transport = transport.clone();
    let counted = tower::service_fn(move |request: Request| {
        counter.fetch_add(1, Ordering::Relaxed);
        let transport = transport.clone();
        async move { transport.send(request).await }
    });
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(counted);
    (service, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_heal_and_every_attempt_is_counted() {
    let server = mock(MockConfig {
        faults: "429=0.3,500=0.1".parse().unwrap(),
        retry_after: Duration::from_millis(10),
        ..MockConfig::default()
    })
    .await;
    let transport = transport(&server);
    // Each attempt fails with probability 0.4: 21 attempts all fail with probability 4e-9.
    let policy = fast()
        .max_retries(20)
        .budget_enabled(false)
        .build()
        .unwrap();
    let (service, attempts) = stack(&transport, policy);

    const REQUESTS: u64 = 2_000;
    const CONCURRENCY: usize = 64;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let service = service.clone();
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut ok = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let response = service.clone().oneshot(chat()).await;
                let response = response.unwrap_or_else(|e| panic!("every request heals: {e}"));
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            ok
        });
    }
    let mut succeeded = 0;
    while let Some(ok) = workers.join_next().await {
        succeeded += ok.unwrap();
    }
    assert_eq!(succeeded, REQUESTS);

    let stats = server.stats();
    let attempts = attempts.load(Ordering::Relaxed);
    assert_eq!(
        stats.requests_total, attempts,
        "the server saw every attempt"
    );
    assert_eq!(transport.stats().requests, attempts);
    assert_eq!(stats.status_count(200), REQUESTS);
    let faults = stats.faults.rate_limit + stats.faults.server_error;
    assert_eq!(attempts, REQUESTS + faults, "one retry per fault");
    assert!(faults > REQUESTS / 4, "faults were injected: {faults}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_persistent_fault_gets_exactly_max_retries() {
    let server = mock(MockConfig::default()).await;
    let (service, attempts) = stack(&transport(&server), fast().max_retries(3).build().unwrap());
    let err = service
        .oneshot(with_fault(chat(), "500"))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(500), "{err}");
    assert_eq!(attempts.load(Ordering::Relaxed), 4);
    assert_eq!(server.stats().requests_total, 4);
}

#[tokio::test]
async fn unauthorized_is_tried_once() {
    let server = mock(MockConfig {
        require_api_key: Some("k".into()),
        ..MockConfig::default()
    })
    .await;
    let (service, _) = stack(&transport(&server), fast().build().unwrap());
    let err = service.oneshot(chat()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    assert_eq!(server.stats().requests_total, 1);
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let server = mock(MockConfig::default()).await;
    let (service, _) = stack(&transport(&server), fast().build().unwrap());
    let request = Request::post("/chat/completions", "{not json").unwrap();
    let err = service.oneshot(request).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
    assert_eq!(server.stats().requests_total, 1);
}

#[tokio::test]
async fn a_stream_cut_after_its_first_chunk_is_not_retried() {
    let server = mock(MockConfig::default()).await;
    let (service, _) = stack(&transport(&server), fast().build().unwrap());
    let request = Request::post("/chat/completions", STREAM_BODY).unwrap();
    let response = service
        .oneshot(with_fault(request, "cut"))
        .await
        .expect("the head and the first chunk arrive before the cut");
    assert!(response.is_stream());
    let err = response.bytes().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    assert_eq!(server.stats().requests_total, 1);
}

#[tokio::test]
async fn a_healthy_stream_arrives_whole() {
    let server = mock(MockConfig::default()).await;
    let (service, _) = stack(&transport(&server), fast().build().unwrap());
    let request = Request::post("/chat/completions", STREAM_BODY).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let body = response.bytes().await.unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    // Only the first event names the role: the chunk read ahead is given back.
    assert!(text.starts_with("data: "), "{text}");
    assert!(text.contains(r#""role":"assistant""#), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(server.stats().requests_total, 1);
}
