//! A run against a baseline run, as a markdown table (`cargo xtask bench --baseline`).

use std::fmt::Write as _;

use super::format::{NONE, int, md, num};
use crate::results::{BenchResults, Percentiles};

/// Changes smaller than this, in percent, are not called better or worse: run-to-run noise
/// on a shared machine is a few percent.
const NOTABLE_PERCENT: f64 = 5.0;

/// Which way a figure should move.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    /// Neither way is better in itself (the number of requests, the mean in flight of an
    /// open loop).
    Neither,
}

/// Renders the comparison.
pub(super) fn render(current: &BenchResults, baseline: &BenchResults) -> String {
    let mut out = String::from("## Compared with the baseline\n\n");
    // `write!` into a `String` cannot fail, so its results are ignored throughout.
    let _ = writeln!(
        out,
        "Current: {}. Baseline: {}.\n",
        describe(current),
        describe(baseline)
    );
    let differences = config_differences(current, baseline);
    if !differences.is_empty() {
        let _ = writeln!(
            out,
            "> ⚠️ The configurations differ ({}): this is not a like-for-like comparison.\n",
            md(&differences.join("; "))
        );
    }
    let _ = writeln!(
        out,
        "| figure | baseline | current | change |\n|---|--:|--:|--:|"
    );
    for (figure, better, shown, pick) in FIGURES {
        let (base, cur) = (pick(baseline), pick(current));
        if base.is_none() && cur.is_none() {
            continue;
        }
        let show = |v: Option<f64>| match (v, shown) {
            (None, _) => NONE.to_owned(),
            // Counts are whole numbers well below 2^53, so the cast is exact.
            (Some(v), Shown::Count) => int(v as u64),
            (Some(v), Shown::Measure) => num(v),
        };
        let _ = writeln!(
            out,
            "| {figure} | {} | {} | {} |",
            show(base),
            show(cur),
            change(base, cur, *better)
        );
    }
    let _ = writeln!(
        out,
        "\nChanges of {NOTABLE_PERCENT} % or more are marked better or worse."
    );
    out
}

/// How a figure is printed.
#[derive(Clone, Copy)]
enum Shown {
    /// A measured value, with decimals.
    Measure,
    /// A whole number.
    Count,
}

type Pick = fn(&BenchResults) -> Option<f64>;

/// The figures compared, in order: label, direction, how to print it, how to read it.
const FIGURES: &[(&str, Better, Shown, Pick)] = &[
    // Successes only: a build that fails fast would otherwise read as faster.
    (
        "throughput, succeeded (req/s)",
        Better::Higher,
        Shown::Measure,
        |r| (r.summary.requests > 0).then(|| r.summary.ok_per_sec()),
    ),
    ("latency p50 (ms)", Better::Lower, Shown::Measure, |r| {
        ok(&r.latency).map(|p| p.p50)
    }),
    ("latency p90 (ms)", Better::Lower, Shown::Measure, |r| {
        ok(&r.latency).map(|p| p.p90)
    }),
    ("latency p99 (ms)", Better::Lower, Shown::Measure, |r| {
        ok(&r.latency).map(|p| p.p99)
    }),
    ("TTFT p50 (ms)", Better::Lower, Shown::Measure, |r| {
        r.ttft.as_ref().and_then(ok).map(|p| p.p50)
    }),
    ("TTFT p99 (ms)", Better::Lower, Shown::Measure, |r| {
        r.ttft.as_ref().and_then(ok).map(|p| p.p99)
    }),
    ("TPOT p50 (ms)", Better::Lower, Shown::Measure, |r| {
        r.tpot.as_ref().and_then(ok).map(|p| p.p50)
    }),
    ("TPOT p99 (ms)", Better::Lower, Shown::Measure, |r| {
        r.tpot.as_ref().and_then(ok).map(|p| p.p99)
    }),
    ("inter-token p50 (ms)", Better::Lower, Shown::Measure, |r| {
        r.inter_token.as_ref().and_then(ok).map(|p| p.p50)
    }),
    ("inter-token p99 (ms)", Better::Lower, Shown::Measure, |r| {
        r.inter_token.as_ref().and_then(ok).map(|p| p.p99)
    }),
    (
        "mean in flight, client",
        Better::Neither,
        Shown::Measure,
        |r| Some(r.summary.mean_in_flight),
    ),
    // Results from before the mock weighed its buckets by time have only the sampled figure
    // (in `mean_in_flight`): each row compares like with like.
    (
        "mean in flight, server (time-weighted)",
        Better::Neither,
        Shown::Measure,
        |r| {
            r.server
                .as_ref()
                .filter(|s| s.mean_in_flight_sampled.is_some())
                .map(|s| s.mean_in_flight)
        },
    ),
    (
        "mean in flight, server (end-of-bucket samples)",
        Better::Neither,
        Shown::Measure,
        |r| {
            r.server
                .as_ref()
                .map(|s| s.mean_in_flight_sampled.unwrap_or(s.mean_in_flight))
        },
    ),
    (
        "CPU per request (µs)",
        Better::Lower,
        Shown::Measure,
        |r| Some(r.summary.cpu_us_per_request),
    ),
    ("CPU per chunk (µs)", Better::Lower, Shown::Measure, |r| {
        (r.summary.chunks > 0).then_some(r.summary.cpu_us_per_chunk)
    }),
    ("peak RSS (MiB)", Better::Lower, Shown::Measure, |r| {
        (r.resources.peak_rss_bytes > 0).then(|| r.resources.peak_rss_bytes as f64 / 1_048_576.0)
    }),
    ("output tokens/s", Better::Higher, Shown::Measure, |r| {
        Some(r.summary.output_tokens_per_sec)
    }),
    // Requests cancelled unfinished (a server that held them past the grace) did not succeed
    // either.
    (
        "failed or unfinished (% of requests)",
        Better::Lower,
        Shown::Measure,
        |r| {
            let s = &r.summary;
            let all = s.requests + s.unfinished;
            (all > 0).then(|| (s.failed + s.unfinished) as f64 * 100.0 / all as f64)
        },
    ),
    ("dropped arrivals", Better::Lower, Shown::Count, |r| {
        (r.config.mode == "open" || r.summary.dropped > 0).then_some(r.summary.dropped as f64)
    }),
    ("connections opened", Better::Neither, Shown::Count, |r| {
        Some(r.connections.opened as f64)
    }),
    ("requests", Better::Neither, Shown::Count, |r| {
        Some(r.summary.requests as f64)
    }),
];

