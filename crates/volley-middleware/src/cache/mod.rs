//! A response cache: identical requests sent with the same credential are answered from a
//! store instead of the provider. Opt-in.
//!
//! [`CacheLayer`] wraps the rest of the stack; placed outermost, a hit costs no rate-limit
//! quota, no concurrency slot and no retry budget, and the inner service is never called.
//!
//! # What is cached
//!
//! - Requests are keyed by [`volley_core::cache_key::CacheKey`]: method, path and query,
//!   canonical JSON body (so key order and white space do not matter) and the
//!   [`CredentialId`](volley_core::cache_key::CredentialId) given to [`CacheLayer::new`],
//!   narrowed by every credential-like header the request carries itself
//!   ([`CREDENTIAL_HEADERS`](volley_core::headers::CREDENTIAL_HEADERS): a tenant's own
//!   `Authorization`, say; and any other header named like a credential or marked sensitive),
//!   so one client serving many tenants keeps one namespace per tenant.
//!   The model, `temperature`, `seed` and every other parameter are in the body and therefore
//!   in the key. The API key itself is never stored: only its hash, mixed into the key. A
//!   request asked again on purpose, for another sample, says which repetition it is
//!   ([`Request::with_repeat`](volley_core::Request::with_repeat)) and gets a key of its own;
//!   `volley run` numbers the repeated lines of its input so.
//! - Only generations are cached: a `POST` to chat or legacy completions, messages,
//!   responses, embeddings or moderations (any prefix, Azure's deployment paths included).
//!   Never a `GET` (a job's status is polled until it changes), another `POST` (creating a
//!   batch, a file or a thread's message, a cancellation: each must reach the provider), nor
//!   a Responses request
//!   run in the background (`"background": true`, whose result is polled for).
//! - Only a `200` whose body is a JSON document is stored. Errors are never stored (they are
//!   not responses), nor a `202` (a job's placeholder) or `206`, nor a proxy's or a
//!   firewall's page (HTML, an empty body) that came with a 200, nor a 2xx body that is an
//!   error object (`{"error": {...}}`, `{"type": "error", ...}`, whatever the order of its
//!   keys).
//! - Identical requests in flight at the same time are not combined: each miss is sent (and
//!   paid for); only a request made after an answer was stored is answered from the cache.
//! - Non-streaming responses are stored by default. Streaming responses only with
//!   [`CacheLayer::cache_streams`]: the stream is passed through while a copy is kept, stored
//!   when it is finished (its last event is `data: [DONE]` or `message_stop`, see
//!   [`Dialect::stream_complete`](volley_core::Dialect::stream_complete)) and has no error
//!   event, and a hit replays it as
//!   a stream, one chunk per event.
//! - A stored entry keeps the status, the `content-type` header, the body and its creation
//!   time; nothing else of the headers (no `set-cookie`, nothing credential-like).
//!
//! # Cache-Control
//!
//! - `Cache-Control: no-store` on a request bypasses the cache: the store is neither read nor
//!   written, and the request counts as neither a hit nor a miss.
//! - `Cache-Control: no-cache` on a request skips the read but stores the fresh response (a
//!   refresh); it counts as a miss.
//! - A response with `Cache-Control: no-store` or `private` is not stored.
//!
//! # A hit
//!
//! A hit answers with the stored bytes, exactly; the response carries the header
//! `x-volley-cache: hit` ([`CACHE_STATUS_HEADER`]), the id of the request it answers, and
//! timings that are all "now". Only hits carry that header: the layer removes a server's own
//! header of that name from every response it passes on. Hits, misses and stores are counted
//! in [`CacheStats`] ([`CacheLayer::stats`]) and in the `metrics` counters
//! `volley_cache_hits_total`, `volley_cache_misses_total` and `volley_cache_stores_total`.
//!
//! # A miss
//!
//! The response of a miss is handed back once the store has taken it: at once for
//! [`MemoryStore`], after the group commit (one fsync, a few milliseconds) for [`DiskStore`],
//! so a request sent right after finds the entry. A stream is stored when it ends. The write
//! runs on a task of its own: a caller that gives up meanwhile (a deadline, a dropped future)
//! does not stop it, so the answer it paid for is there for its next try.
//!
//! # Stores
//!
//! [`MemoryStore`] (moka, bounded by bytes and by age) and [`DiskStore`] (redb, one file that
//! survives restarts, I/O on the blocking pool) implement [`CacheStore`], and so does
//! `RedisStore` (feature `redis`): one cache shared by every process and machine that uses the
//! same Redis, entries compressed with lz4, authenticated with a MAC keyed from the credential
//! and expired by Redis. Your own store can implement it too. A store that fails never fails
//! a request: a failed read is a miss, a failed write leaves the response unstored, and both
//! are logged. An entry that fails authentication ([`RejectedEntry`]) is a miss too, counted
//! in [`CacheStats::rejected`] and `volley_cache_rejected_total`.
//!
//! # Examples
//!
//! Defaults: an in-memory cache of non-streaming responses.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use volley_core::cache_key::CredentialId;
//! use volley_core::{ApiKey, Error, Request, Response};
//! use volley_middleware::cache::{CacheLayer, MemoryStore};
//!
//! # fn wrap(transport: tower::util::BoxCloneSyncService<Request, Response, Error>) {
//! let key = ApiKey::new("sk-...");
//! let store = MemoryStore::new(64 << 20, Duration::from_secs(3600));
//! let cache = CacheLayer::new(store, CredentialId::from_api_key(&key));
//! let service = ServiceBuilder::new().layer(cache.clone()).service(transport);
//! println!("{:?}", cache.stats());
//! # let _ = service;
//! # }
//! ```
//!
//! Customised: a disk cache that also keeps streams, shared by two layers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use volley_core::cache_key::CredentialId;
//! use volley_middleware::cache::{CacheLayer, DiskStore};
//!
//! let store = Arc::new(DiskStore::open(".volley-cache", Duration::from_secs(86_400))?);
//! let layer = CacheLayer::new(store.clone(), CredentialId::anonymous())
//!     .cache_streams(true)
//!     .max_entry_bytes(1 << 20);
//! # let _ = layer;
//! # Ok::<(), volley_core::BoxError>(())
//! ```

