//! What several endpoints cost, and what the single-endpoint path pays for their existence.
//! Over loopback to an in-process mock with zero latency; each iteration sends a batch of
//! concurrent requests.
//!
//! - `single_old_shape` / `single_new_shape`: the same single-endpoint stack (Retry over rate
//!   limit, concurrency limit, attempt metrics, timeouts, transport) built as it was before
//!   endpoints (`Retry<Limited>`) and as the client builds it now
//!   (`Retry<Either<Limited, Balance<..>>>`, always `Left`): the zero-cost claim.
//! - `client_one_endpoint` / `client_two_endpoints`: the whole client, with one base URL and
//!   with two endpoints (both at the mock): what the balancer costs per request.
//!
//! `cargo bench -p volley-benches --bench endpoints`

mod common;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use tower::util::Either;
use tower::{Service, ServiceBuilder, ServiceExt};
use volley::{Client, Endpoint};
use volley_core::{Error, Request, Response};
use volley_middleware::balance::Balance;
use volley_middleware::limit::ConcurrencyLimitLayer;
use volley_middleware::metrics::{MetricsLayer, Scope};
use volley_middleware::rate_limit::{Limits, RateLimitLayer};
use volley_middleware::retry::{Policy, RetryLayer};
use volley_middleware::timeout::TimeoutLayer;

const BATCH: usize = 32;
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request {
    Request::post("/chat/completions", BODY).expect("static path")
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

async fn client_batch(client: &Client) {
    let calls = (0..BATCH).map(|_| async {
        let response = client.send(request()).await.expect("the mock answers");
        response.bytes().await.expect("the body arrives")
    });
    join_all(calls).await;
}

/// The single path as the client holds it: the left side of single-or-balanced.
fn single<S>(service: S) -> Either<S, Balance<S>> {
    Either::Left(service)
}

fn endpoints(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (server, transport) = common::mock_and_transport(&runtime);
    // The single path below Retry, as the client builds it.
    let limited = runtime.block_on(async {
        ServiceBuilder::new()
            .layer(RateLimitLayer::new(Limits::auto()).expect("valid limits"))
            .layer(ConcurrencyLimitLayer::new(256))
            .layer(MetricsLayer::new().scope(Scope::Attempt))
            .layer(
                TimeoutLayer::new()
                    .attempt(Duration::from_secs(600))
                    .idle(Duration::from_secs(120)),
            )
            .service(transport.clone())
    });
    let old_shape = ServiceBuilder::new()
        .layer(RetryLayer::new(Policy::default()))
        .service(limited.clone());
    let new_shape = ServiceBuilder::new()
        .layer(RetryLayer::new(Policy::default()))
        .service(single(limited));

    let mut group = c.benchmark_group("endpoints");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("single_old_shape", |b| {
        b.iter(|| runtime.block_on(batch(&old_shape)));
    });
    group.bench_function("single_new_shape", |b| {
        b.iter(|| runtime.block_on(batch(&new_shape)));
    });
    let one = Client::builder()
        .base_url(server.url())
        .build()
        .expect("a loopback client");
    group.bench_function("client_one_endpoint", |b| {
        b.iter(|| runtime.block_on(client_batch(&one)));
    });
    let two = Client::builder()
        .endpoint(Endpoint::new(server.url()).name("a"))
        .endpoint(Endpoint::new(server.url()).name("b"))
        .build()
        .expect("a loopback client");
    group.bench_function("client_two_endpoints", |b| {
        b.iter(|| runtime.block_on(client_batch(&two)));
    });
    group.finish();
}

criterion_group!(benches, endpoints);
criterion_main!(benches);
