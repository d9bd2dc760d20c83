//! Drawing with plotters' SVG backend into strings for inline use: the frame, the series
//! shapes, and a placeholder when there is nothing to draw.
//!
//! Without plotters' `ttf` feature, text is written as SVG `<text>` with a font family name
//! and the browser picks the font (the page's stylesheet sets it); plotters only estimates
//! text widths to lay out labels.

use std::ops::Range;

use plotters::backend::SVGBackend;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::axis::Axis;
use super::format::html;

/// Chart width in SVG units; the page scales it to its column.
const WIDTH: u32 = 900;
/// Chart height in SVG units.
const HEIGHT: u32 = 300;

pub(super) const CLIENT: RGBColor = RGBColor(37, 99, 235);
pub(super) const SERVER: RGBColor = RGBColor(234, 88, 12);
pub(super) const TARGET: RGBColor = RGBColor(71, 85, 105);
pub(super) const THROUGHPUT: RGBColor = RGBColor(5, 150, 105);
pub(super) const LATENCY: RGBColor = RGBColor(124, 58, 237);
pub(super) const TTFT: RGBColor = RGBColor(8, 145, 178);
pub(super) const ERRORS: RGBColor = RGBColor(220, 38, 38);
const TEXT: RGBColor = RGBColor(51, 65, 85);
const GRID: RGBColor = RGBColor(226, 232, 240);
const FRAME: RGBColor = RGBColor(148, 163, 184);

/// The chart area that series are drawn on.
pub(super) type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;
/// What drawing returns; plotters' errors are boxed.
pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws the frame, the grid and the labelled axes, then the series; returns inline SVG, or
/// a placeholder naming the error should plotters fail.
pub(super) fn plot(
    title: &str,
    x: &Axis,
    x_desc: &str,
    y: &Axis,
    y_desc: &str,
    series: impl FnOnce(&mut Plot<'_, '_>) -> DrawResult,
) -> String {
    let mut svg = String::new();
    let drawn = (|| -> DrawResult {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        // Plotters estimates a label 0.56 em per character: 8 units per character at our
        // label size, plus room for the rotated axis description. At least five characters,
        // so the time axes of charts with labels up to `9,999` line up one above another.
        let y_area = 8 * y.widest_label().max(5) as u32 + 40;
        let mut chart = ChartBuilder::on(&root)
            .margin_top(14)
            .margin_right(32)
            .margin_left(6)
            .margin_bottom(6)
            .x_label_area_size(52)
            .y_label_area_size(y_area)
            .build_cartesian_2d(x.clone(), y.clone())?;
        let x_label = |v: &f64| x.label(*v);
        let y_label = |v: &f64| y.label(*v);
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(x.ticks.len())
            .y_labels(y.ticks.len())
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style(label_font())
            .axis_desc_style(("sans-serif", 17).into_font().color(&TEXT))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(FRAME)
            .set_all_tick_mark_size(4)
            .draw()?;
        series(&mut chart)?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => inline(&svg, title),
        Err(e) => placeholder(&format!("chart not drawn: {e}")),
    }
}

/// A line through `points`, `width` pixels wide; a dot when there is only one point.
pub(super) fn line(
    c: &mut Plot<'_, '_>,
    x: &Axis,
    y: &Axis,
    points: &[(f64, f64)],
    color: RGBColor,
    width: u32,
) -> DrawResult {
    let mapped = map(x, y, points);
    if let [only] = mapped[..] {
        // A single point makes no line; show it as a dot.
        c.draw_series(std::iter::once(Circle::new(only, 4, color.filled())))?;
    } else {
        c.draw_series(LineSeries::new(mapped, color.stroke_width(width)))?;
    }
    Ok(())
}

/// A dashed line through `points`.
pub(super) fn dashed(
    c: &mut Plot<'_, '_>,
    x: &Axis,
    y: &Axis,
    points: &[(f64, f64)],
    color: RGBColor,
) -> DrawResult {
    let mapped = map(x, y, points);
    c.draw_series(DashedLineSeries::new(mapped, 7, 5, color.stroke_width(2)))?;
    Ok(())
}

/// A line through `points` with a light fill down to the x axis.
pub(super) fn area(
    c: &mut Plot<'_, '_>,
    x: &Axis,
    y: &Axis,
    points: &[(f64, f64)],
    color: RGBColor,
) -> DrawResult {
    let mapped = map(x, y, points);
    if mapped.len() > 1 {
        c.draw_series(AreaSeries::new(
            mapped.iter().copied(),
            y.lo,
            color.mix(0.12),
        ))?;
    }
    line(c, x, y, points, color, 2)
}

/// Bars `(from x, to x, height)`; empty ones are left out.
pub(super) fn bar_chart(
    c: &mut Plot<'_, '_>,
    x: &Axis,
    y: &Axis,
    bars: &[(f64, f64, f64)],
    color: RGBColor,
) -> DrawResult {
    // Empty buckets would draw as a line along the axis.
    let rects = bars.iter().filter(|b| b.2 > 0.0).map(|&(lo, hi, n)| {
        [
            (x.to_plot(lo), y.to_plot(0.0)),
            (x.to_plot(hi), y.to_plot(n)),
        ]
    });
    c.draw_series(
        rects
            .clone()
            .map(|r| Rectangle::new(r, color.mix(0.75).filled())),
    )?;
    // A thin white edge keeps neighbouring bars apart.
    c.draw_series(rects.map(|r| Rectangle::new(r, WHITE.stroke_width(1))))?;
    Ok(())
}

/// Our axes carry their own ticks. Plotters' `with_key_points` would do the same, but its
/// wrapper loses the formatting that `configure_mesh` needs for `f64` axes.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.lo..self.hi).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold grid lines: light ones add clutter to a chart this size.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The font of tick labels and annotations: 16 / 1.24 = 12.9 px, as plotters scales font sizes.
pub(super) fn label_font() -> TextStyle<'static> {
    ("sans-serif", 16).into_font().color(&TEXT)
}

fn map(x: &Axis, y: &Axis, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .map(|&(a, b)| (x.to_plot(a), y.to_plot(b)))
        .collect()
}

/// A CSS colour.
pub(super) fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// A short grey panel saying why there is no chart.
pub(super) fn placeholder(text: &str) -> String {
    let text = html(text);
    let (w, h) = (WIDTH, 110);
    format!(
        r##"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{text}"><rect x="0.5" y="0.5" width="{}" height="{}" rx="6" fill="#f8fafc" stroke="#e2e8f0"/><text x="{}" y="{}" text-anchor="middle" dominant-baseline="middle" font-family="sans-serif" font-size="15" fill="#64748b">{text}</text></svg>"##,
        w - 1,
        h - 1,
        w / 2,
        h / 2
    )
}

/// Plotters' SVG as inline SVG: without the XML namespace (HTML needs none, and the report
/// should name no URL of its own), with a role and label for screen readers.
fn inline(svg: &str, title: &str) -> String {
    svg.replacen(
        r#" xmlns="http://www.w3.org/2000/svg""#,
        &format!(r#" role="img" aria-label="{}""#, html(title)),
        1,
    )
}
