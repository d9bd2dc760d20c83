//! What each middleware layer costs per request, against the bare transport, over loopback
//! to an in-process mock with zero latency. Each iteration sends a batch of concurrent
//! requests; the figure to read is the difference between a variant and `bare`.
//!
//! `cargo bench -p volley-benches --bench stack`

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use tower::{Service, ServiceBuilder, ServiceExt};
use volley::Client;
use volley_core::{Error, Request, Response};
use volley_middleware::limit::ConcurrencyLimitLayer;
use volley_middleware::metrics::{MetricsLayer, Scope};
use volley_middleware::rate_limit::{Limits, RateLimitLayer};
use volley_middleware::retry::{Policy, RetryLayer};
use volley_middleware::timeout::TimeoutLayer;

const BATCH: usize = 32;
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request {
    Request::post("/chat/completions", BODY)
        .expect("static path")
        .with_estimated_tokens(1_040)
}

async fn batch<S>(service: &S)
where
    S: Service<Request, Response = Response, Error = Error> + Clone,
{
    let calls = (0..BATCH).map(|_| {
        let service = service.clone();
        async move {
            let response = service.oneshot(request()).await.expect("the mock answers");
            response.bytes().await.expect("the body arrives")
        }
    });
    join_all(calls).await;
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (server, transport) = common::mock_and_transport(&runtime);

    let mut group = c.benchmark_group("stack");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    group.bench_function("bare", |b| {
        b.iter(|| runtime.block_on(batch(&transport)));
    });
    let timeout = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new()
                .attempt(Duration::from_secs(600))
                .idle(Duration::from_secs(120)),
        )
        .service(transport.clone());
    group.bench_function("timeout", |b| {
        b.iter(|| runtime.block_on(batch(&timeout)));
    });
    let limit = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(256))
        .service(transport.clone());
    group.bench_function("concurrency_limit", |b| {
        b.iter(|| runtime.block_on(batch(&limit)));
    });
    let rate = runtime.block_on(async {
        ServiceBuilder::new()
            .layer(
                RateLimitLayer::new(
                    Limits::per_minute()
                        .requests(100_000_000)
                        .tokens(u64::MAX / 4),
                )
                .expect("valid limits"),
            )
            .service(transport.clone())
    });
    group.bench_function("rate_limit", |b| {
        b.iter(|| runtime.block_on(batch(&rate)));
    });
    let retry = ServiceBuilder::new()
        .layer(RetryLayer::new(Policy::default()))
        .service(transport.clone());
    group.bench_function("retry", |b| {
        b.iter(|| runtime.block_on(batch(&retry)));
    });
    let metrics = ServiceBuilder::new()
        .layer(MetricsLayer::new().scope(Scope::Request))
        .service(transport.clone());
    group.bench_function("metrics", |b| {
        b.iter(|| runtime.block_on(batch(&metrics)));
    });
    let client = Client::builder()
        .base_url(server.url())
        .build()
        .expect("a loopback client");
    group.bench_function("full_default_stack", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let calls = (0..BATCH).map(|_| async {
                    let response = client.send(request()).await.expect("the mock answers");
                    response.bytes().await.expect("the body arrives")
                });
                join_all(calls).await;
            })
        });
    });
    let boxed = client.clone().into_service();
    group.bench_function("full_default_stack_boxed", |b| {
        b.iter(|| runtime.block_on(batch(&boxed)));
    });
    group.finish();
}

/// What the timeout layer's stream wrapper costs per chunk: a stream of ready chunks read
/// through it (idle deadline on) and without it, in process, no socket.
fn stream_chunks(c: &mut Criterion) {
    use bytes::Bytes;
    use volley_core::{Body, BodyStream, Timings};

    const CHUNKS: usize = 1_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let source = tower::service_fn(|request: Request| async move {
        let chunks = (0..CHUNKS).map(|_| Ok(Bytes::from_static(b"data: {\"x\":1}\n\n")));
        Ok::<_, Error>(Response::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Body::Stream(BodyStream::new(futures_util::stream::iter(chunks))),
            Timings::start(),
            request.id(),
        ))
    });
    let drain = |service: tower::util::BoxCloneService<Request, Response, Error>| async move {
        let response = service.oneshot(request()).await.expect("a stream");
        let Body::Stream(mut stream) = response.into_parts().1 else {
            unreachable!("a stream was sent")
        };
        let mut n = 0;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            n += chunk.expect("a chunk").len();
        }
        n
    };
    let mut group = c.benchmark_group("stream_chunks");
    group.throughput(Throughput::Elements(CHUNKS as u64));
    let bare = tower::util::BoxCloneService::new(source);
    group.bench_function("bare", |b| {
        b.iter(|| runtime.block_on(drain(bare.clone())));
    });
    let idle = tower::util::BoxCloneService::new(
        ServiceBuilder::new()
            .layer(TimeoutLayer::new().idle(Duration::from_secs(120)))
            .service(source),
    );
    group.bench_function("idle_timeout", |b| {
        b.iter(|| runtime.block_on(drain(idle.clone())));
    });
    group.finish();
}

/// The check `volley::Client` makes before every chat, embeddings or messages request with the
/// default rate limits (learned per model): whether the request needs a token estimate. Three
/// models seen, no token limit learned (a provider that states none): the slowest case, every
/// model's limiter looked at.
fn counts_tokens(c: &mut Criterion) {
    use volley_middleware::rate_limit::{LocalLimiter, Observation, RateLimiter};
    let limiter = LocalLimiter::new(Limits::auto()).expect("valid limits");
    for model in ["gpt-4o", "gpt-4o-mini", "o3"] {
        limiter.for_model(model).observe(&Observation::default());
    }
    assert!(!limiter.counts_tokens());
    c.bench_function("rate_limit/counts_tokens_three_models", |b| {
        b.iter(|| std::hint::black_box(limiter.counts_tokens()));
    });
}

/// What the HTTP/1.1 pool adds to every response: a look for a `Keep-Alive` header (the
/// server's idle timeout) among the headers of a typical OpenAI answer, which has none.
fn keep_alive_lookup(c: &mut Criterion) {
    const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("date", "Sun, 06 Dec 2026 21:00:00 GMT"),
        ("content-type", "application/json"),
        ("content-length", "612"),
        ("connection", "keep-alive"),
        ("openai-organization", "org-abc"),
        ("openai-processing-ms", "412"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999900"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "3ms"),
        ("x-request-id", "req_0123456789abcdef"),
        ("strict-transport-security", "max-age=31536000"),
        ("cf-ray", "8f0a1b2c3d4e5f60-AMS"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    c.bench_function("pool/keep_alive_lookup_openai_headers", |b| {
        b.iter(|| std::hint::black_box(&headers).get(KEEP_ALIVE).is_some());
    });
}

criterion_group!(
    benches,
    layers,
    stream_chunks,
    counts_tokens,
    keep_alive_lookup
);
criterion_main!(benches);
