//! Seeing a run: a progress bar on a terminal, plain periodic lines otherwise, and the final
//! summary.
//!
//! The batch engine counts in atomics; a ticker reads its snapshot a few times a second and
//! redraws. Nothing here runs per request: `indicatif`'s `inc()` takes a lock and reads the
//! clock on every call, which shows at tens of thousands of requests per second.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use volley_batch::{Progress, ProgressSnapshot, Summary};

/// How often the bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(150);
/// How often a plain line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// The span over which the request rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

const BAR_TEMPLATE: &str =
    "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {msg}";
const SPINNER_TEMPLATE: &str = "{spinner:.green} [{elapsed_precise}] {pos} done {msg}";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An `indicatif` bar on stderr.
    Bar,
    /// A plain line on stderr every [`LINE_EVERY`].
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// A bar when stderr is a terminal, lines when it is not, nothing when `quiet`.
    pub(crate) fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// Prints a message on stderr without tearing the bar (above it, when one is drawn).
#[derive(Clone)]
pub(crate) struct Printer {
    bar: Option<ProgressBar>,
}

impl Printer {
    pub(crate) fn println(&self, message: &str) {
        match &self.bar {
            Some(bar) if !bar.is_finished() => bar.println(message),
            _ => say!("{message}"),
        }
    }
}

/// The ticker task that draws progress until [`Reporter::finish`].
pub(crate) struct Reporter {
    bar: Option<ProgressBar>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts drawing `progress` as `mode` says; `limit`, when given, reads the adaptive
    /// concurrency limit in force, shown next to the lines in progress; `pause` what is left
    /// of the longest rate-limit pause in force, shown while it holds.
    pub(crate) fn start(
        progress: Arc<Progress>,
        mode: Mode,
        limit: Option<LimitSource>,
        pause: PauseSource,
    ) -> Reporter {
        let (stop, stopped) = watch::channel(false);
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(SPINNER_TEMPLATE));
            bar
        });
        let task = match mode {
            Mode::Quiet => None,
            Mode::Bar | Mode::Lines => Some(tokio::spawn(tick(
                progress,
                limit,
                pause,
                bar.clone(),
                stopped,
            ))),
        };
        Reporter { bar, stop, task }
    }

    /// A handle for messages printed while the bar is drawn.
    pub(crate) fn printer(&self) -> Printer {
        Printer {
            bar: self.bar.clone(),
        }
    }

    /// Stops the ticker and clears the bar.
    pub(crate) async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Reads the adaptive concurrency limit in force.
pub(crate) type LimitSource = Box<dyn Fn() -> usize + Send + Sync>;

/// Reads what is left of the longest rate-limit pause in force (`Client::rate_limit_pause`).
pub(crate) type PauseSource = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

