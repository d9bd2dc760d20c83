//! [`MemoryStore`]: a size- and time-bounded in-process cache (moka).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use volley_core::cache_key::CacheKey;

use super::store::{CacheStore, CachedResponse, StoreFuture};

/// Responses kept in process memory, bounded by their total size in bytes and by age.
///
/// Built on `moka::future::Cache` (TinyLFU admission, LRU eviction). Moka runs no background
/// thread: evictions happen during cache calls, or at once with
/// [`run_pending_tasks`](MemoryStore::run_pending_tasks). Each entry also carries its expiry
/// as a `tokio::time::Instant`, checked on every read, so a paused test clock expires entries
/// too. Cheap to clone; clones share the entries.
///
/// ```
/// use std::time::Duration;
/// use volley_middleware::cache::MemoryStore;
///
/// // 256 MiB of responses, each kept for an hour.
/// let store = MemoryStore::new(256 << 20, Duration::from_secs(3600));
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: moka::future::Cache<CacheKey, Arc<Entry>>,
    ttl: Duration,
}

struct Entry {
    value: CachedResponse,
    expires: Instant,
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of responses (bodies plus a small overhead per
    /// entry), each for at most `ttl`. An entry larger than `max_bytes` is not kept.
    pub fn new(max_bytes: u64, ttl: Duration) -> MemoryStore {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry>| {
                u32::try_from(entry.value.weight()).unwrap_or(u32::MAX)
            })
            // Moka refuses a time to live above 1 000 years.
            .time_to_live(ttl.min(super::MAX_TTL))
            .build();
        MemoryStore { cache, ttl }
    }

    /// Applies pending evictions and expirations now (moka otherwise does it during later
    /// calls).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// How many entries are held (as of the last pending-task run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The total weight of the entries held, in bytes (as of the last pending-task run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, key: CacheKey) -> StoreFuture<'_, Option<CachedResponse>> {
        Box::pin(async move {
            let Some(entry) = self.cache.get(&key).await else {
                return Ok(None);
            };
            if Instant::now() >= entry.expires {
                self.cache.invalidate(&key).await;
                return Ok(None);
            }
            Ok(Some(entry.value.clone()))
        })
    }

    fn put(&self, key: CacheKey, mut value: CachedResponse) -> StoreFuture<'_, ()> {
        // The body may be a slice of the connection's read buffer (a small answer read in one
        // go): kept as it is, it would keep that whole buffer alive, kilobytes the size bound
        // does not count. The entry keeps a copy of its own.
        value.body = bytes::Bytes::copy_from_slice(&value.body);
        Box::pin(async move {
            let now = Instant::now();
            let expires = now.checked_add(self.ttl).unwrap_or(now + super::MAX_TTL);
            self.cache
                .insert(key, Arc::new(Entry { value, expires }))
                .await;
            Ok(())
        })
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use volley_core::Request;
    use volley_core::cache_key::CredentialId;

    /// A body that is a slice of a larger buffer (hyper's read buffer, for a small answer
    /// read in one go) is stored as a copy of its own, so the entry does not keep the whole
    /// buffer alive beyond what the size bound counts.
    #[tokio::test]
    async fn an_entry_keeps_a_copy_not_a_slice_of_a_larger_buffer() {
        let store = MemoryStore::new(1 << 20, Duration::from_secs(60));
        let buffer = bytes::Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(0..16);
        let request = Request::post("/chat/completions", "{}").unwrap();
        let key = CacheKey::for_request(&request, &CredentialId::anonymous());
        let entry = CachedResponse::new(StatusCode::OK, &HeaderMap::new(), body.clone(), false);
        store.put(key, entry).await.unwrap();
        let stored = store.get(key).await.unwrap().unwrap();
        assert_eq!(stored.body, body);
        assert_ne!(stored.body.as_ptr(), body.as_ptr(), "a copy, not the slice");
    }
}
