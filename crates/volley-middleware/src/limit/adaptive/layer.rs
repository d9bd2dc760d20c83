//! [`AdaptiveConcurrencyLimitLayer`] and its settings.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tower_layer::Layer;

use super::AdaptiveConcurrencyLimit;
use super::controller::Settings;
use super::shared::Shared;

/// The default of [`AdaptiveConcurrencyLimitLayer::initial`]: 16.
pub const DEFAULT_INITIAL: usize = 16;
/// The default of [`AdaptiveConcurrencyLimitLayer::tolerance`]: 1.2.
pub const DEFAULT_TOLERANCE: f64 = 1.2;
/// The default of [`AdaptiveConcurrencyLimitLayer::backoff`]: 0.8.
pub const DEFAULT_BACKOFF: f64 = 0.8;

/// Applies an [`AdaptiveConcurrencyLimit`] that shares this layer's one limit.
///
/// Setters never fail; out-of-range values are clamped when the first service is built
/// (the limit state is created then, and shared by every service the layer builds).
#[derive(Clone)]
#[must_use]
pub struct AdaptiveConcurrencyLimitLayer {
    settings: Settings,
    shared: Arc<std::sync::OnceLock<Arc<Shared>>>,
}

impl AdaptiveConcurrencyLimitLayer {
    /// A limit that moves between 1 and `max` (at least 1), starting at
    /// [`DEFAULT_INITIAL`] (or `max`, when lower).
    pub fn new(max: usize) -> AdaptiveConcurrencyLimitLayer {
        let max = max.max(1);
        AdaptiveConcurrencyLimitLayer {
            settings: Settings {
                initial: DEFAULT_INITIAL.min(max),
                min: 1,
                max,
                tolerance: DEFAULT_TOLERANCE,
                backoff: DEFAULT_BACKOFF,
            },
            shared: Arc::default(),
        }
    }

    /// The limit before anything is known: the slow start doubles it every window of answers
    /// until the first sign of overload. Default [`DEFAULT_INITIAL`] (16), at most `max`.
    pub fn initial(mut self, initial: usize) -> AdaptiveConcurrencyLimitLayer {
        self.settings.initial = initial;
        self
    }

    /// The lowest the limit goes. Default 1.
    pub fn min(mut self, min: usize) -> AdaptiveConcurrencyLimitLayer {
        self.settings.min = min;
        self
    }

    /// How much the median latency may exceed the unloaded baseline before the limit is cut
    /// in proportion: 1.2 settles a processor-sharing server 20–40 % past its knee, where
    /// throughput is already at its maximum. Above 1. Default [`DEFAULT_TOLERANCE`] (1.2).
    pub fn tolerance(mut self, tolerance: f64) -> AdaptiveConcurrencyLimitLayer {
        self.settings.tolerance = tolerance;
        self
    }

    /// The factor an overload signal (429, 503, 529, refused connection, timeout) multiplies
    /// the limit by, in (0, 1). Default [`DEFAULT_BACKOFF`] (0.8).
    pub fn backoff(mut self, factor: f64) -> AdaptiveConcurrencyLimitLayer {
        self.settings.backoff = factor;
        self
    }

    /// The highest the limit goes.
    pub fn max(&self) -> usize {
        self.settings.max
    }

    /// The limit in force now (the initial limit before any service was built).
    pub fn limit(&self) -> usize {
        self.shared
            .get()
            .map_or(self.settings.initial, |s| s.limit.load(Ordering::Relaxed))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared
            .get()
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    fn shared(&self) -> Arc<Shared> {
        self.shared
            .get_or_init(|| {
                let mut s = self.settings;
                s.max = s.max.max(1);
                s.min = s.min.clamp(1, s.max);
                s.initial = s.initial.clamp(s.min, s.max);
                if !(s.tolerance > 1.0 && s.tolerance.is_finite()) {
                    s.tolerance = DEFAULT_TOLERANCE;
                }
                if !(s.backoff > 0.0 && s.backoff < 1.0) {
                    s.backoff = DEFAULT_BACKOFF;
                }
                Arc::new(Shared::new(s))
            })
            .clone()
    }
}

impl<S> Layer<S> for AdaptiveConcurrencyLimitLayer {
    type Service = AdaptiveConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> AdaptiveConcurrencyLimit<S> {
        AdaptiveConcurrencyLimit::with_shared(inner, self.shared())
    }
}

impl fmt::Debug for AdaptiveConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLimitLayer")
            .field("limit", &self.limit())
            .field("max", &self.settings.max)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}
