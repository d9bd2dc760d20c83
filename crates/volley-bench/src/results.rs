//! `results.json`: what one benchmark run measured, in a stable, versioned schema.
//!
//! The schema only grows: fields are added (readers ignore unknown ones and default missing
//! ones), never renamed or removed without bumping [`SCHEMA_VERSION`]. Times are in
//! milliseconds (`_ms`) or microseconds (`_us`) as the field names say; rates are per second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of this schema, written as `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// One benchmark run: its configuration, its figures, and the time series behind the charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchResults {
    /// [`SCHEMA_VERSION`] when written.
    pub schema_version: u32,
    /// The Volley version that ran it.
    pub volley_version: String,
    /// When the run started, RFC 3339 UTC (`2026-11-23T18:04:33Z`).
    pub started_at: String,
    /// A name for the run (a scenario id such as `S1`, or `bench`).
    pub name: String,
    /// What was asked for.
    pub config: RunConfig,
    /// The headline figures.
    pub summary: Summary,
    /// Latency of whole requests (sent to last byte), successful ones only.
    pub latency: Percentiles,
    /// Time to first token (first content chunk) of streams; `None` for plain requests.
    pub ttft: Option<Percentiles>,
    /// Time between consecutive content chunks of streams; `None` for plain requests.
    pub inter_token: Option<Percentiles>,
    /// Time per output token after the first (TPOT: (latency − TTFT) / (output tokens − 1)),
    /// of successful streams with two output tokens or more; `None` for plain requests. Unlike
    /// [`inter_token`](Self::inter_token), it does not depend on how many tokens a server puts
    /// in one chunk.
    pub tpot: Option<Percentiles>,
    /// Failed requests by error kind (`timeout`, `status_500`, `rate_limited`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The first message of each error kind of [`errors`](Self::errors) that had one (the
    /// server's, or the client's), cleaned of control characters and bounded.
    pub error_examples: BTreeMap<String, String>,
    /// Why the run stopped before its end, when it did on its own: its first requests all
    /// failed with one client error (a model the server does not serve, a path without
    /// `/v1`), so every other request would have too.
    pub stopped_early: Option<String>,
    /// Whether the run was stopped from outside ([`Live::stop`](crate::Live::stop): Ctrl-C)
    /// before its stop condition: its figures cover the part that ran.
    pub interrupted: bool,
    /// Connections the client opened and how often they were reused.
    pub connections: Connections,
    /// Client process resources over the measured window.
    pub resources: Resources,
    /// Client-side time series, one point per bucket (`bucket_ms` wide).
    pub timeline: Vec<TimelinePoint>,
    /// Width of a [`TimelinePoint`] bucket in milliseconds (100 by default).
    pub bucket_ms: u64,
    /// The latency CDF: (latency in ms, fraction of requests at or below it), ascending, at
    /// most a few hundred points.
    pub latency_cdf: Vec<(f64, f64)>,
    /// TTFT histogram: (bucket lower bound ms, bucket upper bound ms, count); empty for plain
    /// requests.
    pub ttft_histogram: Vec<(f64, f64, u64)>,
    /// What the server said, when the target is volley-mock (`GET /stats`); `None` otherwise.
    pub server: Option<ServerSide>,
    /// Targets this run was judged against (filled by `cargo xtask bench`; empty otherwise).
    pub targets: Vec<TargetCheck>,
    /// Each endpoint's attempts and outcomes, when the client balances several endpoints or
    /// hedges; empty otherwise.
    pub endpoints: Vec<EndpointResult>,
    /// Attempts sent to each endpoint over time, for the share chart: one point per
    /// [`ENDPOINT_SAMPLE_MS`]-wide window; empty without [`endpoints`](Self::endpoints).
    pub endpoint_timeline: Vec<EndpointPoint>,
    /// Hedged copies the client sent (0 without hedging).
    pub hedges: u64,
    /// The client's adaptive concurrency limit over time, `(t_ms, limit)` every 100 ms, when
    /// it adapts ([`RunConfig::adaptive`]); empty otherwise.
    pub concurrency_limit: Vec<(u64, u64)>,
}

/// The width of an [`EndpointPoint`] window, in milliseconds.
pub const ENDPOINT_SAMPLE_MS: u64 = 500;