/// Percentiles that measured something.
fn ok(p: &Percentiles) -> Option<&Percentiles> {
    (p.count > 0).then_some(p)
}

/// `+12.3 % (worse)`; `–` when either side is missing or the baseline is 0.
fn change(base: Option<f64>, cur: Option<f64>, better: Better) -> String {
    let (Some(base), Some(cur)) = (base, cur) else {
        return NONE.to_owned();
    };
    if !(base.is_finite() && cur.is_finite()) {
        return NONE.to_owned();
    }
    if base == 0.0 {
        return if cur == 0.0 {
            "0 %".to_owned()
        } else {
            NONE.to_owned()
        };
    }
    let pct = (cur - base) / base.abs() * 100.0;
    let text = format!("{pct:+.1} %");
    let verdict = match better {
        _ if pct.abs() < NOTABLE_PERCENT => None,
        Better::Higher => Some(if pct > 0.0 { "better" } else { "worse" }),
        Better::Lower => Some(if pct < 0.0 { "better" } else { "worse" }),
        Better::Neither => None,
    };
    match verdict {
        Some(v) => format!("{text} ({v})"),
        None => text,
    }
}

fn describe(r: &BenchResults) -> String {
    let name = if r.name.is_empty() {
        "unnamed run"
    } else {
        &r.name
    };
    format!(
        "{} ({}, volley {})",
        md(name),
        md(if r.started_at.is_empty() {
            NONE
        } else {
            &r.started_at
        }),
        md(if r.volley_version.is_empty() {
            NONE
        } else {
            &r.volley_version
        })
    )
}

/// The settings that make two runs incomparable when they differ. The base URL is left out:
/// the embedded mock listens on a new port every run.
fn config_differences(a: &BenchResults, b: &BenchResults) -> Vec<String> {
    let (a, b) = (&a.config, &b.config);
    let mut out = Vec::new();
    let mut check = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} {x} vs {y}"));
        }
    };
    let opt = |v: Option<u64>| v.map_or_else(|| NONE.to_owned(), |v| v.to_string());
    check("mode", a.mode.clone(), b.mode.clone());
    check("concurrency", opt(a.concurrency), opt(b.concurrency));
    check("ramp from", opt(a.ramp_from), opt(b.ramp_from));
    let rate = |v: Option<f64>| v.map_or_else(|| NONE.to_owned(), num);
    check("rate", rate(a.rate), rate(b.rate));
    check("max in flight", opt(a.max_in_flight), opt(b.max_in_flight));
    check("requests", opt(a.requests), opt(b.requests));
    check("duration ms", opt(a.duration_ms), opt(b.duration_ms));
    check("stream", a.stream.to_string(), b.stream.to_string());
    check("model", a.model.clone(), b.model.clone());
    check(
        "prompt tokens",
        a.prompt_tokens.clone(),
        b.prompt_tokens.clone(),
    );
    check(
        "output tokens",
        a.output_tokens.clone(),
        b.output_tokens.clone(),
    );
    check("stack", a.stack.clone(), b.stack.clone());
    check(
        "embedded mock",
        a.embedded_mock.to_string(),
        b.embedded_mock.to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_names_the_direction_only_when_notable() {
        assert_eq!(
            change(Some(100.0), Some(112.0), Better::Higher),
            "+12.0 % (better)"
        );
        assert_eq!(
            change(Some(100.0), Some(112.0), Better::Lower),
            "+12.0 % (worse)"
        );
        assert_eq!(change(Some(100.0), Some(97.0), Better::Lower), "-3.0 %");
        assert_eq!(change(Some(100.0), Some(50.0), Better::Neither), "-50.0 %");
        assert_eq!(change(Some(0.0), Some(0.0), Better::Lower), "0 %");
        assert_eq!(change(Some(0.0), Some(3.0), Better::Lower), NONE);
        assert_eq!(change(None, Some(3.0), Better::Lower), NONE);
        assert_eq!(change(Some(f64::NAN), Some(3.0), Better::Lower), NONE);
    }

    #[test]
    fn different_configurations_are_called_out() {
        let mut a = BenchResults::default();
        let mut b = BenchResults::default();
        a.config.concurrency = Some(1024);
        b.config.concurrency = Some(512);
        b.config.base_url = "http://127.0.0.1:4000".to_owned();
        assert_eq!(config_differences(&a, &b), ["concurrency 1024 vs 512"]);
        let table = render(&a, &b);
        assert!(table.contains("not a like-for-like comparison"), "{table}");
        assert!(render(&a, &a).lines().all(|l| !l.contains("like-for-like")));
    }
}
