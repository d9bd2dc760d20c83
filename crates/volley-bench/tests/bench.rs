//! The load tester end to end, against volley-mock (and a bare HTTP responder) over real
//! loopback sockets. Nothing here asserts on speed: counts, kinds and shapes only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use volley::ErrorKind;
use volley::core::duration::parse_duration;
use volley_bench::results::BenchResults;
use volley_bench::{Arrivals, Bench, BenchConfig, Lengths, Load, Ramp, StackKind, WorkerRuntimes};
use volley_mock::{Latency, MockConfig, MockServer, OutputTokens};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

fn with_latency(latency: Duration) -> MockConfig {
    MockConfig {
        latency: Latency::Fixed(latency),
        ..MockConfig::default()
    }
}

fn config(server: &MockServer, load: Load) -> BenchConfig {
    BenchConfig {
        base_url: server.url(),
        load,
        embedded_mock: true,
        ..BenchConfig::default()
    }
}

async fn run(config: BenchConfig) -> BenchResults {
    let bench = Bench::new(config).unwrap();
    let live = bench.live();
    let results = bench.run().await.unwrap();
    // The live counters agree with the results once the run is over.
    assert!(live.is_finished());
    assert_eq!(live.started(), results.summary.requests);
    assert_eq!(live.finished(), results.summary.requests);
    assert_eq!(live.failed(), results.summary.failed);
    assert_eq!(live.in_flight(), 0);
    assert_eq!(live.chunks(), results.summary.chunks);
    assert_eq!(live.dropped(), results.summary.dropped);
    assert!(live.elapsed() > Duration::ZERO);
    results
}

