//! Chart axes: the range, the tick positions and their labels, linear or logarithmic.
//!
//! Plotters picks its own ticks, and on a log axis it may label none at all; we choose round
//! ticks ourselves and hand them over with `with_key_points`. A log axis is drawn as a linear
//! axis over `log10` of the values, so every chart has the same coordinate type.

use super::format::group;

/// The most ticks an axis has, past its first.
const MAX_TICKS: usize = 64;

/// One axis of a chart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Axis {
    log: bool,
    /// The drawn range in plot space (`log10` of the value on a log axis).
    pub(super) lo: f64,
    /// The end of the drawn range in plot space.
    pub(super) hi: f64,
    /// Tick positions in plot space.
    pub(super) ticks: Vec<f64>,
    /// Decimals in linear tick labels.
    decimals: usize,
}

impl Axis {
    /// From 0 to a round value at or a little above `max`, about `ticks` ticks.
    pub(super) fn from_zero(max: f64, ticks: usize) -> Self {
        // Nothing above zero: a small round range reads better than 0.2-steps up to 1.2.
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            5.0
        };
        let step = nice_step(max / ticks.max(1) as f64);
        // A little headroom so a line at the maximum does not run along the frame.
        let top = (max * 1.02 / step).ceil() * step;
        Self::linear(0.0, top, step)
    }

    /// Exactly `lo..hi` (widened when empty), ticks at round values inside it.
    pub(super) fn span(lo: f64, hi: f64, ticks: usize) -> Self {
        let (lo, hi) = widen(lo, hi);
        let step = nice_step((hi - lo) / ticks.max(1) as f64);
        Self::linear(lo, hi, step)
    }

    /// A log axis from a 1-2-5 value at or below `min` to one at or above `max`. Falls back to
    /// a linear axis from 0 unless `0 < min <= max`.
    pub(super) fn log(min: f64, max: f64) -> Self {
        if !(min.is_finite() && max.is_finite() && min > 0.0 && max >= min) {
            return Self::from_zero(max, 6);
        }
        let (first, last) = (
            min.log10().floor() as i32 - 1,
            max.log10().ceil() as i32 + 1,
        );
        let candidates: Vec<f64> = (first..=last)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .collect();
        // Compare with a little slack so a value of exactly 100 is its own bound.
        let lo = candidates.iter().rev().find(|&&c| c <= min * (1.0 + 1e-9));
        let hi = candidates
            .iter()
            .find(|&&c| c >= max * (1.0 - 1e-9) && c > min);
        let (Some(&lo), Some(&hi)) = (lo, hi) else {
            return Self::from_zero(max, 6);
        };
        let inside: Vec<f64> = candidates
            .iter()
            .copied()
            .filter(|&c| c >= lo && c <= hi)
            .collect();
        // Beyond three decades 1-2-5 ticks crowd each other; keep the powers of ten, and of
        // those (a range of hundreds of decades, from a hostile server) a dozen at most.
        let ticks: Vec<f64> = if inside.len() > 10 {
            inside
                .into_iter()
                .filter(|c| (c.log10() - c.log10().round()).abs() < 1e-9)
                .collect()
        } else {
            inside
        };
        let ticks: Vec<f64> = match ticks.len().div_ceil(12) {
            0 | 1 => ticks,
            every => ticks.into_iter().step_by(every).collect(),
        };
        Self {
            log: true,
            lo: lo.log10(),
            hi: hi.log10(),
            ticks: ticks.into_iter().map(f64::log10).collect(),
            decimals: 0,
        }
    }

    /// Whether the axis is logarithmic.
    pub(super) fn is_log(&self) -> bool {
        self.log
    }

    /// A data value in plot space, clamped into the drawn range.
    pub(super) fn to_plot(&self, value: f64) -> f64 {
        self.unclamped(value).clamp(self.lo, self.hi)
    }

    /// A data value in plot space, possibly outside the drawn range.
    pub(super) fn unclamped(&self, value: f64) -> f64 {
        if self.log {
            value.max(f64::MIN_POSITIVE).log10()
        } else {
            value
        }
    }

    /// The label of the tick at plot position `p`.
    pub(super) fn label(&self, p: f64) -> String {
        if self.log {
            let v = 10f64.powf(p);
            if v >= 1.0 {
                group(&format!("{v:.0}"))
            } else {
                let decimals = (-v.log10()).ceil().clamp(0.0, 9.0) as usize;
                format!("{v:.decimals$}")
            }
        } else {
            let text = format!("{p:.*}", self.decimals);
            // `-0` is not a tick anyone wants to read.
            let text = if text.trim_start_matches(['-', '0', '.']).is_empty() {
                text.trim_start_matches('-').to_owned()
            } else {
                text
            };
            match text.split_once('.') {
                Some((whole, frac)) => format!("{}.{frac}", group(whole)),
                None => group(&text),
            }
        }
    }

    /// The longest tick label, in characters (to size the label area).
    pub(super) fn widest_label(&self) -> usize {
        self.ticks
            .iter()
            .map(|&t| self.label(t).chars().count())
            .max()
            .unwrap_or(1)
    }

    fn linear(lo: f64, hi: f64, step: f64) -> Self {
        // Figures from a server of any kind: an axis past f64's range would have an endless
        // count of ticks. Such a range is drawn as 0..5.
        if !(lo.is_finite() && hi.is_finite() && step.is_finite() && step > 0.0) {
            return Self::linear(0.0, 5.0, 1.0);
        }
        let first = (lo / step - 1e-9).ceil();
        // A few dozen ticks at most, whatever the rounding did.
        let count = (((hi / step + 1e-9).floor() - first).max(0.0) as usize).min(MAX_TICKS);
        let ticks = (0..=count).map(|i| (first + i as f64) * step).collect();
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10().floor()).clamp(0.0, 9.0) as usize
        };
        Self {
            log: false,
            lo,
            hi,
            ticks,
            decimals,
        }
    }
}

