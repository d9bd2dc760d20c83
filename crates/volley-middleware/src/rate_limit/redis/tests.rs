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
    Arc::new(Model::new(&config))
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
async fn input_and_output_tokens_are_paced_and_settled_apart() {
    // 6 000 input tokens a minute (100 a second, burst 100) and 600 output tokens (10 a
    // second, burst 10); no total.
    let options = options(exact().input_tokens(6_000).output_tokens(600));
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    assert!(limiter.splits_tokens());
    let split = |input: u64, output: u64| Cost {
        requests: 1,
        input_tokens: input,
        output_tokens: output,
        ..Cost::ZERO
    };
    let err = limiter
        .acquire(RequestId::from_u64(3), split(6_001, 1))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the whole input-tokens-per-minute budget of 6 000"),
        "{err}"
    );
    // The input bucket binds: used 10 of the 100 estimated, the next 100 go 0.1 s later.
    let start = Instant::now();
    let grant = limiter
        .acquire(RequestId::from_u64(1), split(100, 1))
        .await
        .unwrap();
    limiter.settle_usage(grant, volley_core::dialect::TokenUsage::new(10, 1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    limiter
        .acquire(RequestId::from_u64(2), split(100, 1))
        .await
        .unwrap();
    assert_near(start.elapsed().as_secs_f64(), 0.1, 0.002);
    // The output bucket binds: estimated 1, used 20 (twice its burst): the bucket is a
    // second in debt, and the next one waits 1.1 s (the debt, and its own 0.1 s).
    let output = options_output();
    let model = model_for(&output);
    let limiter = process(&output, &model).await;
    let start = Instant::now();
    let grant = limiter
        .acquire(RequestId::from_u64(1), split(1, 1))
        .await
        .unwrap();
    limiter.settle_usage(grant, volley_core::dialect::TokenUsage::new(1, 20));
    tokio::time::sleep(Duration::from_millis(10)).await;
    limiter
        .acquire(RequestId::from_u64(2), split(1, 1))
        .await
        .unwrap();
    assert_near(start.elapsed().as_secs_f64(), 1.1, 0.002);
    let log = model.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|call| call.charge == [0, 0, 0, 19]),
        "{log:?}"
    );
}