/// What every run's results must satisfy.
fn check_consistency(r: &BenchResults) {
    let s = &r.summary;
    assert_eq!(s.ok + s.failed, s.requests);
    assert_eq!(r.errors.values().sum::<u64>(), s.failed, "{:?}", r.errors);
    assert_eq!(r.latency.count, s.ok);
    assert_eq!(r.timeline.iter().map(|p| p.errors).sum::<u64>(), s.failed);
    let completed: f64 = r
        .timeline
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // The last bucket may be shorter than 100 ms.
            let start = i as f64 * 100.0;
            let width = (s.wall_ms - start).min(100.0);
            p.completed_per_sec * width / 1000.0
        })
        .sum();
    assert!((completed - s.requests as f64).abs() < 1e-6, "{completed}");
    assert!(s.peak_in_flight >= 1 || s.requests == 0);
    assert!(
        r.timeline
            .iter()
            .all(|p| p.in_flight <= s.peak_in_flight as f64 + 1e-9)
    );
    assert_eq!(r.schema_version, volley_bench::results::SCHEMA_VERSION);
    assert_eq!(r.volley_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.bucket_ms, 100);
    assert!(
        r.started_at.ends_with('Z') && r.started_at.len() == 20,
        "{}",
        r.started_at
    );
    assert!(r.latency_cdf.len() <= 201);
    if let Some(&(_, last)) = r.latency_cdf.last() {
        assert_eq!(last, 1.0);
    }
    // The results survive a round trip through results.json (floats to within printing).
    let json = serde_json::to_string(r).unwrap();
    let back: BenchResults = serde_json::from_str(&json).unwrap();
    assert_eq!((&back.config, &back.errors), (&r.config, &r.errors));
    assert_eq!(back.summary.requests, s.requests);
    assert_eq!(back.timeline.len(), r.timeline.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_every_request_and_reads_the_server() {
    let server = mock(with_latency(ms(20))).await;
    let results = run(BenchConfig {
        name: "closed".into(),
        requests: Some(200),
        ..config(&server, Load::Closed { concurrency: 16 })
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert_eq!((s.requests, s.ok, s.failed, s.dropped), (200, 200, 0, 0));
    assert!(results.errors.is_empty());
    // The mock answers 16 tokens to `max_tokens: 16`.
    assert_eq!(s.output_tokens, 200 * 16);
    assert!(s.peak_in_flight <= 16, "{}", s.peak_in_flight);
    assert!(s.mean_in_flight > 0.0);
    assert!(results.latency.min >= 19.9, "{:?}", results.latency);
    assert!(results.ttft.is_none() && results.inter_token.is_none());
    assert!(results.ttft_histogram.is_empty());
    assert!(results.timeline.iter().all(|p| p.target == Some(16.0)));
    // A connection is back in the pool before its slot is released: never more connections
    // than slots, and every later request reuses one.
    assert!(
        (1..=16).contains(&results.connections.opened),
        "{:?}",
        results.connections
    );
    let c = &results.config;
    assert_eq!(
        (c.mode.as_str(), c.concurrency, c.requests),
        ("closed", Some(16), Some(200))
    );
    assert_eq!(
        (c.stack.as_str(), c.prompt_tokens.as_str()),
        ("full", "fixed:64")
    );
    assert!(c.embedded_mock);
    assert_eq!(c.base_url, server.url());
    assert_eq!(results.name, "closed");

    let side = results.server.expect("volley-mock serves /stats");
    assert_eq!(side.requests, 200);
    assert!((1..=16).contains(&side.peak_in_flight));
    assert!(
        side.timeline
            .iter()
            .all(|&(_, f)| (0.0..=16.0).contains(&f))
    );
    // The mock weighs its buckets by time: a bucket's mean is a fraction where the samples
    // at its end are whole numbers.
    assert!(
        side.mean_in_flight > 0.0 && side.mean_in_flight <= 16.0,
        "{side:?}"
    );
    assert!(
        side.timeline.iter().any(|&(_, f)| f.fract() != 0.0),
        "{side:?}"
    );
    let sampled = side.mean_in_flight_sampled.expect("a sampled mean");
    assert!((0.0..=16.0).contains(&sampled), "{side:?}");
}

/// A warm-up's requests reach the server but no figure: the run counts its own 100, the
/// server's statistics are reset after the warm-up, and the connections it opened are the
/// run's warm pool (none opened in the run). A server that refuses every request ends the
/// warm-up at its first answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_is_sent_first_and_left_out_of_every_figure() {
    let server = mock(with_latency(ms(20))).await;
    let results = run(BenchConfig {
        requests: Some(100),
        warmup: 48,
        ..config(&server, Load::Closed { concurrency: 16 })
    })
    .await;
    check_consistency(&results);
    assert_eq!((results.summary.requests, results.summary.ok), (100, 100));
    // The mock's statistics were reset after the warm-up: it counts the run's alone.
    assert_eq!(server.stats().requests_total, 100);
    assert_eq!(
        results.server.expect("volley-mock serves /stats").requests,
        100
    );
    // The warm-up opened the connections the run used.
    assert_eq!(results.connections.opened, 0, "{:?}", results.connections);
    assert!(
        results.connections.reused >= 100,
        "{:?}",
        results.connections
    );
    assert_eq!(results.config.warmup, 48);

    // A server that refuses every request: its first answers end the warm-up.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    let refusing = answering(move |n| {
        counter.fetch_max(n + 1, std::sync::atomic::Ordering::SeqCst);
        (
            "401 Unauthorized",
            "application/json",
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        )
    })
    .await;
    let bench = Bench::new(BenchConfig {
        base_url: refusing,
        requests: Some(10),
        warmup: 10_000,
        load: Load::Closed { concurrency: 4 },
        ..BenchConfig::default()
    })
    .unwrap();
    let results = bench.run().await.unwrap();
    assert_eq!(results.summary.ok, 0, "{results:?}");
    let sent = seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 100, "the warm-up went on after the refusals: {sent}");
}

