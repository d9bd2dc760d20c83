//! The HTML report's charts: which apply to a run, their data, axes, captions and legends.
//!
//! The legend is HTML next to each chart rather than drawn inside it, so it never covers data.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::format::num;
use super::plot::{
    CLIENT, ERRORS, LATENCY, SERVER, TARGET, THROUGHPUT, TTFT, area, bar_chart, css, dashed,
    label_font, line, placeholder, plot,
};
use crate::results::BenchResults;

/// One chart, ready to inline.
#[derive(Debug)]
pub(super) struct Chart {
    /// What the chart shows.
    pub(super) title: &'static str,
    /// One sentence on how to read it.
    pub(super) caption: String,
    /// The series, for the HTML legend.
    pub(super) legend: Vec<Legend>,
    /// `<svg>…</svg>`, without an XML namespace (inline SVG in HTML needs none).
    pub(super) svg: String,
}

/// A legend entry.
#[derive(Debug)]
pub(super) struct Legend {
    /// The series' name.
    pub(super) label: String,
    /// Its colour as CSS (`#2563eb`).
    pub(super) color: String,
    /// Whether it is drawn dashed.
    pub(super) dashed: bool,
}

/// The charts that apply to this run, in reading order.
pub(super) fn all(r: &BenchResults) -> Vec<Chart> {
    let mut charts = vec![in_flight(r), throughput(r), latency_cdf(r)];
    if r.config.stream || r.ttft.is_some() || !r.ttft_histogram.is_empty() {
        charts.push(ttft_histogram(r));
    }
    if !r.endpoint_timeline.is_empty() && r.endpoints.len() > 1 {
        charts.push(endpoint_share(r));
    }
    let timeline_errors = r.timeline.iter().any(|p| p.errors > 0);
    if r.summary.failed > 0 || !r.errors.is_empty() || timeline_errors {
        charts.push(errors(r));
    }
    charts
}

type Points = Vec<(f64, f64)>;

