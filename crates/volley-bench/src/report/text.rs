//! The plain-text summary a terminal shows at the end of a run.

use std::fmt::Write as _;

use crate::results::BenchResults;

/// Renders the summary: counts, in flight, percentiles, errors, client cost. Figures measured
/// on successful requests only (latency, time to first token, CPU per request) are replaced by
/// one line saying that nothing succeeded when no request did: zeros would read as a result.
pub(super) fn render(r: &BenchResults) -> String {
    // `write!` into a `String` cannot fail, so its results are ignored throughout.
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} requests ({} ok, {} failed{}{}) in {:.2} s: {:.0} req/s",
        r.name,
        s.requests,
        s.ok,
        s.failed,
        if s.dropped > 0 {
            format!(", {} dropped", s.dropped)
        } else {
            String::new()
        },
        if s.unfinished > 0 {
            format!("; besides, {} cancelled unfinished", s.unfinished)
        } else {
            String::new()
        },
        s.wall_ms / 1000.0,
        s.requests_per_sec
    );
    let _ = writeln!(
        out,
        "in flight: mean {:.1} (steady middle 80 %), peak {}{}",
        s.mean_in_flight,
        s.peak_in_flight,
        r.server.as_ref().map_or(String::new(), |server| format!(
            "; server side: mean {:.1}, peak {}",
            server.mean_in_flight, server.peak_in_flight
        ))
    );
    if s.ok == 0 {
        let _ = writeln!(
            out,
            "no request succeeded: no latency, time-to-first-token or CPU-per-request figures \
             (see the errors below)"
        );
    } else {
        percentiles(&mut out, r);
    }
    if s.output_tokens > 0 {
        let _ = writeln!(
            out,
            "output: {} tokens, {:.0} tokens/s{}",
            s.output_tokens,
            s.output_tokens_per_sec,
            if s.chunks > 0 {
                format!(", {} chunks", s.chunks)
            } else {
                String::new()
            }
        );
    }
    if !r.errors.is_empty() {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "errors: {}", list.join(", "));
        for (label, message) in &r.error_examples {
            let _ = writeln!(out, "  first {label}: {message}");
        }
    }
    if let Some(why) = &r.stopped_early {
        let _ = writeln!(out, "stopped early: {why}");
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: the figures cover the part of the run before it"
        );
    }
    for e in &r.endpoints {
        let _ = writeln!(
            out,
            "endpoint {}: {} attempts, {} answered, {} 429/529, {} 5xx, {} no answer; breaker {} \
             (opened {}×){}",
            e.name,
            e.attempts,
            e.answered,
            e.rate_limited,
            e.server_errors,
            e.failed,
            e.breaker_state,
            e.breaker_openings,
            e.mean_latency_ms
                .map_or_else(String::new, |ms| format!("; mean latency {ms:.1} ms"))
        );
    }
    if let (Some(last), Some(lo), Some(hi)) = (
        r.concurrency_limit.last(),
        r.concurrency_limit.iter().map(|p| p.1).min(),
        r.concurrency_limit.iter().map(|p| p.1).max(),
    ) {
        let _ = writeln!(
            out,
            "adaptive concurrency limit: {} at the end (between {lo} and {hi} during the run)",
            last.1
        );
    }
    if r.hedges > 0 {
        let _ = writeln!(
            out,
            "hedged copies: {} (each may have been billed)",
            r.hedges
        );
    }
    let cost = if s.ok == 0 {
        String::new()
    } else {
        format!(
            "{:.1} µs CPU per request{}, ",
            s.cpu_us_per_request,
            if s.chunks > 0 {
                format!(" ({:.2} µs per chunk)", s.cpu_us_per_chunk)
            } else {
                String::new()
            }
        )
    };
    let _ = writeln!(
        out,
        "client: {cost}peak RSS {:.1} MB; connections opened {}, reused {}",
        r.resources.peak_rss_bytes as f64 / 1e6,
        r.connections.opened,
        r.connections.reused
    );
    out
}

fn percentiles(out: &mut String, r: &BenchResults) {
    let l = &r.latency;
    let _ = writeln!(
        out,
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(t) = &r.ttft {
        if t.count == 0 {
            // No stream carried text content (reasoning or tool calls alone, or failures).
            let _ = writeln!(
                out,
                "time to first token ms: none measured (no content chunk)"
            );
        } else {
            let _ = writeln!(
                out,
                "time to first token ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                t.p50, t.p90, t.p99, t.max
            );
        }
    }
    if let Some(t) = r.server.as_ref().and_then(|s| s.ttft) {
        let _ = writeln!(
            out,
            "the server's own time to first token ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            t.p50, t.p90, t.p99, t.max
        );
    }
    if let Some(t) = r.tpot.as_ref().filter(|t| t.count > 0) {
        let _ = writeln!(
            out,
            "time per output token ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            t.p50, t.p90, t.p99, t.max
        );
    }
    if let Some(t) = r.inter_token.as_ref().filter(|t| t.count > 0) {
        let _ = writeln!(
            out,
            "between content chunks ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            t.p50, t.p99, t.max
        );
    }
}
