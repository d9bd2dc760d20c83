//! What the reports say, as plain text rows: the markdown and HTML renderers lay out the same
//! rows, so the two reports cannot drift apart.
//!
//! Strings taken from the results are NOT escaped here; each renderer escapes for its format.

use super::format::{NONE, bytes, duration_ms, fixed, int, num, percent};
use crate::results::{BenchResults, Percentiles};

/// A labelled line of a two-column table.
pub(super) type Row = (&'static str, String);

/// The title: `Volley benchmark: S1`.
pub(super) fn title(r: &BenchResults) -> String {
    if r.name.is_empty() {
        "Volley benchmark".to_owned()
    } else {
        format!("Volley benchmark: {}", r.name)
    }
}

/// When, with what and to what schema the run was made.
pub(super) fn provenance(r: &BenchResults) -> String {
    let started = if r.started_at.is_empty() {
        "unknown time"
    } else {
        &r.started_at
    };
    let version = if r.volley_version.is_empty() {
        "unknown"
    } else {
        &r.volley_version
    };
    format!(
        "Started {started} · volley {version} · results schema {}",
        r.schema_version
    )
}

/// The configuration as the driver understood it.
pub(super) fn config_rows(r: &BenchResults) -> Vec<Row> {
    let c = &r.config;
    let mut rows = Vec::new();
    let target = if c.base_url.is_empty() {
        NONE.to_owned()
    } else {
        c.base_url.clone()
    };
    let target = if c.embedded_mock {
        format!("{target} (embedded mock)")
    } else {
        target
    };
    rows.push(("target", target));
    rows.push(("mode", mode(r)));
    if c.adaptive {
        rows.push((
            "client concurrency limit",
            "adaptive, up to the load's concurrency".to_owned(),
        ));
    }
    let mut stop = Vec::new();
    if let Some(n) = c.requests {
        stop.push(format!("{} requests", int(n)));
    }
    if let Some(ms) = c.duration_ms {
        stop.push(duration_ms(ms as f64));
    }
    if !stop.is_empty() {
        rows.push(("stop after", stop.join(" or ")));
    }
    if c.warmup > 0 {
        rows.push((
            "warm-up",
            format!("{} requests first, not measured", int(c.warmup)),
        ));
    }
    let kind = if c.stream {
        "streaming"
    } else {
        "plain (not streamed)"
    };
    rows.push(("requests", kind.to_owned()));
    rows.push(("model", or_none(&c.model)));
    rows.push(("prompt tokens", or_none(&c.prompt_tokens)));
    rows.push(("output tokens", or_none(&c.output_tokens)));
    rows.push(("middleware stack", or_none(&c.stack)));
    rows.push(("seed", c.seed.to_string()));
    rows
}

/// The mode with the figures that drive it: `closed loop, 1,024 workers`.
pub(super) fn mode(r: &BenchResults) -> String {
    let c = &r.config;
    let mut parts = vec![match c.mode.as_str() {
        "closed" => "closed loop".to_owned(),
        "open" => "open loop".to_owned(),
        "ramp" => "ramp".to_owned(),
        "" => NONE.to_owned(),
        other => other.to_owned(),
    }];
    match (c.ramp_from, c.concurrency) {
        (Some(from), Some(to)) => {
            let over = c
                .ramp_over_ms
                .map(|ms| format!(" over {}", duration_ms(ms as f64)));
            parts.push(format!(
                "concurrency {} → {}{}",
                int(from),
                int(to),
                over.unwrap_or_default()
            ));
        }
        (_, Some(n)) => parts.push(format!("{} workers", int(n))),
        _ => {}
    }
    if let Some(rate) = c.rate {
        let arrivals = c.arrivals.as_deref().map(|a| format!(" ({a} arrivals)"));
        parts.push(format!(
            "{} req/s{}",
            num(rate),
            arrivals.unwrap_or_default()
        ));
    }
    parts.join(", ")
}

/// The headline figures.
pub(super) fn summary_rows(r: &BenchResults) -> Vec<Row> {
    let s = &r.summary;
    let res = &r.resources;
    let mut rows = vec![
        ("requests", int(s.requests)),
        (
            "succeeded / failed",
            format!(
                "{} / {} ({} failed)",
                int(s.ok),
                int(s.failed),
                percent(s.failed, s.requests)
            ),
        ),
    ];
    if r.config.mode == "open" || s.dropped > 0 {
        rows.push((
            "dropped arrivals",
            format!("{} (over the in-flight cap, never sent)", int(s.dropped)),
        ));
    }
    if s.unfinished > 0 {
        rows.push((
            "unfinished",
            format!(
                "{} (in flight when the run was cancelled: past the grace after its duration, or a second Ctrl-C)",
                int(s.unfinished)
            ),
        ));
    }
    rows.extend([
        ("wall time", duration_ms(s.wall_ms)),
        ("throughput", format!("{} req/s", num(s.requests_per_sec))),
        (
            "in flight, client (mean / peak)",
            format!("{} / {}", num(s.mean_in_flight), int(s.peak_in_flight)),
        ),
    ]);
    rows.push((
        "in flight, server (mean / peak)",
        match &r.server {
            Some(server) => format!(
                "{} / {} ({} requests received)",
                num(server.mean_in_flight),
                int(server.peak_in_flight),
                int(server.requests)
            ),
            None => format!("{NONE} (not reported by the target)"),
        },
    ));
    rows.push((
        "CPU per request",
        format!(
            "{} (user {}, system {})",
            // Zero would read as a result: say that nothing succeeded instead.
            if s.ok == 0 {
                format!("{NONE} (no request succeeded)")
            } else {
                format!("{} µs", num(s.cpu_us_per_request))
            },
            duration_ms(res.cpu_user_ms),
            duration_ms(res.cpu_system_ms)
        ),
    ));
    if r.config.stream || s.chunks > 0 {
        rows.push(("CPU per chunk", format!("{} µs", num(s.cpu_us_per_chunk))));
    }
    rows.push(("peak RSS", bytes(res.peak_rss_bytes)));
    rows.push((
        "output tokens",
        format!(
            "{} tokens/s ({} in all)",
            num(s.output_tokens_per_sec),
            int(s.output_tokens)
        ),
    ));
    if r.config.stream || s.chunks > 0 {
        rows.push(("content chunks", int(s.chunks)));
    }
    let c = &r.connections;
    rows.push((
        "connections",
        format!("{} opened, {} reuses", int(c.opened), int(c.reused)),
    ));
    rows
}

/// The percentile tables' columns after the row label.
pub(super) const PERCENTILE_HEADERS: [&str; 8] =
    ["count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"];

/// Latency, TTFT and inter-token percentiles that were measured, as table cells in ms.
pub(super) fn percentile_rows(r: &BenchResults) -> Vec<(&'static str, [String; 8])> {
    let mut rows = vec![("request latency", percentile_cells(&r.latency))];
    if let Some(p) = &r.ttft {
        rows.push(("time to first token", percentile_cells(p)));
    }
    if let Some(p) = &r.tpot {
        rows.push(("time per output token", percentile_cells(p)));
    }
    if let Some(p) = &r.inter_token {
        rows.push(("inter-token gap", percentile_cells(p)));
    }
    rows
}

/// Error kinds, most frequent first, with their share of all requests.
pub(super) fn error_rows(r: &BenchResults) -> Vec<(&str, String, String)> {
    let mut errors: Vec<(&str, u64)> = r.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    errors
        .into_iter()
        .map(|(kind, n)| (kind, int(n), percent(n, r.summary.requests)))
        .collect()
}

/// The columns of the endpoints table.
pub(super) const ENDPOINT_HEADERS: [&str; 8] = [
    "attempts",
    "share",
    "answered",
    "429/529",
    "5xx",
    "no answer",
    "breaker (openings)",
    "mean latency",
];

/// One row per endpoint of a balanced client: its name and [`ENDPOINT_HEADERS`]' cells.
pub(super) fn endpoint_rows(r: &BenchResults) -> Vec<(&str, [String; 8])> {
    let total: u64 = r.endpoints.iter().map(|e| e.attempts).sum();
    r.endpoints
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                [
                    int(e.attempts),
                    percent(e.attempts, total),
                    int(e.answered),
                    int(e.rate_limited),
                    int(e.server_errors),
                    int(e.failed),
                    format!("{} ({})", e.breaker_state, int(e.breaker_openings)),
                    e.mean_latency_ms
                        .map_or_else(|| NONE.to_owned(), duration_ms),
                ],
            )
        })
        .collect()
}

