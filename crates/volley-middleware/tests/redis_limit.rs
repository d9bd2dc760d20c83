//! The shared limiter against a real Redis: processes (each its own connection, transport and
//! stack) sharing RPM and TPM limits against volley-mock enforcing them, Redis killed and
//! restarted mid-run, and passwords kept out of everything printed.
//!
//! The tests read `REDIS_URL` (e.g. `redis://127.0.0.1:6379`); they are ignored unless asked
//! for (`-- --include-ignored`, as in CI), and asked for without it they fail. Tests that
//! kill Redis start their own `redis-server` (from `REDIS_SERVER`, or on the `PATH`) on a free
//! loopback port. Every test
//! uses its own key prefix, so they can run in parallel against one server.

#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tower::{ServiceBuilder, ServiceExt as _};
use volley_core::{Body, Dialect, ErrorKind, Request, RequestId, Response, Timings};
use volley_middleware::rate_limit::{
    Cost, FailureMode, Limits, Observation, RateLimitLayer, RateLimiter, RedisLimiter,
    RedisLimiterStats, SharedLimits,
};
use volley_middleware::redis::RedisOptions;
use volley_mock::{MockConfig, MockServer, OutputTokens, RateLimits};
use volley_testkit::redis::{RedisServer, unique_prefix};
use volley_testkit::require_redis;

// ---------------------------------------------------------------------------------------------
// Redis for the tests
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Processes: a limiter, a transport and a stack each
// ---------------------------------------------------------------------------------------------

/// What one process saw.
struct ProcessRun {
    /// When each request reached the transport.
    sends: Vec<Instant>,
    /// Each request's id and outcome: its `total_tokens`, or the error.
    outcomes: Vec<(u64, Result<u64, String>)>,
    stats: RedisLimiterStats,
}

struct Load {
    processes: usize,
    per_process: usize,
    callers: usize,
    estimated_tokens: u32,
    max_tokens: u32,
}

fn chat_body(max_tokens: u32) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello to the mock."}],
            "max_tokens": max_tokens,
        }))
        .unwrap(),
    )
}

/// Runs `load.processes` processes, each in its own task with its own Redis connection,
/// transport and stack, sending `load.per_process` requests from `load.callers` callers.
async fn run_processes(
    options: SharedLimits,
    mock_url: String,
    load: Load,
    started: Arc<AtomicUsize>,
) -> Vec<ProcessRun> {
    let tasks: Vec<_> = (0..load.processes)
        .map(|p| {
            let (options, mock_url, started) = (options.clone(), mock_url.clone(), started.clone());
            let body = chat_body(load.max_tokens);
            let (per_process, callers, estimate) =
                (load.per_process, load.callers, load.estimated_tokens);
            tokio::spawn(async move {
                let limiter = RedisLimiter::connect(options).await.unwrap();
                let transport = volley_transport::Transport::builder()
                    .base_url(mock_url)
                    .build()
                    .unwrap();
                let sends = Arc::new(Mutex::new(Vec::new()));
                let record = sends.clone();
                let svc = ServiceBuilder::new()
                    .layer(RateLimitLayer::with_limiter(limiter.clone()))
                    .map_request(move |request: Request| {
                        record.lock().unwrap().push(Instant::now());
                        request
                    })
                    .service(transport);
                let next = Arc::new(AtomicUsize::new(0));
                let callers: Vec<_> = (0..callers)
                    .map(|_| {
                        let (svc, body, next, started) =
                            (svc.clone(), body.clone(), next.clone(), started.clone());
                        tokio::spawn(async move {
                            let mut outcomes = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= per_process {
                                    return outcomes;
                                }
                                started.fetch_add(1, Ordering::Relaxed);
                                let id = (p * per_process + i) as u64;
                                let request = Request::post("/chat/completions", body.clone())
                                    .unwrap()
                                    .with_id(RequestId::from_u64(id))
                                    .with_estimated_tokens(estimate);
                                let outcome = match svc.clone().oneshot(request).await {
                                    Ok(response) => match response.bytes().await {
                                        Ok(bytes) => Ok(total_tokens(&bytes)),
                                        Err(e) => Err(e.to_string()),
                                    },
                                    Err(e) => Err(e.to_string()),
                                };
                                outcomes.push((id, outcome));
                            }
                        })
                    })
                    .collect();
                let mut outcomes = Vec::new();
                for caller in callers {
                    outcomes.extend(caller.await.unwrap());
                }
                let sends = sends.lock().unwrap().clone();
                ProcessRun {
                    sends,
                    outcomes,
                    stats: limiter.stats(),
                }
            })
        })
        .collect();
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(task.await.unwrap());
    }
    runs
}

