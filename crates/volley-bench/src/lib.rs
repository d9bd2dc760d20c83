//! The load tester behind `volley bench`: it offers load to an OpenAI-compatible endpoint
//! through Volley's own client and measures what the client, and (for volley-mock) the
//! server, saw.
//!
//! [`BenchConfig`] says what to run; [`Bench::new`] checks it, builds the client and the
//! request bodies; [`Bench::live`] gives a cheap handle for a progress line (and for stopping
//! early); [`Bench::run`] runs on the caller's tokio runtime (or on the runtimes given in
//! [`BenchConfig::workers`]) and returns the [`results::BenchResults`] that [`report`]
//! renders.
//!
//! ```no_run
//! use std::time::Duration;
//! use volley_bench::{Bench, BenchConfig, Load};
//!
//! # async fn run() -> Result<(), volley::Error> {
//! let bench = Bench::new(BenchConfig {
//!     base_url: "http://127.0.0.1:8080/v1".into(),
//!     load: Load::Closed { concurrency: 1024 },
//!     requests: Some(20_480),
//!     ..BenchConfig::default()
//! })?;
//! let live = bench.live();
//! let progress = tokio::spawn(async move {
//!     loop {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         eprintln!("{} done, {} in flight", live.finished(), live.in_flight());
//!     }
//! });
//! let results = bench.run().await?;
//! progress.abort();
//! println!(
//!     "{:.0} requests/s, p99 {:.1} ms, server kept {:.1} in flight",
//!     results.summary.requests_per_sec,
//!     results.latency.p99,
//!     results.server.map_or(0.0, |s| s.mean_in_flight),
//! );
//! # Ok(())
//! # }
//! ```
//!
//! Flags parse with the library's grammars, so a CLI only maps them to fields: an open loop of
//! streams for a minute, prompt and output lengths drawn per request.
//!
//! ```no_run
//! use volley::core::duration::parse_duration;
//! use volley_bench::{Bench, BenchConfig, Load};
//!
//! # async fn run() -> Result<(), volley::Error> {
//! let config = BenchConfig {
//!     load: Load::Open { rate: 500.0, arrivals: "poisson".parse()? },
//!     duration: Some(parse_duration("60s").expect("a valid duration")),
//!     stream: true,
//!     prompt_tokens: "uniform:16..512".parse()?,
//!     output_tokens: "lognormal:128,64".parse()?,
//!     ..BenchConfig::default()
//! };
//! let results = Bench::new(config)?.run().await?;
//! println!("TTFT p50 {:.1} ms", results.ttft.unwrap_or_default().p50);
//! # Ok(())
//! # }
//! ```
//!
//! # Load
//!
//! - [`Load::Closed`]: `concurrency` workers, each sending its next request when the previous
//!   one is finished (body or stream read to the end).
//! - [`Load::Open`]: arrivals at a rate, Poisson or evenly spaced, from a seeded schedule,
//!   whatever the server does. At most [`BenchConfig::max_in_flight`] are in flight; arrivals
//!   beyond that are counted as `dropped` and never queued.
//! - [`Load::Ramp`]: a closed loop whose concurrency moves linearly from `from` to `to`
//!   ([`Ramp`], `"1..1024 over 30s"`), then holds.
//!
//! The run stops after [`BenchConfig::requests`], after [`BenchConfig::duration`], at
//! [`Live::stop`], whichever comes first; requests in flight then are finished and counted
//! (after a duration, for at most [`BenchConfig::grace`]: those still running then, or at
//! [`Live::cancel`], are cancelled and counted as unfinished).
//!
//! # What is measured
//!
//! - **Latency** of successful requests, from just before the request enters the client stack
//!   to its last byte; percentiles from an HDR histogram (µs resolution, 3 significant digits),
//!   and a CDF of at most ~200 points. In an open loop the clock starts at the request's
//!   scheduled arrival, so a load generator that falls behind its schedule shows it in the
//!   latencies and times to first token instead of hiding it (coordinated omission, corrected
//!   as wrk2 does).
//! - **Streams**: time to the first content chunk (successful streams), time between content
//!   chunks (every stream), chunks counted, output tokens from the usage chunk. A content
//!   chunk carries any output: the answer, reasoning (`reasoning_content`, `reasoning`), a
//!   refusal or a tool call's arguments.
//! - **Errors** by [`ErrorKind::as_str`](volley::ErrorKind::as_str), and `status_NNN` for HTTP
//!   errors other than 429. The default client has retries off, so every failure shows.
//!   Bodies are scanned for usage, not parsed: a malformed 200 counts as a success.
//! - **In flight**, client side, per 100 ms bucket: the exact time-weighted mean from request
//!   start and end times, completions per second and errors per bucket, the target concurrency
//!   (closed loop and ramp); the mean over the steady middle 80 % of the run and the peak.
//! - **Server side**, when the target is volley-mock: its statistics are reset before the run
//!   (`POST /stats/reset`) and read after (`GET /stats`): requests received, peak in flight,
//!   its timeline cut to the run and its mean in flight over the middle 80 %, both from the
//!   mock's time-weighted bucket means (and the same mean from the in flight at each bucket's
//!   end, `mean_in_flight_sampled`, the figure earlier versions reported). Any other target
//!   gives `server: None`.
//! - **Client resources** (Linux): user and system CPU time of the whole process over the run
//!   (an embedded mock's included), per request and per chunk, and the peak RSS. CPU time is
//!   read from `/proc/self/stat`, which counts in 10 ms clock ticks: each of the user and
//!   system times is low by up to 10 ms at either end, so `cpu_us_per_request` and
//!   `cpu_us_per_chunk` are meaningful only for runs long enough to use seconds of CPU. Where
//!   `/proc` cannot be read (other platforms, a sandbox), the CPU figures and `peak_rss_bytes`
//!   are reported as 0 (not measured), and a warning is logged once.
//! - **Connections** opened and reused, from the transport's counters.
//!
//! # Keeping the load generator cheap
//!
//! Requests run in a few *lanes* per runtime worker: a lane is one task that polls its
//! requests together and owns its recorder (histograms and timeline accumulators), so the hot
//! path takes no shared lock and spawns no task per request; lanes are merged at the end.
//! With [`BenchConfig::workers`] (what `volley bench` does: one current-thread runtime per
//! core, [`WorkerRuntimes`]) the lanes are spread over runtimes of their own: a request and
//! its timers stay on one thread, and so does its connection as a rule (it was opened on the
//! lane's thread, and the process's one pool gives a thread back its own idle connections
//! first).
#![deny(missing_docs)]
pub mod knee;
pub mod report;
pub mod results;

mod body;
mod config;
mod driver;
mod lane;
mod lengths;
mod pacer;
mod ramp;
mod recorder;
mod rng;
mod runtimes;
mod server;
mod shared;
mod summary;
mod sys;
mod target;
mod timeline;

pub use config::{
    Arrivals, BenchConfig, DEFAULT_BASE_URL, DEFAULT_GRACE, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MODEL,
    DEFAULT_SEED, Load, MaxTokensField, StackKind, WARMUP_LIMIT, default_client,
};
pub use driver::Bench;
pub use lengths::{Lengths, MAX_LENGTH};
pub use ramp::Ramp;
pub use runtimes::WorkerRuntimes;
pub use shared::Live;
