//! Hit, miss and store counters: atomics for [`CacheStats`], and the `metrics` facade.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most one warning of a failing store per this long: during an outage every request
/// fails to read and to write, and a line each would bury everything else.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// How a cache has done so far. Read with [`CacheLayer::stats`](super::CacheLayer::stats) or
/// [`Cache::stats`](super::Cache::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the store.
    pub hits: u64,
    /// Requests looked up and not found (or sent with `Cache-Control: no-cache`), and so sent
    /// on.
    pub misses: u64,
    /// Responses written to the store.
    pub stores: u64,
    /// Entries the store found but refused: their authentication failed (written by someone
    /// without this credential, or tampered with). Each is also a miss.
    pub rejected: u64,
}

/// The counters one layer and all its services share.
///
/// The `metrics` handles are registered once, when the layer is built, so counting costs an
/// atomic add and no lookup; install the recorder before building the layer.
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    rejected: AtomicU64,
    hits_metric: metrics::Counter,
    misses_metric: metrics::Counter,
    stores_metric: metrics::Counter,
    rejected_metric: metrics::Counter,
    /// When the counters were made: the clock of the two fields below.
    start: tokio::time::Instant,
    /// Milliseconds after `start` before which no store failure is warned about.
    next_warning_ms: AtomicU64,
    /// Store failures not warned about since the last warning.
    held_back: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            hits_metric: metrics::counter!("volley_cache_hits_total"),
            misses_metric: metrics::counter!("volley_cache_misses_total"),
            stores_metric: metrics::counter!("volley_cache_stores_total"),
            rejected_metric: metrics::counter!("volley_cache_rejected_total"),
            start: tokio::time::Instant::now(),
            next_warning_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Warns that the store failed (`what`: "cache read failed; a miss"), at most once per
    /// [`WARN_EVERY`], saying how many failures were held back since the last warning; the
    /// others are logged at debug level.
    pub(crate) fn store_failed(&self, what: &str, error: &dyn Display) {
        match self.warning_due() {
            Some(0) => tracing::warn!(error = %error, "{what}"),
            Some(held_back) => tracing::warn!(
                error = %error,
                "{what} ({held_back} more store failures since the last warning)"
            ),
            None => tracing::debug!(error = %error, "{what}"),
        }
    }

    /// `Some(n)` when a store failure is to be warned about now, `n` failures having been held
    /// back since the last warning; `None` (and one more held back) otherwise.
    fn warning_due(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_warning_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_warning_ms
                .compare_exchange(
                    next,
                    now.saturating_add(every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_metric.increment(1);
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.hits_metric.increment(1);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.misses_metric.increment(1);
    }

    pub(crate) fn stored(&self) {
        self.stores.fetch_add(1, Ordering::Relaxed);
        self.stores_metric.increment(1);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// During an outage one warning goes out per 5 s, counting the failures held back.
    #[tokio::test(start_paused = true)]
    async fn store_failures_are_warned_about_once_per_interval() {
        let counters = Counters::new();
        assert_eq!(counters.warning_due(), Some(0));
        for _ in 0..100 {
            assert_eq!(counters.warning_due(), None);
        }
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(counters.warning_due(), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(counters.warning_due(), Some(101));
        assert_eq!(counters.warning_due(), None);
    }
}
