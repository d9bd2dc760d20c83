//! `report.html`: one self-contained page (inline CSS and SVG, no script, no external
//! resources) with the markdown report's content and the charts.

use std::fmt::Write as _;

use super::charts::{self, Chart};
use super::content::{self, ENDPOINT_HEADERS, PERCENTILE_HEADERS};
use super::format::{NONE, html, int, num, percent};
use crate::results::{BenchResults, Percentiles};

/// The page's stylesheet, inlined into every report.
const STYLE: &str = include_str!("style.css");

/// Renders the whole page.
pub(super) fn render(r: &BenchResults) -> String {
    let title = html(&content::title(r));
    let mut out = String::with_capacity(64 * 1024);
    // `write!` into a `String` cannot fail, so its results are ignored throughout.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n"
    );
    let _ = write!(
        out,
        "<header>\n<h1>{title}</h1>\n<p class=\"meta\">{}</p>\n",
        html(&content::provenance(r))
    );
    // What ran against what, leaving out what the results do not say.
    let mut what = Vec::new();
    if !r.config.mode.is_empty() {
        what.push(html(&content::mode(r)));
    }
    if !r.config.base_url.is_empty() {
        what.push(format!(
            "against <span class=\"url\">{}</span>",
            html(&r.config.base_url)
        ));
    }
    if !what.is_empty() {
        let _ = writeln!(out, "<p class=\"meta\">{}</p>", what.join(" "));
    }
    out.push_str("</header>\n");
    targets(&mut out, r);
    kpis(&mut out, r);

    out.push_str("<section>\n<h2>Summary</h2>\n");
    key_values(&mut out, &content::summary_rows(r));
    out.push_str("</section>\n<section>\n<h2>Configuration</h2>\n");
    key_values(&mut out, &content::config_rows(r));
    out.push_str("</section>\n");

    out.push_str("<section>\n<h2>Over time and by latency</h2>\n");
    for chart in charts::all(r) {
        figure(&mut out, &chart);
    }
    out.push_str("</section>\n");

    percentiles(&mut out, r);
    endpoints(&mut out, r);
    errors(&mut out, r);

    let _ = write!(
        out,
        "<footer>Made by volley {} from <code>results.json</code> (schema {}), which sits \
         next to this page.</footer>\n</main>\n</body>\n</html>\n",
        html(&r.volley_version),
        r.schema_version
    );
    out
}