async fn tick(
    progress: Arc<Progress>,
    limit: Option<LimitSource>,
    pause: PauseSource,
    bar: Option<ProgressBar>,
    mut stopped: watch::Receiver<bool>,
) {
    let start = Instant::now();
    // Lines done (invalid ones too), for the ETA; requests answered, for the req/s shown.
    let mut rate = Rate::default();
    let mut requests = Rate::default();
    let mut interval = tokio::time::interval(BAR_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_line = start;
    let mut has_length = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => return,
        }
        let now = Instant::now();
        let mut view = View::of(&progress.snapshot());
        view.limit = limit.as_ref().map(|read| read() as u64);
        view.paused = pause();
        let per_sec = Rates {
            lines: rate.update(now, view.done_this_run),
            requests: requests.update(now, view.answered),
        };
        match &bar {
            Some(bar) => {
                if let Some(total) = view.total {
                    if !has_length {
                        bar.set_style(style(BAR_TEMPLATE));
                        has_length = true;
                    }
                    bar.set_length(total);
                }
                bar.set_position(view.done);
                bar.set_message(view.message(per_sec));
            }
            None => {
                if now.duration_since(last_line) >= LINE_EVERY {
                    last_line = now;
                    say!(
                        "volley run: [{}] {}",
                        clock(now.duration_since(start)),
                        view.line(per_sec)
                    );
                }
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file, checked by `templates_are_valid`.
    ProgressStyle::with_template(template).expect("a valid progress template")
}

/// What one redraw shows, computed from the engine's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    /// Lines with an outcome: earlier runs' (skipped) and this run's.
    done: u64,
    /// This run's outcomes, for the rate.
    done_this_run: u64,
    /// Lines of this run answered, successes and failures: invalid ones were never sent.
    answered: u64,
    total: Option<u64>,
    in_flight: u64,
    /// The adaptive concurrency limit in force, when the limit adapts.
    limit: Option<u64>,
    /// What is left of the longest pause a rate limit (a 429's wait) started: the requests it
    /// holds (all of them, but for other models' or other endpoints') are not sent meanwhile.
    paused: Option<Duration>,
    /// Attempts beyond the first of each request (a lower bound while running).
    retries: u64,
    /// Lines that failed or were invalid.
    errors: u64,
}

impl View {
    fn of(s: &ProgressSnapshot) -> View {
        let done_this_run = s.succeeded + s.failed + s.invalid;
        View {
            done: s.done(),
            done_this_run,
            answered: s.succeeded + s.failed,
            total: s.total_lines,
            in_flight: s.in_flight,
            limit: None,
            paused: None,
            retries: s.retries,
            errors: s.failed + s.invalid,
        }
    }

    fn eta(&self, per_sec: f64) -> Option<Duration> {
        let remaining = self.total?.saturating_sub(self.done);
        if remaining == 0 {
            return Some(Duration::ZERO);
        }
        // Rounded up to whole seconds: `clock` shows whole seconds, and "0s" while lines
        // remain would say the run is over.
        (per_sec > 0.0).then(|| Duration::from_secs((remaining as f64 / per_sec).ceil() as u64))
    }

    /// The part after the bar.
    fn message(&self, per_sec: Rates) -> String {
        let limit = self.limit.map_or_else(String::new, |limit| {
            format!(", at most {limit} sent at once")
        });
        // Rounded up: a pause is shown while it holds, never as "0s".
        let paused = self.paused.map_or_else(String::new, |left| {
            let left = Duration::from_secs(left.as_secs_f64().ceil() as u64);
            format!(" · a rate-limit pause holds, {} left", clock(left))
        });
        // Lines whose outcome is pending: sent, or waiting for a slot, the rate limits or a
        // retry; with an adaptive limit, how many of them may be sent at once.
        format!(
            "{:.0} req/s · {} in progress{limit}{paused} · {} retries · {} errors · ETA {}",
            per_sec.requests,
            self.in_flight,
            self.retries,
            self.errors,
            self.eta(per_sec.lines)
                .map_or_else(|| "?".to_owned(), clock)
        )
    }

    /// A whole plain line.
    fn line(&self, per_sec: Rates) -> String {
        let done = match self.total {
            Some(total) if total > 0 => format!(
                "{}/{total} done ({:.0}%)",
                self.done,
                self.done as f64 * 100.0 / total as f64
            ),
            Some(total) => format!("{}/{total} done", self.done),
            None => format!("{} done", self.done),
        };
        format!("{done}, {}", self.message(per_sec))
    }
}

/// What the progress shows per second.
#[derive(Debug, Clone, Copy)]
struct Rates {
    /// Lines done, invalid ones included: what the ETA divides the remaining lines by.
    lines: f64,
    /// Requests answered: the req/s shown, which the summary's rate matches.
    requests: f64,
}

/// Outcomes per second over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn update(&mut self, now: Instant, done: u64) -> f64 {
        self.samples.push_back((now, done));
        while let Some(&(at, _)) = self.samples.front() {
            if now.duration_since(at) > RATE_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let (first_at, first) = self.samples[0];
        let span = now.duration_since(first_at).as_secs_f64();
        if span <= 0.0 {
            0.0
        } else {
            done.saturating_sub(first) as f64 / span
        }
    }
}

/// `1:02:03`, `2:03` or `5s`.
pub(crate) fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else if m > 0 {
        format!("{m}:{s:02}")
    } else {
        format!("{s}s")
    }
}