fn in_flight(r: &BenchResults) -> Chart {
    let title = "Requests in flight";
    let caption = "Mean requests in flight per timeline bucket, as the client and the server \
                   counted them."
        .to_owned();
    let client = thin(
        r.timeline
            .iter()
            .map(|p| (seconds(p.t_ms), p.in_flight))
            .filter(finite)
            .collect(),
    );
    let server = thin(
        r.server
            .iter()
            .flat_map(|s| &s.timeline)
            .map(|&(t, n)| (seconds(t), n))
            .collect(),
    );
    if client.is_empty() && server.is_empty() {
        return no_data(title, caption);
    }
    let x = time_axis(r);
    let mut targets = target_runs(r);
    // A closed loop aims at its worker count throughout, should the timeline not say so.
    if targets.is_empty()
        && r.config.mode == "closed"
        && let Some(n) = r.config.concurrency
    {
        targets.push(vec![(0.0, n as f64), (x.hi, n as f64)]);
    }
    let y_max = client
        .iter()
        .chain(&server)
        .chain(targets.iter().flatten())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let limit = thin(
        r.concurrency_limit
            .iter()
            .map(|&(t, n)| (seconds(t), n as f64))
            .collect(),
    );
    let y_max = limit.iter().map(|p| p.1).fold(y_max, f64::max);
    let y = Axis::from_zero(y_max, 5);

    let mut legend = vec![legend_entry("client", CLIENT, false)];
    if !server.is_empty() {
        legend.push(legend_entry("server (volley-mock)", SERVER, false));
    }
    if !limit.is_empty() {
        legend.push(legend_entry("client's adaptive limit", LATENCY, false));
    }
    if !targets.is_empty() {
        legend.push(legend_entry("target concurrency", TARGET, true));
    }
    let svg = plot(
        title,
        &x,
        "time since the first request (s)",
        &y,
        "requests in flight",
        |c| {
            // The client and the server usually agree to within a few requests: the client's
            // line is wider and underneath, so both stay visible, and the target on top.
            line(c, &x, &y, &client, CLIENT, 4)?;
            line(c, &x, &y, &server, SERVER, 2)?;
            line(c, &x, &y, &limit, LATENCY, 2)?;
            for run in &targets {
                dashed(c, &x, &y, run, TARGET)?;
            }
            Ok(())
        },
    );
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

/// The colours of endpoints, in order (then again).
const ENDPOINT_COLORS: [RGBColor; 6] = [CLIENT, SERVER, THROUGHPUT, LATENCY, TTFT, ERRORS];

fn endpoint_share(r: &BenchResults) -> Chart {
    let title = "Share of attempts by endpoint";
    let caption = format!(
        "The share of the attempts sent in each {} ms window that went to each endpoint \
         (hedged copies and retries included).",
        crate::results::ENDPOINT_SAMPLE_MS
    );
    let series: Vec<Points> = (0..r.endpoints.len())
        .map(|i| {
            thin(
                r.endpoint_timeline
                    .iter()
                    .filter_map(|p| {
                        let total: u64 = p.attempts.iter().sum();
                        let mine = p.attempts.get(i).copied().unwrap_or(0);
                        (total > 0).then(|| (seconds(p.t_ms), mine as f64 * 100.0 / total as f64))
                    })
                    .collect(),
            )
        })
        .collect();
    if series.iter().all(Vec::is_empty) {
        return no_data(title, caption);
    }
    let end = r
        .endpoint_timeline
        .iter()
        .map(|p| p.t_ms)
        .max()
        .unwrap_or(0);
    let x = Axis::span(0.0, seconds(end).max(seconds(time_axis_end(r))), 8);
    let y = Axis::from_zero(100.0, 5);
    let color = |i: usize| ENDPOINT_COLORS[i % ENDPOINT_COLORS.len()];
    let legend = r
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| legend_entry(&e.name, color(i), i >= ENDPOINT_COLORS.len()))
        .collect();
    let svg = plot(
        title,
        &x,
        "time since the first request (s)",
        &y,
        "% of attempts",
        |c| {
            for (i, points) in series.iter().enumerate() {
                if i >= ENDPOINT_COLORS.len() {
                    dashed(c, &x, &y, points, color(i))?;
                } else {
                    line(c, &x, &y, points, color(i), 2)?;
                }
            }
            Ok(())
        },
    );
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

fn throughput(r: &BenchResults) -> Chart {
    let title = "Throughput";
    let caption = format!(
        "Requests finished per second, per {} ms bucket.",
        bucket_ms(r)
    );
    let points = thin(
        r.timeline
            .iter()
            .map(|p| (seconds(p.t_ms), p.completed_per_sec))
            .filter(finite)
            .collect(),
    );
    if points.is_empty() {
        return no_data(title, caption);
    }
    let mean = r.summary.requests_per_sec;
    let show_mean = mean.is_finite() && mean > 0.0;
    let x = time_axis(r);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let y = Axis::from_zero(if show_mean { y_max.max(mean) } else { y_max }, 5);
    let mut legend = vec![legend_entry("finished requests/s", THROUGHPUT, false)];
    if show_mean {
        legend.push(legend_entry("mean over the run", TARGET, true));
    }
    let svg = plot(
        title,
        &x,
        "time since the first request (s)",
        &y,
        "requests/s",
        |c| {
            area(c, &x, &y, &points, THROUGHPUT)?;
            if show_mean {
                dashed(c, &x, &y, &[(x.lo, mean), (x.hi, mean)], TARGET)?;
            }
            Ok(())
        },
    );
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

fn latency_cdf(r: &BenchResults) -> Chart {
    let title = "Latency distribution";
    let points: Points = r
        .latency_cdf
        .iter()
        .map(|&(ms, fraction)| (ms, fraction * 100.0))
        .filter(|p| finite(p) && p.0 >= 0.0)
        .collect();
    let min_positive = points
        .iter()
        .map(|p| p.0)
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.0).fold(0.0, f64::max);
    // A log axis when the tail is long, so the body of the distribution is not squeezed
    // into the first few pixels.
    let x = if min_positive.is_finite() && max / min_positive >= 20.0 {
        Axis::log(min_positive, max)
    } else {
        Axis::from_zero(max, 8)
    };
    let scale = if x.is_log() {
        "log scale"
    } else {
        "linear scale"
    };
    let caption =
        format!("Share of successful requests that finished within a given latency ({scale}).");
    if points.is_empty() {
        return no_data(title, caption);
    }
    let y = Axis::span(0.0, 100.0, 5);
    let legend = vec![legend_entry("requests at or below", LATENCY, false)];
    let marks: Vec<(&str, f64)> = if r.latency.count > 0 {
        vec![("p50", r.latency.p50), ("p99", r.latency.p99)]
    } else {
        Vec::new()
    };
    let svg = plot(title, &x, "latency (ms)", &y, "requests (%)", |c| {
        line(c, &x, &y, &points, LATENCY, 2)?;
        // The labels sit low and right of their lines, where a CDF never is (right of its
        // median it is above 50 %), and at two heights so they cannot collide.
        // A percentile off the axis (results whose CDF and percentiles disagree) would be
        // drawn clamped to the edge, in the wrong place: leave it out.
        let on_axis = |ms: f64| ms.is_finite() && x.to_plot(ms) == x.unclamped(ms);
        for (i, &(name, ms)) in marks.iter().enumerate().filter(|m| on_axis(m.1.1)) {
            let at = x.to_plot(ms);
            c.draw_series(DashedLineSeries::new(
                [(at, y.lo), (at, y.hi)],
                3,
                3,
                TARGET.stroke_width(1),
            ))?;
            let label = format!("{name} {} ms", num(ms));
            let level = y.lo + (y.hi - y.lo) * (0.07 + 0.12 * i as f64);
            let (px, _) = c.backend_coord(&(at, level));
            let (plot_x, _) = c.plotting_area().get_pixel_range();
            // Estimated as plotters does: 0.56 em per character at 12.9 px.
            let fits_right = px + 12 + 8 * label.len() as i32 <= plot_x.end;
            let (dx, h) = if fits_right {
                (6, HPos::Left)
            } else {
                (-6, HPos::Right)
            };
            let style = label_font().pos(Pos::new(h, VPos::Center));
            c.draw_series(std::iter::once(
                EmptyElement::at((at, level)) + Text::new(label, (dx, 0), style),
            ))?;
        }
        Ok(())
    });
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

fn ttft_histogram(r: &BenchResults) -> Chart {
    let title = "Time to first token";
    let caption = "Streams by the time their first content chunk arrived.".to_owned();
    let bars: Vec<(f64, f64, f64)> = r
        .ttft_histogram
        .iter()
        .filter(|b| b.0.is_finite() && b.1.is_finite() && b.1 >= b.0)
        .map(|&(lo, hi, n)| (lo, hi, n as f64))
        .collect();
    if bars.is_empty() {
        return no_data(title, caption);
    }
    let lo = bars.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(f64::NEG_INFINITY, f64::max);
    let x = if lo > 0.0 && hi / lo >= 50.0 {
        Axis::log(lo, hi)
    } else {
        Axis::span(lo, hi, 8)
    };
    let y = Axis::from_zero(bars.iter().map(|b| b.2).fold(0.0, f64::max), 5);
    let legend = vec![legend_entry("streams", TTFT, false)];
    let svg = plot(title, &x, "time to first token (ms)", &y, "streams", |c| {
        bar_chart(c, &x, &y, &bars, TTFT)
    });
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

fn errors(r: &BenchResults) -> Chart {
    let title = "Errors";
    // Neighbouring buckets are merged on long runs, so there are at most about as many bars
    // as the chart has pixels.
    let merged = r.timeline.len().div_ceil(MAX_POINTS / 2).max(1);
    let width_ms = bucket_ms(r) * merged as u64;
    let caption = format!("Requests that failed, per second, per {width_ms} ms bucket.");
    let bars: Vec<(f64, f64, f64)> = r
        .timeline
        .chunks(merged)
        .filter_map(|chunk| {
            let errors: u64 = chunk.iter().map(|p| p.errors).sum();
            let end = chunk.last().map(|p| seconds(p.t_ms))?;
            let start = (end - width_ms as f64 / 1_000.0).max(0.0);
            (errors > 0).then(|| (start, end, errors as f64 * 1_000.0 / width_ms as f64))
        })
        .collect();
    if bars.is_empty() {
        return no_data(title, caption);
    }
    let x = time_axis(r);
    let y = Axis::from_zero(bars.iter().map(|b| b.2).fold(0.0, f64::max), 5);
    let legend = vec![legend_entry("failed requests/s", ERRORS, false)];
    let svg = plot(
        title,
        &x,
        "time since the first request (s)",
        &y,
        "failed requests/s",
        |c| bar_chart(c, &x, &y, &bars, ERRORS),
    );
    Chart {
        title,
        caption,
        legend,
        svg,
    }
}

/// Runs of consecutive timeline points with a target concurrency.
fn target_runs(r: &BenchResults) -> Vec<Points> {
    let mut runs: Vec<Points> = Vec::new();
    let mut current = Points::new();
    for p in &r.timeline {
        match p.target.filter(|t| t.is_finite()) {
            Some(t) => current.push((seconds(p.t_ms), t)),
            None if !current.is_empty() => runs.push(thin(std::mem::take(&mut current))),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(thin(current));
    }
    runs
}

/// At most this many points per line, about two per horizontal pixel: more add bytes to the
/// page, not detail to the chart.
const MAX_POINTS: usize = 1_600;

/// Thins a series to at most [`MAX_POINTS`], keeping the lowest and the highest point of
/// each stretch (in time order) so that spikes and dips stay visible.
fn thin(points: Points) -> Points {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let stretch = points.len().div_ceil(MAX_POINTS / 2);
    let mut out = Points::with_capacity(MAX_POINTS);
    for chunk in points.chunks(stretch) {
        let by_value = |a: &(usize, &(f64, f64)), b: &(usize, &(f64, f64))| a.1.1.total_cmp(&b.1.1);
        let (Some(low), Some(high)) = (
            chunk.iter().enumerate().min_by(by_value),
            chunk.iter().enumerate().max_by(by_value),
        ) else {
            continue;
        };
        let (first, second) = if low.0 <= high.0 {
            (low, high)
        } else {
            (high, low)
        };
        out.push(*first.1);
        if first.0 != second.0 {
            out.push(*second.1);
        }
    }
    out
}

/// The time axis shared by the timeline charts, from 0 to the last bucket's end.
fn time_axis(r: &BenchResults) -> Axis {
    Axis::span(0.0, seconds(time_axis_end(r)), 8)
}

/// The end of the client's and the server's timelines, in ms.
fn time_axis_end(r: &BenchResults) -> u64 {
    let client = r.timeline.iter().map(|p| p.t_ms);
    let server = r.server.iter().flat_map(|s| &s.timeline).map(|p| p.0);
    client.chain(server).max().unwrap_or(0)
}

/// The timeline bucket width; the schema's default when the results leave it 0.
fn bucket_ms(r: &BenchResults) -> u64 {
    if r.bucket_ms > 0 { r.bucket_ms } else { 100 }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

fn finite(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

fn legend_entry(label: &str, color: RGBColor, dashed: bool) -> Legend {
    Legend {
        label: label.to_owned(),
        color: css(color),
        dashed,
    }
}

fn no_data(title: &'static str, caption: String) -> Chart {
    Chart {
        title,
        caption,
        legend: Vec::new(),
        svg: placeholder("no data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Summary, TimelinePoint};

    #[test]
    fn thinning_keeps_spikes_and_time_order() {
        let mut points: Points = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        points[4_321].1 = 50.0;
        points[7_000].1 = -3.0;
        let thinned = thin(points);
        assert!(thinned.len() <= MAX_POINTS, "{}", thinned.len());
        assert!(thinned.contains(&(4_321.0, 50.0)));
        assert!(thinned.contains(&(7_000.0, -3.0)));
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0));
        let short: Points = vec![(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(thin(short.clone()), short);
    }

    #[test]
    fn an_hour_long_run_keeps_the_charts_small() {
        let timeline = (1..=36_000u64)
            .map(|i| TimelinePoint {
                t_ms: i * 100,
                in_flight: (i % 97) as f64,
                target: Some(100.0),
                completed_per_sec: 400.0 + (i % 13) as f64,
                errors: u64::from(i % 50 == 0),
            })
            .collect();
        let results = BenchResults {
            timeline,
            bucket_ms: 100,
            summary: Summary {
                failed: 720,
                ..Summary::default()
            },
            ..BenchResults::default()
        };
        let charts = all(&results);
        let bytes: usize = charts.iter().map(|c| c.svg.len()).sum();
        assert!(bytes < 600_000, "{bytes} bytes of SVG");
        let errors = charts.iter().find(|c| c.title == "Errors").unwrap();
        // 36,000 buckets merged 45 at a time.
        assert!(
            errors.caption.contains("per 4500 ms bucket"),
            "{}",
            errors.caption
        );
    }
}