/// 600 output tokens a minute (10 a second, burst 10), nothing else.
fn options_output() -> SharedLimits {
    options(exact().output_tokens(600))
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
    assert_eq!(probe.empty, [true; 4]);
    assert_eq!(probe.give_back, [0; 4]);
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

/// An answer whose headers state a limit of `rpm` requests a minute, `left` of them left.
fn limit_headers(rpm: u64, left: u64) -> Observation {
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-limit-requests", rpm.into());
    headers.insert("x-ratelimit-remaining-requests", left.into());
    headers.insert("x-ratelimit-reset-requests", "100ms".parse().unwrap());
    Observation::from_headers(&headers)
}

#[tokio::test(start_paused = true)]
async fn a_learned_limit_starts_slowly_and_is_shared_with_every_process() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let b = process(&options, &model).await;
    assert!(a.learns());
    // A token limit, or an input or output limit, may come with the first answer: until then
    // requests need estimates.
    assert!(a.counts_tokens());
    assert!(a.splits_tokens());
    // The slow start: four probes go at once, the fifth waits for an answer.
    for i in 0..4 {
        a.acquire(RequestId::from_u64(i), cost(1, 0)).await.unwrap();
    }
    let start = Instant::now();
    let fifth = spawn_acquire(&a, 4, cost(1, 0), start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fifth.is_finished(), "behind the probes");
    // The first answer: 600 a minute (one per 100 ms, burst 10).
    a.observe(&limit_headers(600, 596));
    assert_near(fifth.await.unwrap(), 1.0, 0.002);
    assert_eq!(a.learned(), (Some(600), None));
    assert!(!a.counts_tokens(), "the answer had no token limit");
    assert!(!a.splits_tokens(), "nor an input or output limit");
    // B learned nothing itself, yet after its next round trip it knows the limit and is paced
    // by it: the burst (less what A sent), then one per 100 ms.
    b.acquire(RequestId::from_u64(10), cost(1, 0))
        .await
        .unwrap();
    assert_eq!(b.learned(), (Some(600), None));
    let start = Instant::now();
    for i in 0..20 {
        b.acquire(RequestId::from_u64(11 + i), cost(1, 0))
            .await
            .unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    assert!((1.0..=1.3).contains(&took), "20 requests in {took} s");
    // A process that connects now starts with the limit and without a slow start.
    let c = process(&options, &model).await;
    assert_eq!(c.learned(), (Some(600), None));
    assert!(!c.counts_tokens());
    let start = Instant::now();
    for i in 0..5 {
        c.acquire(RequestId::from_u64(40 + i), cost(1, 0))
            .await
            .unwrap();
    }
    assert_near(start.elapsed().as_secs_f64(), 0.5, 0.002);
}

/// A probe whose caller gave up after it was sent brings no answer: the request waiting
/// behind the slow start goes in its place, at once, rather than after the 10 s probe timeout.
/// Its cost is not given back (the provider may have counted it).
#[tokio::test(start_paused = true)]
async fn a_probe_abandoned_after_it_was_sent_hands_the_probe_on() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let mut probes = Vec::new();
    for i in 0..4 {
        probes.push(a.acquire(RequestId::from_u64(i), cost(1, 0)).await.unwrap());
    }
    let start = Instant::now();
    let fifth = spawn_acquire(&a, 4, cost(1, 0), start);
    let sixth = spawn_acquire(&a, 5, cost(1, 0), start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fifth.is_finished(), "behind the probes");
    a.abandon(probes.pop().unwrap());
    assert_near(fifth.await.unwrap(), 1.0, 0.002);
    assert!(a.shared().slow_start.load(Ordering::Relaxed));
    // One abandoned probe lets one request through, not everyone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!sixth.is_finished(), "still behind the probes");
}

/// A probe reserved no tokens (no token limit was in force), though it carried an estimate:
/// settled after the limit is learned, it refunds nothing. 60 000 tokens a minute (1 000 a
/// second); after the limit is learned a request takes the second's 1 000; the probe,
/// estimated at 1 000, used 200: the next request of 800 waits about a second for
/// 200 + 800, where a refund of the 800 never reserved would have let it go at once.
#[tokio::test(start_paused = true)]
async fn a_probe_refunds_no_tokens_it_never_reserved() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let probe = a
        .acquire(RequestId::from_u64(1), cost(1, 1_000))
        .await
        .unwrap();
    let mut observation = Observation::default();
    observation.info.limit_tokens = Some(60_000);
    a.observe(&observation);
    a.acquire(RequestId::from_u64(2), cost(1, 1_000))
        .await
        .unwrap();
    assert_eq!(a.learned(), (None, Some(60_000)));
    a.settle(probe, 200);
    let start = Instant::now();
    let took = spawn_acquire(&a, 3, cost(1, 800), start).await.unwrap();
    assert!(took >= 0.9, "went after {took} s");
}

#[tokio::test(start_paused = true)]
async fn a_changed_header_updates_the_shared_limit_and_a_lost_probe_times_out() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let start = Instant::now();
    let probes: Vec<_> = (0..4)
        .map(|i| spawn_acquire(&a, i, cost(1, 0), start))
        .collect();
    for probe in probes {
        probe.await.unwrap();
    }
    // No answer ever comes: the gate opens after 10 s.
    let waiting = spawn_acquire(&a, 4, cost(1, 0), start);
    assert_near(waiting.await.unwrap(), 10.0, 0.002);
    a.observe(&limit_headers(600, 599));
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.observe(&limit_headers(60, 59));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let log = model.log.lock().unwrap().clone();
    let sent: Vec<_> = log
        .iter()
        .filter(|c| c.fresh[0])
        .map(|c| c.learned[0])
        .collect();
    assert_eq!(sent, [600, 60], "{log:?}");
    let b = process(&options, &model).await;
    assert_eq!(b.learned(), (Some(60), None));
}

