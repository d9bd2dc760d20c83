//! Several endpoints against volley-mock servers on loopback: balancing, circuit breakers,
//! retries that move. Counts are asserted, never times.

use std::time::Duration;

use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{BreakerConfig, BreakerState, Client, Endpoint, ErrorKind, Request};
use volley_mock::{MockConfig, MockServer};

fn request(i: usize) -> Request {
    let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("{i}"))]);
    Request::post_json("/chat/completions", &chat).unwrap()
}

async fn mock(faults: &str, latency: &str) -> MockServer {
    MockServer::start(MockConfig {
        faults: faults.parse().unwrap(),
        latency: latency.parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// A loopback base URL nothing listens on (connections are refused), and what keeps its port
/// from other tests while it lives.
fn refused_url() -> (volley_testkit::ports::RefusedPort, String) {
    let reserved = volley_testkit::ports::RefusedPort::new();
    let url = reserved.url();
    (reserved, url)
}

/// One good endpoint, one failing 27 % of requests, one answering 503 to everything, one
/// refusing connections: 5 000 lines all succeed, and the always-503 endpoint gets at most
/// 2 % of the requests (counted from the start, its opening failures included). Open
/// breakers are health-checked during the run, and every request is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_succeeds_past_a_failing_a_dead_and_a_refusing_endpoint() {
    let good = mock("", "2ms").await;
    let flaky = mock("500=0.27", "2ms").await;
    let dead = mock("503=1", "0").await;
    let (_reserved, refused) = refused_url();
    let client = Client::builder()
        .endpoint(Endpoint::new(good.url()).name("good"))
        .endpoint(Endpoint::new(flaky.url()).name("flaky"))
        .endpoint(Endpoint::new(dead.url()).name("dead"))
        .endpoint(Endpoint::new(refused).name("refused"))
        // Short cool-downs, so that open breakers are health-checked during the run.
        .breaker(
            BreakerConfig::new()
                .cool_down(Duration::from_millis(100))
                .max_cool_down(Duration::from_millis(400)),
        )
        .build()
        .unwrap();
    let lines = 5_000;
    let results = client.fan_out_collect((0..lines).map(request), 64).await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .take(5)
        .collect();
    let stats = client.endpoint_stats();
    for s in &stats {
        eprintln!("{s:?}");
    }
    assert!(failed.is_empty(), "lines failed, e.g. {failed:?}");
    let by_name = |name: &str| stats.iter().find(|s| s.name == name).unwrap();
    // User requests; the servers' counts are tied to these below.
    let dead_requests = by_name("dead").requests;
    assert!(
        dead_requests * 100 <= lines as u64 * 2,
        "the always-503 endpoint got {dead_requests} requests"
    );
    assert!(by_name("dead").breaker_opened >= 1);
    assert!(by_name("refused").breaker_opened >= 1);
    assert_eq!(by_name("refused").answered, 0);
    assert_eq!(by_name("good").breaker_opened, 0);
    assert!(
        by_name("flaky").server_errors > 0,
        "the flaky endpoint was avoided entirely"
    );
    // Health checks of open breakers go through the same pools and reach the mock servers,
    // but are not user requests, and they go on while the counts are read. So the counts
    // are read between two readings of the endpoints' statistics (`stats`, above, and
    // `after`): what a pool or server counted beyond the user requests is at least the
    // checks finished before, and at most those finished after plus the one each endpoint
    // whose breaker ever opened may have in flight (its checks go one at a time).
    let sent: u64 = stats.iter().map(|s| s.requests).sum();
    let pooled = client.connection_stats().requests;
    let received: Vec<u64> = [&good, &flaky, &dead]
        .iter()
        .map(|server| server.stats().requests_total)
        .collect();
    let after = client.endpoint_stats();
    let checks =
        |stats: &[volley::EndpointStats]| -> u64 { stats.iter().map(|s| s.health_checks).sum() };
    let in_flight = after.iter().filter(|s| s.breaker_opened > 0).count() as u64;
    assert!(
        (sent + checks(&stats)..=sent + checks(&after) + in_flight).contains(&pooled),
        "connection statistics cover every endpoint's pool: {pooled} requests, \
         {sent} user requests, {}..{} checks",
        checks(&stats),
        checks(&after)
    );
    for (i, name) in ["good", "flaky", "dead"].into_iter().enumerate() {
        let (before, after) = (
            by_name(name),
            after.iter().find(|s| s.name == name).unwrap(),
        );
        assert_eq!(
            before.requests, after.requests,
            "{name}: user requests after the run"
        );
        let open = u64::from(after.breaker_opened > 0);
        let range = before.health_checks..=after.health_checks + open;
        assert!(
            range.contains(&received[i].saturating_sub(before.requests)),
            "{name}: {} requests received, {} user requests, {range:?} checks",
            received[i],
            before.requests
        );
    }
}

/// Two healthy endpoints of 100 ms and 1 s, a closed loop of 64: at least 85 % of the
/// requests go to the fast one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_goes_mostly_to_the_faster_endpoint() {
    let fast = mock("", "100ms").await;
    let slow = mock("", "1s").await;
    let client = Client::builder()
        .endpoint(Endpoint::new(slow.url()))
        .endpoint(Endpoint::new(fast.url()))
        .build()
        .unwrap();
    let results = client.fan_out_collect((0..1_280).map(request), 64).await;
    assert!(results.iter().all(Result::is_ok));
    let (f, s) = (fast.stats().requests_total, slow.stats().requests_total);
    eprintln!("fast {f}, slow {s}: {:?}", client.endpoint_stats());
    assert!(f * 100 >= (f + s) * 85, "fast {f}, slow {s}");
}

/// A lower priority group takes traffic only while the first is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_group_is_used_only_while_the_first_is_down() {
    let primary = mock("", "1ms").await;
    let fallback = mock("", "0").await;
    let client = Client::builder()
        .endpoint(Endpoint::new(primary.url()))
        .endpoint(Endpoint::new(fallback.url()).priority(1))
        .build()
        .unwrap();
    let results = client.fan_out_collect((0..500).map(request), 16).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(fallback.stats().requests_total, 0);
    assert_eq!(primary.stats().requests_total, 500);

    let down = mock("503=1", "0").await;
    let fallback = mock("", "0").await;
    let client = Client::builder()
        .endpoint(Endpoint::new(down.url()))
        .endpoint(Endpoint::new(fallback.url()).priority(1))
        .build()
        .unwrap();
    let results = client.fan_out_collect((0..500).map(request), 16).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(client.endpoint_stats()[0].state, BreakerState::Open);
    assert!(
        down.stats().requests_total <= 20,
        "{}",
        down.stats().requests_total
    );
}

