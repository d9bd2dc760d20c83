//! Many requests at once through one client: 500 chat completions against a mock with 200 ms
//! latency finish in two to three latencies of wall time (0.4 to 0.6 s). With no rate limits
//! given, the client first sends a few requests to learn the server's limits from their
//! answers' headers (slow start), then the rest together: `.concurrency(N)` lets all 500 be in
//! flight at once (the default is 256).
//!
//! `cargo run --release -p volley-examples --example many`

use std::time::Instant;

use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const N: usize = 500;
    let server = MockServer::start(MockConfig {
        latency: "200ms".parse()?,
        ..MockConfig::default()
    })
    .await?;
    // One client, cloned into every task: clones share one connection pool.
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(N)
        .build()?;

    let started = Instant::now();
    let tasks: Vec<_> = (0..N)
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
    let mut ok = 0;
    for task in tasks {
        if task.await?.is_ok() {
            ok += 1;
        }
    }
    let stats = server.stats();
    println!(
        "{ok}/{N} succeeded in {:?}; the server saw {} in flight at the peak; {} connections",
        started.elapsed(),
        stats.peak_in_flight,
        client.connection_stats().opened,
    );
    server.shutdown().await;
    Ok(())
}