/// The 1-2-5 step nearest to `raw` (on a log scale), so the tick count stays near the one
/// asked for without leaving much of the chart empty.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m < 2f64.sqrt() {
        1.0
    } else if m < 10f64.sqrt() {
        2.0
    } else if m < 50f64.sqrt() {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// `lo..hi`, finite and not empty.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) => (lo.min(hi), lo.max(hi)),
        (true, false) => (lo, lo),
        (false, true) => (hi, hi),
        (false, false) => (0.0, 1.0),
    };
    if hi - lo > hi.abs().max(lo.abs()) * 1e-9 {
        (lo, hi)
    } else if lo == 0.0 {
        (0.0, 1.0)
    } else {
        let pad = lo.abs() * 0.1;
        (lo - pad, hi + pad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axis: &Axis) -> Vec<String> {
        axis.ticks.iter().map(|&t| axis.label(t)).collect()
    }

    /// Figures from a hostile server: an axis to the end of f64's range, or past it, still has
    /// a few ticks (it had `usize::MAX`, and collecting them panicked).
    #[test]
    fn axes_of_absurd_ranges_have_few_ticks() {
        for max in [1.7e308, f64::MAX, f64::INFINITY, f64::NAN, 1e300] {
            let axis = Axis::from_zero(max, 6);
            assert!((1..=MAX_TICKS + 1).contains(&axis.ticks.len()), "{max}");
            let axis = Axis::span(0.0, max, 6);
            assert!(axis.ticks.len() <= MAX_TICKS + 1, "{max}");
            let axis = Axis::log(1.0, max);
            assert!(axis.ticks.len() <= MAX_TICKS + 1, "{max}");
        }
    }

    #[test]
    fn linear_ticks_are_round() {
        let axis = Axis::from_zero(1_024.0, 5);
        assert_eq!(
            labels(&axis),
            ["0", "200", "400", "600", "800", "1,000", "1,200"]
        );
        assert_eq!(axis.hi, 1_200.0);
        let axis = Axis::span(0.0, 20.0, 8);
        assert_eq!(axis.ticks.len(), 11);
        assert_eq!(axis.label(axis.ticks[1]), "2");
        let axis = Axis::span(0.0, 0.1, 5);
        assert_eq!(
            labels(&axis),
            ["0.00", "0.02", "0.04", "0.06", "0.08", "0.10"]
        );
    }

    #[test]
    fn degenerate_ranges_still_make_an_axis() {
        for axis in [
            Axis::from_zero(0.0, 5),
            Axis::from_zero(f64::NAN, 5),
            Axis::span(3.0, 3.0, 5),
            Axis::span(0.0, 0.0, 5),
            Axis::span(f64::NAN, f64::INFINITY, 5),
            Axis::log(0.0, 10.0),
            Axis::log(7.0, 7.0),
            Axis::log(f64::NAN, 1.0),
        ] {
            assert!(axis.lo < axis.hi, "{axis:?}");
            assert!(!axis.ticks.is_empty(), "{axis:?}");
            assert!(axis.lo.is_finite() && axis.hi.is_finite(), "{axis:?}");
        }
    }

    #[test]
    fn log_ticks_follow_1_2_5() {
        let axis = Axis::log(3.0, 180.0);
        assert!(axis.is_log());
        assert_eq!(labels(&axis), ["2", "5", "10", "20", "50", "100", "200"]);
        let axis = Axis::log(0.05, 20_000.0);
        assert_eq!(labels(&axis), ["0.1", "1", "10", "100", "1,000", "10,000"]);
        assert_eq!(axis.to_plot(0.0), axis.lo);
        assert_eq!(axis.to_plot(100.0), 2.0);
    }
}
