//! [`TimeoutLayer`]: the configuration of the timeout middleware.

use std::time::Duration;

use tower_layer::Layer;

use super::Timeout;

/// Builds [`Timeout`] services. See the [module docs](super) for what each deadline covers.
///
/// Setters take a `Duration` or an `Option<Duration>` (`None` turns the deadline off).
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct TimeoutLayer {
    limits: Limits,
}

/// The four deadlines, copied into every service and future.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) attempt: Option<Duration>,
    pub(crate) first_byte: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) stream_total: Option<Duration>,
}

impl Limits {
    /// Whether any deadline is set.
    pub(crate) fn any(&self) -> bool {
        self.attempt.is_some()
            || self.first_byte.is_some()
            || self.idle.is_some()
            || self.stream_total.is_some()
    }
}

impl TimeoutLayer {
    /// A layer with no deadline set.
    pub fn new() -> TimeoutLayer {
        TimeoutLayer::default()
    }

    /// The whole attempt: from the call to the complete response, or for a stream to its head
    /// and first chunk. Fails with `ErrorKind::Timeout`. Default `None`.
    pub fn attempt(mut self, limit: impl Into<Option<Duration>>) -> TimeoutLayer {
        self.limits.attempt = limit.into();
        self
    }

    /// Time to first byte: from the call to the response head and, for a stream, to its first
    /// non-empty chunk. Fails with `ErrorKind::FirstByteTimeout`. Default `None`.
    pub fn first_byte(mut self, limit: impl Into<Option<Duration>>) -> TimeoutLayer {
        self.limits.first_byte = limit.into();
        self
    }

    /// The longest silence between two chunks of a stream, counted from the first chunk on.
    /// Fails with `ErrorKind::IdleTimeout`. Default `None`.
    pub fn idle(mut self, limit: impl Into<Option<Duration>>) -> TimeoutLayer {
        self.limits.idle = limit.into();
        self
    }

    /// The whole stream: from the call to the end of a streaming body. Fails with
    /// `ErrorKind::Timeout`. Does not apply to non-streaming responses (use
    /// [`attempt`](Self::attempt)). Default `None`.
    pub fn stream_total(mut self, limit: impl Into<Option<Duration>>) -> TimeoutLayer {
        self.limits.stream_total = limit.into();
        self
    }

    /// The whole-attempt deadline in force.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.limits.attempt
    }

    /// The time-to-first-byte deadline in force.
    pub fn first_byte_timeout(&self) -> Option<Duration> {
        self.limits.first_byte
    }

    /// The idle deadline in force.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.limits.idle
    }

    /// The whole-stream deadline in force.
    pub fn stream_total_timeout(&self) -> Option<Duration> {
        self.limits.stream_total
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self)
    }
}
