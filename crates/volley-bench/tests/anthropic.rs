//! The load tester in Anthropic's dialect, against volley-mock's `/v1/messages` over real
//! loopback sockets: plain answers and streams, time to first token from the first
//! `content_block_delta`. Counts and shapes only, never speed.

use volley::{Client, Dialect, Provider};
use volley_bench::{Bench, BenchConfig, Load};
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-ant-bench-0123456789";

async fn run(server: &MockServer, stream: bool) -> volley_bench::results::BenchResults {
    let config = BenchConfig {
        base_url: server.url(),
        load: Load::Closed { concurrency: 8 },
        requests: Some(200),
        stream,
        dialect: Dialect::Anthropic,
        client: Some(Client::builder().provider(Provider::Anthropic).retries(0)),
        api_key: Some(KEY.into()),
        embedded_mock: true,
        ..BenchConfig::default()
    };
    Bench::new(config).unwrap().run().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_plain_and_streamed_are_counted_and_timed() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();

    let plain = run(&server, false).await;
    assert_eq!(
        (plain.summary.ok, plain.summary.failed),
        (200, 0),
        "{:?}",
        plain.errors
    );
    assert_eq!(
        plain.summary.output_tokens,
        200 * 16,
        "usage read from the answers"
    );
    assert!(plain.ttft.is_none());

    let streamed = run(&server, true).await;
    assert_eq!(
        (streamed.summary.ok, streamed.summary.failed),
        (200, 0),
        "{:?}",
        streamed.errors
    );
    assert_eq!(
        streamed.summary.output_tokens,
        200 * 16,
        "usage from message_delta"
    );
    let ttft = streamed
        .ttft
        .as_ref()
        .expect("streams are timed to their first delta");
    assert_eq!(ttft.count, 200);
    // Every text delta is a chunk; message_start, pings and the rest are not.
    assert_eq!(streamed.summary.chunks, 200 * 16);
    // The bench resets the mock's statistics before each run.
    assert_eq!(server.stats().status_count(200), 200);
}