#[tokio::test]
async fn base_url_and_endpoint_together_are_an_error() {
    let error = Client::builder()
        .base_url("http://127.0.0.1:1/v1")
        .endpoint(Endpoint::new("http://127.0.0.1:2/v1"))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("base_url"), "{error}");

    let error = Client::builder()
        .endpoint(Endpoint::new("http://127.0.0.1:1/v1"))
        .endpoint(Endpoint::new("http://127.0.0.1:2/v1").api_key_env("VOLLEY_TEST_UNSET_KEY_14"))
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.to_string().contains("VOLLEY_TEST_UNSET_KEY_14"),
        "{error}"
    );
}

/// One endpoint is the plain single stack: no balancer, no per-endpoint counts.
#[tokio::test]
async fn one_endpoint_is_the_single_stack() {
    let server = mock("", "0").await;
    let client = Client::builder()
        .endpoint(Endpoint::new(server.url()))
        .build()
        .unwrap();
    assert_eq!(client.base_url(), server.url());
    client.send(request(1)).await.unwrap();
    assert!(client.endpoint_stats().is_empty());
    assert_eq!(server.stats().requests_total, 1);
}

/// Two endpoints that each leave 5 % of requests unanswered (a stall, drawn independently) and
/// a client that never retries: with hedging after 500 ms, the copies answer what the stalls
/// would have failed, within the budget (5 % + 10). (The delay is well above the 10 ms
/// answers, so that a pause of a loaded machine does not hedge every request in flight and
/// spend the budget before the stalls come.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_answers_what_stalls_would_fail_within_its_budget() {
    async fn stalling(seed: u64) -> MockServer {
        MockServer::start(MockConfig {
            faults: "stall=0.05".parse().unwrap(),
            latency: "10ms".parse().unwrap(),
            stall_duration: Duration::from_secs(10),
            seed,
            ..MockConfig::default()
        })
        .await
        .unwrap()
    }
    let lines = 400;
    let mut failures = Vec::new();
    for hedge in [false, true] {
        // Different seeds: with the same, both would stall at the same arrival indices.
        let (a, b) = (stalling(42).await, stalling(4242).await);
        let mut builder = Client::builder()
            .endpoint(Endpoint::new(a.url()))
            .endpoint(Endpoint::new(b.url()))
            .retries(0)
            .timeout(Duration::from_secs(3));
        if hedge {
            builder = builder.hedge(volley::Hedging::after(Duration::from_millis(500)));
        }
        let client = builder.build().unwrap();
        let results = client.fan_out_collect((0..lines).map(request), 32).await;
        failures.push(results.iter().filter(|r| r.is_err()).count());
        let sent = a.stats().requests_total + b.stats().requests_total;
        if hedge {
            let extra = sent - lines as u64;
            assert!(extra <= lines as u64 / 20 + 10, "{extra} hedges");
            assert!(extra > 0, "nothing was hedged");
        }
    }
    eprintln!(
        "failed without hedging {}, with {}",
        failures[0], failures[1]
    );
    assert!(
        failures[0] >= 8,
        "the stalls failed too few to show anything: {failures:?}"
    );
    // A line fails only when its hedge stalls too: about 5 % of the ~20 stalls.
    assert!(failures[1] <= 5, "{failures:?}");
}

