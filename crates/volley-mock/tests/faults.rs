//! Fault injection, forced per request with `x-mock-fault` and drawn with a seeded RNG.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use volley_mock::{FaultKind, Faults, Latency, MockConfig};

#[tokio::test]
async fn forced_429_has_retry_after_headers_and_a_rate_limit_body() {
    let server = server(MockConfig {
        retry_after: Duration::from_millis(2500),
        ..MockConfig::default()
    })
    .await;
    let reply = post(
        &client(),
        &chat_url(&server),
        &chat_body(false),
        &[("x-mock-fault", "429")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(reply.header("retry-after-ms"), Some("2500"));
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("Rate limit"));
    let stats = server.stats();
    assert_eq!(stats.faults.rate_limit, 1);
    assert_eq!(stats.status_count(429), 1);
}

#[tokio::test]
async fn forced_500_and_503() {
    let server = server(MockConfig {
        unavailable_retry_after: Some(Duration::from_secs(2)),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let reply = post(&client, &url, &chat_body(false), &[("x-mock-fault", "500")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    // A stream fails the same way, before any event.
    let reply = post(
        &client,
        &url,
        &chat_body(true),
        &[("x-mock-fault", "server_error")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

    let reply = post(&client, &url, &chat_body(false), &[("x-mock-fault", "503")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("retry-after-ms"), Some("2000"));
    reply.json();

    let plain = volley_mock::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let reply = post(
        &client,
        &chat_url(&plain),
        &chat_body(false),
        &[("x-mock-fault", "503")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), None);

    let stats = server.stats();
    assert_eq!(
        (stats.faults.server_error, stats.faults.unavailable),
        (2, 1)
    );
}

#[tokio::test]
async fn forced_reset_is_a_tcp_reset_not_a_response() {
    let server = server(MockConfig::default()).await;
    let outcome = raw_exchange(
        server.addr(),
        &raw_chat_request("x-mock-fault: reset\r\n", false),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        outcome.received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&outcome.received)
    );
    let err = outcome
        .end
        .expect_err("the connection must be reset, not closed cleanly");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");

    // The hyper client sees an error too, over HTTP/1 and HTTP/2.
    for client in [client(), h2_client()] {
        let result = post(
            &client,
            &chat_url(&server),
            &chat_body(false),
            &[("x-mock-fault", "reset")],
        )
        .await;
        assert!(result.is_err(), "{result:?}");
    }
    let stats = server.stats();
    assert_eq!((stats.requests_total, stats.faults.reset), (3, 3));
    assert!(stats.responses_by_status.is_empty(), "{stats:?}");
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn h2_reset_spares_the_other_streams() {
    let server = server(MockConfig::default()).await;
    let client = h2_client();
    let url = chat_url(&server);
    assert!(
        post(
            &client,
            &url,
            &chat_body(false),
            &[("x-mock-fault", "reset")]
        )
        .await
        .is_err()
    );
    let reply = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.stats().connections_total, 1);
}

#[tokio::test]
async fn forced_stall_sends_nothing_then_closes() {
    // Long enough that the request is still stalled when it is looked at, on a loaded machine.
    let server = server(MockConfig {
        stall_duration: Duration::from_millis(1_500),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let client = client();
    let (url, body) = (chat_url(&server), chat_body(false));
    let request = post(&client, &url, &body, &[("x-mock-fault", "stall")]);
    tokio::pin!(request);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut request)
            .await
            .is_err(),
        "a stalled request must not be answered"
    );
    assert_eq!(server.stats().in_flight, 1);
    // After the stall the connection closes without a response.
    let result = request.await;
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    let stats = server.stats();
    assert_eq!((stats.faults.stall, stats.in_flight), (1, 0));
    assert!(stats.responses_by_status.is_empty());
}

#[tokio::test]
async fn forced_cut_breaks_streams_and_bodies() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let url = chat_url(&server);

    // A raw look at the stream: some events arrive, then the connection ends without the
    // chunked terminator and without [DONE].
    let outcome = raw_exchange(
        server.addr(),
        &raw_chat_request("x-mock-fault: cut\r\n", true),
        Duration::from_secs(1),
    )
    .await;
    let text = String::from_utf8_lossy(&outcome.received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");

    for stream in [true, false] {
        let result = post(
            &client,
            &url,
            &chat_body(stream),
            &[("x-mock-fault", "cut")],
        )
        .await;
        assert!(result.is_err(), "stream {stream}: {result:?}");
    }
    let stats = server.stats();
    assert_eq!(
        (stats.faults.cut, stats.streams_completed, stats.in_flight),
        (3, 0, 0)
    );
    assert_eq!(stats.status_count(200), 3);
}

#[tokio::test]
async fn forced_malformed_sends_invalid_json() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let url = chat_url(&server);
    let reply = post(
        &client,
        &url,
        &chat_body(false),
        &[("x-mock-fault", "malformed")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.body.is_empty());
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());

    let reply = post(
        &client,
        &url,
        &chat_body(true),
        &[("x-mock-fault", "malformed")],
    )
    .await
    .unwrap();
    let events = sse_data(reply.text());
    assert_eq!(events.last(), Some(&"[DONE]"));
    let invalid = events[..events.len() - 1]
        .iter()
        .filter(|e| serde_json::from_str::<Value>(e).is_err())
        .count();
    assert_eq!(invalid, 1, "{events:?}");
    assert_eq!(server.stats().faults.malformed, 2);
}

#[tokio::test]
async fn latency_header_overrides_the_latency() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let started = Instant::now();
    let reply = post(
        &client,
        &chat_url(&server),
        &chat_body(false),
        &[("x-mock-latency", "300ms")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // For a stream it delays the first chunk.
    let slow = server_with_latency("1h").await;
    let started = Instant::now();
    let reply = post(
        &client,
        &chat_url(&slow),
        &chat_body(true),
        &[("x-mock-latency", "200ms")],
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(sse_data(reply.text()).last(), Some(&"[DONE]"));
}

async fn server_with_latency(latency: &str) -> volley_mock::MockServer {
    server(MockConfig {
        latency: latency.parse().unwrap(),
        ..MockConfig::default()
    })
    .await
}

/// Sends `n` requests one after the other and returns their statuses (`0` for no response).
async fn statuses(server: &volley_mock::MockServer, n: usize) -> Vec<u16> {
    let client = client();
    let url = chat_url(server);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let status = match post(
            &client,
            &url,
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
            &[],
        )
        .await
        {
            Ok(reply) => reply.status.as_u16(),
            Err(_) => 0,
        };
        out.push(status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilistic_faults_follow_the_probabilities_and_the_seed() {
    let config = MockConfig {
        faults: "429=0.3,500=0.1".parse().unwrap(),
        ..MockConfig::default()
    };
    let a = server(config.clone()).await;
    let run_a = statuses(&a, 1000).await;
    let count = |run: &[u16], s: u16| run.iter().filter(|&&x| x == s).count();
    let (n429, n500) = (count(&run_a, 429), count(&run_a, 500));
    assert!((240..=360).contains(&n429), "429s: {n429}");
    assert!((60..=140).contains(&n500), "500s: {n500}");
    assert_eq!(count(&run_a, 200), 1000 - n429 - n500);
    let stats = a.stats();
    assert_eq!(stats.requests_total, 1000);
    assert_eq!(stats.faults.rate_limit as usize, n429);
    assert_eq!(stats.status_count(429) as usize, n429);

    // Same seed, same arrival order: the same sequence, on a new server or after a reset.
    let b = server(config.clone()).await;
    let run_b = statuses(&b, 200).await;
    assert_eq!(run_b, run_a[..200]);
    a.reset_stats();
    assert_eq!(statuses(&a, 200).await, run_a[..200]);

    // Another seed: another sequence.
    let c = server(MockConfig { seed: 7, ..config }).await;
    assert_ne!(statuses(&c, 200).await, run_a[..200]);
}

#[tokio::test]
async fn every_fault_kind_can_be_drawn() {
    // With probability 1 each kind happens on every request.
    for kind in [
        FaultKind::RateLimit,
        FaultKind::ServerError,
        FaultKind::Unavailable,
        FaultKind::Malformed,
    ] {
        let server = server(MockConfig {
            faults: Faults::NONE.with(kind, 1.0),
            ..MockConfig::default()
        })
        .await;
        let reply = post(&client(), &chat_url(&server), &chat_body(false), &[])
            .await
            .unwrap();
        let expected = match kind {
            FaultKind::RateLimit => 429,
            FaultKind::ServerError => 500,
            FaultKind::Unavailable => 503,
            _ => 200,
        };
        assert_eq!(reply.status.as_u16(), expected, "{kind}");
        assert_eq!(server.stats().faults.get(kind), 1, "{kind}");
    }
    let server = server(MockConfig {
        faults: Faults::NONE.with(FaultKind::Reset, 1.0),
        latency: Latency::ZERO,
        ..MockConfig::default()
    })
    .await;
    assert!(
        post(&client(), &chat_url(&server), &chat_body(false), &[])
            .await
            .is_err()
    );
}
