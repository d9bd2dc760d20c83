//! Server-side statistics and the server's life cycle.

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use volley_mock::{Latency, MockConfig, MockServer, Stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_requests_statuses_and_peak_in_flight() {
    // A generous latency: all 50 requests must arrive before the first one is answered, even
    // on a loaded machine.
    let server = server(MockConfig {
        latency: Latency::Fixed(Duration::from_secs(2)),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let requests = (0..50).map(|i| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let headers: &[(&str, &str)] = if i < 5 {
                &[("x-mock-fault", "429")]
            } else {
                &[]
            };
            post(&client, &url, &chat_body(false), headers).await
        })
    });
    // Once all have arrived, the 45 slow requests are in flight together.
    let requests: Vec<_> = requests.collect();
    let all = tokio::spawn(join_all(requests));
    wait_for(&server, |s| s.requests_total == 50 && s.in_flight == 45).await;

    for reply in all.await.unwrap() {
        reply.unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats.requests_total, 50);
    assert_eq!(stats.status_count(200), 45);
    assert_eq!(stats.status_count(429), 5);
    assert_eq!(stats.faults.rate_limit, 5);
    assert_eq!(stats.in_flight, 0);
    // One-sided: at most the 50 sent, and most of them at once.
    assert!(
        (25..=50).contains(&stats.peak_in_flight),
        "{}",
        stats.peak_in_flight
    );
    // The client's pool keeps its connections open.
    assert_eq!(stats.connections_open, stats.connections_total);

    // Once the sampler has closed the buckets (every 100 ms), the timeline accounts for
    // every request.
    let sum = |s: &Stats, of: fn(&volley_mock::TimelineBucket) -> u64| -> u64 {
        s.timeline.iter().map(of).sum()
    };
    wait_for(&server, |s| {
        sum(s, |b| b.started) >= 50 && sum(s, |b| b.completed) >= 50
    })
    .await;
    let timeline = server.stats().timeline;
    assert!(!timeline.is_empty());
    assert_eq!(timeline.iter().map(|b| b.started).sum::<u64>(), 50);
    assert_eq!(timeline.iter().map(|b| b.completed).sum::<u64>(), 50);
    assert!(
        timeline.iter().any(|b| b.max_in_flight >= 45),
        "{timeline:?}"
    );
    assert!(timeline.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    assert_eq!(timeline.last().unwrap().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_in_flight_reaches_the_concurrency() {
    let server = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(400)),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let requests = (0..50).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { post(&client, &url, &chat_body(false), &[]).await })
    });
    for reply in join_all(requests).await {
        assert_eq!(reply.unwrap().status, StatusCode::OK);
    }
    let stats = server.stats();
    // At most the 50 sent, and most of them at once (one-sided: a busy machine may start the
    // last before the first are answered, but not 400 ms late for half of them).
    assert!(
        (25..=50).contains(&stats.peak_in_flight),
        "peak {}",
        stats.peak_in_flight
    );
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn a_stream_is_in_flight_until_its_last_event() {
    let server = server(MockConfig {
        inter_token: Latency::Fixed(Duration::from_millis(30)),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let stream = tokio::spawn({
        let client = client.clone();
        async move { post(&client, &url, &chat_body(true), &[]).await }
    });
    // 16 tokens 30 ms apart: the head arrives at once, the stream runs for ~450 ms.
    wait_for(&server, |s| s.status_count(200) == 1).await;
    let during = server.stats();
    assert_eq!(during.in_flight, 1);
    assert_eq!(during.streams_completed, 0);
    let reply = stream.await.unwrap().unwrap();
    assert_eq!(sse_data(reply.text()).len(), 17);
    let after = server.stats();
    assert_eq!(
        (after.in_flight, after.streams_completed, after.chunks_sent),
        (0, 1, 17)
    );
}

#[tokio::test]
async fn stats_endpoint_serves_json_and_is_not_counted() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let base = format!("http://{}", server.addr());
    post(&client, &chat_url(&server), &chat_body(false), &[])
        .await
        .unwrap();
    get(&client, &format!("{}/models", server.url()))
        .await
        .unwrap();

    let reply = get(&client, &format!("{base}/stats")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let stats: Stats = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(stats.requests_total, 2);
    assert_eq!(stats.status_count(200), 2);
    let raw = reply.json();
    for key in [
        "requests_total",
        "responses_by_status",
        "faults",
        "in_flight",
        "peak_in_flight",
        "streams_completed",
        "chunks_sent",
        "uptime_ms",
        "timeline",
    ] {
        assert!(raw.get(key).is_some(), "missing {key}: {raw}");
    }
    assert_eq!(raw["responses_by_status"]["200"], 2);
    assert_eq!(raw["faults"]["rate_limit"], 0);

    // Reset answers the old window and starts a new one.
    let reply = send(
        &client,
        Method::POST,
        &format!("{base}/stats/reset"),
        None,
        &[],
    )
    .await
    .unwrap();
    let old: Stats = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(old.requests_total, 2);
    let now = server.stats();
    assert_eq!(now.requests_total, 0);
    assert!(now.responses_by_status.is_empty());
    assert_eq!(server.reset_stats().requests_total, 0);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_refuses_connections() {
    let server = server(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(200)),
        ..MockConfig::default()
    })
    .await;
    let addr = server.addr();
    let client = client();
    let url = chat_url(&server);
    let request = tokio::spawn(async move { post(&client, &url, &chat_body(false), &[]).await });
    wait_for(&server, |s| s.in_flight == 1).await;
    server.shutdown().await;
    let reply = request.await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_grace_bounds_stalled_requests_and_drop_stops_the_server() {
    let server = server(MockConfig {
        shutdown_grace: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let stalled = tokio::spawn(async move {
        post(
            &client,
            &url,
            &chat_body(false),
            &[("x-mock-fault", "stall")],
        )
        .await
    });
    wait_for(&server, |s| s.in_flight == 1).await;
    tokio::time::timeout(Duration::from_secs(1), server.shutdown())
        .await
        .expect("shutdown is bounded by the grace period");
    assert!(stalled.await.unwrap().is_err());

    let dropped = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = dropped.addr();
    drop(dropped);
    // The listener closes when the aborted accept task is next scheduled.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "the dropped server still accepts connections");
}

#[tokio::test]
async fn run_until_serves_until_the_signal() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(MockServer::run_until(addr, MockConfig::default(), async {
        let _ = stopped.await;
    }));
    let client = client();
    let url = format!("http://{addr}/v1/models");
    let mut reply = get(&client, &url).await;
    for _ in 0..50 {
        if reply.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        reply = get(&client, &url).await;
    }
    assert_eq!(reply.unwrap().status, StatusCode::OK);
    stop.send(()).unwrap();
    let stats = serving.await.unwrap().unwrap();
    assert!(stats.requests_total >= 1);
}

#[tokio::test]
async fn invalid_configs_are_refused() {
    let err = MockServer::start(MockConfig {
        embedding_dims: 0,
        ..MockConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("embedding_dims"), "{err}");
}

#[tokio::test]
async fn url_names_the_v1_base() {
    let server = server(MockConfig::default()).await;
    assert_eq!(
        server.url(),
        format!("http://127.0.0.1:{}/v1", server.addr().port())
    );
    let any = MockServer::bind("0.0.0.0:0".parse().unwrap(), MockConfig::default())
        .await
        .unwrap();
    assert_eq!(
        any.url(),
        format!("http://127.0.0.1:{}/v1", any.addr().port())
    );
}

/// Polls the statistics until `done` holds (for 5 s at least).
async fn wait_for(server: &MockServer, done: impl Fn(&Stats) -> bool) {
    for _ in 0..1_000 {
        if done(&server.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held: {:?}", server.stats());
}