/// One base URL (no endpoints) whose answers take 10 ms, or 10 s for 5 % of them, and a
/// client that never retries and times out at 3 s: with hedging at the learned 94th
/// percentile, the slow answers are hedged to the same server and the lines succeed; without,
/// the slow ones fail. A warm-up teaches the delay first (its results are not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_base_url_hedges_to_itself_at_a_learned_percentile() {
    let lines = 400;
    let mut failures = Vec::new();
    for hedge in [false, true] {
        let server = mock("", "bimodal:10ms,10s,0.05").await;
        let mut builder = Client::builder()
            .base_url(server.url())
            .allow_plain_http(true)
            .retries(0)
            .timeout(Duration::from_secs(3));
        if hedge {
            builder = builder.hedge(volley::Hedging::at_percentile(94.0).budget(0.1));
        }
        let client = builder.build().unwrap();
        if hedge {
            assert_eq!(
                client.endpoint_stats().len(),
                1,
                "hedging needs the balancer"
            );
        }
        let _warm_up = client.fan_out_collect((0..40).map(request), 8).await;
        let before = server.stats().requests_total;
        let results = client.fan_out_collect((0..lines).map(request), 32).await;
        failures.push(results.iter().filter(|r| r.is_err()).count());
        if hedge {
            let extra = server.stats().requests_total - before - lines as u64;
            assert!(extra > 0, "nothing was hedged");
            assert!(extra <= (lines + 40) as u64 / 10 + 10, "{extra} hedges");
        }
    }
    eprintln!(
        "failed without hedging {}, with {}",
        failures[0], failures[1]
    );
    // The mock's draws are seeded: without hedging the same 22 of the 440 requests are slow
    // every run. With it, a line fails only when its hedge is slow too (5 % of about 22, plus
    // those before the delay was learned): about one, six is far in the tail.
    assert!(
        failures[0] >= 8,
        "too few slow answers to show anything: {failures:?}"
    );
    assert!(failures[1] <= 6, "{failures:?}");
}

