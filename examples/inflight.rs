//! How many requests does one client keep in flight? Fires N chat completions through one
//! `Client` with C tasks and reads the server's own in-flight timeline from `/stats`.
//!
//! ```sh
//! # In one terminal (one core for the server):
//! taskset -c 0 cargo run --release -p volley-cli -- mock --port 8080 --latency 1s
//! # In another (one core for the client):
//! taskset -c 1 cargo run --release -p volley-examples --example inflight -- \
//!     http://127.0.0.1:8080/v1 1024 20480
//! ```
//!
//! Without a URL it starts an in-process mock with 1 s latency (then client and server share
//! the CPU figures).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{Client, Request};
use volley_mock::{Latency, MockConfig, MockServer};

fn main() -> anyhow::Result<()> {
    // VOLLEY_RUNTIME=current runs everything on one thread (no work stealing).
    let runtime = match std::env::var("VOLLEY_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next();
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20 * 1024);
    // 1 024 slots need more than 1 024 descriptors (and twice that with the in-process mock).
    rlimit::increase_nofile_limit(u64::MAX)?;

    let (_server, base) = match url {
        Some(url) => (None, url),
        None => {
            let server = MockServer::start(MockConfig {
                latency: Latency::Fixed(Duration::from_secs(1)),
                ..MockConfig::default()
            })
            .await?;
            let url = server.url();
            (Some(server), url)
        }
    };
    // The full default stack (metrics, retry, concurrency limit, timeouts), sized to the test.
    let client = Client::builder()
        .base_url(&base)
        .concurrency(concurrency)
        .build()?;
    let stats_client = Client::builder()
        .base_url(base.trim_end_matches("/v1"))
        .build()?;
    stats_client
        .send(Request::post("/stats/reset", "")?)
        .await?;

    let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hello")]);
    let body = bytes::Bytes::from(serde_json::to_vec(&chat)?);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut failed = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let request =
                        Request::post("/chat/completions", body.clone()).expect("static path");
                    if client.send(request).await.is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for worker in workers {
        failed += worker.await?;
    }
    let wall = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);

    let stats: serde_json::Value = stats_client
        .send(Request::get("/stats")?)
        .await?
        .json()
        .await?;
    let timeline = stats["timeline"].as_array().cloned().unwrap_or_default();
    let samples: Vec<f64> = timeline
        .iter()
        .filter_map(|b| b["in_flight"].as_f64())
        .collect();
    let n = samples.len();
    let middle = &samples[n / 10..n - n / 10];
    let mean = middle.iter().sum::<f64>() / middle.len().max(1) as f64;
    println!("requests {total}, concurrency {concurrency}, failed {failed}");
    println!(
        "wall {:.2}s, client CPU {:.3}s = {:.1} µs/request",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "server: peak in flight {}, mean in flight over the middle 80% {:.1}",
        stats["peak_in_flight"], mean
    );
    println!("connections opened {}", client.connection_stats().opened);
    Ok(())
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 10) // USER_HZ is 100 on Linux.
}
