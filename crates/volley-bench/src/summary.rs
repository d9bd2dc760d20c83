//! Turning merged measurements into [`BenchResults`]: percentiles, the CDF and TTFT
//! histogram, the timeline, rates, and the run's configuration as written.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::config::{BenchConfig, Load};
use super::recorder::Recorder;
use super::results::{
    BenchResults, Connections, EndpointPoint, EndpointResult, Percentiles, Resources, RunConfig,
    SCHEMA_VERSION, ServerSide, Summary,
};
use super::sys::CpuTimes;
use super::timeline::{BUCKET, steady_mean};

/// The most points of the latency CDF.
const CDF_POINTS: usize = 200;
/// Buckets of the TTFT histogram.
const HISTOGRAM_BUCKETS: usize = 40;

/// Everything a run measured, merged.
pub(crate) struct Facts<'a> {
    pub(crate) config: &'a BenchConfig,
    /// The target as the transport names it (no credentials, no query).
    pub(crate) base_url: &'a str,
    pub(crate) started_at: SystemTime,
    pub(crate) recorder: Recorder,
    pub(crate) dropped: u64,
    pub(crate) peak_in_flight: u64,
    pub(crate) cpu: Option<CpuTimes>,
    pub(crate) peak_rss: Option<u64>,
    pub(crate) connections: Connections,
    pub(crate) server: Option<ServerSide>,
    /// Each endpoint at the end, with a balanced client; empty otherwise.
    pub(crate) endpoints: &'a [volley::EndpointStats],
    pub(crate) endpoint_timeline: Vec<EndpointPoint>,
    pub(crate) hedges: u64,
    /// The adaptive limit's samples, `(t_ms, limit)`; empty when it is fixed.
    pub(crate) concurrency_limit: Vec<(u64, u64)>,
    pub(crate) error_examples: BTreeMap<String, String>,
    pub(crate) stopped_early: Option<String>,
    pub(crate) interrupted: bool,
}

/// The results of a run.
pub(crate) fn results(facts: Facts<'_>) -> BenchResults {
    let Facts {
        config,
        base_url,
        started_at,
        recorder: r,
        dropped,
        peak_in_flight,
        cpu,
        peak_rss,
        connections,
        server,
        endpoints,
        endpoint_timeline,
        hedges,
        concurrency_limit,
        error_examples,
        stopped_early,
        interrupted,
    } = facts;
    // The first request starts at 0: the wall time is when the last one finished or was
    // cancelled. The rates are over the time to the last one finished: a request cancelled
    // at the end of the grace adds its wait, not throughput.
    let wall = Duration::from_nanos(r.last_end_ns);
    let wall_s = wall.as_secs_f64();
    let active_s = Duration::from_nanos(r.last_finished_ns).as_secs_f64();
    let per_sec = |n: u64| {
        if active_s > 0.0 {
            n as f64 / active_s
        } else {
            0.0
        }
    };
    let finished = r.ok + r.failed;
    // CPU time is counted in 10 ms ticks (see `sys`), so the per-request and per-chunk figures
    // are coarse for short runs; without `/proc` they are 0, meaning not measured.
    let cpu = cpu.unwrap_or_default();
    let cpu_us = (cpu.user + cpu.system).as_secs_f64() * 1e6;
    let per = |n: u64| if n > 0 { cpu_us / n as f64 } else { 0.0 };

    let timeline = r.timeline.points(wall, |start, end| match config.load {
        Load::Closed { concurrency } => Some(concurrency as f64),
        Load::Ramp(ramp) => Some(ramp.mean_target(start, end)),
        Load::Open { .. } => None,
    });
    let summary = Summary {
        requests: finished,
        ok: r.ok,
        failed: r.failed,
        unfinished: r.unfinished,
        dropped,
        wall_ms: wall_s * 1e3,
        requests_per_sec: per_sec(finished),
        mean_request_ms: if finished > 0 {
            r.busy_ns as f64 / finished as f64 / 1e6
        } else {
            0.0
        },
        mean_in_flight: steady_mean(&timeline, wall, config.duration),
        peak_in_flight,
        output_tokens_per_sec: per_sec(r.output_tokens),
        output_tokens: r.output_tokens,
        chunks: r.chunks,
        cpu_us_per_request: per(finished),
        cpu_us_per_chunk: if config.stream { per(r.chunks) } else { 0.0 },
    };
    let errors: BTreeMap<String, u64> = r
        .errors
        .iter()
        .map(|&(label, n)| (label.name(), n))
        .collect();
    BenchResults {
        schema_version: SCHEMA_VERSION,
        volley_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: rfc3339(started_at),
        name: config.name.clone(),
        config: run_config(config, base_url),
        summary,
        latency: percentiles(&r.latency),
        ttft: config.stream.then(|| percentiles(&r.ttft)),
        inter_token: config.stream.then(|| percentiles(&r.inter_token)),
        tpot: config.stream.then(|| percentiles(&r.tpot)),
        errors,
        connections,
        resources: Resources {
            cpu_user_ms: cpu.user.as_secs_f64() * 1e3,
            cpu_system_ms: cpu.system.as_secs_f64() * 1e3,
            peak_rss_bytes: peak_rss.unwrap_or(0),
        },
        timeline,
        bucket_ms: BUCKET.as_millis() as u64,
        latency_cdf: cdf(&r.latency, CDF_POINTS),
        ttft_histogram: if config.stream {
            buckets(&r.ttft, HISTOGRAM_BUCKETS)
        } else {
            Vec::new()
        },
        server,
        targets: Vec::new(),
        endpoints: endpoints.iter().map(endpoint_result).collect(),
        endpoint_timeline,
        hedges,
        concurrency_limit,
        error_examples,
        stopped_early,
        interrupted,
    }
}