/// A raw server that answers every request with an event stream whose first event is an
/// error quoting the `Authorization` header it received: a server that echoes the key.
async fn echoing_stream_server() -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // Bounded: the test makes a few dozen connections.
        for _ in 0..64 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(head) = volley_testkit::raw::read_request_head(&mut socket).await else {
                    return;
                };
                let auth = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("none")
                    .replace('"', "'");
                let event = format!(
                    r#"data: {{"error":{{"message":"you sent {auth}","type":"invalid_request_error"}}}}"#
                );
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{event}\n\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// Two endpoints with keys of their own, both echoing the key in a stream's error event: the
/// error a caller sees never holds either key, whichever endpoint answered.
#[tokio::test]
async fn a_stream_error_echoing_any_endpoints_key_is_scrubbed() {
    const FIRST: &str = "sk-first-endpoint-secret-0001";
    const SECOND: &str = "sk-second-endpoint-secret-0002";
    let (a, b) = (echoing_stream_server().await, echoing_stream_server().await);
    let client = Client::builder()
        .endpoint(Endpoint::new(a).api_key(FIRST))
        .endpoint(Endpoint::new(b).api_key(SECOND))
        .retries(0)
        .build()
        .unwrap();
    let mut echoed = 0;
    for i in 0..16 {
        let chat =
            ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("{i}"))]);
        let shown = match client.chat_stream(chat).await {
            Ok(mut stream) => {
                use futures_util::StreamExt;
                let mut shown = String::new();
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        shown = format!("{e} {e:?} {:?}", e.api_error());
                        break;
                    }
                }
                shown
            }
            Err(e) => format!("{e} {e:?} {:?}", e.api_error()),
        };
        echoed += usize::from(shown.contains("you sent"));
        for key in [FIRST, SECOND] {
            assert!(!shown.contains(key), "{key} leaked: {shown}");
        }
    }
    // Both endpoints answered, and their echoes reached the error (so the test can fail).
    assert_eq!(echoed, 16);
    let stats = client.endpoint_stats();
    assert!(stats.iter().all(|s| s.requests > 0), "{stats:?}");
}

/// A builder's credential id (what a shared rate limiter is keyed by) covers its endpoints:
/// two tenants with different endpoints or keys, and no key at the top, never share one; the
/// same endpoints in another order do; one endpoint's is its own.
#[test]
fn the_credential_id_covers_every_endpoint() {
    let id = |endpoints: &[(&str, &str)]| {
        let mut builder = Client::builder();
        for (url, key) in endpoints {
            builder = builder.endpoint(Endpoint::new(*url).api_key(*key));
        }
        builder.credential_id().unwrap()
    };
    let a = ("http://127.0.0.1:9001/v1", "sk-tenant-a");
    let b = ("http://127.0.0.1:9002/v1", "sk-tenant-b");
    let c = ("http://127.0.0.1:9002/v1", "sk-tenant-c");
    assert_ne!(id(&[a, b]), id(&[a, c]));
    assert_ne!(id(&[a, b]), Client::builder().credential_id().unwrap());
    assert_eq!(id(&[a, b]), id(&[b, a]));
    let alone = Client::builder()
        .base_url(a.0)
        .api_key(a.1)
        .credential_id()
        .unwrap();
    assert_eq!(id(&[a]), alone);
    assert_ne!(id(&[a, b]), alone);
}

/// An endpoint with a transport of its own (for TLS or proxy settings) keeps the client's key
/// when neither sets one, as the docs promise: it was sent without one and answered 401. A key
/// of the endpoint's own wins.
#[tokio::test]
async fn an_endpoint_with_its_own_transport_keeps_the_client_s_key() {
    const KEY: &str = "sk-client-key-for-endpoints";
    let server = MockServer::start(MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for endpoints in [1, 2] {
        let mut builder = Client::builder().api_key(KEY).retries(0);
        for _ in 0..endpoints {
            builder = builder
                .endpoint(Endpoint::new(server.url()).transport(volley::transport::Builder::new()));
        }
        let client = builder.build().unwrap();
        let reply = client.send(request(endpoints)).await.unwrap();
        assert!(reply.status().is_success(), "{endpoints} endpoint(s)");
    }
    let wrong = Client::builder()
        .api_key(KEY)
        .retries(0)
        .endpoint(
            Endpoint::new(server.url())
                .transport(volley::transport::Builder::new())
                .api_key("sk-the-endpoint-s-own"),
        )
        .build()
        .unwrap();
    let err = wrong.send(request(3)).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    // A credential header set by hand on the endpoint's transport is its credential: the
    // client's key neither replaces it nor goes with it.
    let by_hand = Client::builder()
        .api_key("sk-the-client-s-other-key")
        .retries(0)
        .endpoint(Endpoint::new(server.url()).transport(
            volley::transport::Builder::new().default_header(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
            ),
        ))
        .build()
        .unwrap();
    assert!(
        by_hand
            .send(request(4))
            .await
            .unwrap()
            .status()
            .is_success()
    );
}
