//! Reports of a benchmark run: `results.json`, `report.md` and `report.html`.
//!
//! [`write_report`] writes all three into a folder. [`render_markdown`] and [`render_html`]
//! render one report each from [`BenchResults`], [`render_text`] the terminal's summary;
//! [`compare`] puts a run next to a baseline run as a markdown table (what `cargo xtask
//! bench --baseline` prints).
//!
//! The HTML report is a single file with its stylesheet and charts inline: it needs no script,
//! font or network access, so it can be attached to an issue or archived as it is. Every
//! string taken from the results (the base URL, names, error kinds) is escaped, in the HTML
//! and in the markdown. Results with no requests, a single timeline point or no server side
//! render too; a chart without data says so.
//!
//! ```no_run
//! use std::path::Path;
//! use volley_bench::report;
//! use volley_bench::results::BenchResults;
//!
//! # fn run() -> std::io::Result<()> {
//! let current: BenchResults = serde_json::from_str(&std::fs::read_to_string("results.json")?)?;
//! report::write_report(&current, Path::new("target/bench/S1"))?;
//! let baseline: BenchResults = serde_json::from_str(&std::fs::read_to_string("baseline.json")?)?;
//! println!("{}", report::compare(&current, &baseline));
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io;
use std::path::Path;

use crate::results::BenchResults;

mod axis;
mod charts;
mod compare;
mod content;
mod format;
mod html;
mod markdown;
mod plot;
mod text;

/// Creates `dir` (and its parents) if needed and writes `results.json` (pretty-printed),
/// `report.md` and `report.html` into it, replacing files of those names.
pub fn write_report(results: &BenchResults, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut json = serde_json::to_string_pretty(results)?;
    json.push('\n');
    fs::write(dir.join("results.json"), json)?;
    fs::write(dir.join("report.md"), render_markdown(results))?;
    fs::write(dir.join("report.html"), render_html(results))?;
    Ok(())
}

/// The report as GitHub-flavoured markdown: the run's name, date and Volley version, the
/// targets and whether each was met (when there are any), the configuration, the headline
/// figures, the latency, TTFT and inter-token percentiles, and the errors by kind.
pub fn render_markdown(results: &BenchResults) -> String {
    markdown::render(results)
}

/// The figures a person looks at first, as plain text for a terminal: counts, requests in
/// flight (client and server side), latency and time-to-first-token percentiles, errors by
/// kind, CPU per request and peak RSS. When no request succeeded it says so instead of
/// printing percentiles of nothing.
pub fn render_text(results: &BenchResults) -> String {
    text::render(results)
}

/// The report as one self-contained HTML page: the markdown report's content with charts of
/// requests in flight, throughput and errors over time, the latency distribution and, for
/// streams, the time to first token.
pub fn render_html(results: &BenchResults) -> String {
    html::render(results)
}

/// A markdown table of the key figures of `current` next to those of `baseline`, with the
/// change in percent; changes of 5 % or more in a figure with a better direction are marked
/// better or worse. Differences in configuration that make the comparison unfair are listed
/// above the table.
pub fn compare(current: &BenchResults, baseline: &BenchResults) -> String {
    compare::render(current, baseline)
}
