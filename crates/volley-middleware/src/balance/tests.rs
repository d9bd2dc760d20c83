//! The balancer against mock endpoints under paused time: counts are asserted, never times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use volley_core::{Body, Error, ErrorKind, Request, RequestId, Response, Timings};

use super::*;
use crate::balance::breaker::Admission;

/// A mock endpoint: answers `status` (0 = refuse the connection) after `latency`, and counts.
#[derive(Clone)]
struct Mock {
    status: Arc<AtomicU16>,
    latency: Duration,
    calls: Arc<AtomicU64>,
    gets: Arc<AtomicU64>,
}

impl Mock {
    fn new(status: u16, latency_ms: u64) -> Mock {
        Mock {
            status: Arc::new(AtomicU16::new(status)),
            latency: Duration::from_millis(latency_ms),
            calls: Arc::new(AtomicU64::new(0)),
            gets: Arc::new(AtomicU64::new(0)),
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Health checks (`GET`s) received.
    fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    fn service(&self) -> BoxCloneSyncService<Request, Response, Error> {
        let mock = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
            let mock = mock.clone();
            async move {
                mock.calls.fetch_add(1, Ordering::Relaxed);
                if request.method() == http::Method::GET {
                    mock.gets.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(mock.latency).await;
                let status = mock.status.load(Ordering::Relaxed);
                match status {
                    0 => Err(Error::new(ErrorKind::Connect, "refused")),
                    // The endpoint's own rate limiter held it past its deadline: unsent.
                    1 => Err(Error::new(ErrorKind::RateLimited, "held")
                        .with_retry_after(Some(Duration::from_secs(30)))
                        .with_request_sent(false)),
                    200..=399 => Ok(Response::new(
                        StatusCode::from_u16(status).unwrap(),
                        HeaderMap::new(),
                        Body::Full(Bytes::from_static(b"{}")),
                        Timings::start(),
                        request.id(),
                    )),
                    _ => Err(Error::from_status(
                        StatusCode::from_u16(status).unwrap(),
                        HeaderMap::new(),
                        b"{}",
                        None,
                        "mock",
                    )),
                }
            }
        }))
    }
}

type Svc = BoxCloneSyncService<Request, Response, Error>;

fn balance(endpoints: &[(EndpointConfig, &Mock)], breaker: BreakerConfig) -> Balance<Svc> {
    Balance::new(
        endpoints
            .iter()
            .map(|(c, m)| (c.clone(), m.service()))
            .collect(),
        breaker,
    )
}

fn request(id: u64) -> Request {
    Request::post("/chat/completions", "{}")
        .unwrap()
        .with_id(RequestId::from_u64(id))
}

async fn send(b: &Balance<Svc>, id: u64) -> Result<Response, Error> {
    b.clone().oneshot(request(id)).await
}

