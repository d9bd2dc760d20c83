//! The benchmark reports rendered from synthetic results: a realistic run, degenerate runs,
//! and the files `write_report` leaves behind.
//!
//! `the_sample_report_is_written_for_people_to_look_at` leaves the sample report in
//! `target/tmp/report-sample/`, to open in a browser after a change to the report's layout.

use std::collections::BTreeMap;
use std::path::Path;

use volley_bench::report::{compare, render_html, render_markdown, render_text, write_report};
use volley_bench::results::{
    BenchResults, Connections, EndpointPoint, EndpointResult, Percentiles, Resources, RunConfig,
    SCHEMA_VERSION, ServerSide, Summary, TargetCheck, TimelinePoint,
};

/// A 20-second streaming ramp from 64 to 1,024 workers against the embedded mock, with a
/// burst of errors in the middle and one target missed.
fn sample() -> BenchResults {
    let bucket_ms = 100;
    let timeline: Vec<TimelinePoint> = (1..=200u64)
        .map(|i| {
            let t_ms = i * bucket_ms;
            let target = (64.0 + 960.0 * (t_ms as f64 / 5_000.0)).min(1_024.0);
            let wobble = (i as f64 * 0.7).sin() * 6.0;
            let in_flight = (target * 0.995 + wobble).min(target);
            let errors = match i {
                120..=126 => 8 + i % 3,
                _ if i % 23 == 0 => 1,
                _ => 0,
            };
            TimelinePoint {
                t_ms,
                in_flight: round(in_flight),
                target: Some(round(target)),
                completed_per_sec: round(in_flight / 0.26 + (i as f64 * 1.3).cos() * 90.0),
                errors,
            }
        })
        .collect();
    let server_timeline = timeline
        .iter()
        .map(|p| (p.t_ms, (p.in_flight - 2.5).max(0.0)))
        .collect();
    // A log-normal-ish latency distribution, median about 260 ms, with a long tail.
    let latency_cdf = (0..200)
        .map(|i| {
            let ms = 40.0 * (2_400.0f64 / 40.0).powf(i as f64 / 199.0);
            let z = (ms.ln() - 260f64.ln()) / 0.35;
            (round(ms), round(1.0 / (1.0 + (-1.7 * z).exp())))
        })
        .collect();
    let ttft_histogram = (0..40)
        .map(|i| {
            let lo = 20.0 + 5.0 * i as f64;
            let z = (lo - 85.0) / 28.0;
            (
                lo,
                lo + 5.0,
                (4_000.0 * (-z * z / 2.0).exp()).round() as u64,
            )
        })
        .collect();
    let errors = BTreeMap::from([
        ("rate_limited".to_owned(), 9),
        ("status_500".to_owned(), 41),
        ("timeout".to_owned(), 17),
    ]);
    BenchResults {
        schema_version: SCHEMA_VERSION,
        volley_version: "0.3.0".to_owned(),
        started_at: "2026-11-23T18:04:33Z".to_owned(),
        name: "S1".to_owned(),
        config: RunConfig {
            base_url: "http://127.0.0.1:41234/v1".to_owned(),
            mode: "ramp".to_owned(),
            concurrency: Some(1_024),
            ramp_from: Some(64),
            ramp_over_ms: Some(5_000),
            rate: None,
            arrivals: None,
            requests: None,
            duration_ms: Some(20_000),
            stream: true,
            model: "gpt-4o-mini".to_owned(),
            prompt_tokens: "uniform:16..512".to_owned(),
            output_tokens: "fixed:64".to_owned(),
            stack: "full".to_owned(),
            embedded_mock: true,
            seed: 42,
            ..RunConfig::default()
        },
        summary: Summary {
            requests: 71_912,
            ok: 71_845,
            failed: 67,
            wall_ms: 20_034.5,
            requests_per_sec: 3_589.4,
            mean_in_flight: 1_018.6,
            peak_in_flight: 1_024,
            output_tokens_per_sec: 229_520.3,
            output_tokens: 4_598_080,
            chunks: 4_598_080,
            cpu_us_per_request: 11.2,
            cpu_us_per_chunk: 0.42,
            ..Summary::default()
        },
        latency: Percentiles {
            count: 71_845,
            min: 41.2,
            mean: 271.9,
            p50: 262.4,
            p90: 388.1,
            p99: 611.7,
            p999: 1_402.5,
            max: 2_391.0,
        },
        ttft: Some(Percentiles {
            count: 71_845,
            min: 20.4,
            mean: 86.3,
            p50: 84.9,
            p90: 121.6,
            p99: 152.3,
            p999: 181.0,
            max: 219.8,
        }),
        inter_token: Some(Percentiles {
            count: 4_526_235,
            min: 0.8,
            mean: 2.9,
            p50: 2.7,
            p90: 4.1,
            p99: 7.9,
            p999: 15.2,
            max: 48.6,
        }),
        tpot: Some(Percentiles {
            count: 71_845,
            min: 0.9,
            mean: 2.8,
            p50: 2.7,
            p90: 3.9,
            p99: 6.1,
            p999: 9.4,
            max: 21.3,
        }),
        errors,
        error_examples: BTreeMap::from([(
            "status_500".to_owned(),
            "status error: HTTP 500 Internal Server Error: <b>boom</b>".to_owned(),
        )]),
        stopped_early: None,
        interrupted: false,
        connections: Connections {
            opened: 1_024,
            reused: 70_888,
        },
        resources: Resources {
            cpu_user_ms: 612.4,
            cpu_system_ms: 193.0,
            peak_rss_bytes: 50_541_363,
        },
        timeline,
        bucket_ms,
        latency_cdf,
        ttft_histogram,
        server: Some(ServerSide {
            requests: 71_912,
            mean_in_flight: 1_016.1,
            mean_in_flight_sampled: Some(1_015.8),
            peak_in_flight: 1_024,
            timeline: server_timeline,
            ttft: None,
        }),
        targets: vec![
            TargetCheck {
                figure: "server mean in flight".to_owned(),
                value: 1_016.1,
                unit: "requests".to_owned(),
                target: "≥ 1022".to_owned(),
                met: false,
            },
            TargetCheck {
                figure: "client CPU per request".to_owned(),
                value: 11.2,
                unit: "µs".to_owned(),
                target: "≤ 20".to_owned(),
                met: true,
            },
        ],
        endpoints: vec![
            EndpointResult {
                name: "10.0.0.1:8000".to_owned(),
                attempts: 52_000,
                answered: 51_990,
                rate_limited: 0,
                server_errors: 10,
                failed: 0,
                breaker_openings: 0,
                breaker_state: "closed".to_owned(),
                mean_latency_ms: Some(1_002.5),
            },
            EndpointResult {
                name: "10.0.0.2:8000".to_owned(),
                attempts: 20_000,
                answered: 19_900,
                rate_limited: 9,
                server_errors: 91,
                failed: 17,
                breaker_openings: 2,
                breaker_state: "open".to_owned(),
                mean_latency_ms: None,
            },
        ],
        endpoint_timeline: (1..=40u64)
            .map(|i| EndpointPoint {
                t_ms: i * 500,
                attempts: vec![1_300, if i % 10 == 0 { 0 } else { 500 }],
            })
            .collect(),
        hedges: 1_234,
        concurrency_limit: (1..=200u64)
            .map(|i| (i * 100, 16 + i.min(100) * 9))
            .collect(),
    }
}