fn targets(out: &mut String, r: &BenchResults) {
    if r.targets.is_empty() {
        return;
    }
    let met = r.targets.iter().filter(|t| t.met).count();
    let (class, verdict) = if met == r.targets.len() {
        ("ok", "all met")
    } else {
        ("bad", "MISSED")
    };
    let _ = write!(
        out,
        "<section>\n<div class=\"banner {class}\">Targets: {met} of {} met — {verdict}</div>\n\
         <table>\n<thead><tr><th>figure</th><th class=\"n\">value</th><th>target</th>\
         <th>result</th></tr></thead>\n<tbody>\n",
        r.targets.len()
    );
    for t in &r.targets {
        let badge = if t.met {
            "<span class=\"badge ok\">met</span>"
        } else {
            "<span class=\"badge bad\">MISSED</span>"
        };
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\">{}</td><td>{}</td><td>{badge}</td></tr>",
            html(&t.figure),
            html(&content::target_value(t.value, &t.unit)),
            html(&t.target)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// The headline figures as cards: what a reader looks for first.
fn kpis(out: &mut String, r: &BenchResults) {
    let s = &r.summary;
    let ms = |v: f64, count: u64| if count == 0 { NONE.to_owned() } else { num(v) };
    let p99 = |p: &Percentiles| {
        if p.count == 0 {
            "p99 –".to_owned()
        } else {
            format!("p99 {} ms", num(p.p99))
        }
    };
    let mut cards = vec![
        (
            "throughput",
            num(s.requests_per_sec),
            "req/s",
            format!("{} requests", int(s.requests)),
        ),
        (
            "latency p50",
            ms(r.latency.p50, r.latency.count),
            "ms",
            p99(&r.latency),
        ),
    ];
    if let Some(t) = &r.ttft {
        cards.push(("TTFT p50", ms(t.p50, t.count), "ms", p99(t)));
    }
    let server = r.server.as_ref().map_or_else(
        || format!("peak {}", int(s.peak_in_flight)),
        |v| format!("server {}", num(v.mean_in_flight)),
    );
    cards.push(("mean in flight", num(s.mean_in_flight), "", server));
    cards.push((
        "failed",
        percent(s.failed, s.requests),
        "",
        format!("{} of {}", int(s.failed), int(s.requests)),
    ));
    cards.push((
        "CPU per request",
        num(s.cpu_us_per_request),
        "µs",
        format!(
            "peak RSS {}",
            super::format::bytes(r.resources.peak_rss_bytes)
        ),
    ));

    out.push_str("<section class=\"kpis\">\n");
    for (label, value, unit, sub) in cards {
        // `percent` carries its own unit.
        let unit = if unit.is_empty() || value == NONE {
            String::new()
        } else {
            format!("<small>{unit}</small>")
        };
        let _ = writeln!(
            out,
            "<div class=\"kpi\"><div class=\"label\">{label}</div>\
             <div class=\"value\">{}{unit}</div><div class=\"sub\">{}</div></div>",
            html(&value),
            html(&sub)
        );
    }
    out.push_str("</section>\n");
}

fn key_values(out: &mut String, rows: &[content::Row]) {
    out.push_str("<table class=\"kv\">\n<tbody>\n");
    for (label, value) in rows {
        let _ = writeln!(out, "<tr><th>{label}</th><td>{}</td></tr>", html(value));
    }
    out.push_str("</tbody>\n</table>\n");
}

fn figure(out: &mut String, chart: &Chart) {
    let _ = write!(
        out,
        "<figure class=\"chart\">\n<figcaption>\n<h3>{}</h3>\n<p class=\"how\">{}</p>\n",
        html(chart.title),
        html(&chart.caption)
    );
    if !chart.legend.is_empty() {
        out.push_str("<ul class=\"legend\">");
        for entry in &chart.legend {
            let dashed = if entry.dashed { " dashed" } else { "" };
            let _ = write!(
                out,
                "<li><span class=\"swatch{dashed}\" style=\"border-color: {}\"></span>{}</li>",
                html(&entry.color),
                html(&entry.label)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</figcaption>\n");
    out.push_str(&chart.svg);
    out.push_str("</figure>\n");
}

fn percentiles(out: &mut String, r: &BenchResults) {
    out.push_str("<section>\n<h2>Latency percentiles</h2>\n<table>\n<thead><tr><th></th>");
    for h in PERCENTILE_HEADERS {
        let _ = write!(out, "<th class=\"n\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (label, cells) in content::percentile_rows(r) {
        let _ = write!(out, "<tr><th>{label}</th>");
        for cell in cells {
            let _ = write!(out, "<td class=\"n\">{}</td>", html(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str(
        "</tbody>\n</table>\n<p class=\"note\">Milliseconds; successful requests only.</p>\n\
         </section>\n",
    );
}

fn endpoints(out: &mut String, r: &BenchResults) {
    let rows = content::endpoint_rows(r);
    if rows.is_empty() {
        return;
    }
    out.push_str("<section>\n<h2>Endpoints</h2>\n<table>\n<thead><tr><th>endpoint</th>");
    for h in ENDPOINT_HEADERS {
        let _ = write!(out, "<th class=\"n\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (name, cells) in rows {
        let _ = write!(out, "<tr><th><code>{}</code></th>", html(name));
        for cell in cells {
            let _ = write!(out, "<td class=\"n\">{}</td>", html(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    if let Some(hedges) = content::hedges(r) {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", html(&hedges));
    }
    out.push_str(
        "<p class=\"note\">Attempts: hedged copies and retries included. Latency: time to the \
         response head of answered attempts.</p>\n</section>\n",
    );
}

fn errors(out: &mut String, r: &BenchResults) {
    out.push_str("<section>\n<h2>Errors</h2>\n");
    let rows = content::error_rows(r);
    if rows.is_empty() {
        out.push_str("<p>None.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>kind</th><th class=\"n\">count</th>\
         <th class=\"n\">share of requests</th></tr></thead>\n<tbody>\n",
    );
    for (kind, count, share) in rows {
        let _ = writeln!(
            out,
            "<tr><th><code>{}</code></th><td class=\"n\">{count}</td><td class=\"n\">{share}</td></tr>",
            html(kind)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}
