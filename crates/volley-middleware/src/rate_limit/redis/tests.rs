//! Unit tests: the dispatcher against the in-memory model of the script, in paused time.
//! (The script itself is tested against a real Redis in `tests/redis_limit.rs`.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;
use volley_core::{ErrorKind, RequestId};

use super::store::{Call, Model, Store, StoreFuture};
use super::*;
use crate::redis::RedisOptions;

/// A model several limiters ("processes") can share.
struct Shared(Arc<Model>);

impl Store for Shared {
    fn call<'a>(&'a self, call: &'a Call) -> StoreFuture<'a> {
        self.0.call(call)
    }
}

/// No headroom and no jitter margin, so times are round numbers.
fn exact() -> Limits {
    Limits::per_minute()
        .headroom(0.0)
        .jitter_margin(Duration::ZERO)
}

fn options(limits: Limits) -> SharedLimits {
    SharedLimits::new(RedisOptions::new("redis://:hunter2@127.0.0.1:1"), limits)
}

fn model_for(options: &SharedLimits) -> Arc<Model> {
    let config = options.resolve().unwrap();
    Arc::new(Model::new(config.requests, config.tokens))
}

/// A limiter over `model`, as `connect` builds one.
async fn process(options: &SharedLimits, model: &Arc<Model>) -> RedisLimiter {
    let config = options.resolve().unwrap();
    let local = match config.failure {
        FailureMode::LocalFallback { processes } => {
            Some(LocalLimiter::new(config.fallback_limits(processes)).unwrap())
        }
        FailureMode::FailClosed => None,
    };
    let first = model.call(&Call::default()).await.unwrap();
    RedisLimiter::start(config, Box::new(Shared(model.clone())), local, &first)
}

fn cost(requests: u32, tokens: u64) -> Cost {
    Cost {
        requests,
        tokens,
        ..Cost::ZERO
    }
}

/// Acquires in a task, returning when (seconds after `start`) the grant came.
fn spawn_acquire(
    limiter: &RedisLimiter,
    id: u64,
    cost: Cost,
    start: Instant,
) -> tokio::task::JoinHandle<f64> {
    let acquire = limiter.acquire(RequestId::from_u64(id), cost);
    tokio::spawn(async move {
        acquire.await.unwrap();
        start.elapsed().as_secs_f64()
    })
}

/// Asserts `actual` is within `tolerance` of `expected`, plus the model's round trip (2 ms
/// of paused time: its latency rounded up to the timer's millisecond, twice).
fn assert_near(actual: f64, expected: f64, tolerance: f64) {
    let tolerance = tolerance + 0.005;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} s, expected {expected} s"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_acquires_share_one_round_trip_and_go_in_order() {
    // 600 a minute, burst 1: 100 ms apart.
    let options = options(exact().requests(600).burst_requests(1));
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    let start = Instant::now();
    let handles: Vec<_> = (0..5)
        .map(|i| spawn_acquire(&limiter, i, cost(1, 0), start))
        .collect();
    let mut at = Vec::new();
    for handle in handles {
        at.push(handle.await.unwrap());
    }
    for (i, at) in at.iter().enumerate() {
        assert_near(*at, i as f64 * 0.1, 0.002);
    }
    // One call reserved all five (the others: connecting, and checks for pauses while they
    // waited).
    let log = model.log.lock().unwrap().clone();
    let sizes: Vec<usize> = log.iter().map(|call| call.reserve.len()).collect();
    assert_eq!(
        sizes.iter().filter(|&&n| n > 0).collect::<Vec<_>>(),
        [&5],
        "{sizes:?}"
    );
    assert_eq!(limiter.stats().reservations, 5);
}