/// The end-of-run report, one fact per line.
pub(crate) fn summary_text(summary: &Summary, concurrency: usize) -> String {
    let outcomes = summary.succeeded + summary.failed + summary.invalid;
    let mut text = format!(
        "volley run: {} in {:.1}s\n  outcomes  {outcomes} this run: {} succeeded, {} failed, {} invalid",
        if summary.interrupted {
            "interrupted"
        } else {
            "done"
        },
        summary.wall.as_secs_f64(),
        summary.succeeded,
        summary.failed,
        summary.invalid,
    );
    if summary.skipped > 0 {
        text.push_str(&format!(
            "; {} skipped (already recorded: resumed",
            summary.skipped
        ));
        if summary.skipped_failed > 0 {
            text.push_str(&format!(", {} of them failed", summary.skipped_failed));
        }
        text.push(')');
    }
    // Lines answered per second (from the cache too); invalid lines are not counted.
    let sent = summary.succeeded + summary.failed;
    let rate = if summary.wall.is_zero() {
        0.0
    } else {
        sent as f64 / summary.wall.as_secs_f64()
    };
    let cached = if summary.cached > 0 {
        format!(", {} from the cache", summary.cached)
    } else {
        String::new()
    };
    text.push_str(&format!(
        "\n  requests  {} attempts, {} retries{cached}, {rate:.0}/s; mean {:.1} in flight of {concurrency}",
        summary.attempts, summary.retries, summary.mean_in_flight,
    ));
    // A hit's usage was billed when the answer first came.
    let replays = if summary.cached > 0 {
        " (not the cache's replays)"
    } else {
        ""
    };
    text.push_str(&format!(
        "\n  tokens    {} in, {} out{replays}",
        summary.tokens_in, summary.tokens_out
    ));
    if !summary.errors_by_code.is_empty() {
        let errors: Vec<String> = summary
            .errors_by_code
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        text.push_str(&format!("\n  errors    {}", errors.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(total: Option<u64>, skipped: u64, ok: u64, failed: u64, in_flight: u64) -> View {
        View {
            done: skipped + ok + failed,
            done_this_run: ok + failed,
            answered: ok + failed,
            total,
            in_flight,
            limit: None,
            paused: None,
            retries: 0,
            errors: failed,
        }
    }

    fn both(per_sec: f64) -> Rates {
        Rates {
            lines: per_sec,
            requests: per_sec,
        }
    }

    /// Invalid lines, never sent, count toward the ETA, not the req/s shown (the summary's
    /// rate leaves them out too).
    #[test]
    fn the_rate_shown_is_of_requests_the_eta_of_lines() {
        let view = snapshot(Some(1000), 0, 100, 0, 10);
        let text = view.message(Rates {
            lines: 500.0,
            requests: 20.0,
        });
        assert!(text.starts_with("20 req/s"), "{text}");
        assert!(text.ends_with("ETA 2s"), "{text}");
    }

    #[test]
    fn templates_are_valid() {
        style(BAR_TEMPLATE);
        style(SPINNER_TEMPLATE);
    }

    #[test]
    fn eta_from_the_remaining_lines_and_the_rate() {
        let view = snapshot(Some(1000), 100, 300, 0, 10);
        assert_eq!(view.eta(100.0), Some(Duration::from_secs(6)));
        assert_eq!(view.eta(0.0), None);
        assert_eq!(snapshot(None, 0, 1, 0, 0).eta(10.0), None);
        assert_eq!(snapshot(Some(5), 0, 5, 0, 0).eta(0.0), Some(Duration::ZERO));
        // One line left at 1000/s is not "0s".
        let eta = snapshot(Some(5), 0, 4, 0, 1).eta(1000.0).unwrap();
        assert_eq!(clock(eta), "1s");
    }

    #[test]
    fn the_summary_rate_counts_sent_requests_only() {
        let mut summary = Summary::default();
        summary.succeeded = 10;
        summary.invalid = 1000;
        summary.wall = Duration::from_secs(1);
        let text = summary_text(&summary, 4);
        assert!(text.contains(", 10/s;"), "{text}");
    }

    #[test]
    fn the_summary_shows_cache_hits_apart_from_attempts() {
        let mut summary = Summary::default();
        summary.succeeded = 10;
        summary.attempts = 9;
        summary.retries = 2;
        assert!(!summary_text(&summary, 4).contains("cache"));
        summary.cached = 3;
        let text = summary_text(&summary, 4);
        assert!(
            text.contains("9 attempts, 2 retries, 3 from the cache, "),
            "{text}"
        );
    }

    #[test]
    fn lines_show_done_rate_in_flight_retries_errors_and_eta() {
        let mut view = snapshot(Some(200), 0, 48, 2, 16);
        view.retries = 3;
        let line = view.line(both(25.0));
        assert_eq!(
            line,
            "50/200 done (25%), 25 req/s · 16 in progress · 3 retries · 2 errors · ETA 6s"
        );
        view.limit = Some(24);
        assert!(
            view.line(both(25.0))
                .contains("16 in progress, at most 24 sent at once · 3 retries"),
            "the adaptive limit is shown next to the lines in progress"
        );
        view.limit = None;
        view.paused = Some(Duration::from_millis(44_200));
        assert!(
            view.line(both(0.0))
                .contains("16 in progress · a rate-limit pause holds, 45s left · 3 retries"),
            "a 429's pause is shown while it holds, rounded up"
        );
        let line = snapshot(None, 0, 7, 0, 1).line(both(0.0));
        assert!(line.starts_with("7 done, 0 req/s"), "{line}");
        assert!(line.ends_with("ETA ?"), "{line}");
    }

    #[test]
    fn rate_is_measured_over_a_sliding_window() {
        let mut rate = Rate::default();
        let t0 = Instant::now();
        assert_eq!(rate.update(t0, 0), 0.0);
        let r = rate.update(t0 + Duration::from_secs(1), 100);
        assert!((r - 100.0).abs() < 1e-9, "{r}");
        // After the window, early samples are dropped: only the recent pace counts.
        for s in 2..=20 {
            rate.update(t0 + Duration::from_secs(s), 100 + (s - 1) * 10);
        }
        let r = rate.update(t0 + Duration::from_secs(21), 300);
        assert!((r - 10.0).abs() < 1.0, "{r}");
    }

    #[test]
    fn clock_formats() {
        assert_eq!(clock(Duration::from_millis(5900)), "5s");
        assert_eq!(clock(Duration::from_secs(125)), "2:05");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
