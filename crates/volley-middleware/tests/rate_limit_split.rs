//! Input- and output-token limits (Anthropic's ITPM and OTPM) in paused time: each paces by
//! its own estimate, and each is settled with its own count from the answer's usage. Counts
//! of requests sent within a span of paused time, never wall-clock times.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tower::{Service, ServiceExt as _};
use volley_core::{Body, Dialect, Error, Request, Response, Timings};
use volley_middleware::rate_limit::{Limits, LocalLimiter, RateLimit, RateLimitLayer};

/// Answers every request with an Anthropic message reporting `input` and `output` tokens.
#[derive(Clone)]
struct Answer {
    sent: Arc<AtomicU64>,
    usage: &'static str,
    headers: HeaderMap,
}

impl Service<Request> for Answer {
    type Response = Response;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{}}}"#,
            self.usage
        );
        let response = Response::new(
            StatusCode::OK,
            self.headers.clone(),
            Body::Full(Bytes::from(body)),
            Timings::start(),
            request.id(),
        );
        Box::pin(async move { Ok(response) })
    }
}

/// A Messages request asking for at most `max_tokens`, with a prompt of about 25 tokens.
fn messages(max_tokens: u32) -> Request {
    let body = format!(
        r#"{{"model":"claude","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "word ".repeat(20)
    );
    Request::post("/messages", body)
        .unwrap()
        .with_dialect(Dialect::Anthropic)
}

fn exact() -> Limits {
    Limits::per_minute()
        .headroom(0.0)
        .jitter_margin(Duration::ZERO)
}

fn service(limits: Limits, usage: &'static str) -> (RateLimit<Answer>, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let limiter = LocalLimiter::new(limits).unwrap();
    let inner = Answer {
        sent: sent.clone(),
        usage,
        headers: HeaderMap::new(),
    };
    let svc = tower::Layer::layer(&RateLimitLayer::with_limiter(limiter), inner);
    (svc, sent)
}

/// Sends requests one after another for `span` of paused time; how many were answered.
async fn answered_within(svc: RateLimit<Answer>, max_tokens: u32, span: Duration) -> u64 {
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let run = async move {
        for _ in 0..1_000 {
            svc.clone().oneshot(messages(max_tokens)).await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
        }
    };
    let _ = tokio::time::timeout(span, run).await;
    answered.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn the_output_limit_is_settled_with_the_reported_output() {
    // 6 000 output tokens a minute: 100 a second, a burst of 100. Each request may use 100,
    // so without settlement one goes per second; the answers report 10, so the unused 90 are
    // given back and about ten go per second.
    let limits = exact().output_tokens(6_000);
    let usage = r#"{"input_tokens":25,"output_tokens":10}"#;
    let (svc, sent) = service(limits.clone(), usage);
    let settled = answered_within(svc, 100, Duration::from_millis(2_500)).await;
    assert!((20..=30).contains(&settled), "{settled} answered");
    assert_eq!(sent.load(Ordering::Relaxed), settled);

    // Answers that used the whole budget: one a second.
    let (svc, _) = service(limits, r#"{"input_tokens":25,"output_tokens":100}"#);
    let unsettled = answered_within(svc, 100, Duration::from_millis(2_500)).await;
    assert!((2..=4).contains(&unsettled), "{unsettled} answered");
}

#[tokio::test(start_paused = true)]
async fn the_input_limit_paces_by_the_prompt_alone() {
    // 1 200 input tokens a minute: 20 a second, a burst of 20; a prompt of about 25 tokens
    // waits for its tokens; the output budget is not charged to it.
    let usage = r#"{"input_tokens":25,"output_tokens":5000}"#;
    let (svc, _) = service(exact().input_tokens(1_200), usage);
    let input_bound = answered_within(svc, 5_000, Duration::from_millis(10_500)).await;
    assert!((7..=10).contains(&input_bound), "{input_bound} answered");

    // Cached prompt tokens do not count toward an input limit, as Anthropic counts them.
    let cached = r#"{"input_tokens":2,"cache_read_input_tokens":23,"output_tokens":5}"#;
    let (svc, _) = service(exact().input_tokens(1_200), cached);
    let with_cache = answered_within(svc, 5_000, Duration::from_millis(10_500)).await;
    assert!(
        with_cache > 2 * input_bound,
        "{with_cache} vs {input_bound}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prompt_above_a_minute_of_input_is_refused_at_once() {
    let (svc, sent) = service(exact().input_tokens(10), r#"{"input_tokens":1}"#);
    let error = svc.oneshot(messages(5)).await.unwrap_err();
    assert_eq!(error.kind(), volley_core::ErrorKind::InvalidInput);
    assert!(
        error.to_string().contains("input-tokens-per-minute budget"),
        "{error}"
    );
    assert_eq!(sent.load(Ordering::Relaxed), 0);
}

/// With no limit given, an Anthropic output limit learned from the first answer paces the
/// requests that were held behind the slow start's probes: they were made before any limit
/// was known, yet carry their output estimates. 6 000 output tokens a minute (100 a second, a
/// burst of 100), 20 requests of up to 100 output tokens made at once, answers that use 10:
/// the four probes settle 40 against the new bucket, and the held requests then reserve 100
/// each, so only a few go within two seconds (without the estimates all 16 went at once).
#[tokio::test(start_paused = true)]
async fn an_output_limit_learned_paces_the_requests_held_by_the_slow_start() {
    let sent = Arc::new(AtomicU64::new(0));
    let mut headers = HeaderMap::new();
    headers.insert(
        "anthropic-ratelimit-output-tokens-limit",
        http::HeaderValue::from_static("6000"),
    );
    let answer = Answer {
        sent: sent.clone(),
        usage: r#"{"input_tokens":25,"output_tokens":10}"#,
        headers,
    };
    // Answers take 10 ms, so all 20 are made before the first comes back.
    let inner = tower::service_fn(move |request: Request| {
        let answer = answer.clone().call(request);
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            answer.await
        }
    });
    let limits = Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO);
    let svc = tower::Layer::layer(&RateLimitLayer::new(limits).unwrap(), inner);
    let calls: Vec<_> = (0..20)
        .map(|_| svc.clone().oneshot(messages(100)))
        .collect();
    let run = futures_util::future::join_all(calls);
    let _ = tokio::time::timeout(Duration::from_secs(2), run).await;
    let within = sent.load(Ordering::Relaxed);
    assert!((5..=8).contains(&within), "{within} sent within 2 s");
}