/// Four decimals, as a driver would keep: serde_json (without its `float_roundtrip` feature)
/// may read a float with all 17 digits back one unit in the last place off.
fn round(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[test]
fn markdown_carries_the_key_figures() {
    let md = render_markdown(&sample());
    for expected in [
        "# Volley benchmark: S1",
        "2026-11-23T18:04:33Z",
        "volley 0.3.0",
        "ramp, concurrency 64 → 1,024 over 5.0 s",
        "| requests | 71,912 |",
        "71,845 / 67 (0.0932 % failed)",
        "3,589.4 req/s",
        "1,018.6 / 1,024",
        "1,016.1 / 1,024 (71,912 requests received)",
        "11.2 µs",
        "0.420 µs",
        "48.2 MiB",
        "229,520 tokens/s",
        "1,024 opened, 70,888 reuses",
        "| request latency | 71,845 | 41.2 | 271.9 | 262.4 | 388.1 | 611.7 | 1,402.5 | 2,391.0 |",
        "| time to first token |",
        "| inter-token gap | 4,526,235 | 0.80 | 2.90 | 2.70 | 4.10 | 7.90 | 15.20 | 48.60 |",
        "| status_500 | 41 |",
        "## Targets: 1 of 2 met",
        "| server mean in flight | 1,016.1 requests | ≥ 1022 | ❌ MISSED |",
        "| client CPU per request | 11.2 µs | ≤ 20 | ✅ met |",
    ] {
        assert!(md.contains(expected), "missing {expected:?} in\n{md}");
    }
    // Errors are listed most frequent first.
    let (a, b) = (
        md.find("status_500").unwrap(),
        md.find("| timeout").unwrap(),
    );
    assert!(a < b, "{md}");
}

#[test]
fn html_is_one_self_contained_page_with_every_chart() {
    let results = sample();
    let page = render_html(&results);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    for title in [
        "Requests in flight",
        "Throughput",
        "Latency distribution",
        "Time to first token",
        "Share of attempts by endpoint",
        "Errors",
    ] {
        assert!(
            page.contains(&format!("<h3>{title}</h3>")),
            "no chart {title:?}"
        );
    }
    assert_eq!(page.matches("<svg").count(), 6, "one SVG per chart");
    assert!(!page.contains("no data"), "every chart has data");
    for expected in [
        "target concurrency",
        "server (volley-mock)",
        "MISSED",
        "1,016.1 requests",
        "<h2>Endpoints</h2>",
        "10.0.0.2:8000",
        "open (2)",
        "1,234 hedged copies",
        "client&#39;s adaptive limit",
    ] {
        assert!(page.contains(expected), "missing {expected:?}");
    }
    assert_self_contained(&page, &results.config.base_url);
}

#[test]
fn html_and_markdown_escape_what_the_results_say() {
    let mut results = sample();
    results.config.base_url = "http://x/<script>alert('x')</script>".to_owned();
    results.name = "<b>S1</b> & co".to_owned();
    results
        .errors
        .insert("<iframe onload=alert(1)>".to_owned(), 1);
    results.targets[0].figure = "mean </td> in flight".to_owned();
    let page = render_html(&results);
    assert!(page.contains("http://x/&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(page.contains("&lt;b&gt;S1&lt;/b&gt; &amp; co"));
    assert!(page.contains("&lt;iframe onload=alert(1)&gt;"));
    assert!(!page.contains("<script") && !page.contains("<iframe") && !page.contains("<b>"));
    assert_self_contained(&page, &results.config.base_url);

    let md = render_markdown(&results);
    assert!(md.contains(r"http://x/\<script\>"), "{md}");
    let unescaped = md
        .match_indices('<')
        .filter(|(i, _)| !md[..*i].ends_with('\\'));
    assert_eq!(unescaped.count(), 0, "{md}");
    assert!(md.contains(r"mean \</td\> in flight"), "{md}");
}

#[test]
fn degenerate_results_render_without_panicking() {
    let empty = BenchResults::default();
    let single = BenchResults {
        timeline: vec![TimelinePoint {
            t_ms: 100,
            in_flight: 1.0,
            target: Some(1.0),
            completed_per_sec: 10.0,
            errors: 1,
        }],
        latency_cdf: vec![(12.0, 1.0)],
        ttft_histogram: vec![(5.0, 5.0, 1)],
        ttft: Some(Percentiles::default()),
        summary: Summary {
            requests: 1,
            failed: 1,
            ..Summary::default()
        },
        ..BenchResults::default()
    };
    let flat = {
        let mut r = sample();
        r.server = None;
        for p in &mut r.timeline {
            (p.in_flight, p.completed_per_sec, p.errors) = (0.0, 0.0, 0);
            p.target = None;
        }
        r.latency_cdf = vec![(0.0, 0.5), (0.0, 1.0)];
        r.ttft_histogram = vec![(f64::NAN, 3.0, 2), (7.0, 7.0, 0)];
        r.summary.requests_per_sec = f64::NAN;
        r
    };
    for results in [&empty, &single, &flat] {
        let md = render_markdown(results);
        let page = render_html(results);
        assert!(md.starts_with("# Volley benchmark"));
        assert!(page.contains("<svg"));
        assert_self_contained(&page, &results.config.base_url);
        assert!(compare(results, &sample()).contains("| figure |"));
        assert!(compare(&sample(), results).contains("| figure |"));
    }
    let page = render_html(&empty);
    assert_eq!(
        page.matches(">no data<").count(),
        3,
        "in flight, throughput, latency"
    );
    assert!(!page.contains("Time to first token"), "not a stream");
    assert!(!page.contains("<h3>Errors</h3>"), "no errors");
    assert!(render_markdown(&empty).contains("## Errors\n\nNone."));
    // The single point is drawn (as a dot), the flat run as lines along zero.
    assert!(!render_html(&single).contains(">no data<"));
}

#[test]
fn a_run_where_nothing_succeeded_says_so_instead_of_printing_zeros() {
    let mut failed = sample();
    failed.summary.ok = 0;
    failed.summary.failed = failed.summary.requests;
    failed.summary.cpu_us_per_request = 0.0;
    failed.latency = Percentiles::default();
    failed.ttft = None;
    let text = render_text(&failed);
    assert!(text.contains("no request succeeded"), "{text}");
    assert!(!text.contains("latency ms"), "{text}");
    assert!(!text.contains("µs CPU per request"), "{text}");
    assert!(text.contains("peak RSS"), "{text}");
    let md = render_markdown(&failed);
    assert!(md.contains("– (no request succeeded)"), "{md}");
    assert!(!md.contains("| CPU per request | 0"), "{md}");

    // A run with successes prints its figures.
    let text = render_text(&sample());
    assert!(!text.contains("no request succeeded"), "{text}");
    assert!(text.contains("latency ms: p50"), "{text}");
    assert!(text.contains("µs CPU per request"), "{text}");
}

#[test]
fn compare_puts_figures_side_by_side() {
    let baseline = sample();
    let mut current = sample();
    current.summary.wall_ms = 18_213.2;
    current.summary.requests_per_sec = 71_912.0 / 18.2132;
    current.latency.p99 = 550.5;
    current.name = "S1 (new)".to_owned();
    let table = compare(&current, &baseline);
    assert!(
        table.contains("| figure | baseline | current | change |"),
        "{table}"
    );
    assert!(
        table.contains("| throughput, succeeded (req/s) | 3,586.1 | 3,944.7 | +10.0 % (better) |"),
        "{table}"
    );
    // A run that fails fast is no faster: 90 % refused in a quarter of the time.
    let mut refused = sample();
    (refused.summary.ok, refused.summary.failed) = (7_184, 64_728);
    (refused.summary.wall_ms, refused.summary.requests_per_sec) = (5_000.0, 14_382.4);
    let against = compare(&refused, &baseline);
    assert!(
        against.contains("| throughput, succeeded (req/s) | 3,586.1 | 1,436.8 | -59.9 % (worse) |"),
        "{against}"
    );
    assert!(
        table.contains("| latency p99 (ms) | 611.7 | 550.5 | -10.0 % (better) |"),
        "{table}"
    );
    assert!(
        table.contains("| latency p50 (ms) | 262.4 | 262.4 | +0.0 % |"),
        "{table}"
    );
    assert!(table.contains("| TTFT p50 (ms) |"), "{table}");
    assert!(
        table.contains("| requests | 71,912 | 71,912 | +0.0 % |"),
        "{table}"
    );
    assert!(
        !table.contains("like-for-like"),
        "same configuration: {table}"
    );
    current.summary.cpu_us_per_request = 14.0;
    let table = compare(&current, &baseline);
    let worse = "| CPU per request (µs) | 11.2 | 14.0 | +25.0 % (worse) |";
    assert!(table.contains(worse), "{table}");
}

#[test]
fn the_sample_report_is_written_for_people_to_look_at() {
    let results = sample();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-sample");
    write_report(&results, &dir).unwrap();
    let json = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let read: BenchResults = serde_json::from_str(&json).unwrap();
    assert_eq!(read, results, "results.json round-trips");
    assert!(
        json.contains("\n  \"schema_version\": 1,"),
        "pretty-printed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.md")).unwrap(),
        render_markdown(&results)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.html")).unwrap(),
        render_html(&results)
    );
}

#[test]
fn write_report_creates_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    write_report(&BenchResults::default(), &dir).unwrap();
    for file in ["results.json", "report.md", "report.html"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
}

/// Nothing in the page is fetched: no URL outside the escaped base URL, no script, no link,
/// no external stylesheet, font or image.
fn assert_self_contained(page: &str, base_url: &str) {
    let escaped = base_url
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    let rest = if escaped.is_empty() {
        page.to_owned()
    } else {
        page.replace(&escaped, "")
    };
    for forbidden in [
        "http://", "https://", "<script", "<link", "src=", "href=", "url(", "@import",
    ] {
        assert!(
            !rest.contains(forbidden),
            "the page refers to {forbidden:?}"
        );
    }
}