/// One endpoint of a balanced client, over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointResult {
    /// Its name (`host:port`, or the name given).
    pub name: String,
    /// Attempts sent to it (hedged copies and retries included).
    pub attempts: u64,
    /// Attempts it answered with a status other than 429, 529 or 5xx.
    pub answered: u64,
    /// Attempts answered 429 or 529.
    pub rate_limited: u64,
    /// Attempts answered 5xx (529 excepted).
    pub server_errors: u64,
    /// Attempts that failed without an answer (connection errors, timeouts).
    pub failed: u64,
    /// How often its circuit breaker opened.
    pub breaker_openings: u64,
    /// Its breaker's state at the end: `closed`, `open` or `half_open`.
    pub breaker_state: String,
    /// Mean time to the response head of its answers, in ms; `None` before any.
    pub mean_latency_ms: Option<f64>,
}

/// Attempts sent to each endpoint during one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointPoint {
    /// End of the window, ms since the run started.
    pub t_ms: u64,
    /// Attempts sent during the window, per endpoint, in the order of
    /// [`BenchResults::endpoints`].
    pub attempts: Vec<u64>,
}

/// The run's configuration as the driver understood it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// The target, without credentials or query string.
    pub base_url: String,
    /// `closed`, `open` or `ramp`.
    pub mode: String,
    /// Closed loop: the number of workers; ramp: the final concurrency.
    pub concurrency: Option<u64>,
    /// Ramp: the first concurrency.
    pub ramp_from: Option<u64>,
    /// Ramp: how long the ramp takes, ms.
    pub ramp_over_ms: Option<u64>,
    /// Open loop: requests per second.
    pub rate: Option<f64>,
    /// Open loop: `poisson` or `constant`.
    pub arrivals: Option<String>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Requests sent before the measured run, not in any figure (0: none).
    pub warmup: u64,
    /// Stop after this long, ms.
    pub duration_ms: Option<u64>,
    /// Streaming requests.
    pub stream: bool,
    /// The model name sent.
    pub model: String,
    /// Prompt length distribution, as given (`fixed:64`, `uniform:16..512`).
    pub prompt_tokens: String,
    /// Output length (max_tokens) distribution, as given.
    pub output_tokens: String,
    /// `full` (the default middleware stack) or `bare` (the transport alone).
    pub stack: String,
    /// Whether the client's concurrency limit adapted (up to the load's concurrency).
    pub adaptive: bool,
    /// Whether the target was the embedded mock (`--mock`).
    pub embedded_mock: bool,
    /// Open loop: the most requests in flight; arrivals beyond it were dropped
    /// ([`Summary::dropped`]).
    pub max_in_flight: Option<u64>,
    /// The seed of arrival times and lengths.
    pub seed: u64,
}

/// The headline figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Requests finished, `ok` + `failed` (those cancelled in flight are in `unfinished`).
    pub requests: u64,
    /// Requests that succeeded (the whole body or stream read).
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests still in flight when the run was cancelled: past
    /// [`BenchConfig::grace`](crate::BenchConfig::grace) after its duration, or at a second
    /// Ctrl-C ([`Live::cancel`](crate::Live::cancel)). Neither succeeded nor failed; not in
    /// `requests`.
    pub unfinished: u64,
    /// Open-loop arrivals not sent because `max_in_flight` requests were in flight already
    /// (never queued: a queue would hide the overload). Always 0 in a closed loop.
    pub dropped: u64,
    /// From the first request sent to the last one finished (or cancelled, see
    /// [`unfinished`](Self::unfinished)), ms.
    pub wall_ms: f64,
    /// Finished requests per second, over the time from the first request sent to the last
    /// one finished (requests cancelled later do not stretch it).
    pub requests_per_sec: f64,
    /// The mean time a finished request took, failed ones included: how long it held its
    /// slot, ms (the latency percentiles are of successes only).
    pub mean_request_ms: f64,
    /// Mean requests in flight (client side) over the steady middle 80 % of the run (for a
    /// timed run, not past its duration: the drain after it is no steady state).
    pub mean_in_flight: f64,
    /// The most requests in flight at once (client side).
    pub peak_in_flight: u64,
    /// Output tokens received per second (from usage, or chunks counted for streams), over
    /// the same time as [`requests_per_sec`](Self::requests_per_sec).
    pub output_tokens_per_sec: f64,
    /// Output tokens received in all.
    pub output_tokens: u64,
    /// Content chunks received (streams).
    pub chunks: u64,
    /// Client CPU time (user + system) per finished request, µs.
    pub cpu_us_per_request: f64,
    /// Client CPU time per content chunk, µs (streams; 0 otherwise).
    pub cpu_us_per_chunk: f64,
}