fn endpoint_result(s: &volley::EndpointStats) -> EndpointResult {
    EndpointResult {
        name: s.name.clone(),
        attempts: s.requests,
        answered: s.answered,
        rate_limited: s.rate_limited,
        server_errors: s.server_errors,
        failed: s.failed,
        breaker_openings: s.breaker_opened,
        breaker_state: s.state.as_str().to_owned(),
        mean_latency_ms: s.mean_latency.map(|d| d.as_secs_f64() * 1e3),
    }
}

/// The configuration as written to the results.
fn run_config(config: &BenchConfig, base_url: &str) -> RunConfig {
    let mut run = RunConfig {
        base_url: base_url.to_owned(),
        mode: config.load.mode().to_owned(),
        requests: config.requests,
        warmup: config.warmup,
        duration_ms: config.duration.map(|d| d.as_millis() as u64),
        stream: config.stream,
        model: config.model.clone(),
        prompt_tokens: config.prompt_tokens.to_string(),
        output_tokens: config.output_tokens.to_string(),
        stack: config.stack.as_str().to_owned(),
        adaptive: config.adaptive,
        embedded_mock: config.embedded_mock,
        seed: config.seed,
        ..RunConfig::default()
    };
    match config.load {
        Load::Closed { concurrency } => run.concurrency = Some(concurrency as u64),
        Load::Open { rate, arrivals } => {
            run.rate = Some(rate);
            run.arrivals = Some(arrivals.as_str().to_owned());
            run.max_in_flight = Some(config.max_in_flight as u64);
        }
        Load::Ramp(ramp) => {
            run.concurrency = Some(ramp.to as u64);
            run.ramp_from = Some(ramp.from as u64);
            run.ramp_over_ms = Some(ramp.over.as_millis() as u64);
        }
    }
    run
}

