//! Instructions per request of the single-endpoint path before and after endpoints, and of a
//! client with two endpoints, for `valgrind --tool=callgrind` (repeatable on a shared
//! machine, unlike time):
//!
//! ```text
//! cargo build --release -p volley-benches --example endpoint_overhead
//! for v in old new one two; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/endpoint_overhead $v 4000 2>&1 | grep Collected
//! done
//! ```
//!
//! `old` / `new`: the stack below the cache built as `Retry<Limited>` (before) and as the
//! client builds it now, `Retry<Either<Limited, Balance<..>>>` (always `Left`); `one` / `two`:
//! the whole client with one base URL and with two endpoints. Subtract a run of `0` requests
//! (set-up only) to get the per-request figure. Loopback only, bounded by the count.

use std::time::Duration;

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
use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

const BATCH: usize = 32;
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request {
    Request::post("/chat/completions", BODY).expect("static path")
}

async fn run<S>(service: S, requests: usize)
where
    S: Service<Request, Response = Response, Error = Error> + Clone,
{
    for _ in 0..requests.div_ceil(BATCH) {
        let calls = (0..BATCH).map(|_| {
            let service = service.clone();
            async move {
                let response = service.oneshot(request()).await.expect("the mock answers");
                response.bytes().await.expect("the body arrives")
            }
        });
        join_all(calls).await;
    }
}

fn single<S>(service: S) -> Either<S, Balance<S>> {
    Either::Left(service)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map_or("new", String::as_str).to_owned();
    let requests: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("the mock starts");
        let transport = Transport::builder()
            .base_url(server.url())
            .build()
            .expect("a loopback transport");
        let limited = ServiceBuilder::new()
            .layer(RateLimitLayer::new(Limits::auto()).expect("valid limits"))
            .layer(ConcurrencyLimitLayer::new(256))
            .layer(MetricsLayer::new().scope(Scope::Attempt))
            .layer(
                TimeoutLayer::new()
                    .attempt(Duration::from_secs(600))
                    .idle(Duration::from_secs(120)),
            )
            .service(transport);
        let retry = RetryLayer::new(Policy::default());
        match variant.as_str() {
            "old" => {
                run(
                    ServiceBuilder::new().layer(retry).service(limited),
                    requests,
                )
                .await
            }
            "new" => {
                run(
                    ServiceBuilder::new().layer(retry).service(single(limited)),
                    requests,
                )
                .await;
            }
            "one" => {
                let client = Client::builder()
                    .base_url(server.url())
                    .build()
                    .expect("a client");
                run(client.into_service(), requests).await;
            }
            "two" => {
                let client = Client::builder()
                    .endpoint(Endpoint::new(server.url()).name("a"))
                    .endpoint(Endpoint::new(server.url()).name("b"))
                    .build()
                    .expect("a client");
                run(client.into_service(), requests).await;
            }
            other => panic!("unknown variant {other}: old, new, one or two"),
        }
    });
}
