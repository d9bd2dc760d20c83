//! The metric handles of one layer, and the per-call [`Tracker`] that records into them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use tracing::Span;
use volley_core::ErrorKind;

use super::{
    IN_FLIGHT, REQUEST_DURATION_SECONDS, REQUESTS_TOTAL, Scope, TIME_TO_FIRST_BYTE_SECONDS,
    TOKENS_TOTAL,
};

/// Every kind known when this was written; a newer kind is registered on first use.
const KINDS: [ErrorKind; 13] = [
    ErrorKind::Connect,
    ErrorKind::Tls,
    ErrorKind::Connection,
    ErrorKind::Timeout,
    ErrorKind::FirstByteTimeout,
    ErrorKind::IdleTimeout,
    ErrorKind::Status,
    ErrorKind::RateLimited,
    ErrorKind::BodyDecode,
    ErrorKind::StreamBroken,
    ErrorKind::InvalidInput,
    ErrorKind::Config,
    ErrorKind::Cancelled,
];

/// Handles registered once per layer, so recording costs atomic operations and no registry
/// lookup or allocation per call.
pub(crate) struct Handles {
    pub(crate) scope: Scope,
    /// Whether a cache inside marks its replays (see `MetricsLayer::replays`).
    replays: bool,
    ok: Counter,
    errors: [(ErrorKind, Counter); KINDS.len()],
    duration: Histogram,
    ttfb: Histogram,
    in_flight: Gauge,
    tokens_in: Counter,
    tokens_out: Counter,
}

impl Handles {
    pub(crate) fn register(scope: Scope, replays: bool) -> Handles {
        let s = scope.as_str();
        Handles {
            scope,
            replays,
            ok: metrics::counter!(REQUESTS_TOTAL, "scope" => s, "outcome" => "ok"),
            errors: KINDS.map(|kind| {
                let outcome = kind.as_str();
                let counter = metrics::counter!(REQUESTS_TOTAL, "scope" => s, "outcome" => outcome);
                (kind, counter)
            }),
            duration: metrics::histogram!(REQUEST_DURATION_SECONDS, "scope" => s),
            ttfb: metrics::histogram!(TIME_TO_FIRST_BYTE_SECONDS, "scope" => s),
            in_flight: metrics::gauge!(IN_FLIGHT, "scope" => s),
            tokens_in: metrics::counter!(TOKENS_TOTAL, "scope" => s, "direction" => "in"),
            tokens_out: metrics::counter!(TOKENS_TOTAL, "scope" => s, "direction" => "out"),
        }
    }

    fn count_error(&self, kind: ErrorKind) {
        match self.errors.iter().find(|(k, _)| *k == kind) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let (s, outcome) = (self.scope.as_str(), kind.as_str());
                metrics::counter!(REQUESTS_TOTAL, "scope" => s, "outcome" => outcome).increment(1);
            }
        }
    }
}

/// One call in flight: counted in the gauge from its start until its outcome is recorded. A
/// tracker dropped before that (the caller gave up) records the outcome `cancelled`.
pub(crate) struct Tracker {
    handles: Arc<Handles>,
    start: Instant,
    span: Span,
    first_byte_seen: bool,
    finished: bool,
}

impl Tracker {
    pub(crate) fn start(handles: Arc<Handles>, span: Span) -> Tracker {
        handles.in_flight.increment(1.0);
        Tracker {
            handles,
            start: Instant::now(),
            span,
            first_byte_seen: false,
            finished: false,
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// Records the time to first byte, once.
    pub(crate) fn first_byte(&mut self, after: Duration) {
        if !self.first_byte_seen {
            self.first_byte_seen = true;
            self.handles.ttfb.record(after.as_secs_f64());
        }
    }

    /// Records the time to first byte as now, once.
    pub(crate) fn first_byte_now(&mut self) {
        if !self.first_byte_seen {
            self.first_byte(self.start.elapsed());
        }
    }

    /// Whether this layer counts tokens: only the request scope does. Finding the usage
    /// means scanning the body, and an attempt's tokens are the request's when it succeeds.
    pub(crate) fn counts_tokens(&self) -> bool {
        self.handles.scope == Scope::Request
    }

    /// Whether a cache inside the layer marks its replays (`MetricsLayer::replays`).
    pub(crate) fn sees_replays(&self) -> bool {
        self.handles.replays
    }

    pub(crate) fn tokens(&self, prompt: u64, completion: u64) {
        self.handles.tokens_in.increment(prompt);
        self.handles.tokens_out.increment(completion);
    }

    /// Records the outcome: `None` for success, else the error's kind.
    pub(crate) fn finish(&mut self, error: Option<ErrorKind>) {
        self.finish_at(error, None);
    }

    /// [`Tracker::finish`], for a call that ended at `end` (now when `None`): a complete
    /// body's end is the transport's reading of its last byte, so no clock is read for it.
    pub(crate) fn finish_at(&mut self, error: Option<ErrorKind>, end: Option<Instant>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = match end {
            Some(end) => end.saturating_duration_since(self.start),
            None => self.start.elapsed(),
        };
        let h = &self.handles;
        match error {
            None => h.ok.increment(1),
            Some(kind) => h.count_error(kind),
        }
        h.duration.record(elapsed.as_secs_f64());
        h.in_flight.decrement(1.0);
        let outcome = error.map_or("ok", ErrorKind::as_str);
        tracing::debug!(
            parent: &self.span,
            outcome,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "finished"
        );
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish(Some(ErrorKind::Cancelled));
    }
}