#[tokio::test(start_paused = true)]
async fn a_cost_above_a_minute_fails_at_once_and_nothing_limited_needs_no_redis() {
    let limited = options(exact().tokens(100_000));
    let model = model_for(&limited);
    let limiter = process(&limited, &model).await;
    let err = limiter
        .acquire(RequestId::from_u64(12), cost(1, 150_000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "invalid_input error: request 12 needs an estimated 150 000 tokens, more than the \
         whole tokens-per-minute budget of 100 000"
    );
    let nothing = options(Limits::per_minute());
    let model = model_for(&nothing);
    let unlimited = process(&nothing, &model).await;
    unlimited
        .acquire(RequestId::from_u64(1), cost(1, 10))
        .await
        .unwrap();
    assert_eq!(
        model.calls.load(Ordering::Relaxed),
        1,
        "only the connect call"
    );
}

/// 6 000 tokens a minute: 100 a second, burst 100.
fn six_thousand_tpm() -> SharedLimits {
    options(exact().tokens(6_000))
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_gives_its_reservation_back() {
    let options = six_thousand_tpm();
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    let start = Instant::now();
    limiter
        .acquire(RequestId::from_u64(1), cost(1, 100))
        .await
        .unwrap();
    // Due at 1 s; given up at 0.5 s.
    let waiting = spawn_acquire(&limiter, 2, cost(1, 100), start);
    tokio::time::sleep(Duration::from_millis(500)).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(20)).await;
    limiter
        .acquire(RequestId::from_u64(3), cost(1, 100))
        .await
        .unwrap();
    assert_near(start.elapsed().as_secs_f64(), 1.0, 0.002);
}

#[tokio::test(start_paused = true)]
async fn settlement_refunds_and_charges_reach_the_shared_bucket() {
    for (used, refund_unused, second_at) in [(10, true, 0.1f64), (10, false, 1.0), (250, true, 2.5)]
    {
        let options = options(exact().tokens(6_000).refund_unused(refund_unused));
        let model = model_for(&options);
        let limiter = process(&options, &model).await;
        let start = Instant::now();
        let grant = limiter
            .acquire(RequestId::from_u64(1), cost(1, 100))
            .await
            .unwrap();
        limiter.settle(grant, used);
        // The report goes within the flush delay.
        tokio::time::sleep(Duration::from_millis(10)).await;
        limiter
            .acquire(RequestId::from_u64(2), cost(1, 100))
            .await
            .unwrap();
        assert_near(start.elapsed().as_secs_f64(), second_at, 0.002);
    }
}

#[tokio::test(start_paused = true)]
async fn released_grants_give_their_cost_back() {
    let options = six_thousand_tpm();
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    let start = Instant::now();
    let grant = limiter
        .acquire(RequestId::from_u64(1), cost(1, 100))
        .await
        .unwrap();
    limiter.release(grant);
    tokio::time::sleep(Duration::from_millis(10)).await;
    limiter
        .acquire(RequestId::from_u64(2), cost(1, 100))
        .await
        .unwrap();
    assert_near(start.elapsed().as_secs_f64(), 0.01, 0.002);
}

#[tokio::test(start_paused = true)]
async fn leases_grant_without_round_trips_and_return_what_is_not_used() {
    // 60 000 a minute: 1 000 a second, burst 1 000.
    // The default jitter margin: a leased permit can be taken up to 12.5 ms after its time.
    let options = options(Limits::per_minute().requests(60_000).headroom(0.0)).lease(8);
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    for i in 0..64 {
        limiter
            .acquire(RequestId::from_u64(i), cost(1, 0))
            .await
            .unwrap();
    }
    let stats = limiter.stats();
    let calls = model.calls.load(Ordering::Relaxed);
    assert!(calls <= 20, "{calls} round trips for 64 requests");
    assert!(stats.lease_hits >= 48, "{stats:?}");
    // Idle: the permits still leased go back once their grace is over.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = limiter.stats();
    assert_eq!(
        stats.lease_hits + stats.leases_returned,
        stats.leased,
        "{stats:?}"
    );
    let returned: u64 = model
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.give_back[0])
        .sum();
    assert_eq!(returned, stats.leases_returned);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_a_leased_permit_is_reserved_exactly_in_order() {
    let options = options(exact().tokens(600_000)).lease(4);
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    limiter
        .acquire(RequestId::from_u64(1), cost(1, 100))
        .await
        .unwrap();
    assert_eq!(limiter.stats().leased, 3);
    // Needs more than the 100 a permit carries: all three go back, and it is reserved alone.
    limiter
        .acquire(RequestId::from_u64(2), cost(1, 500))
        .await
        .unwrap();
    let stats = limiter.stats();
    assert_eq!(stats.leases_returned, 3, "{stats:?}");
    assert_eq!(stats.reservations, 2);
}

#[tokio::test(start_paused = true)]
async fn a_pause_seen_by_one_process_pushes_back_what_another_has_waiting() {
    // 120 a minute, burst 1: 0.5 s apart; two processes on one state.
    let options = options(exact().requests(120).burst_requests(1));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let b = process(&options, &model).await;
    let start = Instant::now();
    let waiting: Vec<_> = (0..4)
        .map(|i| spawn_acquire(&a, i, cost(1, 0), start))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B's request got a 429 asking for 2 s.
    let observation = Observation {
        rate_limited: true,
        retry_after: Some(Duration::from_secs(2)),
        ..Observation::from_headers(&HeaderMap::new())
    };
    b.observe(&observation);
    let mut at = Vec::new();
    for handle in waiting {
        at.push(handle.await.unwrap());
    }
    // The first went at once; the others were due at 0.5, 1 and 1.5 s and move by 2 s, which
    // A learns within its sync interval.
    assert_near(at[0], 0.0, 0.0);
    for (i, at) in at.iter().enumerate().skip(1) {
        assert_near(*at, i as f64 * 0.5 + 2.0, 0.0);
    }
    assert_eq!(a.stats().pauses, 1);
    // And new requests of either process queue after them.
    b.acquire(RequestId::from_u64(9), cost(1, 0)).await.unwrap();
    assert_near(start.elapsed().as_secs_f64(), 4.0, 0.0);
}

#[tokio::test(start_paused = true)]
async fn failing_closed_waits_for_redis_and_never_errors() {
    let options = options(exact().requests(600));
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    model.down.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let waiting = spawn_acquire(&limiter, 1, cost(1, 0), start);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!waiting.is_finished());
    model.down.store(false, Ordering::Relaxed);
    let at = waiting.await.unwrap();
    // Retried with backoff capped at 2 s.
    assert!((3.0..=5.1).contains(&at), "granted at {at} s");
    let stats = limiter.stats();
    assert!(stats.errors >= 3, "{stats:?}");
    assert!(!stats.fallback_active);
}

