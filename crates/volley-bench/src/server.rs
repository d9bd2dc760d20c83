//! The server's side of a run, when the target is volley-mock: its statistics are reset
//! (`POST /stats/reset`) just before the run and read (`GET /stats`) just after.
//!
//! Only the fields used here are declared: volley does not depend on volley-mock, and the
//! mock's schema may grow. A target without these endpoints makes the probe give up quietly,
//! and the results say `server: None`; a target that is not on this machine (a provider) is
//! never probed.

use std::time::Duration;

use serde::Deserialize;
use volley::core::Request;
use volley::transport::Transport;

use super::results::{Percentiles, ServerSide};
use volley::ClientBuilder;

/// How long a statistics call may take before the target is taken for one without them.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The share of the server's timeline at each end left out of its steady mean.
const STEADY_EDGE_DIVISOR: usize = 10;

/// A client for the statistics endpoints at the target's origin.
pub(crate) struct ServerProbe {
    transport: Transport,
}

/// The part of volley-mock's `Stats` the results need.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MockStats {
    pub(crate) requests_total: u64,
    pub(crate) peak_in_flight: u64,
    pub(crate) timeline: Vec<MockBucket>,
    /// The mock's own time to first token of streams (newer mocks only).
    #[serde(default)]
    pub(crate) ttft_ms: Option<MockLatency>,
}

/// volley-mock's percentiles of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub(crate) struct MockLatency {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// One bucket of volley-mock's 100 ms timeline.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub(crate) struct MockBucket {
    /// The end of the bucket, ms since the statistics were reset.
    pub(crate) t_ms: u64,
    /// Requests in flight at the end of the bucket.
    pub(crate) in_flight: u64,
    /// Requests in flight on average over the bucket, weighted by time (newer mocks only).
    #[serde(default)]
    pub(crate) mean_in_flight: Option<f64>,
}

/// The most requests in flight a server's statistics are believed: the target is any server,
/// and a number past any real count (or not a number) would break the report's charts and
/// the results file (which JSON writes without infinities).
const MAX_BELIEVED_IN_FLIGHT: f64 = 1e9;

impl MockBucket {
    /// The bucket's time-weighted mean in flight, else (an older mock) its end's; bounded to
    /// [`MAX_BELIEVED_IN_FLIGHT`] (a mean that is not a finite number counts as 0).
    fn in_flight(&self) -> f64 {
        let mean = self.mean_in_flight.unwrap_or(self.in_flight as f64);
        if mean.is_finite() {
            mean.clamp(0.0, MAX_BELIEVED_IN_FLIGHT)
        } else {
            0.0
        }
    }
}

impl ServerProbe {
    /// A probe for the origin of `base_url` (`http://host:port/v1` → `http://host:port`),
    /// configured as the benchmark's client is (TLS roots, plain-HTTP permission). `None`
    /// when no client can be built for it.
    ///
    /// `builder` must not carry the run's API key ([`BenchConfig::api_key`]): the probe
    /// calls the target's `/stats` endpoints whatever the target is, and sends no bearer
    /// token. (A key set on [`BenchConfig::client`] itself is the caller's to leave out.)
    ///
    /// [`BenchConfig::api_key`]: super::BenchConfig::api_key
    /// [`BenchConfig::client`]: super::BenchConfig::client
    pub(crate) fn new(builder: ClientBuilder, base_url: &str) -> Option<ServerProbe> {
        // A mock runs on this machine; a provider elsewhere is not sent requests it never
        // asked for.
        if !volley::core::host::url_host(base_url).is_some_and(volley::core::host::is_loopback) {
            return None;
        }
        let client = builder.base_url(origin(base_url)).retries(0).build().ok()?;
        Some(ServerProbe {
            transport: client.transport().clone(),
        })
    }

    /// Starts a new statistics window; `false` when the target has no volley-mock statistics.
    pub(crate) async fn reset(&self) -> bool {
        self.call(Request::post("/stats/reset", bytes::Bytes::new()))
            .await
            .is_some()
    }

    /// The statistics since the last reset, if the target has them.
    pub(crate) async fn read(&self) -> Option<MockStats> {
        self.call(Request::get("/stats")).await
    }

    async fn call(&self, request: Result<Request, volley::core::Error>) -> Option<MockStats> {
        let send = self.transport.send(request.ok()?);
        let response = tokio::time::timeout(PROBE_TIMEOUT, send).await.ok()?.ok()?;
        let body = tokio::time::timeout(PROBE_TIMEOUT, response.bytes())
            .await
            .ok()?
            .ok()?;
        serde_json::from_slice(&body).ok()
    }
}

