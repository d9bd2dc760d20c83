//! Finding the knee: the concurrency past which a server gives no more throughput, only more
//! latency.
//!
//! [`find_knee`] runs one closed-loop step per concurrency of a ladder ([`ladder`]: steps
//! of 2^¼, about 19 % apart, so the knee is found within ±20 %), each a fixed number of requests per slot so that a step
//! measures the same work at any speed; [`knee_of`] reads the knee off the steps: the lowest
//! concurrency whose steady throughput reaches 95 % of the best step's, with the median
//! latency there; [`knee_svg`] draws throughput and median latency against concurrency, with the knee
//! marked, as an inline SVG for a report.
//!
//! ```no_run
//! use volley_bench::BenchConfig;
//! use volley_bench::knee::{find_knee, knee_of, ladder};
//!
//! # async fn run() -> Result<(), volley::Error> {
//! let base = BenchConfig { base_url: "http://127.0.0.1:8080/v1".into(), ..BenchConfig::default() };
//! let steps = find_knee(&base, &ladder(256), 20).await?;
//! if let Some(knee) = knee_of(&steps) {
//!     println!("knee at {} in flight: {:.0} req/s, p50 {:.0} ms", knee.concurrency,
//!         knee.requests_per_sec, knee.p50_ms);
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;

use volley::core::{Error, ErrorKind};

use crate::{Bench, BenchConfig, Load};

/// The share of the best throughput that counts as having reached it.
pub const KNEE_SHARE: f64 = 0.95;

/// One step of the ladder: a closed loop at `concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct KneeStep {
    /// Requests in flight.
    pub concurrency: usize,
    /// Successful requests per second, over the whole step.
    pub requests_per_sec: f64,
    /// The median latency of the successful requests, in milliseconds.
    pub p50_ms: f64,
    /// The mean time a finished request held its slot, failed ones included (a gateway's
    /// 504 after a minute holds it as long), in milliseconds: what Little's law takes
    /// ([`steady_requests_per_sec`](Self::steady_requests_per_sec)).
    pub mean_ms: f64,
    /// The share of the step's finished requests that succeeded, from 0 to 1 (0 when none
    /// finished).
    pub success_share: f64,
}

impl KneeStep {
    /// The closed loop's steady throughput by Little's law: `concurrency / mean time a
    /// request holds its slot` ([`mean_ms`](Self::mean_ms)), requests per second (the mean,
    /// not the median: with a long tail, as a server near its knee has, the median would
    /// overstate it). A short step's measured rate is biased low by its start and its drain
    /// (the last requests run with the loop part empty), by about one latency in the step's
    /// length, and by less at high concurrency where latencies are long; the steady rate is
    /// not, which keeps a 95 % threshold meaningful. Only successes count: the rate is scaled
    /// by [`success_share`](Self::success_share), so a step of fast refusals (a wrong model,
    /// 429s) is no throughput, and a step where nothing succeeded is 0. Falls back to the
    /// measured rate without a latency.
    pub fn steady_requests_per_sec(&self) -> f64 {
        if self.success_share <= 0.0 {
            0.0
        } else if self.mean_ms > 0.0 {
            self.concurrency as f64 * 1000.0 / self.mean_ms * self.success_share.min(1.0)
        } else {
            self.requests_per_sec
        }
    }
}

/// Where throughput stops growing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// The lowest concurrency whose steady throughput reached [`KNEE_SHARE`] of the best.
    pub concurrency: usize,
    /// Its steady throughput ([`KneeStep::steady_requests_per_sec`]), requests per second.
    pub requests_per_sec: f64,
    /// Its median latency, in milliseconds.
    pub p50_ms: f64,
    /// The best steady throughput of any step.
    pub max_requests_per_sec: f64,
}

/// Concurrencies from 1 to `max`, each about 2^¼ (1.19) times the one before (…, 8, 10, 11,
/// 13, 16, 19, 23, 27, 32, 38, 45, 54, 64, …), `max` last.
pub fn ladder(max: usize) -> Vec<usize> {
    let mut steps = Vec::new();
    let mut c = 1.0_f64;
    while (c.round() as usize) < max {
        let n = c.round() as usize;
        if steps.last() != Some(&n) {
            steps.push(n);
        }
        c *= 2f64.powf(0.25);
    }
    steps.push(max.max(1));
    steps
}

