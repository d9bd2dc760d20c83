//! [`ConcurrencyLimitLayer`]: one shared budget of slots.

use std::fmt;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::ConcurrencyLimit;

/// Applies a [`ConcurrencyLimit`] that shares this layer's one budget of slots.
///
/// Every service the layer builds, and every clone of those services, draws from the same
/// semaphore; cloning the layer shares it too. (tower's `ConcurrencyLimitLayer` makes a new
/// semaphore per `layer` call instead: see the [module docs](super).)
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimitLayer {
    /// A budget of `max` requests in flight at once.
    ///
    /// # Panics
    /// If `max` is 0 (nothing could ever be sent) or above tokio's `Semaphore::MAX_PERMITS`.
    pub fn new(max: usize) -> ConcurrencyLimitLayer {
        assert!(
            max > 0,
            "a concurrency limit of 0 would never send anything"
        );
        ConcurrencyLimitLayer {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The configured number of slots.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots free right now.
    pub fn available_permits(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Slots taken right now: requests in flight, plus services made ready but not yet called.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::with_semaphore(inner, self.semaphore.clone(), self.max)
    }
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("max", &self.max)
            .field("available", &self.available_permits())
            .finish()
    }
}