fn total_tokens(body: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["usage"]["total_tokens"].as_u64().unwrap()
}

/// Every send of every process, in time order.
fn all_sends(runs: &[ProcessRun]) -> Vec<Instant> {
    let mut sends: Vec<Instant> = runs.iter().flat_map(|r| r.sends.iter().copied()).collect();
    sends.sort();
    sends
}

/// Sends per second from send `skip` to the last.
fn rate_after(sends: &[Instant], skip: usize) -> f64 {
    let window = sends.last().unwrap().duration_since(sends[skip]);
    (sends.len() - 1 - skip) as f64 / window.as_secs_f64()
}

/// Asserts that no stretch of the run, from any send to the last, sent more than the limit
/// allows: the burst, plus `per_second` over the stretch and a quarter second more (the sends
/// are recorded by tasks a busy machine may run late), plus one send. Each send costs `cost`.
fn assert_within_limit(sends: &[Instant], cost: f64, per_second: f64, burst: f64) {
    let last = *sends.last().unwrap();
    for (i, &from) in sends.iter().enumerate() {
        let stretch = last.duration_since(from);
        let sent = (sends.len() - i) as f64 * cost;
        let allowed = burst + per_second * (stretch.as_secs_f64() + 0.25) + cost;
        assert!(
            sent <= allowed,
            "{sent} sent in the {stretch:.2?} from send {i}: more than {allowed:.0}"
        );
    }
}

/// Asserts every request has exactly one outcome, and returns the successful ones' usage.
fn exactly_one_outcome_each(runs: &[ProcessRun], total: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.outcomes.iter().map(|(id, _)| *id))
        .collect();
    ids.sort_unstable();
    let outcomes = ids.len();
    ids.dedup();
    assert_eq!(outcomes, ids.len(), "requests with more than one outcome");
    assert_eq!(ids.len(), total, "requests without an outcome");
    runs.iter()
        .flat_map(|r| r.outcomes.iter())
        .map(|(id, outcome)| match outcome {
            Ok(tokens) => *tokens,
            Err(e) => panic!("request {id} failed: {e}"),
        })
        .collect()
}

