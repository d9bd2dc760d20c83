//! [`Recorder`]: what one lane of the driver measured, merged with the others at the end.
//!
//! Each lane owns its recorder, so the hot path takes no shared lock: histograms in
//! microseconds (3 significant digits, growing to whatever range is recorded), counters, errors
//! by kind, and the [`Timeline`] accumulators.

use std::time::Duration;

use hdrhistogram::Histogram;
use volley::core::{Error, ErrorKind};

use super::timeline::Timeline;

/// Significant decimal digits the histograms keep: 0.1 % relative error.
const SIGNIFICANT_DIGITS: u8 = 3;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The whole body or stream was read.
    Ok {
        /// Output tokens, from usage (or chunks counted for streams without usage).
        output_tokens: u64,
        /// When the first content chunk arrived, after the start (streams).
        ttft: Option<Duration>,
    },
    /// It failed.
    Failed(ErrorLabel),
}

/// What a failure is counted as in the results: the error kind (`timeout`, `rate_limited`),
/// or `status_NNN` for an HTTP error status other than 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ErrorLabel {
    /// [`ErrorKind::as_str`].
    Kind(&'static str),
    /// A `Status` error with this HTTP status.
    Status(u16),
}

impl ErrorLabel {
    pub(crate) fn of(error: &Error) -> ErrorLabel {
        match (error.kind(), error.status()) {
            (ErrorKind::Status, Some(status)) => ErrorLabel::Status(status.as_u16()),
            (kind, _) => ErrorLabel::Kind(kind.as_str()),
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            ErrorLabel::Kind(kind) => kind.to_owned(),
            ErrorLabel::Status(status) => format!("status_{status}"),
        }
    }
}

/// One lane's measurements.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    /// Whole-request latency of successful requests, µs.
    pub(crate) latency: Histogram<u64>,
    /// Time to the first content chunk of successful streams, µs.
    pub(crate) ttft: Histogram<u64>,
    /// Time between consecutive content chunks, µs.
    pub(crate) inter_token: Histogram<u64>,
    /// Time per output token after the first, of successful streams with two tokens or more,
    /// µs: (latency − TTFT) / (output tokens − 1), as vLLM's benchmark reports it (TPOT).
    pub(crate) tpot: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Requests cancelled in flight (the drain's bound, a second Ctrl-C).
    pub(crate) unfinished: u64,
    pub(crate) output_tokens: u64,
    /// Content chunks received, failed streams' included.
    pub(crate) chunks: u64,
    /// Failures by label; a handful of distinct labels, so a vector beats a map.
    pub(crate) errors: Vec<(ErrorLabel, u64)>,
    pub(crate) timeline: Timeline,
    /// When the last request finished or was cancelled, ns after the run started.
    pub(crate) last_end_ns: u64,
    /// When the last request finished (not cancelled), ns after the run started: the time
    /// the rates are over.
    pub(crate) last_finished_ns: u64,
    /// The time finished requests held their slots, failed ones included, ns in all.
    pub(crate) busy_ns: u64,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        // Auto-resizing histograms start small and grow to the values recorded.
        let histogram = || {
            // 3 significant digits is within hdrhistogram's supported 0..=5.
            Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits are supported")
        };
        Recorder {
            latency: histogram(),
            ttft: histogram(),
            inter_token: histogram(),
            tpot: histogram(),
            ok: 0,
            failed: 0,
            unfinished: 0,
            output_tokens: 0,
            chunks: 0,
            errors: Vec::new(),
            timeline: Timeline::default(),
            last_end_ns: 0,
            last_finished_ns: 0,
            busy_ns: 0,
        }
    }

    /// Records a request that ran from `start_ns` to `end_ns` after the run started.
    pub(crate) fn finish(&mut self, start_ns: u64, end_ns: u64, outcome: Outcome) {
        self.timeline.start(start_ns);
        self.timeline
            .end(end_ns, matches!(outcome, Outcome::Failed(_)));
        self.last_end_ns = self.last_end_ns.max(end_ns);
        self.last_finished_ns = self.last_finished_ns.max(end_ns);
        self.busy_ns = self.busy_ns.saturating_add(end_ns.saturating_sub(start_ns));
        match outcome {
            Outcome::Ok {
                output_tokens,
                ttft,
            } => {
                self.ok += 1;
                self.output_tokens = self.output_tokens.saturating_add(output_tokens);
                record(&mut self.latency, end_ns.saturating_sub(start_ns));
                if let Some(ttft) = ttft {
                    let ttft_ns = u64::try_from(ttft.as_nanos()).unwrap_or(u64::MAX);
                    record(&mut self.ttft, ttft_ns);
                    if output_tokens > 1 {
                        let after = end_ns.saturating_sub(start_ns).saturating_sub(ttft_ns);
                        record(&mut self.tpot, after / (output_tokens - 1));
                    }
                }
            }
            Outcome::Failed(label) => {
                self.failed += 1;
                match self.errors.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, n)) => *n += 1,
                    None => self.errors.push((label, 1)),
                }
            }
        }
    }

    /// Records content chunks and the gaps between them, in ns.
    pub(crate) fn chunks(&mut self, chunks: u64, gaps_ns: &[u64]) {
        self.chunks += chunks;
        for &gap in gaps_ns {
            record(&mut self.inter_token, gap);
        }
    }

    /// Adds another lane's measurements.
    pub(crate) fn merge(&mut self, other: &Recorder) {
        // Auto-resizing histograms grow to take any other's range, so adding cannot fail.
        let add = |mine: &mut Histogram<u64>, theirs: &Histogram<u64>| {
            mine.add(theirs)
                .expect("auto-resizing histograms take any range");
        };
        add(&mut self.latency, &other.latency);
        add(&mut self.ttft, &other.ttft);
        add(&mut self.inter_token, &other.inter_token);
        add(&mut self.tpot, &other.tpot);
        self.ok += other.ok;
        self.failed += other.failed;
        self.unfinished += other.unfinished;
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.chunks += other.chunks;
        for &(label, n) in &other.errors {
            match self.errors.iter_mut().find(|(l, _)| *l == label) {
                Some((_, mine)) => *mine += n,
                None => self.errors.push((label, n)),
            }
        }
        self.timeline.merge(&other.timeline);
        self.last_end_ns = self.last_end_ns.max(other.last_end_ns);
        self.last_finished_ns = self.last_finished_ns.max(other.last_finished_ns);
        self.busy_ns = self.busy_ns.saturating_add(other.busy_ns);
    }
}