/// A warm-up's streams are read a chunk at a time, not whole: one longer than the client's
/// body limit still leaves its connection warm in the pool (read whole, it failed at the
/// limit and its connection was closed, so the run opened its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_reads_streams_longer_than_the_body_limit_to_their_end() {
    let server = mock(MockConfig {
        output_tokens: OutputTokens::Fixed(64),
        ..MockConfig::default()
    })
    .await;
    let results = run(BenchConfig {
        requests: Some(8),
        warmup: 4,
        stream: true,
        output_tokens: Lengths::Fixed(64),
        // 64 chunks of about 150 bytes each: a stream is about 10 KB.
        client: Some(volley_bench::default_client().max_body_bytes(2048)),
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .await;
    check_consistency(&results);
    assert_eq!((results.summary.ok, results.summary.failed), (8, 0));
    assert_eq!(results.summary.chunks, 8 * 64);
    assert_eq!(results.connections.opened, 0, "{:?}", results.connections);
}

#[tokio::test(flavor = "current_thread")]
async fn lanes_on_runtimes_of_their_own_count_every_request() {
    // The mock runs here; the lanes, their connections and timers on two other runtimes.
    let server = mock(with_latency(ms(10))).await;
    let workers = WorkerRuntimes::start(2).unwrap();
    for load in [
        Load::Closed { concurrency: 16 },
        Load::Open {
            rate: 2_000.0,
            arrivals: Arrivals::Constant,
        },
    ] {
        // The most tasks each worker runtime had alive during the run: its lanes (four per
        // runtime) and the connections they opened.
        let most = std::cell::RefCell::new(vec![0; 2]);
        let sample = async {
            loop {
                for (most, runtime) in most.borrow_mut().iter_mut().zip(workers.handles()) {
                    *most = (*most).max(runtime.metrics().num_alive_tasks());
                }
                tokio::time::sleep(ms(2)).await;
            }
        };
        let results = tokio::select! {
            results = run(BenchConfig {
                requests: Some(300),
                workers: workers.handles().to_vec(),
                ..config(&server, load)
            }) => results,
            () = sample => unreachable!("the sampler never ends"),
        };
        check_consistency(&results);
        let s = &results.summary;
        assert_eq!((s.requests, s.ok, s.failed, s.dropped), (300, 300, 0, 0));
        assert!(results.latency.min >= 9.9, "{:?}", results.latency);
        // Reset before each run, the mock saw exactly this run's requests.
        assert_eq!(
            results.server.expect("volley-mock serves /stats").requests,
            300
        );
        let most = most.into_inner();
        assert!(
            most.iter().all(|&n| n >= 4),
            "tasks alive per runtime: {most:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_stack_runs_the_transport_alone() {
    let server = mock(with_latency(ms(5))).await;
    let results = run(BenchConfig {
        requests: Some(100),
        stack: StackKind::Bare,
        prompt_tokens: Lengths::Uniform { min: 4, max: 40 },
        output_tokens: Lengths::Uniform { min: 1, max: 8 },
        ..config(&server, Load::Closed { concurrency: 8 })
    })
    .await;
    check_consistency(&results);
    assert_eq!((results.summary.ok, results.summary.failed), (100, 0));
    // Each request asked for 1..=8 tokens and got what it asked for.
    assert!((100..=800).contains(&results.summary.output_tokens));
    assert_eq!(results.config.stack, "bare");
    assert_eq!(results.config.output_tokens, "uniform:1..8");
    assert_eq!(results.server.unwrap().requests, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_every_arrival_it_can() {
    let server = mock(with_latency(ms(5))).await;
    let results = run(BenchConfig {
        requests: Some(60),
        ..config(
            &server,
            Load::Open {
                rate: 300.0,
                arrivals: Arrivals::Constant,
            },
        )
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    // 60 arrivals can never fill 10 000 slots: every one is sent, none dropped.
    assert_eq!((s.requests, s.dropped), (60, 0));
    assert_eq!((s.ok, s.failed), (60, 0));
    assert!(results.timeline.iter().all(|p| p.target.is_none()));
    let c = &results.config;
    assert_eq!(c.mode, "open");
    assert_eq!(
        (c.rate, c.arrivals.as_deref()),
        (Some(300.0), Some("constant"))
    );
    assert_eq!(c.max_in_flight, Some(10_000));
    assert_eq!(results.server.unwrap().requests, s.requests);
}

/// An open loop's latency counts from each arrival's scheduled time: when the load generator
/// falls behind (its thread blocked for 300 ms here), the arrivals due meanwhile go out late,
/// and their latencies show it rather than hide it (coordinated omission). The server, on a
/// runtime of its own, answers in 1 ms throughout.
#[test]
fn open_loop_latency_counts_from_the_scheduled_arrival() {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_runtime.block_on(mock(with_latency(ms(1))));
    let results = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let bench = Bench::new(BenchConfig {
                requests: Some(40),
                ..config(
                    &server,
                    Load::Open {
                        rate: 50.0,
                        arrivals: Arrivals::Constant,
                    },
                )
            })
            .unwrap();
            let live = bench.live();
            let run = tokio::spawn(bench.run());
            while live.started() < 3 {
                tokio::time::sleep(ms(1)).await;
            }
            // Blocks the only thread of the pacer and the lanes.
            std::thread::sleep(ms(300));
            run.await.unwrap().unwrap()
        });
    check_consistency(&results);
    assert_eq!(results.summary.ok, 40);
    // 15 arrivals were due during the block, late by 20 to 300 ms: the 4 latest by more than
    // 200 ms.
    assert!(results.latency.p90 >= 150.0, "{:?}", results.latency);
    drop(server_runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_drops_arrivals_beyond_max_in_flight() {
    // 100 arrivals a second, each in flight 300 ms, at most 2 at once: most are dropped.
    let server = mock(with_latency(ms(300))).await;
    let results = run(BenchConfig {
        requests: Some(30),
        max_in_flight: 2,
        ..config(
            &server,
            Load::Open {
                rate: 100.0,
                arrivals: Arrivals::Poisson,
            },
        )
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert_eq!(s.requests + s.dropped, 30);
    assert!(s.dropped > 0, "{s:?}");
    assert!(s.peak_in_flight <= 2);
    assert_eq!(s.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_grows_the_target_and_stops_at_the_duration() {
    let server = mock(with_latency(ms(10))).await;
    let ramp: Ramp = "1..8 over 400ms".parse().unwrap();
    let results = run(BenchConfig {
        duration: Some(ms(600)),
        ..config(&server, Load::Ramp(ramp))
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert!(s.requests > 0);
    assert_eq!(s.failed, 0);
    assert!(s.peak_in_flight <= 8);
    let targets: Vec<f64> = results.timeline.iter().map(|p| p.target.unwrap()).collect();
    assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
    assert!(
        targets[0] < 2.0 && *targets.last().unwrap() == 8.0,
        "{targets:?}"
    );
    let c = &results.config;
    assert_eq!(
        (
            c.mode.as_str(),
            c.ramp_from,
            c.concurrency,
            c.ramp_over_ms,
            c.duration_ms
        ),
        ("ramp", Some(1), Some(8), Some(400), Some(600))
    );
    assert_eq!(results.server.unwrap().requests, s.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrinking_ramp_stops_at_the_request_budget() {
    // Lanes whose share of the target drops to 0 wait for a control change: when the budget
    // runs out, they must be told, or the run never ends.
    let server = mock(with_latency(ms(5))).await;
    let ramp: Ramp = "8..1 over 200ms".parse().unwrap();
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        run(BenchConfig {
            requests: Some(50),
            ..config(&server, Load::Ramp(ramp))
        }),
    )
    .await
    .expect("a ramp with a request budget and no duration ends");
    check_consistency(&results);
    let s = &results.summary;
    assert_eq!((s.requests, s.ok, s.failed), (50, 50, 0));
    assert!(s.peak_in_flight <= 8);
    assert_eq!(results.server.unwrap().requests, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_measure_time_to_first_token_and_between_tokens() {
    let server = mock(MockConfig {
        ttft: Some(Latency::Fixed(ms(5))),
        inter_token: Latency::Fixed(ms(1)),
        output_tokens: OutputTokens::Fixed(64),
        ..MockConfig::default()
    })
    .await;
    let results = run(BenchConfig {
        requests: Some(40),
        stream: true,
        output_tokens: Lengths::Fixed(8),
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert_eq!((s.ok, s.failed), (40, 0));
    // 8 content chunks per stream, and the usage chunk's 8 completion tokens.
    assert_eq!(s.chunks, 40 * 8);
    assert_eq!(s.output_tokens, 40 * 8);
    let ttft = results.ttft.expect("streams have a TTFT");
    assert_eq!(ttft.count, 40);
    assert!(ttft.min >= 4.9, "{ttft:?}");
    assert!(ttft.max <= results.latency.max);
    let inter = results.inter_token.expect("streams have inter-token gaps");
    assert_eq!(inter.count, 40 * 7);
    // 7 tokens after the first, about 1 ms apart at the mock (the arithmetic is the
    // recorder's unit test).
    let tpot = results.tpot.expect("streams have a time per output token");
    assert_eq!(tpot.count, 40);
    // The mock cannot send faster than its schedule of 1 ms a token.
    assert!(tpot.p50 >= 0.5, "{tpot:?}");
    assert!(!results.ttft_histogram.is_empty());
    assert_eq!(results.ttft_histogram.iter().map(|b| b.2).sum::<u64>(), 40);
    assert!(results.config.stream);
    assert!(results.server.is_some());
    let text = volley_bench::report::render_text(&results);
    assert!(text.contains("time to first token ms: p50"), "{text}");
    assert!(text.contains("time per output token ms: p50"), "{text}");

    // Streams without a content chunk: no TTFT is measured, and the summary says so rather
    // than printing zeros.
    let server = mock(MockConfig {
        output_tokens: OutputTokens::Fixed(0),
        ..MockConfig::default()
    })
    .await;
    let results = run(BenchConfig {
        requests: Some(8),
        stream: true,
        ..config(&server, Load::Closed { concurrency: 2 })
    })
    .await;
    assert_eq!(results.summary.ok, 8);
    assert_eq!(results.ttft.as_ref().map(|t| t.count), Some(0));
    let text = volley_bench::report::render_text(&results);
    assert!(
        text.contains("time to first token ms: none measured"),
        "{text}"
    );
    assert!(!text.contains("between content chunks"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_are_counted_by_kind() {
    let server = mock(MockConfig {
        faults: "429=0.2,500=0.2,503=0.1".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let results = run(BenchConfig {
        requests: Some(300),
        ..config(&server, Load::Closed { concurrency: 8 })
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert!(s.failed > 0 && s.ok > 0, "{s:?}");
    let errors = &results.errors;
    for kind in ["rate_limited", "status_500", "status_503"] {
        assert!(
            errors.get(kind).is_some_and(|&n| n > 0),
            "{kind} in {errors:?}"
        );
    }
    assert_eq!(errors.len(), 3, "{errors:?}");
    // Retries are off by default: every fault is one failed request.
    let server_side = results.server.unwrap();
    assert_eq!(server_side.requests, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_are_counted_as_such() {
    let server = mock(MockConfig {
        faults: "cut=0.3".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let results = run(BenchConfig {
        requests: Some(60),
        stream: true,
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .await;
    check_consistency(&results);
    assert!(results.summary.failed > 0);
    assert!(results.summary.ok > 0);
    assert_eq!(results.errors.keys().collect::<Vec<_>>(), ["stream_broken"]);
    // Only successful streams have a TTFT.
    assert_eq!(results.ttft.unwrap().count, results.summary.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stop_ends_a_long_run_early() {
    let server = mock(with_latency(ms(20))).await;
    let bench = Bench::new(BenchConfig {
        duration: Some(Duration::from_secs(600)),
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .unwrap();
    let live = bench.live();
    assert_eq!((live.started(), live.elapsed()), (0, Duration::ZERO));
    let run = tokio::spawn(bench.run());
    while live.finished() < 10 {
        tokio::time::sleep(ms(5)).await;
    }
    live.stop();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a stopped run ends")
        .unwrap()
        .unwrap();
    check_consistency(&results);
    assert!(results.summary.requests >= 10);
    assert_eq!(results.summary.failed, 0);
    assert!(results.interrupted);
    assert!(volley_bench::report::render_text(&results).contains("interrupted"));
}

/// A server that holds every answer for an hour does not hold a timed run: past its
/// duration and grace, the requests in flight are cancelled and counted as unfinished, in a
/// closed and in an open loop; and a second Ctrl-C (`Live::cancel`) does the same at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_past_the_grace_are_cancelled_and_counted() {
    let server = mock(with_latency(Duration::from_secs(3600))).await;
    for load in [
        Load::Closed { concurrency: 4 },
        Load::Open {
            rate: 40.0,
            arrivals: Arrivals::Constant,
        },
    ] {
        let bench = Bench::new(BenchConfig {
            duration: Some(ms(300)),
            grace: ms(300),
            ..config(&server, load)
        })
        .unwrap();
        let live = bench.live();
        let results = tokio::time::timeout(Duration::from_secs(60), bench.run())
            .await
            .expect("the run ends past its grace")
            .unwrap();
        let s = &results.summary;
        assert_eq!((s.requests, s.ok, s.failed), (0, 0, 0), "{load:?}");
        assert!(s.unfinished > 0, "{load:?}");
        assert_eq!(live.started(), s.unfinished, "{load:?}");
        assert_eq!(live.in_flight(), 0, "{load:?}");
        assert!(!results.interrupted);
        if let Load::Closed { concurrency } = load {
            assert_eq!(s.unfinished, concurrency as u64);
            // They were in flight all along, up to the cancel.
            assert!(s.mean_in_flight > 2.0, "{s:?}");
            assert!(s.wall_ms >= 500.0, "{s:?}");
        }
        let text = volley_bench::report::render_text(&results);
        assert!(
            text.contains(&format!("{} cancelled unfinished", s.unfinished)),
            "{text}"
        );
    }

    // No duration: a stop waits for the requests in flight, a cancel does not.
    let bench = Bench::new(BenchConfig {
        requests: Some(100),
        ..config(&server, Load::Closed { concurrency: 3 })
    })
    .unwrap();
    let live = bench.live();
    let run = tokio::spawn(bench.run());
    while live.in_flight() < 3 {
        tokio::time::sleep(ms(5)).await;
    }
    live.stop();
    tokio::time::sleep(ms(200)).await;
    assert!(!run.is_finished(), "a stop finishes what is in flight");
    live.cancel();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a cancelled run ends")
        .unwrap()
        .unwrap();
    assert_eq!(
        (results.summary.requests, results.summary.unfinished),
        (0, 3)
    );
    assert!(results.interrupted);
    assert_eq!(live.in_flight(), 0);
}

/// Requests cancelled past the grace do not dilute the rates: requests/s is over the time to
/// the last request finished, not to the cancel; the throughput timeline counts finished
/// requests only, and the mean time a request held its slot counts only finished ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cancelled_past_the_grace_do_not_dilute_the_rates() {
    // Every fifth request stalls for an hour: the four slots stall one after another, well
    // before the run's 400 ms, and wait out the grace of 1 s.
    let server = mock(MockConfig {
        faults: "stall=0.2".parse().unwrap(),
        ..with_latency(ms(10))
    })
    .await;
    let results = Bench::new(BenchConfig {
        duration: Some(ms(400)),
        grace: Duration::from_secs(1),
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .unwrap()
    .run()
    .await
    .unwrap();
    check_consistency(&results);
    let s = &results.summary;
    assert!(s.requests > 0 && s.unfinished > 0, "{s:?}");
    assert!(s.wall_ms >= 1_400.0, "{s:?}");
    // The finished requests all ended by 410 ms, against a wall of 1.4 s or more.
    let over_wall = s.requests as f64 * 1000.0 / s.wall_ms;
    assert!(s.requests_per_sec > 3.0 * over_wall, "{s:?}");
    assert!((10.0..200.0).contains(&s.mean_request_ms), "{s:?}");

    // Failures that hold their slots (stalls cut by a 300 ms timeout) count in the mean time
    // a request took, which `find_knee`'s Little's law takes; the latency is of successes.
    let results = run(BenchConfig {
        requests: Some(100),
        seed: 7,
        client: Some(volley_bench::default_client().timeout(ms(300)).retries(0)),
        ..config(&server, Load::Closed { concurrency: 4 })
    })
    .await;
    check_consistency(&results);
    let s = &results.summary;
    assert!(s.failed > 0 && s.ok > 0, "{s:?}");
    let want = (results.latency.mean * s.ok as f64 + 300.0 * s.failed as f64) / s.requests as f64;
    assert!(
        (s.mean_request_ms - want).abs() < want * 0.2,
        "{} against {want}",
        s.mean_request_ms
    );
    assert!(s.mean_request_ms > 2.0 * results.latency.mean, "{s:?}");
}

/// `find_knee` keeps what it measured when a later step is refused from its start (a WAF or
/// a per-key cap that turns the server's answers into 403s): the ladder ends there, with
/// that step at nothing succeeded, and the knee is read from the steps before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_refused_after_the_first_ends_the_ladder_and_keeps_the_others() {
    const OK: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}"#;
    const FORBIDDEN: &str = r#"{"error":{"message":"blocked","type":"forbidden"}}"#;
    // Step 1 sends 10 requests (one slot, 10 each) between its `/stats` probe's reset and
    // read; everything after is refused.
    let url = answering(|n| {
        if n < 12 {
            ("200 OK", "application/json", OK)
        } else {
            ("403 Forbidden", "application/json", FORBIDDEN)
        }
    })
    .await;
    let base = BenchConfig {
        base_url: url,
        ..BenchConfig::default()
    };
    let steps = volley_bench::knee::find_knee(&base, &[1, 2, 3], 10)
        .await
        .unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].success_share, 1.0);
    assert_eq!((steps[1].concurrency, steps[1].success_share), (2, 0.0));
    assert_eq!(volley_bench::knee::knee_of(&steps).unwrap().concurrency, 1);

    // Refused from the first step: an error saying why.
    let url = responder_with("403 Forbidden", "application/json", FORBIDDEN).await;
    let base = BenchConfig {
        base_url: url,
        ..BenchConfig::default()
    };
    let error = volley_bench::knee::find_knee(&base, &[1, 2], 20)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Status);
    assert!(error.to_string().contains("blocked"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_stats_has_no_server_side() {
    let url = plain_responder().await;
    let results = run(BenchConfig {
        base_url: url,
        requests: Some(20),
        load: Load::Closed { concurrency: 2 },
        ..BenchConfig::default()
    })
    .await;
    check_consistency(&results);
    assert_eq!(results.summary.ok, 20);
    assert!(!results.interrupted);
    assert!(results.server.is_none());
    // Output tokens come from the usage found in each body.
    assert_eq!(results.summary.output_tokens, 20 * 3);
}

/// An error chunk whose first key is not `error` (OpenRouter's, with its `id` first), then
/// `[DONE]`: a failed stream, not a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_chunk_in_a_stream_fails_it_whatever_its_first_key() {
    let stream = concat!(
        "data: {\"id\":\"gen-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"id\":\"gen-1\",\"error\":{\"code\":502,\"message\":\"Provider returned error\"},",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let url = responder("text/event-stream", stream).await;
    let results = run(BenchConfig {
        base_url: url,
        requests: Some(4),
        stream: true,
        stack: StackKind::Bare,
        load: Load::Closed { concurrency: 1 },
        ..BenchConfig::default()
    })
    .await;
    assert_eq!(results.summary.failed, 4);
    assert_eq!(results.errors.keys().collect::<Vec<_>>(), ["stream_broken"]);
}

/// A server that refuses every request with the same client error (a model it does not
/// serve): the run stops after its first 16 requests, saying why with the server's message,
/// instead of spending its whole budget on 404s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_every_request_stops_the_run_with_its_message() {
    let body = r#"{"error":{"message":"The model `gpt-4o-mini` does not exist.","type":"invalid_request_error","code":"model_not_found"}}"#;
    let url = responder_with("404 Not Found", "application/json", body).await;
    let results = run(BenchConfig {
        base_url: url,
        requests: Some(2_000),
        load: Load::Closed { concurrency: 4 },
        ..BenchConfig::default()
    })
    .await;
    let why = results.stopped_early.clone().expect("stopped early");
    assert!(why.contains("status_404"), "{why}");
    assert!(why.contains("does not exist"), "{why}");
    assert!(
        results.summary.requests < 100,
        "{}",
        results.summary.requests
    );
    assert!(results.error_examples["status_404"].contains("does not exist"));
    let text = volley_bench::report::render_text(&results);
    assert!(text.contains("stopped early"), "{text}");
}

/// A server's message kept as an example never holds the key the requests carry, even when
/// it comes in a 2xx body (which no error scrubbed on its way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_examples_never_hold_the_key() {
    const KEY: &str = "sk-bench-echoed-0123456789";
    let body = r#"{"error":{"message":"invalid key sk-bench-echoed-0123456789"}}"#;
    let url = responder("application/json", body).await;
    let results = run(BenchConfig {
        base_url: url,
        api_key: Some(volley::core::ApiKey::new(KEY)),
        requests: Some(4),
        load: Load::Closed { concurrency: 1 },
        ..BenchConfig::default()
    })
    .await;
    assert_eq!(results.summary.failed, 4);
    let example = &results.error_examples["body_decode"];
    assert!(example.contains("invalid key ***"), "{example}");
    assert!(!example.contains(KEY), "{example}");
}

#[test]
fn invalid_configurations_are_refused_before_the_run() {
    let err = Bench::new(BenchConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("stop condition"), "{err}");

    let err = Bench::new(BenchConfig {
        requests: Some(1),
        base_url: "not a url".into(),
        ..BenchConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    let err = Bench::new(BenchConfig {
        duration: Some(Duration::from_secs(1)),
        load: Load::Open {
            rate: 0.0,
            arrivals: Arrivals::Poisson,
        },
        ..BenchConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("rate"), "{err}");

    // Outside a runtime, a valid configuration builds.
    Bench::new(BenchConfig {
        requests: Some(1),
        ..BenchConfig::default()
    })
    .unwrap();
}

#[test]
fn flag_grammars() {
    assert_eq!("64".parse::<Lengths>().unwrap(), Lengths::Fixed(64));
    assert_eq!(
        "uniform:16..512".parse::<Lengths>().unwrap(),
        Lengths::Uniform { min: 16, max: 512 }
    );
    assert!("512..16".parse::<Lengths>().is_err());
    let ramp: Ramp = "1..1024 over 30s".parse().unwrap();
    assert_eq!(
        (ramp.from, ramp.to, ramp.over),
        (1, 1024, Duration::from_secs(30))
    );
    assert!("1..1024 over forever".parse::<Ramp>().is_err());
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("500ms").unwrap(), ms(500));
    assert!(parse_duration("5 fortnights").is_err());
    assert_eq!("poisson".parse::<Arrivals>().unwrap(), Arrivals::Poisson);
    assert_eq!("bare".parse::<StackKind>().unwrap(), StackKind::Bare);
}

/// An HTTP/1.1 server that answers every request, `/stats` included, with one small chat
/// completion (3 completion tokens): a stand-in for a provider without volley-mock's
/// statistics. Returns its base URL.
async fn plain_responder() -> String {
    let body = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a b c"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}"#;
    responder("application/json", body).await
}

/// An HTTP/1.1 server that answers every request with `body` as `content_type`. Returns its
/// base URL.
async fn responder(content_type: &'static str, body: &'static str) -> String {
    responder_with("200 OK", content_type, body).await
}

/// [`responder`] with another status line.
async fn responder_with(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> String {
    answering(move |_| (status, content_type, body)).await
}

/// An HTTP/1.1 server that answers its `n`th request (from 0, over all connections) with
/// `answer(n)`: a status line, a content type and a body. Returns its base URL.
async fn answering(
    answer: impl Fn(u64) -> (&'static str, &'static str, &'static str) + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (answer, served) = (answer.clone(), served.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its head, then `content-length` bytes of body.
                    let head_end = loop {
                        if let Some(at) = find(&buf, b"\r\n\r\n") {
                            break at + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (status, content_type, body) = answer(n);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Two endpoints, one answering in 5 ms, one always 503: the results have a row per endpoint
/// whose attempts add up to what the servers received, the dead one's breaker opened, the
/// share timeline covers the run, and the reports carry the table. One lone endpoint with
/// hedging (bimodal: 2 % of answers take 5 s) reports its hedges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_are_reported_each() {
    let good = mock(with_latency(ms(5))).await;
    let dead = mock(MockConfig {
        faults: "503=1".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let r = run(BenchConfig {
        endpoints: vec![
            volley::Endpoint::new(good.url()).name("good"),
            volley::Endpoint::new(dead.url()).name("dead"),
        ],
        load: Load::Closed { concurrency: 8 },
        requests: Some(600),
        ..BenchConfig::default()
    })
    .await;
    check_consistency(&r);
    assert!(r.server.is_none(), "server stats are one server's");
    let names: Vec<&str> = r.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["good", "dead"]);
    let (g, d) = (&r.endpoints[0], &r.endpoints[1]);
    assert_eq!(g.attempts, good.stats().requests_total);
    // The mock may count the breaker's health checks (GET /models) too.
    assert!(d.attempts <= dead.stats().requests_total, "{d:?}");
    assert_eq!(d.server_errors, d.attempts);
    assert!(d.breaker_openings >= 1, "{d:?}");
    // Without retries the dead endpoint's answers fail their requests; the breaker keeps
    // them few.
    assert_eq!(r.summary.failed, d.attempts);
    assert!(d.attempts * 10 < r.summary.requests, "{d:?}");
    let sampled: u64 = r.endpoint_timeline.iter().flat_map(|p| &p.attempts).sum();
    assert_eq!(sampled, g.attempts + d.attempts);
    assert_eq!(r.hedges, 0);
    let md = volley_bench::report::render_markdown(&r);
    assert!(
        md.contains("## Endpoints") && md.contains("| good |"),
        "{md}"
    );
    let html = volley_bench::report::render_html(&r);
    assert!(html.contains("Share of attempts by endpoint"));

    let slow_tail = mock(MockConfig {
        latency: "bimodal:5ms,5s,0.02".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let r = run(BenchConfig {
        base_url: slow_tail.url(),
        load: Load::Closed { concurrency: 8 },
        requests: Some(400),
        client: Some(
            volley_bench::default_client().hedge(volley::Hedging::after(ms(200)).budget(0.1)),
        ),
        ..BenchConfig::default()
    })
    .await;
    check_consistency(&r);
    assert_eq!(r.endpoints.len(), 1);
    assert!(r.hedges > 0);
    assert_eq!(
        r.endpoints[0].attempts,
        r.summary.requests + r.hedges,
        "{:?}",
        r.endpoints
    );
    assert!(volley_bench::report::render_text(&r).contains("hedged copies"));
}

/// `adaptive`: the client's limit adapts under a closed loop of 64 against a server that holds
/// 16 at once (503 beyond): the results hold the limit over time, never above the load's 64,
/// and it came down from where it would have stood fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_is_sampled_into_the_results() {
    let server = mock(MockConfig {
        latency: Latency::Fixed(ms(20)),
        capacity: "max=16".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let r = run(BenchConfig {
        adaptive: true,
        requests: Some(1_500),
        ..config(&server, Load::Closed { concurrency: 64 })
    })
    .await;
    check_consistency(&r);
    assert!(r.config.adaptive);
    assert!(!r.concurrency_limit.is_empty(), "no limit sampled");
    assert!(
        r.concurrency_limit
            .iter()
            .all(|&(_, n)| (1..=64).contains(&n))
    );
    assert!(
        r.concurrency_limit.windows(2).all(|w| w[0].0 < w[1].0),
        "samples in time order"
    );
    let fixed = run(BenchConfig {
        requests: Some(200),
        ..config(&server, Load::Closed { concurrency: 64 })
    })
    .await;
    assert!(
        fixed.concurrency_limit.is_empty(),
        "a fixed limit is not sampled"
    );
}
