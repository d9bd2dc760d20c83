//! `ClientBuilder::concurrency(N)` seen from the server: over real loopback sockets, the
//! mock never has more than N of the client's requests in flight, and a good share of N are
//! in flight at once (the limit is a ceiling, not a trickle). One-sided on both ends: how
//! close to N the peak comes depends on the machine, so the exact figure is a benchmark's.

use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_sees_more_than_the_concurrency_in_flight() {
    const LIMIT: usize = 8;
    const REQUESTS: usize = 64;
    let server = MockServer::start(MockConfig {
        latency: "100ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(LIMIT)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = ChatCompletionRequest::new(
                    "gpt-4o-mini",
                    vec![ChatMessage::user(format!("request {i}"))],
                );
                client.chat(&request).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats.requests_total, REQUESTS as u64);
    assert!(
        stats.peak_in_flight <= LIMIT as u64,
        "{} in flight at the server, above the limit of {LIMIT}",
        stats.peak_in_flight
    );
    // 64 requests of 100 ms each queue behind 8 slots for most of a second: at least half
    // the slots are busy at once on any machine that runs the suite at all.
    assert!(
        stats.peak_in_flight >= (LIMIT / 2) as u64,
        "only {} in flight at the server with {LIMIT} slots",
        stats.peak_in_flight
    );
    server.shutdown().await;
}
