//! The layer over simulated servers, in paused time: a processor-sharing server with a knee
//! and a server with a hard capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{HeaderMap, StatusCode};
use tower::{Service, ServiceExt};
use volley_core::{Body, Error, Request, Response, Timings};

use super::AdaptiveConcurrencyLimitLayer;

const BASE: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    rejected: AtomicUsize,
    answered: AtomicUsize,
}

/// A server answering in `BASE · max(1, n / knee)` with `n` in flight, and `503` beyond
/// `capacity`.
fn server(
    knee: usize,
    capacity: usize,
    counts: Arc<Counts>,
) -> impl Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send {
    tower::service_fn(move |request: Request| {
        let counts = counts.clone();
        async move {
            let n = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counts.peak.fetch_max(n, Ordering::SeqCst);
            let result = if n > capacity {
                counts.rejected.fetch_add(1, Ordering::SeqCst);
                Err(Error::from_status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    HeaderMap::new(),
                    b"",
                    None,
                    "test",
                ))
            } else {
                tokio::time::sleep(BASE.mul_f64((n as f64 / knee as f64).max(1.0))).await;
                counts.answered.fetch_add(1, Ordering::SeqCst);
                let body = Body::Full("{}".into());
                Ok(Response::new(
                    StatusCode::OK,
                    HeaderMap::new(),
                    body,
                    Timings::start(),
                    request.id(),
                ))
            };
            counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
    })
}

/// Sends `total` requests with `workers` callers, each retrying a 503 after 50 ms; returns
/// the limits each caller saw after the second half of its answers.
async fn drive(
    layer: &AdaptiveConcurrencyLimitLayer,
    service: impl Service<Request, Response = Response, Error = Error, Future: Send>
    + Clone
    + Send
    + 'static,
    total: usize,
    workers: usize,
) -> Vec<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = FuturesUnordered::new();
    for _ in 0..workers {
        let service = layer.clone().layer_service(service.clone());
        let next = next.clone();
        let layer = layer.clone();
        tasks.push(tokio::spawn(async move {
            let mut limits = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                loop {
                    let request = Request::post("/chat/completions", "{}").unwrap();
                    match service.clone().oneshot(request).await {
                        Ok(_) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                limits.push(layer.limit());
            }
            limits
        }));
    }
    let mut limits = Vec::new();
    while let Some(done) = tasks.next().await {
        let seen = done.unwrap();
        limits.extend_from_slice(&seen[seen.len() / 2..]);
    }
    limits
}

trait LayerService {
    fn layer_service<S>(self, inner: S) -> super::AdaptiveConcurrencyLimit<S>;
}

impl LayerService for AdaptiveConcurrencyLimitLayer {
    fn layer_service<S>(self, inner: S) -> super::AdaptiveConcurrencyLimit<S> {
        tower_layer::Layer::layer(&self, inner)
    }
}

#[tokio::test(start_paused = true)]
async fn settles_just_past_the_knee() {
    let counts = Arc::new(Counts::default());
    let layer = AdaptiveConcurrencyLimitLayer::new(512);
    let limits = drive(&layer, server(32, usize::MAX, counts.clone()), 6_000, 256).await;
    let late = &limits[..];
    let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
    eprintln!(
        "limit: mean {mean:.1} in the second half, last {}",
        layer.limit()
    );
    assert!((32.0..=48.0).contains(&mean), "mean limit {mean}");
    let outside = late.iter().filter(|&&l| !(24..=64).contains(&l)).count();
    assert!(
        outside * 20 <= late.len(),
        "{outside} of {} outside 24..=64",
        late.len()
    );
}

#[tokio::test(start_paused = true)]
async fn finds_a_hard_capacity_with_few_503s() {
    let counts = Arc::new(Counts::default());
    let layer = AdaptiveConcurrencyLimitLayer::new(512);
    drive(&layer, server(usize::MAX, 64, counts.clone()), 3_000, 256).await;
    let rejected = counts.rejected.load(Ordering::SeqCst);
    let answered = counts.answered.load(Ordering::SeqCst);
    eprintln!(
        "{answered} answered, {rejected} 503s, limit {}",
        layer.limit()
    );
    assert_eq!(answered, 3_000);
    assert!(rejected * 10 <= answered + rejected, "{rejected} 503s");
}

#[tokio::test(start_paused = true)]
async fn never_above_the_maximum() {
    let counts = Arc::new(Counts::default());
    let layer = AdaptiveConcurrencyLimitLayer::new(24);
    drive(
        &layer,
        server(usize::MAX, usize::MAX, counts.clone()),
        2_000,
        256,
    )
    .await;
    assert_eq!(layer.limit(), 24);
    assert_eq!(counts.peak.load(Ordering::SeqCst), 24);
}
