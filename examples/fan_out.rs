//! Fan-out: 1 000 chat completions through one client, 100 at a time, against a mock with
//! 100 ms latency: about a second of wall time. Then the same from sync code with the
//! blocking facade, whose fan-out still runs the requests in parallel.
//!
//! `cargo run --release -p volley-examples --example fan_out`

use std::time::Instant;

use futures_util::StreamExt;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

const N: usize = 1_000;
const CONCURRENCY: usize = 100;

fn requests() -> impl Iterator<Item = ChatCompletionRequest> {
    (0..N).map(|i| {
        ChatCompletionRequest::new(
            "gpt-4o-mini",
            vec![ChatMessage::user(format!("Summarise document {i}"))],
        )
    })
}

fn main() -> anyhow::Result<()> {
    // The mock runs on a runtime of its own, so that the blocking part below runs on a thread
    // without one, as sync code does.
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(MockServer::start(MockConfig {
        latency: "100ms".parse()?,
        ..MockConfig::default()
    }))?;

    // Async: results arrive in completion order, each with its input index.
    runtime.block_on(async {
        let client = volley::Client::builder().base_url(server.url()).build()?;
        let started = Instant::now();
        let mut replies = client.fan_out_chat(requests(), CONCURRENCY);
        let (mut ok, mut tokens) = (0, 0);
        while let Some((index, reply)) = replies.next().await {
            match reply {
                Ok(reply) => {
                    ok += 1;
                    tokens += reply.usage.map_or(0, |u| u.total_tokens);
                }
                Err(error) => eprintln!("request {index}: {error}"),
            }
        }
        println!(
            "async: {ok}/{N} succeeded ({tokens} tokens) in {:?}",
            started.elapsed()
        );
        anyhow::Ok(())
    })?;

    // Blocking: one result per request, in input order.
    let client = volley::blocking::Client::builder()
        .base_url(server.url())
        .build()?;
    let started = Instant::now();
    let replies = client.fan_out_chat(requests(), CONCURRENCY)?;
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    println!("blocking: {ok}/{N} succeeded in {:?}", started.elapsed());

    let stats = server.stats();
    println!(
        "the server saw {} requests, at most {} in flight",
        stats.requests_total, stats.peak_in_flight
    );
    runtime.block_on(server.shutdown());
    Ok(())
}