impl Summary {
    /// Successful requests per second, over the time
    /// [`requests_per_sec`](Self::requests_per_sec) is over (to the last request finished).
    pub fn ok_per_sec(&self) -> f64 {
        if self.requests > 0 {
            self.requests_per_sec * self.ok as f64 / self.requests as f64
        } else {
            0.0
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

/// Connection statistics from the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connections {
    /// Connections opened.
    pub opened: u64,
    /// Requests sent on a connection that had served one before.
    pub reused: u64,
}

/// Client process resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// User CPU time over the measured window, ms.
    pub cpu_user_ms: f64,
    /// System CPU time over the measured window, ms.
    pub cpu_system_ms: f64,
    /// Peak resident set size of the process, bytes (VmHWM).
    pub peak_rss_bytes: u64,
}

/// One client-side timeline bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimelinePoint {
    /// End of the bucket, ms since the first request.
    pub t_ms: u64,
    /// Mean requests in flight during the bucket (time-weighted).
    pub in_flight: f64,
    /// The concurrency the driver aimed at during the bucket (closed loop and ramp; the
    /// open loop's rate times the mean latency is not a target, so `None` there).
    pub target: Option<f64>,
    /// Requests finished during the bucket, per second.
    pub completed_per_sec: f64,
    /// Requests that failed during the bucket.
    pub errors: u64,
}

/// What volley-mock reported about the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSide {
    /// Requests the server received.
    pub requests: u64,
    /// Mean in flight over the steady middle 80 % of the server's timeline, from its buckets'
    /// time-weighted means (from their end's samples if the server has no means).
    pub mean_in_flight: f64,
    /// The same mean from the in flight at each bucket's end: what `mean_in_flight` was
    /// before volley-mock weighed its buckets by time (`None` in results from then, and from a
    /// mock without bucket means: `mean_in_flight` is this figure there). Answers to a closed loop with a fixed latency come in
    /// bursts that keep their place relative to the bucket ends, so the samples of a run
    /// either all miss the bursts (and read the full concurrency) or fall in them (and read
    /// less): this figure moves from run to run by more than the time-weighted one.
    pub mean_in_flight_sampled: Option<f64>,
    /// The most in flight at once.
    pub peak_in_flight: u64,
    /// The server's 100 ms timeline: (t_ms, mean in flight during the bucket; in flight at
    /// its end from a server without means).
    pub timeline: Vec<(u64, f64)>,
    /// The server's own time to first token of streams (request read to first chunk sent),
    /// when it reports one; `min` and `mean` are not reported and left at 0.
    pub ttft: Option<Percentiles>,
}

/// A figure judged against its target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetCheck {
    /// What is measured (`server mean in flight`, `client CPU per request`).
    pub figure: String,
    /// The measured value; NaN when it could not be measured (written as `null`).
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// Its unit (`µs`, `requests`, `×`).
    pub unit: String,
    /// The target as text (`≥ 1022`, `≤ 20`).
    pub target: String,
    /// Whether the figure meets the target.
    pub met: bool,
}

/// Reads `null` (how JSON writes a NaN) back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Option::<f64>::deserialize(deserializer).map(|v| v.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmeasured_target_round_trips() {
        let check = TargetCheck {
            figure: "server mean in flight".into(),
            value: f64::NAN,
            unit: String::new(),
            target: "≥ 1022".into(),
            met: false,
        };
        let json = serde_json::to_string(&check).unwrap();
        assert!(json.contains("\"value\":null"), "{json}");
        let back: TargetCheck = serde_json::from_str(&json).unwrap();
        assert!(back.value.is_nan());
        assert_eq!(back.figure, check.figure);
    }
}