/// Records `ns` in whole microseconds (at least 1, the histograms' lowest value).
fn record(histogram: &mut Histogram<u64>, ns: u64) {
    let us = (ns / 1_000).max(1);
    // `record` grows an auto-resizing histogram; it fails only above 2^62 µs (146 000 years),
    // which is then clamped. (`saturating_record` would clamp to the current size instead of
    // growing.)
    if histogram.record(us).is_err() {
        histogram.saturating_record(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    /// TPOT is the time after the first token over the tokens after it: 3 ms to the first of
    /// 8 tokens and 10 ms in all make 1 ms; a stream of one token, or without a first token,
    /// has none.
    #[test]
    fn time_per_output_token_is_the_time_after_the_first_over_the_rest() {
        let mut r = Recorder::new();
        let ok = |output_tokens, ttft_ms: Option<u64>| Outcome::Ok {
            output_tokens,
            ttft: ttft_ms.map(Duration::from_millis),
        };
        r.finish(0, 10_000_000, ok(8, Some(3)));
        r.finish(0, 10_000_000, ok(1, Some(3)));
        r.finish(0, 10_000_000, ok(8, None));
        assert_eq!(r.tpot.len(), 1);
        assert_eq!(r.tpot.value_at_quantile(0.5), 1_000);
        assert_eq!(r.ttft.len(), 2);
    }

    #[test]
    fn labels_name_kinds_and_statuses() {
        let status = Error::from_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            b"",
            None,
            "ctx",
        );
        assert_eq!(ErrorLabel::of(&status).name(), "status_500");
        let limited = Error::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            HeaderMap::new(),
            b"",
            None,
            "ctx",
        );
        assert_eq!(ErrorLabel::of(&limited).name(), "rate_limited");
        let timeout = Error::new(ErrorKind::Timeout, "slow");
        assert_eq!(ErrorLabel::of(&timeout).name(), "timeout");
    }

    #[test]
    fn merge_adds_everything() {
        let ok = Outcome::Ok {
            output_tokens: 5,
            ttft: Some(Duration::from_millis(3)),
        };
        let mut a = Recorder::new();
        a.finish(0, 10_000_000, ok);
        a.finish(0, 20_000_000, Outcome::Failed(ErrorLabel::Kind("timeout")));
        a.chunks(2, &[1_000_000]);
        let mut b = Recorder::new();
        b.finish(5_000_000, 35_000_000, ok);
        b.finish(0, 1_000, Outcome::Failed(ErrorLabel::Status(500)));
        b.finish(0, 1_000, Outcome::Failed(ErrorLabel::Kind("timeout")));
        a.merge(&b);
        assert_eq!((a.ok, a.failed, a.output_tokens, a.chunks), (2, 3, 10, 2));
        assert_eq!(a.latency.len(), 2);
        // Values are recorded in µs, whatever their size.
        assert!(
            a.latency.equivalent(a.latency.max(), 30_000),
            "{}",
            a.latency.max()
        );
        assert!(a.latency.equivalent(a.latency.min(), 10_000));
        assert!(a.ttft.equivalent(a.ttft.max(), 3_000));
        assert_eq!(a.inter_token.max(), 1_000);
        assert_eq!(a.ttft.len(), 2);
        assert_eq!(a.inter_token.len(), 1);
        assert_eq!(a.last_end_ns, 35_000_000);
        let mut errors = a.errors.clone();
        errors.sort();
        assert_eq!(
            errors,
            [
                (ErrorLabel::Kind("timeout"), 2),
                (ErrorLabel::Status(500), 1)
            ]
        );
    }
}