/// Runs `base`'s benchmark as a closed loop at each concurrency of `ladder`, with
/// `per_slot` requests per slot, and returns each step's throughput and median latency.
///
/// A later step the server refused from its start (a WAF's 403, a per-key cap answered with
/// a 4xx) ends the ladder there: it is returned with nothing succeeded, the steps before it
/// as measured, and the server's reason logged.
///
/// # Errors
/// As [`Bench::new`] and [`Bench::run`]; and an [`ErrorKind::Status`] error when the first
/// step was stopped because the server refused its first requests (a wrong model or path, a
/// key without access: every later step would be refused too).
pub async fn find_knee(
    base: &BenchConfig,
    ladder: &[usize],
    per_slot: u64,
) -> Result<Vec<KneeStep>, Error> {
    let mut steps = Vec::with_capacity(ladder.len());
    for &concurrency in ladder {
        let config = BenchConfig {
            load: Load::Closed { concurrency },
            requests: Some(concurrency as u64 * per_slot.max(1)),
            duration: None,
            // Each step's client is new: a warm-up of one request a slot (at most the one
            // given) opens its connections, without a long one at every small step.
            warmup: base.warmup.min(concurrency as u64),
            ..base.clone()
        };
        let results = Bench::new(config)?.run().await?;
        if let Some(why) = &results.stopped_early {
            if steps.is_empty() {
                return Err(Error::new(
                    ErrorKind::Status,
                    format!("the step at concurrency {concurrency} was stopped: {why}"),
                ));
            }
            tracing::warn!(concurrency, reason = %why, "the server refused this step; the ladder ends here");
            steps.push(KneeStep {
                concurrency,
                requests_per_sec: 0.0,
                p50_ms: 0.0,
                mean_ms: 0.0,
                success_share: 0.0,
            });
            break;
        }
        let s = &results.summary;
        let finished = s.ok + s.failed;
        steps.push(KneeStep {
            concurrency,
            requests_per_sec: s.ok_per_sec(),
            p50_ms: results.latency.p50,
            mean_ms: s.mean_request_ms,
            success_share: if finished > 0 {
                s.ok as f64 / finished as f64
            } else {
                0.0
            },
        });
    }
    Ok(steps)
}

/// The knee of `steps`: the lowest concurrency whose steady throughput
/// ([`KneeStep::steady_requests_per_sec`]) reached [`KNEE_SHARE`] of the best, among the
/// steps where at least [`KNEE_SHARE`] of the requests succeeded: failures (429s, timeouts,
/// refused connections) mean the server is past its knee, and their latencies say nothing of
/// its throughput. `None` without such a step.
pub fn knee_of(steps: &[KneeStep]) -> Option<Knee> {
    let healthy: Vec<KneeStep> = steps
        .iter()
        .filter(|s| s.success_share >= KNEE_SHARE)
        .copied()
        .collect();
    let max = healthy
        .iter()
        .map(KneeStep::steady_requests_per_sec)
        .fold(f64::NAN, f64::max);
    if !max.is_finite() || max <= 0.0 {
        return None;
    }
    let mut sorted = healthy;
    sorted.sort_by_key(|s| s.concurrency);
    let step = sorted
        .iter()
        .find(|s| s.steady_requests_per_sec() >= KNEE_SHARE * max)?;
    Some(Knee {
        concurrency: step.concurrency,
        requests_per_sec: step.steady_requests_per_sec(),
        p50_ms: step.p50_ms,
        max_requests_per_sec: max,
    })
}