#[tokio::test(start_paused = true)]
async fn the_local_fallback_runs_at_its_share_and_hands_back_to_redis() {
    // 600 a minute shared by 4: 150 a minute (one per 0.4 s), burst 2, while Redis is down.
    let options =
        options(exact().requests(600)).on_failure(FailureMode::LocalFallback { processes: 4 });
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    model.down.store(true, Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..6 {
        limiter
            .acquire(RequestId::from_u64(i), cost(1, 0))
            .await
            .unwrap();
    }
    // Two at once, then four at 0.4 s intervals.
    assert_near(start.elapsed().as_secs_f64(), 1.6, 0.01);
    let stats = limiter.stats();
    assert!(stats.fallback_active, "{stats:?}");
    assert_eq!((stats.fallbacks, stats.local_grants), (1, 6));
    // Grants of the fallback settle locally (nothing reaches the model).
    let grant = limiter
        .acquire(RequestId::from_u64(7), cost(1, 0))
        .await
        .unwrap();
    assert!(acquire::is_local(&grant));
    limiter.release(grant);
    model.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stats = limiter.stats();
    assert!(!stats.fallback_active, "{stats:?}");
    // The probe that found Redis again emptied the shared bucket (the fallback sent meanwhile).
    let log = model.log.lock().unwrap().clone();
    let probe = log.last().unwrap();
    assert_eq!(probe.empty, [true, true]);
    assert_eq!(probe.give_back, [0, 0]);
    let grant = limiter
        .acquire(RequestId::from_u64(8), cost(1, 0))
        .await
        .unwrap();
    assert!(!acquire::is_local(&grant));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_empty_state_keeps_pending_reservations() {
    let options = options(exact().requests(600).burst_requests(1));
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    let start = Instant::now();
    let waiting: Vec<_> = (0..10)
        .map(|i| spawn_acquire(&limiter, i, cost(1, 0), start))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    model.restart();
    // Without the floor, the empty state would grant this one at once.
    let late = spawn_acquire(&limiter, 10, cost(1, 0), start);
    for handle in waiting {
        handle.await.unwrap();
    }
    assert_near(late.await.unwrap(), 1.0, 0.002);
}

#[test]
fn grants_remember_the_limiter_that_made_them() {
    let waited = Duration::from_millis(7);
    let local = Grant::new(cost(1, 10), waited).marked_fallback();
    let shared = Grant::new(cost(1, 10), waited);
    assert!(acquire::is_local(&local));
    assert!(!acquire::is_local(&shared));
    // A refusal's token-only grant keeps the mark and the wait.
    let tokens = local.with_cost(cost(0, 10));
    assert!(acquire::is_local(&tokens));
    assert_eq!(tokens.waited(), waited);
    assert!(!acquire::is_local(&shared.with_cost(cost(0, 10))));
}