#[tokio::test(start_paused = true)]
async fn the_faster_endpoint_gets_most_of_a_closed_loop() {
    let fast = Mock::new(200, 100);
    let slow = Mock::new(200, 1000);
    let b = balance(
        &[
            (EndpointConfig::new("fast"), &fast),
            (EndpointConfig::new("slow"), &slow),
        ],
        BreakerConfig::new(),
    );
    let mut tasks = Vec::new();
    for worker in 0..64u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                send(&b, worker * 1000 + i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (f, s) = (fast.calls(), slow.calls());
    assert!(f * 100 >= (f + s) * 85, "fast {f}, slow {s}");
    assert!(s > 0, "the slow endpoint was never tried");
}

#[tokio::test(start_paused = true)]
async fn weights_share_traffic_between_equal_endpoints() {
    let heavy = Mock::new(200, 10);
    let light = Mock::new(200, 10);
    let b = balance(
        &[
            (EndpointConfig::new("heavy").weight(3), &heavy),
            (EndpointConfig::new("light"), &light),
        ],
        BreakerConfig::new(),
    );
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                send(&b, worker * 1000 + i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (h, l) = (heavy.calls(), light.calls());
    assert!(h > 2 * l, "heavy {h}, light {l}");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_on_5xx_and_connect_errors_but_not_on_4xx_or_429() {
    let breaker = BreakerConfig::new().consecutive_failures(3).error_rate(2.0);
    for (status, opens) in [
        (503, true),
        (0, true),
        (500, true),
        (400, false),
        (404, false),
        (429, false),
    ] {
        let bad = Mock::new(status, 1);
        let b = balance(&[(EndpointConfig::new("bad"), &bad)], breaker.clone());
        for i in 0..10 {
            let _ = send(&b, i).await;
        }
        let stats = &b.stats()[0];
        assert_eq!(
            stats.state == BreakerState::Open,
            opens,
            "status {status}: {stats:?}"
        );
        if opens {
            assert_eq!(bad.calls(), 3, "status {status}: sent after opening");
            let error = send(&b, 99).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Connect);
            assert!(!error.is_request_sent());
        } else {
            assert_eq!(bad.calls(), 10);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_endpoint_gets_nothing_until_its_probe_and_closes_when_healthy() {
    let good = Mock::new(200, 5);
    let flaky = Mock::new(503, 5);
    let b = balance(
        &[
            (EndpointConfig::new("good"), &good),
            (EndpointConfig::new("flaky"), &flaky),
        ],
        BreakerConfig::new()
            .consecutive_failures(2)
            .cool_down(Duration::from_secs(10))
            .jitter(0.0)
            .probes(1)
            .health_check(None),
    );
    for i in 0..200 {
        let _ = send(&b, i).await;
    }
    assert_eq!(flaky.calls(), 2, "only the failures that opened it");
    assert_eq!(b.stats()[1].state, BreakerState::Open);
    flaky.status.store(200, Ordering::Relaxed);
    tokio::time::advance(Duration::from_secs(10)).await;
    for i in 200..400 {
        send(&b, i).await.unwrap();
    }
    let stats = b.stats();
    assert_eq!(stats[1].state, BreakerState::Closed);
    assert_eq!(stats[1].breaker_opened, 1);
    assert!(
        flaky.calls() > 10,
        "closed again, it takes traffic: {}",
        flaky.calls()
    );
}

/// A half-open endpoint chosen for a request while its one probe slot was free, whose slot
/// another request took before this one was admitted: this one goes to another endpoint, or
/// is refused when there is none, and is not counted there; it is never sent as a second
/// probe.
#[tokio::test(start_paused = true)]
async fn a_request_that_loses_the_last_probe_slot_is_not_sent_there() {
    let breaker = BreakerConfig::new()
        .consecutive_failures(2)
        .cool_down(Duration::from_secs(10))
        .jitter(0.0)
        .probes(1)
        .health_check(None);
    let good = Mock::new(200, 5);
    let flaky = Mock::new(503, 5);
    let b = balance(
        &[
            (EndpointConfig::new("good"), &good),
            (EndpointConfig::new("flaky"), &flaky),
        ],
        breaker.clone(),
    );
    for i in 0..200 {
        let _ = send(&b, i).await;
    }
    assert_eq!(b.stats()[1].state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    let selector = &b.shared.selector;
    let now = Instant::now();
    // Request 1 000 chose "flaky" a moment ago; request 1 001 is admitted there first.
    assert!(matches!(
        selector.endpoints[1].admit(now),
        Admission::Probe(_)
    ));
    let sent_to_flaky = b.stats()[1].requests;
    assert_eq!(
        selector.admit_from(1, 1_000, now, None).ok(),
        Some((0, Admission::Yes))
    );
    assert_eq!(b.stats()[1].requests, sent_to_flaky, "not counted at flaky");

    // Alone: refused.
    let lone = Mock::new(503, 5);
    let b = balance(&[(EndpointConfig::new("lone"), &lone)], breaker);
    for i in 0..2 {
        let _ = send(&b, i).await;
    }
    assert_eq!(b.stats()[0].state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    let selector = &b.shared.selector;
    let now = Instant::now();
    assert!(matches!(
        selector.endpoints[0].admit(now),
        Admission::Probe(_)
    ));
    assert!(selector.admit_from(0, 1_000, now, None).is_err());
    assert_eq!(b.stats()[0].requests, 3, "two failures and the probe");
    let error = send(&b, 1_000).await.unwrap_err();
    assert!(!error.is_request_sent(), "{error}");
    assert_eq!(lone.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_to_another_endpoint() {
    let a = Mock::new(500, 1);
    let b_mock = Mock::new(500, 1);
    let b = balance(
        &[
            (EndpointConfig::new("a"), &a),
            (EndpointConfig::new("b"), &b_mock),
        ],
        BreakerConfig::new().consecutive_failures(0).error_rate(2.0),
    );
    // Each request is sent twice with one id, as the retry layer does: the second attempt
    // never goes where the first failed.
    for id in 1..=100 {
        let before = (a.calls(), b_mock.calls());
        send(&b, id).await.unwrap_err();
        let first_a = a.calls() > before.0;
        send(&b, id).await.unwrap_err();
        let second_a = a.calls() > before.0 + u64::from(first_a);
        assert_ne!(
            first_a, second_a,
            "request {id} was sent to the same endpoint twice"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_fallback_group_gets_traffic_only_while_the_first_is_open() {
    let primary = Mock::new(200, 5);
    let fallback = Mock::new(200, 1);
    let b = balance(
        &[
            (EndpointConfig::new("primary"), &primary),
            (EndpointConfig::new("fallback").priority(1), &fallback),
        ],
        BreakerConfig::new()
            .consecutive_failures(3)
            .cool_down(Duration::from_secs(30))
            .jitter(0.0),
    );
    for i in 0..100 {
        send(&b, i).await.unwrap();
    }
    assert_eq!(
        fallback.calls(),
        0,
        "the fallback is faster but of a lower priority"
    );
    primary.status.store(502, Ordering::Relaxed);
    for i in 100..200 {
        let _ = send(&b, i).await;
    }
    assert_eq!(b.stats()[0].state, BreakerState::Open);
    assert_eq!(primary.calls(), 103);
    assert!(fallback.calls() >= 97, "{}", fallback.calls());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_answered_429_gets_less_traffic() {
    let limited = Mock::new(429, 1);
    let other = Mock::new(200, 1);
    let b = balance(
        &[
            (EndpointConfig::new("limited"), &limited),
            (EndpointConfig::new("other"), &other),
        ],
        BreakerConfig::new(),
    );
    for i in 0..200 {
        let _ = send(&b, i).await;
    }
    let stats = b.stats();
    assert_eq!(stats[0].state, BreakerState::Closed, "429 is not a failure");
    assert!(
        limited.calls() * 10 < other.calls(),
        "{} vs {}",
        limited.calls(),
        other.calls()
    );
}

/// An endpoint that refuses at once (a revoked key: 401; a model it does not serve: 404; its
/// quota used up) does not look like the fastest one: most requests go to the endpoint that
/// answers, slowly, and the refusing one keeps its breaker closed.
#[tokio::test(start_paused = true)]
async fn an_endpoint_that_refuses_fast_gets_little_traffic() {
    for status in [401, 403, 404] {
        let refusing = Mock::new(status, 5);
        let good = Mock::new(200, 2_000);
        let b = balance(
            &[
                (EndpointConfig::new("refusing"), &refusing),
                (EndpointConfig::new("good"), &good),
            ],
            BreakerConfig::new(),
        );
        for i in 0..200 {
            let _ = send(&b, i).await;
        }
        let stats = b.stats();
        assert_eq!(stats[0].state, BreakerState::Closed, "{status}");
        // The refusals' cost weighs on its load only, not on its answers' mean latency.
        assert_eq!(stats[0].mean_latency, None, "{status}");
        assert!(
            refusing.calls() * 5 < good.calls(),
            "{status}: {} vs {}",
            refusing.calls(),
            good.calls()
        );
    }
}

/// An endpoint whose own rate limiter fails requests unsent (held past their deadline by a
/// pause) does not look like the fastest one: it is rate-limited for the wait, its instant
/// failures are no latency and no 429 of the provider's, and most requests go to the other.
#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_limiter_holds_requests_back_gets_little_traffic() {
    let held = Mock::new(1, 0);
    let good = Mock::new(200, 2_000);
    let b = balance(
        &[
            (EndpointConfig::new("held"), &held),
            (EndpointConfig::new("good"), &good),
        ],
        BreakerConfig::new(),
    );
    for i in 0..200 {
        let _ = send(&b, i).await;
    }
    let stats = b.stats();
    assert_eq!(stats[0].state, BreakerState::Closed);
    assert_eq!(stats[0].mean_latency, None);
    assert_eq!(stats[0].rate_limited, 0, "not the provider's 429");
    assert!(
        held.calls() * 10 < good.calls(),
        "{} vs {}",
        held.calls(),
        good.calls()
    );
}

/// Refusals between failures do not reset the breaker's count of failures in a row: 503s
/// interleaved with 401s (one tenant's bad key) still open it.
#[tokio::test(start_paused = true)]
async fn refusals_between_failures_do_not_keep_a_breaker_closed() {
    let mock = Mock::new(503, 1);
    let b = balance(
        &[(EndpointConfig::new("flaky"), &mock)],
        BreakerConfig::new().consecutive_failures(3).error_rate(2.0),
    );
    for (i, status) in [503, 401, 503, 401, 503].into_iter().enumerate() {
        mock.status.store(status, Ordering::Relaxed);
        let _ = send(&b, i as u64).await;
    }
    assert_eq!(b.stats()[0].state, BreakerState::Open);
}

/// A stream in progress counts as in flight at its endpoint until it ends or is dropped, not
/// only until its head: the load p2c compares and the endpoint's cap see the streams running.
#[tokio::test(start_paused = true)]
async fn a_stream_counts_as_in_flight_until_it_ends() {
    let streaming: Svc =
        BoxCloneSyncService::new(tower::service_fn(|request: Request| async move {
            let body = volley_core::BodyStream::new(futures_util::stream::pending());
            Ok::<_, Error>(Response::new(
                StatusCode::OK,
                HeaderMap::new(),
                Body::Stream(body),
                Timings::start(),
                request.id(),
            ))
        }));
    let b = Balance::new(
        vec![(EndpointConfig::new("streams"), streaming)],
        BreakerConfig::new(),
    );
    let response = send(&b, 1).await.unwrap();
    assert!(response.is_stream());
    assert_eq!(b.stats()[0].in_flight, 1, "the stream runs");
    drop(response);
    assert_eq!(b.stats()[0].in_flight, 0, "the stream was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_attempt_frees_its_place() {
    let slow = Mock::new(200, 10_000);
    let b = balance(
        &[(EndpointConfig::new("slow"), &slow)],
        BreakerConfig::new(),
    );
    let mut svc = b.clone();
    svc.ready().await.unwrap();
    let future = svc.call(request(1));
    assert_eq!(b.stats()[0].in_flight, 1);
    drop(future);
    assert_eq!(b.stats()[0].in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_goes_to_the_lower_latency() {
    // Nothing is ever outstanding here, so only the Peak-EWMA cost tells the two apart.
    let slow = Mock::new(200, 1000);
    let fast = Mock::new(200, 100);
    let b = balance(
        &[
            (EndpointConfig::new("slow"), &slow),
            (EndpointConfig::new("fast"), &fast),
        ],
        BreakerConfig::new(),
    );
    for i in 0..200 {
        send(&b, i).await.unwrap();
    }
    let (f, s) = (fast.calls(), slow.calls());
    assert!(f >= 180, "fast {f}, slow {s}");
}

#[test]
fn attempts_and_breaker_changes_are_counted_per_endpoint() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let good = Mock::new(200, 1);
            let dead = Mock::new(503, 1);
            let b = balance(
                &[
                    (EndpointConfig::new("good"), &good),
                    (EndpointConfig::new("dead"), &dead),
                ],
                BreakerConfig::new().consecutive_failures(2).error_rate(2.0),
            );
            for i in 0..20 {
                let _ = send(&b, i).await;
            }
        })
    });
    let counters: std::collections::BTreeMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else {
                return None;
            };
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Some((format!("{}{{{}}}", key.name(), labels.join(",")), n))
        })
        .collect();
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("volley_endpoint_requests_total{endpoint=dead,outcome=sent}"),
        2
    );
    assert_eq!(
        get("volley_endpoint_requests_total{endpoint=dead,outcome=server_error}"),
        2
    );
    assert_eq!(
        get("volley_endpoint_requests_total{endpoint=good,outcome=answered}"),
        18
    );
    assert_eq!(
        get("volley_endpoint_breaker_transitions_total{endpoint=dead,state=open}"),
        1,
        "{counters:?}"
    );
}

/// A balancer of a "good" endpoint (200) and a "dead" one (503), whose breakers open after
/// two failures in a row for 10 s (no jitter, one probe), with `max_cool_down`.
fn good_and_dead(max_cool_down: Duration) -> (Balance<Svc>, Mock, Mock) {
    let good = Mock::new(200, 1);
    let dead = Mock::new(503, 1);
    let b = balance(
        &[
            (EndpointConfig::new("good"), &good),
            (EndpointConfig::new("dead"), &dead),
        ],
        BreakerConfig::new()
            .consecutive_failures(2)
            .error_rate(2.0)
            .cool_down(Duration::from_secs(10))
            .max_cool_down(max_cool_down)
            .jitter(0.0)
            .probes(1),
    );
    (b, good, dead)
}

#[tokio::test(start_paused = true)]
async fn an_open_endpoint_is_checked_not_sent_requests_and_a_healthy_one_never() {
    let (b, good, dead) = good_and_dead(Duration::from_secs(40));
    let mut id = 0;
    let mut burst = |n: u64| {
        let b = b.clone();
        let start = id;
        id += n;
        async move {
            for i in start..start + n {
                let _ = send(&b, i).await;
            }
        }
    };
    burst(100).await;
    assert_eq!(b.stats()[1].state, BreakerState::Open);
    // 70 s of traffic: checks at 10 s, 30 s (20 s cool-down) and 70 s (40 s), no request.
    for _ in 0..7 {
        tokio::time::advance(Duration::from_secs(10)).await;
        burst(20).await;
    }
    assert_eq!(
        dead.calls() - dead.gets(),
        2,
        "user requests reached the dead endpoint"
    );
    assert_eq!(dead.gets(), 3, "one check per cool-down, doubling");
    assert_eq!(b.stats()[1].health_checks, 3);
    assert_eq!(good.gets(), 0, "a healthy endpoint was checked");
    // It recovers: the next check passes, probes close the breaker, traffic returns.
    dead.status.store(200, Ordering::Relaxed);
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(10)).await;
        burst(50).await;
    }
    assert_eq!(b.stats()[1].state, BreakerState::Closed);
    assert!(dead.calls() - dead.gets() > 10, "{}", dead.calls());
}

/// A mock endpoint whose every `slow_every`-th call takes `slow` instead of `fast`.
fn bimodal(calls: Arc<AtomicU64>, fast: Duration, slow: Duration, slow_every: u64) -> Svc {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            let wait = if n.is_multiple_of(slow_every) {
                slow
            } else {
                fast
            };
            tokio::time::sleep(wait).await;
            Ok(Response::new(
                StatusCode::OK,
                HeaderMap::new(),
                Body::Full(Bytes::from_static(b"{}")),
                Timings::start(),
                request.id(),
            ))
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_hedged_to_another_endpoint_within_the_budget() {
    let (a_calls, b_calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let fast = Duration::from_millis(100);
    let slow = Duration::from_secs(20);
    let b = Balance::with_hedging(
        vec![
            (
                EndpointConfig::new("a"),
                bimodal(a_calls.clone(), fast, slow, 20),
            ),
            (
                EndpointConfig::new("b"),
                bimodal(b_calls.clone(), fast, slow, 20),
            ),
        ],
        BreakerConfig::new(),
        Some(Hedging::after(Duration::from_millis(300)).budget(0.05)),
    );
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..100 {
                let started = tokio::time::Instant::now();
                send(&b, worker * 1000 + i).await.unwrap();
                slowest = slowest.max(started.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    let requests = 800;
    let hedges = b.hedges();
    assert!(hedges > 0, "nothing was hedged");
    assert!(
        hedges as f64 <= requests as f64 * 0.05 + 10.0,
        "{hedges} hedges for {requests} requests"
    );
    // Every request answered well before a slow attempt would have: the hedge won.
    assert!(slowest < Duration::from_secs(2), "slowest {slowest:?}");
    let sent = a_calls.load(Ordering::Relaxed) + b_calls.load(Ordering::Relaxed);
    assert_eq!(sent, requests + hedges);
    let stats = b.stats();
    assert_eq!(
        stats[0].in_flight + stats[1].in_flight,
        0,
        "losers were not released"
    );
}

/// A learned delay on a lone endpoint: nothing is hedged before 32 answers, then the slow
/// attempts (every 20th, 20 s) are hedged to the same endpoint after about the 90th
/// percentile of the fast ones, and no request waits for a slow attempt.
#[tokio::test(start_paused = true)]
async fn a_lone_endpoint_hedges_to_itself_after_the_learned_percentile() {
    let calls = Arc::new(AtomicU64::new(0));
    let b = Balance::with_hedging(
        vec![(
            EndpointConfig::new("alone"),
            bimodal(
                calls.clone(),
                Duration::from_millis(100),
                Duration::from_secs(20),
                20,
            ),
        )],
        BreakerConfig::new(),
        Some(Hedging::at_percentile(90.0).budget(0.1)),
    );
    // Sequential warm-up: every 20th is slow and not hedged yet (nothing learned).
    for i in 0..32 {
        send(&b, i).await.unwrap();
    }
    assert_eq!(b.hedges(), 0, "hedged before the delay was learned");
    let mut slowest = Duration::ZERO;
    for i in 32..200 {
        let started = tokio::time::Instant::now();
        send(&b, i).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    assert!(b.hedges() > 0, "nothing was hedged");
    // The hedge (a fresh call, fast unless it is itself a 20th) answered long before 20 s.
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 200 + b.hedges());
    assert_eq!(b.stats()[0].in_flight, 0, "the loser was not released");
}

/// A client that outlives the runtime its breaker opened on (a `block_on` per batch, per-test
/// runtimes) lost the health check with that runtime, and the open breaker then waited for
/// its verdict for good: the endpoint never got a request again. Now real requests probe
/// when the cool-down ends, as without a health check, and the endpoint comes back.
#[test]
fn a_breaker_whose_health_check_went_with_its_runtime_still_reopens() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let first = paused();
    let (b, _good, dead) = first.block_on(async {
        let endpoints = good_and_dead(Duration::from_secs(60));
        for id in 0..100 {
            let _ = send(&endpoints.0, id).await;
        }
        endpoints
    });
    assert_eq!(b.stats()[1].state, BreakerState::Open);
    // The check's task goes with its runtime.
    drop(first);
    dead.status.store(200, Ordering::Relaxed);
    let before = dead.calls();
    paused().block_on(async {
        tokio::time::advance(Duration::from_secs(15)).await;
        for id in 100..300 {
            let _ = send(&b, id).await;
        }
    });
    assert_eq!(b.stats()[1].state, BreakerState::Closed);
    assert!(dead.calls() - before > 10, "{}", dead.calls() - before);
}

/// The counts between two snapshots, and the mean latency of the answers in between: ten
/// answers of 100 ms, then ten of 300 ms, make a mean of 200 ms, and 300 ms since the first
/// ten.
#[test]
fn stats_since_an_earlier_snapshot_are_what_happened_in_between() {
    let b = balance(
        &[(EndpointConfig::new("a"), &Mock::new(200, 1))],
        BreakerConfig::new(),
    );
    let mut earlier = b.stats().remove(0);
    earlier.requests = 10;
    earlier.answered = 10;
    earlier.timed_answers = 10;
    earlier.mean_latency = Some(Duration::from_millis(100));
    let mut now = earlier.clone();
    now.requests = 22;
    now.answered = 20;
    now.failed = 2;
    now.timed_answers = 20;
    now.mean_latency = Some(Duration::from_millis(200));
    let since = now.since(&earlier);
    assert_eq!((since.requests, since.answered, since.failed), (12, 10, 2));
    assert_eq!(since.timed_answers, 10);
    assert_eq!(since.mean_latency, Some(Duration::from_millis(300)));
    assert_eq!(since.name, "a");
    // Nothing answered in between: no mean.
    assert_eq!(earlier.since(&earlier).mean_latency, None);
}