/// Throughput (left axis) and median latency (right axis) against concurrency (logarithmic),
/// the knee marked: a self-contained SVG.
pub fn knee_svg(steps: &[KneeStep], knee: Option<&Knee>) -> String {
    const W: f64 = 640.0;
    const H: f64 = 320.0;
    const PAD: f64 = 50.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" \
         height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\">\
         <title>Throughput and median latency against concurrency</title>"
    );
    if steps.is_empty() {
        svg.push_str("<text x=\"20\" y=\"20\">no steps</text></svg>");
        return svg;
    }
    let (lo, hi) = steps.iter().fold((f64::MAX, f64::MIN), |(lo, hi), s| {
        let c = (s.concurrency.max(1) as f64).ln();
        (lo.min(c), hi.max(c))
    });
    let span = (hi - lo).max(1e-9);
    let x = |c: usize| PAD + ((c.max(1) as f64).ln() - lo) / span * (W - 2.0 * PAD);
    let top = |v: &dyn Fn(&KneeStep) -> f64| steps.iter().map(v).fold(0.0, f64::max).max(1e-9);
    let rps_max = top(&|s| s.requests_per_sec);
    let p50_max = top(&|s| s.p50_ms);
    let y = |v: f64, max: f64| H - PAD - v / max * (H - 2.0 * PAD);
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{cx}\" y=\"{ly}\" text-anchor=\"middle\">concurrency (log)</text>\
         <text x=\"4\" y=\"14\" fill=\"#1f77b4\">req/s (max {rps_max:.0})</text>\
         <text x=\"{rx}\" y=\"14\" fill=\"#d62728\" text-anchor=\"end\">p50 ms (max {p50_max:.0})</text>",
        b = H - PAD,
        r = W - PAD,
        cx = W / 2.0,
        ly = H - 12.0,
        rx = W - 4.0,
    );
    for (color, value, max) in [
        (
            "#1f77b4",
            (|s: &KneeStep| s.requests_per_sec) as fn(&KneeStep) -> f64,
            rps_max,
        ),
        ("#d62728", |s: &KneeStep| s.p50_ms, p50_max),
    ] {
        let points: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.concurrency), y(value(s), max)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    for s in steps {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(s.concurrency),
            H - PAD + 14.0,
            s.concurrency
        );
    }
    if let Some(knee) = knee {
        let kx = x(knee.concurrency);
        let _ = write!(
            svg,
            "<line x1=\"{kx:.1}\" y1=\"{PAD}\" x2=\"{kx:.1}\" y2=\"{b}\" stroke=\"#2ca02c\" \
             stroke-dasharray=\"4 3\"/><text x=\"{kx:.1}\" y=\"{ty}\" fill=\"#2ca02c\" \
             text-anchor=\"middle\">knee {} ({:.0} req/s, p50 {:.0} ms)</text>",
            knee.concurrency,
            knee.requests_per_sec,
            knee.p50_ms,
            b = H - PAD,
            ty = PAD - 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knee_server(knee: usize, base_ms: f64) -> Vec<KneeStep> {
        ladder(256)
            .into_iter()
            .map(|c| {
                let latency = base_ms * (c as f64 / knee as f64).max(1.0);
                KneeStep {
                    concurrency: c,
                    requests_per_sec: c as f64 * 1000.0 / latency,
                    p50_ms: latency,
                    mean_ms: latency,
                    success_share: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn the_ladder_steps_by_a_fifth_at_most_and_ends_at_max() {
        let steps = ladder(256);
        assert_eq!(&steps[steps.len() - 5..], [128, 152, 181, 215, 256]);
        assert!(
            steps
                .windows(2)
                .all(|w| w[1] as f64 <= w[0] as f64 * 1.2 + 1.0)
        );
        assert_eq!(ladder(1), [1]);
        assert_eq!(ladder(5), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_knee_of_a_processor_sharing_server_is_found_within_a_step() {
        for knee in [8, 32, 100] {
            let found = knee_of(&knee_server(knee, 200.0)).unwrap();
            let ratio = found.concurrency as f64 / knee as f64;
            assert!((0.8..=1.2).contains(&ratio), "{knee}: {found:?}");
            assert!(found.p50_ms <= 200.0 * 1.2, "{found:?}");
        }
        assert_eq!(knee_of(&[]), None);
    }

    /// Failures are no throughput: a step of fast refusals (429s, connect errors), or one
    /// where more than 5 % failed, is neither the knee nor the best; a step half refused
    /// counts half; without a healthy step there is no knee.
    #[test]
    fn only_successes_are_throughput() {
        let step = |concurrency, p50_ms, success_share, requests_per_sec| KneeStep {
            concurrency,
            requests_per_sec,
            p50_ms,
            mean_ms: p50_ms,
            success_share,
        };
        let steps = [
            step(1, 200.0, 1.0, 5.0),
            step(8, 200.0, 1.0, 40.0),
            // Refused at once, nothing measured: no p50.
            step(64, 0.0, 0.0, 0.0),
            // Most refused; the few successes were fast.
            step(128, 20.0, 0.01, 64.0),
        ];
        let knee = knee_of(&steps).unwrap();
        assert_eq!(knee.concurrency, 8, "{knee:?}");
        assert_eq!(knee.max_requests_per_sec, 40.0);
        assert_eq!(step(16, 200.0, 0.5, 40.0).steady_requests_per_sec(), 40.0);
        assert_eq!(
            knee_of(&[step(1, 0.0, 0.0, 0.0), step(2, 0.0, 0.0, 0.0)]),
            None
        );
        assert_eq!(knee_of(&[step(1, 200.0, 0.9, 4.5)]), None);
    }

    /// Little's law takes the mean latency: 64 in flight at a median of 500 ms and a mean of
    /// 600 ms (a lognormal's tail) complete about 107 requests a second, not 128.
    #[test]
    fn the_steady_rate_is_from_the_mean_latency() {
        let step = KneeStep {
            concurrency: 64,
            requests_per_sec: 100.0,
            p50_ms: 500.0,
            mean_ms: 600.0,
            success_share: 1.0,
        };
        assert!((step.steady_requests_per_sec() - 106.67).abs() < 0.01);
    }

    #[test]
    fn the_chart_marks_the_knee() {
        let steps = knee_server(32, 200.0);
        let svg = knee_svg(&steps, knee_of(&steps).as_ref());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("knee 32"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
