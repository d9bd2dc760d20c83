//! [`RedisLimiterStats`]: what a [`RedisLimiter`](super::RedisLimiter) has done so far.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one [`RedisLimiter`](super::RedisLimiter) (all its clones) since it connected,
/// from [`RedisLimiter::stats`](super::RedisLimiter::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisLimiterStats {
    /// Round trips that Redis answered.
    pub round_trips: u64,
    /// Round trips that failed (unreachable, timed out, refused).
    pub errors: u64,
    /// Send times reserved in Redis for waiting requests (not counting leases).
    pub reservations: u64,
    /// Permits leased ahead of requests.
    pub leased: u64,
    /// Requests granted from a lease, without a round trip.
    pub lease_hits: u64,
    /// Leased permits given back unused: not taken in time, too small for the next request,
    /// or held when the limiter was dropped.
    pub leases_returned: u64,
    /// Pauses (a 429's `Retry-After`, from any process) this process learnt of and applied
    /// to the requests it had waiting.
    pub pauses: u64,
    /// Whether requests currently go through the local fallback.
    pub fallback_active: bool,
    /// Times the limiter switched to the local fallback.
    pub fallbacks: u64,
    /// Requests granted by the local fallback.
    pub local_grants: u64,
}

/// The live counters behind [`RedisLimiterStats`]: relaxed atomics, written by the dispatcher
/// and the acquire path, read by snapshots.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) round_trips: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) reservations: AtomicU64,
    pub(super) leased: AtomicU64,
    pub(super) lease_hits: AtomicU64,
    pub(super) leases_returned: AtomicU64,
    pub(super) pauses: AtomicU64,
    pub(super) fallback_active: AtomicBool,
    pub(super) fallbacks: AtomicU64,
    pub(super) local_grants: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> RedisLimiterStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisLimiterStats {
            round_trips: get(&self.round_trips),
            errors: get(&self.errors),
            reservations: get(&self.reservations),
            leased: get(&self.leased),
            lease_hits: get(&self.lease_hits),
            leases_returned: get(&self.leases_returned),
            pauses: get(&self.pauses),
            fallback_active: self.fallback_active.load(Ordering::Relaxed),
            fallbacks: get(&self.fallbacks),
            local_grants: get(&self.local_grants),
        }
    }
}