async fn mock(rate_limits: RateLimits, output_tokens: u32) -> MockServer {
    MockServer::start(MockConfig {
        rate_limits,
        output_tokens: OutputTokens::Fixed(output_tokens),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Sharing a limit
// ---------------------------------------------------------------------------------------------

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_an_rpm_limit_without_429s() {
    let url = require_redis!();
    // 420 requests: the burst, then about 20 s of pacing.
    share_1200_rpm(RedisOptions::new(url), 1, 105).await;
}

/// The same on a Redis Cluster of three primaries, the four processes given one seed node in
/// the first round and another in the second: the limiter's keys share a hash tag, so its
/// script runs on the one node that holds them, wherever the processes first connected (a
/// seed that does not hold the slot is redirected; the CLI's cluster test sees that the
/// slot's node is one of three).
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_an_rpm_limit_on_a_redis_cluster() {
    let _url = require_redis!();
    let cluster = volley_testkit::redis::RedisCluster::start(3);
    let seeds = cluster.urls();
    share_1200_rpm(RedisOptions::new(seeds[1].clone()).cluster(true), 1, 40).await;
    share_1200_rpm(RedisOptions::new(seeds[2].clone()).cluster(true), 4, 40).await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_with_leases_share_an_rpm_limit_without_429s() {
    let url = require_redis!();
    // Leases of 4: the four processes hold 16 permits at most, within the burst of 20.
    share_1200_rpm(RedisOptions::new(url), 4, 60).await;
}

/// Four processes at 1 200 a minute on both sides (20 a second, burst 20), each leasing
/// `lease` permits at a time.
async fn share_1200_rpm(redis: RedisOptions, lease: u32, per_process: usize) {
    // The provider (the mock) allows 5 % more than the processes share, so that "no 429" is
    // about the sharing, not about clocks agreeing to the millisecond.
    let mock = mock(
        RateLimits {
            rpm: Some(1_260),
            // Two seconds' worth: requests the limiter spaced correctly but that a pause on
            // a loaded machine bunched up on the way are not refused; over-sending for more
            // than a moment still is, and the send times are checked below.
            burst_requests: Some(42),
            ..RateLimits::NONE
        },
        16,
    )
    .await;
    let options = SharedLimits::new(redis, Limits::per_minute().requests(1_200))
        .prefix(unique_prefix(&format!("rpm-lease-{lease}")))
        .lease(lease);
    let load = Load {
        processes: 4,
        per_process,
        callers: 8,
        estimated_tokens: 0,
        max_tokens: 16,
    };
    let runs = run_processes(options, mock.url(), load, Arc::default()).await;
    exactly_one_outcome_each(&runs, 4 * per_process);
    let stats = mock.stats();
    assert_eq!((stats.rate_limited, stats.status_count(429)), (0, 0));
    let sends = all_sends(&runs);
    // Skip the first second's burst. With leases, also the last second and a half: as the
    // processes stop, the permits they leased and never used go back, and the last requests,
    // whose send times were reserved behind those permits, keep their times.
    let tail = if lease > 1 {
        Duration::from_millis(1_500)
    } else {
        Duration::ZERO
    };
    let end = *sends.last().unwrap() - tail;
    let steady: Vec<Instant> = sends.iter().copied().filter(|&at| at <= end).collect();
    let rate = rate_after(&steady, 20) * 60.0;
    eprintln!(
        "lease {lease}: {} requests in {:.2?}: {rate:.1} a minute after the burst ({:.1} to the \
         end); round trips per process {:?}, lease hits {:?}",
        sends.len(),
        sends.last().unwrap().duration_since(sends[0]),
        rate_after(&sends, 20) * 60.0,
        runs.iter().map(|r| r.stats.round_trips).collect::<Vec<_>>(),
        runs.iter().map(|r| r.stats.lease_hits).collect::<Vec<_>>(),
    );
    // One-sided: never above the limit and its burst; how close to 1 200 it comes is a
    // benchmark's figure (`redis_limiter_bench`).
    assert_within_limit(&sends, 1.0, 20.0, 20.0);
    mock.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_a_tpm_limit_settled_with_real_usage() {
    let url = require_redis!();
    // 120 000 tokens a minute on both sides: 2 000 a second. Each request uses about 110
    // (the mock's prompt count and 100 completion tokens) but is estimated at 250: only
    // settlement lets the processes reach the limit.
    // The provider allows 5 % more than the processes share (see `share_1200_rpm`).
    let mock = mock(
        RateLimits {
            tpm: Some(126_000),
            ..RateLimits::NONE
        },
        100,
    )
    .await;
    let options = SharedLimits::new(RedisOptions::new(url), Limits::per_minute().tokens(120_000))
        .prefix(unique_prefix("tpm"));
    let load = Load {
        processes: 4,
        per_process: 90,
        callers: 4,
        estimated_tokens: 250,
        max_tokens: 240,
    };
    let runs = run_processes(options, mock.url(), load, Arc::default()).await;
    let usage = exactly_one_outcome_each(&runs, 360);
    let per_request = usage[0];
    assert!(usage.iter().all(|&u| u == per_request));
    assert!(
        per_request < 150,
        "usage {per_request}: the estimate must be well above it"
    );
    let stats = mock.stats();
    assert_eq!((stats.rate_limited, stats.status_count(429)), (0, 0));
    let sends = all_sends(&runs);
    // The steady state: without the first two seconds (the burst, and the queue filling with
    // reservations at the estimate before the first refunds pull it back) and the last one
    // (the queue draining: its last reservations were paced at the estimate).
    let (first, last) = (sends[0], *sends.last().unwrap());
    let steady: Vec<Instant> = sends
        .iter()
        .copied()
        .filter(|&at| at >= first + Duration::from_secs(2) && at <= last - Duration::from_secs(1))
        .collect();
    let rate = rate_after(&steady, 0) * per_request as f64 * 60.0;
    eprintln!(
        "{} requests of {per_request} tokens in {:.2?}: {rate:.0} tokens a minute in the \
         steady state, {:.0} over the whole run",
        sends.len(),
        last.duration_since(first),
        (sends.len() * per_request as usize) as f64 / last.duration_since(first).as_secs_f64()
            * 60.0,
    );
    // One-sided, as for requests.
    assert_within_limit(&sends, per_request as f64, 2_000.0, 2_000.0);
    mock.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_an_input_token_limit() {
    let url = require_redis!();
    // Anthropic's ITPM alone: 60 000 input tokens a minute, 1 000 a second, burst 1 000.
    let limits = Limits::per_minute().input_tokens(60_000);
    let options = SharedLimits::new(RedisOptions::new(url), limits).prefix(unique_prefix("itpm"));
    let prompt = "word ".repeat(100);
    let body = format!(
        r#"{{"model":"claude","max_tokens":16,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    let request = || {
        Request::post("/messages", body.clone())
            .unwrap()
            .with_dialect(Dialect::Anthropic)
    };
    // What each request is debited up front (its prompt's estimate), and what it reports.
    let cost = Cost::split_of(&request()).input_tokens;
    assert!((50..500).contains(&cost), "estimate {cost}");
    let answer = Bytes::from(format!(
        r#"{{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{{"input_tokens":{cost},"output_tokens":5}}}}"#
    ));
    // Two processes of four callers, six requests each: about 5 000 tokens, four seconds
    // after the burst.
    const PER_CALLER: usize = 6;
    let sends = Arc::new(Mutex::new(Vec::new()));
    let mut processes = Vec::new();
    for _ in 0..2 {
        let limiter = RedisLimiter::connect(options.clone()).await.unwrap();
        assert!(limiter.splits_tokens());
        let (sends, answer) = (sends.clone(), answer.clone());
        let inner = tower::service_fn(move |request: Request| {
            sends.lock().unwrap().push(Instant::now());
            let response = Response::new(
                http::StatusCode::OK,
                http::HeaderMap::new(),
                Body::Full(answer.clone()),
                Timings::start(),
                request.id(),
            );
            async move { Ok::<_, volley_core::Error>(response) }
        });
        let svc = ServiceBuilder::new()
            .layer(RateLimitLayer::with_limiter(limiter))
            .service(inner);
        for _ in 0..4 {
            let svc = svc.clone();
            let requests: Vec<Request> = (0..PER_CALLER).map(|_| request()).collect();
            processes.push(tokio::spawn(async move {
                for request in requests {
                    let response = svc.clone().oneshot(request).await.unwrap();
                    response.bytes().await.unwrap();
                }
            }));
        }
    }
    for process in processes {
        process.await.unwrap();
    }
    let mut sends = sends.lock().unwrap().clone();
    sends.sort();
    assert_eq!(sends.len(), 2 * 4 * PER_CALLER);
    eprintln!(
        "{} requests of {cost} input tokens in {:.2?}",
        sends.len(),
        sends.last().unwrap().duration_since(sends[0])
    );
    // One-sided: never above the limit and its burst over any stretch.
    assert_within_limit(&sends, cost as f64, 1_000.0, 1_000.0);
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_learned_by_one_process_paces_the_other() {
    let url = require_redis!();
    // Nothing given: both limits learned from the provider's headers.
    let options =
        SharedLimits::new(RedisOptions::new(url), Limits::auto()).prefix(unique_prefix("learned"));
    let a = RedisLimiter::connect(options.clone()).await.unwrap();
    let b = RedisLimiter::connect(options).await.unwrap();
    assert!(a.learns() && b.learns());
    let one = Cost {
        requests: 1,
        ..Cost::ZERO
    };
    a.acquire(RequestId::from_u64(1), one).await.unwrap();
    // A's first answer: 600 a minute (10 a second, burst 10).
    let mut headers = http::HeaderMap::new();
    headers.insert("x-ratelimit-limit-requests", 600.into());
    headers.insert("x-ratelimit-remaining-requests", 599.into());
    headers.insert("x-ratelimit-reset-requests", "100ms".parse().unwrap());
    a.observe(&Observation::from_headers(&headers));
    assert_eq!(a.learned(), (Some(600), None));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // B never saw a header, and enforces the same limit.
    let mut sends = Vec::new();
    for i in 0..30 {
        b.acquire(RequestId::from_u64(10 + i), one).await.unwrap();
        sends.push(Instant::now());
    }
    assert_eq!(b.learned(), (Some(600), None));
    eprintln!(
        "30 requests in {:.2?}",
        sends.last().unwrap().duration_since(sends[0])
    );
    // One-sided: never above the learned limit and its burst.
    assert_within_limit(&sends, 1.0, 10.0, 10.0);
}

// ---------------------------------------------------------------------------------------------
// Redis killed mid-run
// ---------------------------------------------------------------------------------------------

/// Starts `load` in the background, kills Redis once `kill_after` requests have started,
/// restarts it `down` later; returns the runs, and when Redis went down and came back.
async fn run_through_a_restart(
    server: &mut RedisServer,
    options: SharedLimits,
    mock_url: String,
    load: Load,
    kill_after: usize,
    down: Duration,
) -> (Vec<ProcessRun>, Instant, Instant) {
    let started = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(run_processes(options, mock_url, load, started.clone()));
    while started.load(Ordering::Relaxed) < kill_after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(down).await;
    server.restart();
    let restarted = Instant::now();
    (run.await.unwrap(), killed, restarted)
}

/// Failing closed, a refusal no wait heals, once it has lasted the grace given, fails the
/// requests waiting instead of holding them for ever: the user's ACL no longer allows the
/// script (`NOPERM`), or its password changed and the connection dropped (the reconnect is
/// refused). Within the grace they wait; once Redis accepts the limiter again, requests go
/// again.
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_no_wait_heals_fails_the_waiting_requests() {
    let _url = require_redis!();
    let server = RedisServer::start(None);
    let admin = redis::Client::open(server.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let mut command = async |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async::<redis::Value>(&mut admin).await.unwrap();
    };
    command(&["ACL", "SETUSER", "volley", "on", ">first-pw", "~*", "+@all"]).await;
    let url = format!("redis://volley:first-pw@127.0.0.1:{}", server.port());
    let options = SharedLimits::new(
        RedisOptions::new(url).response_timeout(Duration::from_millis(200)),
        Limits::per_minute().requests(60_000),
    )
    .prefix(unique_prefix("refused"))
    .give_up_on_refusal_after(Duration::from_secs(2));
    let limiter = RedisLimiter::connect(options).await.unwrap();
    let bounded = |n: u64| {
        let acquire = limiter.acquire(
            RequestId::from_u64(n),
            Cost {
                requests: 1,
                ..Cost::ZERO
            },
        );
        async move {
            tokio::time::timeout(Duration::from_secs(20), acquire)
                .await
                .expect("the acquire ended within 20 s")
        }
    };
    bounded(1).await.unwrap();

    command(&["ACL", "SETUSER", "volley", "-@scripting"]).await;
    // Within the grace the request waits (a refusal that passes must not fail it).
    let waiting = tokio::spawn(bounded(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished());
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("no permissions"), "{err}");
    assert!(err.to_string().contains("no wait heals this"), "{err}");

    // Allowed again: the next round trip (after the backoff, at most 2 s) goes through.
    command(&["ACL", "SETUSER", "volley", "+@all"]).await;
    bounded(3).await.unwrap();

    command(&["ACL", "SETUSER", "volley", "resetpass", ">second-pw"]).await;
    command(&["CLIENT", "KILL", "USER", "volley"]).await;
    let err = bounded(4).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("first-pw") && !text.contains("second-pw"),
        "{text}"
    );
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closed_pauses_through_a_redis_restart_and_completes() {
    let _url = require_redis!();
    let mut server = RedisServer::start(None);
    // 600 a minute: 10 a second, burst 10; the mock enforces 5 % more (see `share_1200_rpm`).
    let mock = mock(
        RateLimits {
            rpm: Some(630),
            // Two seconds' worth (see `share_1200_rpm`).
            burst_requests: Some(21),
            ..RateLimits::NONE
        },
        16,
    )
    .await;
    let options = SharedLimits::new(
        RedisOptions::new(server.url()).response_timeout(Duration::from_millis(200)),
        Limits::per_minute().requests(600),
    )
    .prefix(unique_prefix("fail-closed"));
    let load = Load {
        processes: 2,
        per_process: 40,
        callers: 4,
        estimated_tokens: 0,
        max_tokens: 16,
    };
    let down = Duration::from_secs(3);
    let (runs, killed, restarted) =
        run_through_a_restart(&mut server, options, mock.url(), load, 20, down).await;
    exactly_one_outcome_each(&runs, 80);
    assert_eq!(
        mock.stats().requests_total,
        80,
        "each request sent exactly once"
    );
    for run in &runs {
        assert!(run.stats.errors > 0, "{:?}", run.stats);
        assert_eq!(run.stats.fallbacks, 0);
    }
    let sends = all_sends(&runs);
    // Requests that had their send time before the kill kept it (at most the 8 callers' worth,
    // 0.8 s, and a margin for a task woken late on a loaded machine); nothing else went until
    // Redis was back.
    let gap = sends
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap();
    assert!(gap >= Duration::from_millis(700), "longest gap {gap:?}");
    let late = killed + Duration::from_secs(2);
    assert!(!sends.iter().any(|&at| at > late && at < restarted));
    // The restarted Redis is empty; the processes restored their pending reservations into
    // it, so from the restart on the two together stay within the limit and its burst (the
    // mock's own bucket, two seconds deep, would not tell).
    let after: Vec<Instant> = sends
        .iter()
        .copied()
        .filter(|&at| at >= restarted)
        .collect();
    assert!(!after.is_empty(), "nothing was sent after the restart");
    assert_within_limit(&after, 1.0, 10.0, 10.0);
    let stats = mock.stats();
    assert_eq!(stats.status_count(429), 0);
    mock.shutdown().await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_runs_at_its_share_through_a_redis_restart() {
    let _url = require_redis!();
    let mut server = RedisServer::start(None);
    let mock = mock(RateLimits::NONE, 16).await;
    // 1 200 a minute shared; two processes that each assume four, so during the outage they
    // send 2 × 300 a minute: 10 a second instead of 20.
    let options = SharedLimits::new(
        RedisOptions::new(server.url()).response_timeout(Duration::from_millis(200)),
        Limits::per_minute().requests(1_200),
    )
    .prefix(unique_prefix("fallback"))
    .on_failure(FailureMode::LocalFallback { processes: 4 });
    let load = Load {
        processes: 2,
        per_process: 80,
        callers: 4,
        estimated_tokens: 0,
        max_tokens: 16,
    };
    let down = Duration::from_secs(3);
    let (runs, killed, restarted) =
        run_through_a_restart(&mut server, options, mock.url(), load, 40, down).await;
    exactly_one_outcome_each(&runs, 160);
    assert_eq!(
        mock.stats().requests_total,
        160,
        "each request sent exactly once"
    );
    for run in &runs {
        assert_eq!(run.stats.fallbacks, 1, "{:?}", run.stats);
        assert!(run.stats.local_grants > 0);
        assert!(!run.stats.fallback_active, "back on Redis: {:?}", run.stats);
    }
    let sends = all_sends(&runs);
    // After the fallback's first burst, the outage's rate.
    let from = killed + Duration::from_millis(1_000);
    let during: Vec<Instant> = sends
        .iter()
        .copied()
        .filter(|&at| at >= from && at < restarted)
        .collect();
    let rate = during.len() as f64 / restarted.duration_since(from).as_secs_f64();
    eprintln!(
        "{} sends during the outage: {rate:.1} a second",
        during.len()
    );
    // One-sided: at most the fallback's share (10 a second, and a margin for the first
    // second's burst), and at least half of it (the run goes on); the exact rate is a
    // benchmark's figure.
    assert!(rate <= 12.5, "{rate:.1} a second during the outage");
    assert!(rate >= 5.0, "only {rate:.1} a second during the outage");
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The script, pauses, secrets
// ---------------------------------------------------------------------------------------------

/// A Redis that refuses `SCRIPT LOAD` (as twemproxy and Envoy's Redis proxy do, or a server
/// with the command renamed away) still shares a limit: the script goes whole with each call
/// (`EVAL`). It refused to connect before ("loading the rate-limit script").
#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn a_redis_that_refuses_script_load_gets_the_script_with_every_call() {
    let _url = require_redis!();
    let server = volley_testkit::redis::RedisServer::start_with(&[
        "--rename-command",
        "SCRIPT",
        "SCRIPT-OFF-FOR-THIS-TEST",
    ]);
    // 600 a minute, burst 1: 100 ms apart, shared by two limiters (two processes).
    let limits = Limits::per_minute().requests(600).burst_requests(1);
    let options =
        SharedLimits::new(RedisOptions::new(server.url()), limits).prefix(unique_prefix("eval"));
    let a = RedisLimiter::connect(options.clone()).await.unwrap();
    let b = RedisLimiter::connect(options).await.unwrap();
    let start = Instant::now();
    let one = Cost {
        requests: 1,
        ..Cost::ZERO
    };
    for i in 0..3 {
        a.acquire(RequestId::from_u64(2 * i), one).await.unwrap();
        b.acquire(RequestId::from_u64(2 * i + 1), one)
            .await
            .unwrap();
    }
    // Six requests at 100 ms apart: the last not before 0.5 s.
    let took = start.elapsed().as_secs_f64();
    assert!(took >= 0.5, "six requests in {took} s");
    assert!(a.stats().errors == 0 && b.stats().errors == 0);
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn the_script_paces_on_the_server_clock_under_one_hash_tagged_key() {
    let url = require_redis!();
    let prefix = unique_prefix("script");
    // 600 a minute, burst 1: 100 ms apart.
    let limits = Limits::per_minute()
        .requests(600)
        .burst_requests(1)
        .tokens(60_000);
    let limiter = RedisLimiter::connect(
        SharedLimits::new(RedisOptions::new(url.clone()), limits).prefix(prefix.clone()),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let acquires: Vec<_> = (0..5)
        .map(|i| {
            limiter.acquire(
                RequestId::from_u64(i),
                Cost {
                    requests: 1,
                    tokens: 10,
                    ..Cost::ZERO
                },
            )
        })
        .collect();
    let mut at = Vec::new();
    for acquire in acquires {
        acquire.await.unwrap();
        at.push(start.elapsed().as_secs_f64());
    }
    // Never early (how soon after its time each one goes is a benchmark's figure).
    for (i, at) in at.iter().enumerate() {
        let due = i as f64 * 0.1;
        assert!(*at >= due, "request {i} at {at} s, before its time {due} s");
    }
    let too_large = limiter
        .acquire(
            RequestId::from_u64(9),
            Cost {
                requests: 1,
                tokens: 60_001,
                ..Cost::ZERO
            },
        )
        .await
        .unwrap_err();
    assert_eq!(too_large.kind(), volley_core::ErrorKind::InvalidInput);

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(key.starts_with(&format!("{prefix}:ratelimit:{{")) && key.ends_with('}'));
    let fields: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(key)
        .arg(&["r", "t", "until", "shift", "epoch"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(fields.iter().all(Option::is_some), "{fields:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((50_000..=70_000).contains(&ttl), "ttl {ttl} ms");
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn a_429_in_one_process_pauses_the_others() {
    let url = require_redis!();
    let options = SharedLimits::new(RedisOptions::new(url), Limits::per_minute().requests(6_000))
        .prefix(unique_prefix("pause"));
    let a = RedisLimiter::connect(options.clone()).await.unwrap();
    let b = RedisLimiter::connect(options).await.unwrap();
    let error = volley_core::Error::from_status(
        http::StatusCode::TOO_MANY_REQUESTS,
        http::HeaderMap::new(),
        b"{}",
        Some(Duration::from_secs(1)),
        "test",
    );
    let start = Instant::now();
    a.observe(&Observation::from_error(&error).unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.acquire(
        RequestId::from_u64(1),
        Cost {
            requests: 1,
            tokens: 0,
            ..Cost::ZERO
        },
    )
    .await
    .unwrap();
    // Paused until the 1 s Retry-After, counted from the 429, is over (less a margin for the
    // clocks); how soon after it goes is a benchmark's figure.
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn passwords_never_show_in_debug_errors_or_logs() {
    let _url = require_redis!();
    const PASSWORD: &str = "s3cret-Pa55word-4711";
    const WRONG: &str = "wr0ng-Pa55word-0815";
    let mut server = RedisServer::start(Some(PASSWORD));
    // The test runs on one thread, so the limiter's task logs here too.
    let (logs, _guard) = volley_testkit::logs::capture(tracing::Level::INFO);
    let limits = Limits::per_minute().requests(6_000);
    let wrong = server.url().replace(PASSWORD, WRONG);
    let err = RedisLimiter::connect(SharedLimits::new(RedisOptions::new(wrong), limits.clone()))
        .await
        .unwrap_err();
    let printed = format!("{err} {err:?}");
    assert!(!printed.contains(WRONG), "{printed}");

    let options = SharedLimits::new(
        RedisOptions::new(server.url()).response_timeout(Duration::from_millis(100)),
        limits,
    )
    .prefix(unique_prefix("secrets"));
    let limiter = RedisLimiter::connect(options.clone()).await.unwrap();
    for printed in [
        format!("{options:?}"),
        format!("{limiter:?}"),
        format!("{:?}", limiter.stats()),
    ] {
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
    // Down: the acquire waits, a warning names the server without its password.
    server.kill();
    let acquire = limiter.acquire(
        RequestId::from_u64(1),
        Cost {
            requests: 1,
            tokens: 0,
            ..Cost::ZERO
        },
    );
    let waiting = tokio::spawn(acquire);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished());
    server.restart();
    waiting.await.unwrap().unwrap();
    let logs = logs.text();
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(
        logs.contains(&format!("redis://***@127.0.0.1:{}", server.port())),
        "{logs}"
    );
    assert!(logs.contains("requests wait until it answers"), "{logs}");
    assert!(logs.contains("answers again"), "{logs}");
}
