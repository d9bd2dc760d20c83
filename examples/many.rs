//! Many requests at once through one client: 500 chat completions against a mock with 200 ms
//! latency finish in about 200 ms of wall time, because all of them are in flight together.
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
    let client = Client::builder().base_url(server.url()).build()?;

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