/// Percentiles of a histogram in µs, in ms.
pub(crate) fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1e3;
    Percentiles {
        count: h.len(),
        min: ms(h.min()),
        mean: h.mean() / 1e3,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// The CDF of a histogram in µs: (value in ms, fraction at or below it), ascending, at most
/// `max_points` points (plus the first), denser in the tail where latency charts look.
pub(crate) fn cdf(h: &Histogram<u64>, max_points: usize) -> Vec<(f64, f64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let steps: Vec<(f64, f64)> = h
        .iter_recorded()
        .scan(0u64, |seen, v| {
            *seen += v.count_since_last_iteration();
            Some((
                v.value_iterated_to() as f64 / 1e3,
                *seen as f64 / total as f64,
            ))
        })
        .collect();
    if steps.len() <= max_points {
        return steps;
    }
    // Half the points spread evenly, half in the tail from p90 to p99.99.
    let linear = max_points / 2;
    let tail = max_points - linear;
    let quantiles = (1..=linear)
        .map(|i| i as f64 / linear as f64)
        .chain((0..tail).map(|i| 1.0 - 0.1 * 10f64.powf(-3.0 * i as f64 / tail as f64)));
    let mut wanted: Vec<f64> = quantiles.collect();
    wanted.sort_by(f64::total_cmp);
    let mut points = vec![steps[0]];
    let mut at = 0;
    for q in wanted {
        while at + 1 < steps.len() && steps[at].1 < q {
            at += 1;
        }
        if points.last() != Some(&steps[at]) {
            points.push(steps[at]);
        }
    }
    if points.last() != steps.last() {
        points.push(steps[steps.len() - 1]);
    }
    points
}

/// A histogram in µs as `buckets` equal-width buckets from its min to its max:
/// (lower bound ms, upper bound ms, count).
pub(crate) fn buckets(h: &Histogram<u64>, buckets: usize) -> Vec<(f64, f64, u64)> {
    if h.is_empty() || buckets == 0 {
        return Vec::new();
    }
    let (low, high) = (h.min(), h.max());
    if low >= high {
        return vec![(low as f64 / 1e3, high as f64 / 1e3, h.len())];
    }
    let width = (high - low) as f64 / buckets as f64;
    let mut counts = vec![0u64; buckets];
    for v in h.iter_recorded() {
        let offset = v.value_iterated_to().clamp(low, high) - low;
        let index = ((offset as f64 / width) as usize).min(buckets - 1);
        counts[index] += v.count_since_last_iteration();
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let lower = low as f64 + width * i as f64;
            (lower / 1e3, (lower + width) / 1e3, n)
        })
        .collect()
}

/// `t` as RFC 3339 UTC to the second: `2026-11-23T18:04:33Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for
/// non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new(3).unwrap();
        for v in values_us {
            h.record(v).unwrap();
        }
        h
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want.abs() * 1e-3 + 1e-9
    }

    #[test]
    fn percentiles_of_known_values() {
        // 1..=1000 ms.
        let p = percentiles(&histogram((1..=1000).map(|ms| ms * 1000)));
        assert_eq!(p.count, 1000);
        for (got, want) in [
            (p.min, 1.0),
            (p.mean, 500.5),
            (p.p50, 500.0),
            (p.p90, 900.0),
            (p.p99, 990.0),
            (p.p999, 999.0),
            (p.max, 1000.0),
        ] {
            assert!(close(got, want), "{got} vs {want} in {p:?}");
        }
        assert_eq!(percentiles(&histogram([])), Percentiles::default());
    }

    #[test]
    fn cdf_is_exact_when_small_and_bounded_when_large() {
        // Values below 2 048 µs are exact at 3 significant digits.
        let small = cdf(&histogram([1000, 1000, 1500, 2000]), 200);
        assert_eq!(small, [(1.0, 0.5), (1.5, 0.75), (2.0, 1.0)]);

        let large = cdf(&histogram((1..=100_000).map(|us| us * 7)), 200);
        assert!(large.len() <= 201, "{}", large.len());
        assert!(large.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert_eq!(large.last().unwrap().1, 1.0);
        // The tail is there: a point at or beyond p99.9.
        assert!(large.iter().any(|&(_, q)| q > 0.999 && q < 1.0));
    }

    #[test]
    fn buckets_span_min_to_max() {
        let b = buckets(&histogram([1000, 1500, 2000, 3000]), 2);
        assert_eq!(b.len(), 2);
        assert!(close(b[0].0, 1.0) && close(b[1].1, 3.0), "{b:?}");
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 4);
        assert_eq!(b[0].2, 3);
        assert_eq!(buckets(&histogram([1500, 1500]), 40), [(1.5, 1.5, 2)]);
        assert!(buckets(&histogram([]), 40).is_empty());
    }

    #[test]
    fn dates_in_rfc3339() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(at(1_795_197_873), "2026-11-20T18:04:33Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
