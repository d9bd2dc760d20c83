//! How fast the shared limiter decides, against a local Redis: decisions per second for one
//! process, with and without leasing, one caller and many, and the latency each `acquire`
//! adds over the in-process limiter.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --release -p volley-middleware --features redis --example redis_limiter_bench
//! ```
//!
//! The limits are far above the load (2^32 - 1 requests a minute), so every acquire is
//! granted at once and what is measured is the decision itself: a mutex for the local
//! limiter, a Redis round trip (shared by concurrent callers) or a leased permit for the
//! shared one. Each scenario runs for `BENCH_SECONDS` (default 2) after a short warm-up;
//! the whole run is bounded by about six times that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use volley_middleware::rate_limit::{
    Cost, Limits, LocalLimiter, RateLimiter, RedisLimiter, SharedLimits,
};
use volley_middleware::redis::RedisOptions;

const WARM_UP: Duration = Duration::from_millis(300);

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("set REDIS_URL to a Redis to benchmark against (e.g. redis://127.0.0.1:6379)");
        std::process::exit(2);
    };
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let run_for = Duration::from_secs_f64(seconds);
    let limits = Limits::per_minute()
        .requests(u32::MAX)
        .tokens(u64::from(u32::MAX));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("volley-bench:{}:{nanos}", std::process::id());

    println!(
        "{:<34} {:>12} {:>9} {:>9} {:>13}",
        "scenario", "decisions/s", "p50 µs", "p99 µs", "trips/decision"
    );
    let mut baseline = 0.0;
    for callers in [1usize, 64] {
        let local = LocalLimiter::new(limits.clone()).expect("valid limits");
        let result = measure(&local, callers, run_for).await;
        result.print(&format!("local limiter, {callers} caller(s)"), None);
        if callers == 1 {
            baseline = result.p99_us;
        }
    }
    let mut added = Vec::new();
    for lease in [1u32, 16] {
        for callers in [1usize, 64] {
            let options = SharedLimits::new(RedisOptions::new(url.clone()), limits.clone())
                .prefix(format!("{prefix}:{lease}:{callers}"))
                .lease(lease);
            let limiter = match RedisLimiter::connect(options).await {
                Ok(limiter) => limiter,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            let before = limiter.stats().round_trips;
            let result = measure(&limiter, callers, run_for).await;
            let trips = limiter.stats().round_trips - before;
            let name = format!("redis, lease {lease}, {callers} caller(s)");
            result.print(&name, Some(trips as f64 / result.total as f64));
            if callers == 1 {
                added.push(format!("lease {lease}: {:.1} µs", result.p99_us - baseline));
            }
        }
    }
    // With many callers the latency is mostly waiting for a runtime thread, in either limiter;
    // one caller shows what the shared limiter itself adds.
    println!(
        "added p99 latency per acquire over the local limiter, one caller: {}",
        added.join(", ")
    );
}

struct Result {
    /// Decisions made, warm-up included.
    total: u64,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Result {
    fn print(&self, name: &str, trips: Option<f64>) {
        let trips = trips.map_or_else(|| "-".to_owned(), |t| format!("{t:.3}"));
        println!(
            "{name:<34} {:>12.0} {:>9.1} {:>9.1} {trips:>13}",
            self.per_second, self.p50_us, self.p99_us
        );
    }
}

/// `callers` tasks acquiring back to back for `run_for` (after a warm-up); each acquire's
/// latency is recorded.
async fn measure<L: RateLimiter>(limiter: &L, callers: usize, run_for: Duration) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (limiter, stop, recording) = (limiter.clone(), stop.clone(), recording.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut id = (c as u64) << 40;
                let cost = Cost {
                    requests: 1,
                    tokens: 100,
                    ..Cost::ZERO
                };
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let started = Instant::now();
                    let grant = limiter
                        .acquire(volley_core::RequestId::from_u64(id), cost)
                        .await
                        .expect("granted");
                    let took = started.elapsed();
                    // Settle with less than estimated, as a real response would.
                    limiter.settle(grant, 60);
                    if recording.load(Ordering::Relaxed) {
                        latencies.push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
                    }
                }
                (latencies, id - ((c as u64) << 40))
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(run_for).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut total = 0;
    for task in tasks {
        let (recorded, made) = task.await.expect("caller");
        latencies.extend(recorded);
        total += made;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        f64::from(latencies.get(i).copied().unwrap_or(0)) / 1_000.0
    };
    Result {
        total,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}