impl MockStats {
    /// The server's figures over the run, which started `offset` after the reset and lasted
    /// `wall`: its timeline cut to the run and shifted to the client's clock (t = 0 at the
    /// run's start), and the mean in flight over the middle 80 % of those buckets, not past
    /// `until` (a timed run's duration: its drain is no steady state), from the buckets'
    /// time-weighted means (their end's samples from a mock that has none).
    pub(crate) fn server_side(
        &self,
        offset: Duration,
        wall: Duration,
        until: Option<Duration>,
    ) -> ServerSide {
        let offset_ms = offset.as_millis() as u64;
        let end_ms = offset_ms + wall.as_millis() as u64;
        let bucket_ms = super::timeline::BUCKET.as_millis() as u64;
        let buckets: Vec<&MockBucket> = self
            .timeline
            .iter()
            // Buckets that overlap the run: (t − 100 ms, t] meets [offset, offset + wall].
            .filter(|b| b.t_ms > offset_ms && b.t_ms.saturating_sub(bucket_ms) < end_ms)
            .collect();
        let n = buckets.len();
        let edge = n / STEADY_EDGE_DIVISOR;
        let mut middle = &buckets[edge..n - edge];
        if let Some(until) = until {
            // Buckets that start before `until`: the one it falls in too.
            let until_ms = offset_ms + until.as_millis() as u64;
            let keep = middle
                .iter()
                .take_while(|b| b.t_ms.saturating_sub(bucket_ms) < until_ms)
                .count();
            middle = &middle[..keep];
        }
        let mean = |value: fn(&MockBucket) -> f64| {
            if middle.is_empty() {
                0.0
            } else {
                middle.iter().map(|b| value(b)).sum::<f64>() / middle.len() as f64
            }
        };
        // From a mock without means both figures are its samples: only one is reported.
        let weighted = middle.iter().any(|b| b.mean_in_flight.is_some());
        ServerSide {
            requests: self.requests_total,
            mean_in_flight: mean(MockBucket::in_flight),
            mean_in_flight_sampled: weighted
                .then(|| mean(|b| (b.in_flight as f64).min(MAX_BELIEVED_IN_FLIGHT))),
            peak_in_flight: self.peak_in_flight,
            timeline: buckets
                .iter()
                .map(|b| (b.t_ms - offset_ms, b.in_flight()))
                .collect(),
            ttft: self.ttft_ms.map(|t| Percentiles {
                count: t.count,
                min: 0.0,
                mean: 0.0,
                p50: t.p50,
                p90: t.p90,
                p99: t.p99,
                p999: t.p999,
                max: t.max,
            }),
        }
    }
}

