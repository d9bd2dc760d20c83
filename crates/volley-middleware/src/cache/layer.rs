//! [`CacheLayer`]: the configuration of the cache middleware.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use volley_core::cache_key::CredentialId;

use super::Cache;
use super::stats::{CacheStats, Counters};
use super::store::CacheStore;

/// Builds [`Cache`] services over one store, for one credential. See the
/// [module docs](super) for what is cached and how.
///
/// Clones share the store and the counters.
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    shared: Shared,
}

/// What every service of a layer shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) credential: CredentialId,
    pub(crate) counters: Arc<Counters>,
    pub(crate) cache_streams: bool,
    pub(crate) max_entry_bytes: usize,
}

/// The default of [`CacheLayer::max_entry_bytes`]: 8 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;

impl CacheLayer {
    /// A cache in `store` for requests sent with the credential `credential`
    /// (`CredentialId::from_api_key(&key)`, or `CredentialId::anonymous()` without a key).
    ///
    /// The request carries no credential (the transport adds it), so the layer is told which
    /// one the requests below it will be sent with; entries of different credentials never
    /// mix, even in a shared store.
    ///
    /// The `volley_cache_*_total` metric handles are registered here: install a `metrics`
    /// recorder before building the layer.
    pub fn new(store: impl CacheStore + 'static, credential: CredentialId) -> CacheLayer {
        CacheLayer {
            shared: Shared {
                store: Arc::new(store),
                credential,
                counters: Arc::new(Counters::new()),
                cache_streams: false,
                max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            },
        }
    }

    /// Whether streaming responses are cached too: the stream is passed through while a copy
    /// is buffered, and stored when it ends with its `data: [DONE]` event (or is dropped right
    /// after it); a hit is replayed as a stream. A stream that breaks off, ends without
    /// `[DONE]`, carries an error event or is dropped early is not stored. Default `false`.
    pub fn cache_streams(mut self, enabled: bool) -> CacheLayer {
        self.shared.cache_streams = enabled;
        self
    }

    /// The largest body that is stored; larger responses pass through uncached (a stream stops
    /// being buffered once it grows past this). Default [`DEFAULT_MAX_ENTRY_BYTES`] (8 MiB).
    pub fn max_entry_bytes(mut self, max: usize) -> CacheLayer {
        self.shared.max_entry_bytes = max;
        self
    }

    /// Hits, misses and stores so far, of every service built from this layer and its clones.
    pub fn stats(&self) -> CacheStats {
        self.shared.counters.snapshot()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::from_shared(inner, Arc::new(self.shared.clone()))
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("credential", &self.shared.credential)
            .field("cache_streams", &self.shared.cache_streams)
            .field("max_entry_bytes", &self.shared.max_entry_bytes)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