mod codec;
mod disk;

/// The longest time to live a store honours: a longer (or `Duration::MAX`) TTL is treated as
/// a century, which keeps expiry arithmetic from overflowing.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

mod future;
mod layer;
mod memory;
mod record;
#[cfg(feature = "redis")]
mod redis;
mod stats;
mod store;

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use volley_core::{Error, Request, Response};

pub use disk::DiskStore;
pub use future::ResponseFuture;
pub use layer::{CacheLayer, DEFAULT_MAX_ENTRY_BYTES};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_COMPRESS_ABOVE, DEFAULT_MAX_VALUE_BYTES, DEFAULT_PREFIX, RedisStore};
pub use stats::CacheStats;
pub use store::{CACHE_STATUS_HEADER, CacheStore, CachedResponse, RejectedEntry, StoreFuture};

use layer::Shared;

/// Answers from the store when it can, and stores what the inner service answers. Built by
/// [`CacheLayer`].
///
/// Always ready: readiness of the inner service is awaited inside the future, and only on a
/// miss, so a hit never reserves anything below (a concurrency permit, say). The inner service
/// is cloned per call, as `tower`'s retry does.
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Cache<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Cache<S> {
        Cache { inner, shared }
    }

    /// Hits, misses and stores so far (shared with the layer this came from).
    pub fn stats(&self) -> CacheStats {
        self.shared.counters.snapshot()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for Cache<S>
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> ResponseFuture {
        Box::pin(future::respond(
            self.shared.clone(),
            self.inner.clone(),
            request,
        ))
    }
}

impl<S> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