/// Scheme, host and port of a URL: everything before the first `/` after `://`.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a target on this machine (a mock) is probed: a provider is never sent requests
    /// it did not ask for.
    #[test]
    fn only_targets_on_this_machine_are_probed() {
        let builder = volley::Client::builder;
        assert!(ServerProbe::new(builder(), "http://127.0.0.1:8000/v1").is_some());
        assert!(ServerProbe::new(builder(), "http://localhost:8000/v1").is_some());
        assert!(ServerProbe::new(builder(), "https://api.openai.com/v1").is_none());
    }

    #[test]
    fn origins() {
        assert_eq!(origin("http://127.0.0.1:8080/v1"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://api.example.com"), "https://api.example.com");
        assert_eq!(origin("https://h/a/b/"), "https://h");
    }

    #[test]
    fn parses_volley_mock_stats_and_ignores_other_fields() {
        let json = r#"{"requests_total":30,"responses_by_status":{"200":30},"in_flight":0,
            "peak_in_flight":12,"uptime_ms":5,"timeline":[
            {"t_ms":100,"in_flight":3,"max_in_flight":4,"started":1,"completed":0}]}"#;
        let stats: MockStats = serde_json::from_str(json).unwrap();
        assert_eq!((stats.requests_total, stats.peak_in_flight), (30, 12));
        assert_eq!(stats.timeline[0].in_flight, 3);
        // An older mock: no time-weighted means, its samples stand in.
        assert_eq!(stats.timeline[0].mean_in_flight, None);
        assert_eq!(stats.timeline[0].in_flight(), 3.0);
        assert_eq!(stats.ttft_ms, None);
        let weighted = r#"{"requests_total":1,"peak_in_flight":4,"timeline":[
            {"t_ms":100,"in_flight":3,"mean_in_flight":3.75,"max_in_flight":4}]}"#;
        let stats: MockStats = serde_json::from_str(weighted).unwrap();
        assert_eq!(stats.timeline[0].in_flight(), 3.75);
        let with_ttft = r#"{"requests_total":1,"peak_in_flight":1,"timeline":[],
            "ttft_ms":{"count":2,"p50":10.1,"p90":10.2,"p99":10.3,"p999":10.4,"max":10.5}}"#;
        let stats: MockStats = serde_json::from_str(with_ttft).unwrap();
        let side = stats.server_side(Duration::ZERO, Duration::from_secs(1), None);
        let ttft = side.ttft.unwrap();
        assert_eq!((ttft.count, ttft.p99, ttft.max), (2, 10.3, 10.5));
        // A provider's JSON is not mistaken for the mock's.
        assert!(serde_json::from_str::<MockStats>(r#"{"object":"list","data":[]}"#).is_err());
        // Any server can answer /stats: a mean past any real count is bounded, so the figure
        // and the results file stay finite.
        let hostile = r#"{"requests_total":1,"peak_in_flight":1,"timeline":[
            {"t_ms":100,"in_flight":0,"mean_in_flight":1.7e308},
            {"t_ms":200,"in_flight":0,"mean_in_flight":1.7e308},
            {"t_ms":300,"in_flight":0,"mean_in_flight":-5}]}"#;
        let stats: MockStats = serde_json::from_str(hostile).unwrap();
        let side = stats.server_side(Duration::ZERO, Duration::from_secs(1), None);
        assert!(side.mean_in_flight.is_finite() && side.mean_in_flight <= 1e9);
        assert!(
            side.timeline
                .iter()
                .all(|(_, v)| v.is_finite() && *v >= 0.0)
        );
    }

    /// A mock's statistics of 7 requests, at most 10 in flight, with this timeline.
    fn stats_of(timeline: Vec<MockBucket>) -> MockStats {
        MockStats {
            requests_total: 7,
            peak_in_flight: 10,
            timeline,
            ttft_ms: None,
        }
    }

    #[test]
    fn the_timeline_is_cut_to_the_run_and_averaged_over_its_middle() {
        // Reset at 0, run from 250 ms to 1 250 ms: buckets ending 300..=1300 overlap it.
        let timeline = (1..=20)
            .map(|i| MockBucket {
                t_ms: i * 100,
                in_flight: if i == 3 || i == 13 { 1 } else { 10 },
                mean_in_flight: None,
            })
            .collect();
        let side = stats_of(timeline).server_side(
            Duration::from_millis(250),
            Duration::from_secs(1),
            None,
        );
        assert_eq!(side.timeline.len(), 11);
        assert_eq!(side.timeline[0], (50, 1.0));
        assert_eq!(side.timeline[10], (1050, 1.0));
        // 11 buckets: the first and last are left out, leaving nine 10s.
        assert_eq!(side.mean_in_flight, 10.0);
        // A run timed to 500 ms whose drain took until 1 s: the buckets after its duration
        // are left out of the mean (not of the timeline).
        let drained = (1..=20)
            .map(|i| MockBucket {
                t_ms: i * 100,
                in_flight: if i <= 8 { 10 } else { 2 },
                mean_in_flight: None,
            })
            .collect();
        let side = stats_of(drained).server_side(
            Duration::from_millis(250),
            Duration::from_secs(1),
            Some(Duration::from_millis(500)),
        );
        assert_eq!(side.timeline.len(), 11);
        assert_eq!(side.mean_in_flight, 10.0);
        // An older mock's samples are the headline; there is no second figure.
        assert_eq!(side.mean_in_flight_sampled, None);
        assert_eq!((side.requests, side.peak_in_flight), (7, 10));
        let empty = MockStats {
            requests_total: 0,
            peak_in_flight: 0,
            timeline: Vec::new(),
            ttft_ms: None,
        };
        assert_eq!(
            empty
                .server_side(Duration::ZERO, Duration::ZERO, None)
                .mean_in_flight,
            0.0
        );
    }

    #[test]
    fn the_headline_and_the_timeline_use_the_weighted_means() {
        // Ten buckets in the run, a sample of 8 at each end against a mean of 9.5 over it.
        let timeline = (1..=10)
            .map(|i| MockBucket {
                t_ms: i * 100,
                in_flight: 8,
                mean_in_flight: Some(if i == 5 { 9.0 } else { 9.5 }),
            })
            .collect();
        let side = stats_of(timeline).server_side(Duration::ZERO, Duration::from_secs(1), None);
        assert_eq!(side.timeline[4], (500, 9.0));
        assert_eq!(side.timeline[5], (600, 9.5));
        // The middle eight: seven 9.5s and one 9.0.
        assert_eq!(side.mean_in_flight, (7.0 * 9.5 + 9.0) / 8.0);
        assert_eq!(side.mean_in_flight_sampled, Some(8.0));
    }
}