/// The hedging line, when the client hedged.
pub(super) fn hedges(r: &BenchResults) -> Option<String> {
    (r.hedges > 0).then(|| {
        format!(
            "{} hedged copies ({} of the requests; each may have been billed)",
            int(r.hedges),
            percent(r.hedges, r.summary.requests)
        )
    })
}

/// A target's measured value with its unit: `1,021.4 requests`.
pub(super) fn target_value(value: f64, unit: &str) -> String {
    match unit {
        "" => num(value),
        "×" | "%" => format!("{}{unit}", num(value)),
        _ => format!("{} {unit}", num(value)),
    }
}

/// One row's cells, all with the same decimals (those that suit its median) so the columns
/// line up.
fn percentile_cells(p: &Percentiles) -> [String; 8] {
    let decimals = match p.p50.abs() {
        m if m >= 10.0 => 1,
        m if m >= 1.0 => 2,
        _ => 3,
    };
    let v = |x: f64| {
        if p.count == 0 {
            NONE.to_owned()
        } else {
            fixed(x, decimals)
        }
    };
    [
        int(p.count),
        v(p.min),
        v(p.mean),
        v(p.p50),
        v(p.p90),
        v(p.p99),
        v(p.p999),
        v(p.max),
    ]
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_owned()
    } else {
        text.to_owned()
    }
}
