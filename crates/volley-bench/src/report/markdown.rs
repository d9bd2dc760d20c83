//! `report.md`: the report as GitHub-flavoured markdown.

use std::fmt::Write as _;

use super::content::{self, ENDPOINT_HEADERS, PERCENTILE_HEADERS};
use super::format::md;
use crate::results::BenchResults;

/// Renders the whole markdown report.
pub(super) fn render(r: &BenchResults) -> String {
    let mut out = String::new();
    // `write!` into a `String` cannot fail, so its results are ignored throughout.
    let _ = writeln!(out, "# {}\n", md(&content::title(r)));
    let _ = writeln!(out, "{}\n", md(&content::provenance(r)));

    if !r.targets.is_empty() {
        let met = r.targets.iter().filter(|t| t.met).count();
        let _ = writeln!(out, "## Targets: {met} of {} met\n", r.targets.len());
        let _ = writeln!(out, "| figure | value | target | met |\n|---|--:|---|---|");
        for t in &r.targets {
            let verdict = if t.met { "✅ met" } else { "❌ MISSED" };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                md(&t.figure),
                md(&content::target_value(t.value, &t.unit)),
                md(&t.target)
            );
        }
        out.push('\n');
    }

    out.push_str("## Configuration\n\n");
    two_columns(&mut out, "setting", &content::config_rows(r));

    out.push_str("## Summary\n\n");
    two_columns(&mut out, "figure", &content::summary_rows(r));

    out.push_str("## Latency (ms)\n\n|  |");
    for h in PERCENTILE_HEADERS {
        let _ = write!(out, " {h} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"--:|".repeat(PERCENTILE_HEADERS.len()));
    out.push('\n');
    for (label, cells) in content::percentile_rows(r) {
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    out.push('\n');

    let endpoints = content::endpoint_rows(r);
    if !endpoints.is_empty() {
        out.push_str("## Endpoints\n\n| endpoint |");
        for h in ENDPOINT_HEADERS {
            let _ = write!(out, " {h} |");
        }
        out.push_str("\n|---|");
        out.push_str(&"--:|".repeat(ENDPOINT_HEADERS.len()));
        out.push('\n');
        for (name, cells) in endpoints {
            let _ = writeln!(out, "| {} | {} |", md(name), cells.join(" | "));
        }
        out.push('\n');
        if let Some(hedges) = content::hedges(r) {
            let _ = writeln!(out, "{}\n", md(&hedges));
        }
    }

    out.push_str("## Errors\n\n");
    let errors = content::error_rows(r);
    if errors.is_empty() {
        out.push_str("None.\n");
    } else {
        out.push_str("| kind | count | share of requests |\n|---|--:|--:|\n");
        for (kind, count, share) in errors {
            let _ = writeln!(out, "| {} | {count} | {share} |", md(kind));
        }
    }
    out
}

fn two_columns(out: &mut String, header: &str, rows: &[content::Row]) {
    let _ = writeln!(out, "| {header} | value |\n|---|---|");
    for (label, value) in rows {
        let _ = writeln!(out, "| {label} | {} |", md(value));
    }
    out.push('\n');
}
