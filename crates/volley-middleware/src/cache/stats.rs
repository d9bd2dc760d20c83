//! Hit, miss and store counters: atomics for [`CacheStats`], and the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering};

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
        }
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