#[tokio::test(start_paused = true)]
async fn anthropic_input_and_output_token_limits_are_learned_and_shared() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let b = process(&options, &model).await;
    // Before any answer an input or output limit may still come: estimates are asked for.
    assert!(b.splits_tokens());
    a.acquire(RequestId::from_u64(1), cost(1, 0)).await.unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-tokens-limit", "6000"),
        ("anthropic-ratelimit-input-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-limit", "6000"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    a.observe(&Observation::from_headers_in(
        volley_core::Dialect::Anthropic,
        &headers,
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // B's next round trip brings the three limits; the combined one is not a total.
    b.acquire(RequestId::from_u64(2), cost(1, 0)).await.unwrap();
    assert_eq!(b.learned(), (Some(4_000), None));
    assert_eq!(b.learned_split(), (Some(400_000), Some(6_000)));
    assert!(b.splits_tokens() && !b.counts_tokens());
    // B is paced by the output tokens: 100 a second, burst 100; 50 each: two at once, then
    // one per 0.5 s.
    let fifty = Cost {
        requests: 1,
        output_tokens: 50,
        ..Cost::ZERO
    };
    let start = Instant::now();
    for i in 0..4 {
        b.acquire(RequestId::from_u64(10 + i), fifty).await.unwrap();
    }
    assert_near(start.elapsed().as_secs_f64(), 1.0, 0.002);
}

/// A request whose send time from Redis is at or past its caller's deadline fails unsent, as
/// rate-limited with the wait it would have had, and gives its reservation back; one that a
/// pause learnt while it waits pushes past its deadline fails at the time it was to be sent.
/// One that can go at once goes, whatever its deadline.
#[tokio::test(start_paused = true)]
async fn a_send_time_past_the_deadline_fails_and_gives_the_reservation_back() {
    // 60 a minute, burst 1: one a second.
    let options = options(exact().requests(60).burst_requests(1));
    let model = model_for(&options);
    let limiter = process(&options, &model).await;
    let now = || Instant::now().into_std();
    let start = Instant::now();
    let past = now();
    tokio::time::advance(Duration::from_millis(1)).await;
    limiter
        .acquire_before(RequestId::from_u64(1), cost(1, 0), Some(past))
        .await
        .expect("no wait, so no deadline to miss");
    // The next is due a second after the first: half a second is too short.
    let err = limiter
        .acquire_before(
            RequestId::from_u64(2),
            cost(1, 0),
            Some(now() + Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    crate::rate_limit::assert_held_past_deadline(&err, Duration::from_secs(1));
    // Its reservation went back: the next goes a second after the first, not two.
    limiter
        .acquire_before(
            RequestId::from_u64(3),
            cost(1, 0),
            Some(now() + Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_near(start.elapsed().as_secs_f64(), 1.0, 0.0);
    // Due at 2 s, its deadline at 4 s; a 429 asking for 5 s comes meanwhile: it fails at 2 s,
    // when it was to be sent, not at its deadline.
    let waiting = limiter.acquire_before(
        RequestId::from_u64(4),
        cost(1, 0),
        Some(now() + Duration::from_secs(3)),
    );
    let task = tokio::spawn(async move { (waiting.await, start.elapsed().as_secs_f64()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    limiter.observe(&Observation {
        rate_limited: true,
        retry_after: Some(Duration::from_secs(5)),
        ..Observation::from_headers(&HeaderMap::new())
    });
    let (outcome, at) = task.await.unwrap();
    let err = outcome.expect_err("pushed past its deadline");
    assert!(err.is_rate_limited() && !err.is_request_sent(), "{err}");
    assert_near(at, 2.0, 0.0);
}

/// With nothing pacing the sends (limits learned, none yet), the requests a 429's pause holds
/// go over a fifth of it after its end, in every process that shares it, not at one instant:
/// those that come during it, and those already waiting when a later 429 moves its end. With
/// a limit in force the bucket spaces them and nothing is added (the exact times of
/// `a_pause_seen_by_one_process_pushes_back_what_another_has_waiting`).
#[tokio::test(start_paused = true)]
async fn the_end_of_a_shared_pause_is_spread_when_nothing_paces_the_sends() {
    let options = options(Limits::auto().headroom(0.0).jitter_margin(Duration::ZERO));
    let model = model_for(&options);
    let a = process(&options, &model).await;
    let b = process(&options, &model).await;
    // Answers without limit headers: the slow starts end, nothing is learned.
    a.observe(&Observation::from_headers(&HeaderMap::new()));
    b.observe(&Observation::from_headers(&HeaderMap::new()));
    let pause = |wait: u64| Observation {
        rate_limited: true,
        retry_after: Some(Duration::from_secs(wait)),
        ..Observation::from_headers(&HeaderMap::new())
    };
    let spread_of = |at: &[f64]| {
        let low = at.iter().copied().fold(f64::INFINITY, f64::min);
        let high = at.iter().copied().fold(0.0, f64::max);
        (low, high)
    };
    let start = Instant::now();
    a.observe(&pause(10));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let held: Vec<_> = (0..20)
        .map(|i| spawn_acquire(if i % 2 == 0 { &a } else { &b }, 100 + i, cost(1, 0), start))
        .collect();
    let mut at = Vec::new();
    for handle in held {
        at.push(handle.await.unwrap());
    }
    let (low, high) = spread_of(&at);
    // After the pause's end, within a fifth of it (2 s) and the round trips.
    assert!(low >= 9.99 && high <= 12.02, "{at:?}");
    // 20 draws from 2 s all within half a second: about 20 · 0.25^19, never.
    assert!(high - low > 0.5, "not spread: {at:?}");

    // Waiting out a pause of 4 s when a 429 asks for 8 s: held to the new end, and spread
    // after it.
    let start = Instant::now();
    a.observe(&pause(4));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiting: Vec<_> = (0..20)
        .map(|i| spawn_acquire(&a, 200 + i, cost(1, 0), start))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.observe(&pause(8));
    let mut at = Vec::new();
    for handle in waiting {
        at.push(handle.await.unwrap());
    }
    let (low, high) = spread_of(&at);
    assert!(low >= 8.99 && high <= 11.02, "{at:?}");
    assert!(high - low > 0.3, "not spread: {at:?}");

    // A send whose part of the spread would reach its call's deadline takes that part of half
    // the time left instead of failing: with 4.7 s left, those a 429 moves to the end of a
    // 4 s pause (4.5 s from the start, its spread 0.8 s) and those that come during it all
    // go, within 4.6 s.
    let start = Instant::now();
    let until = Some(start.into_std() + Duration::from_millis(4_700));
    a.observe(&pause(2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut held: Vec<_> = (0..20)
        .map(|i| {
            let acquire = a.acquire_before(RequestId::from_u64(300 + i), cost(1, 0), until);
            tokio::spawn(async move { (acquire.await, start.elapsed().as_secs_f64()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(490)).await;
    a.observe(&pause(4));
    tokio::time::sleep(Duration::from_millis(10)).await;
    held.extend((0..20).map(|i| {
        let acquire = a.acquire_before(RequestId::from_u64(400 + i), cost(1, 0), until);
        tokio::spawn(async move { (acquire.await, start.elapsed().as_secs_f64()) })
    }));
    let mut at = Vec::new();
    for handle in held {
        let (went, when) = handle.await.unwrap();
        went.expect("could go in time");
        at.push(when);
    }
    // Within half the time left (0.1 s after the pause's end), and spread over it.
    let (low, high) = spread_of(&at);
    assert!(low >= 4.49 && high <= 4.605 + 0.005, "{at:?}");
    assert!(high - low > 0.02, "not spread: {at:?}");
}
