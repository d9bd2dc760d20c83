//! [`LocalLimiter`]: the in-process limiter, a FIFO GCRA on tokio's clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use volley_core::{Error, ErrorKind, RequestId};

use super::gcra::Gcra;
use super::{Cost, Grant, Limits, LocalAcquire, Observation, RateLimiter};

/// Requests and tokens per minute in this process: a GCRA per limit, with reservations served
/// in the order they were made. See the [module docs](super) for the semantics.
///
/// Cheap to clone; clones share the budget. Build one per provider key (or per model, if the
/// provider limits per model) and share it between every stack that uses that key.
///
/// Must be used within a tokio runtime (it sleeps on tokio's timer, so paused time drives it).
#[derive(Clone)]
pub struct LocalLimiter {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    limits: Limits,
    /// The largest request and token costs a request may have: the per-minute limits.
    max_requests: Option<u64>,
    max_tokens: Option<u64>,
    /// Time zero of every nanosecond count below.
    epoch: Instant,
    state: Mutex<State>,
    /// Nanoseconds every pending reservation has been pushed back by pauses, ever. Waiters
    /// compare it with the value they saw when they reserved. Only grows; written under the
    /// state lock, read without it.
    pub(super) shift: AtomicU64,
}

struct State {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    /// No send before this time (a 429's `Retry-After`).
    paused_until: u64,
}

impl LocalLimiter {
    /// A limiter enforcing `limits`.
    ///
    /// # Errors
    /// `ErrorKind::Config` when a limit or burst is 0, a burst is above its limit or set
    /// without it, or the headroom is outside `[0, 0.5]`.
    pub fn new(limits: Limits) -> Result<LocalLimiter, Error> {
        let resolved = limits
            .resolve()
            .map_err(|e| Error::new(ErrorKind::Config, format!("rate limits: {e}")))?;
        let jitter = u64::try_from(limits.jitter_margin.as_nanos()).unwrap_or(u64::MAX);
        let gcra = |dim: Option<(u64, u64)>| {
            dim.map(|(limit, burst)| Gcra::new(limit, burst, limits.headroom, jitter))
        };
        let state = State {
            requests: gcra(resolved.requests),
            tokens: gcra(resolved.tokens),
            paused_until: 0,
        };
        Ok(LocalLimiter {
            shared: Arc::new(Shared {
                max_requests: resolved.requests.map(|(limit, _)| limit),
                max_tokens: resolved.tokens.map(|(limit, _)| limit),
                limits,
                epoch: Instant::now(),
                state: Mutex::new(state),
                shift: AtomicU64::new(0),
            }),
        })
    }

    /// The limits this limiter enforces.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }
}

impl RateLimiter for LocalLimiter {
    type Acquire = LocalAcquire;

    fn acquire(&self, id: RequestId, cost: Cost) -> LocalAcquire {
        let shared = &self.shared;
        if let Some(error) = too_large(id, cost, shared) {
            metrics::counter!("volley_rate_limit_too_large_total").increment(1);
            return LocalAcquire::failed(error);
        }
        let now = shared.now();
        let mut state = shared.lock();
        let mut at = now.max(state.paused_until);
        if let Some(g) = &state.requests {
            at = at.max(g.earliest(now, u64::from(cost.requests)));
        }
        if let Some(g) = &state.tokens {
            at = at.max(g.earliest(now, cost.tokens));
        }
        // Every limit records the send at the same instant, the latest any of them allows: a
        // request held back by one limit must not leave another thinking it went earlier.
        if let Some(g) = &mut state.requests {
            g.commit(at, u64::from(cost.requests));
        }
        if let Some(g) = &mut state.tokens {
            g.commit(at, cost.tokens);
        }
        let shift_seen = shared.shift.load(Ordering::Relaxed);
        drop(state);
        LocalAcquire::waiting(shared.clone(), cost, now, at, shift_seen)
    }

    fn settle(&self, grant: Grant, actual_tokens: u64) {
        let estimated = grant.cost().tokens;
        // A peer's number: a broken or hostile server may report any usage. No request can use
        // more than a whole minute's budget (larger ones are refused up front), so more is
        // charged as a minute's worth instead of wedging the bucket for years.
        let actual_tokens = match self.shared.max_tokens {
            Some(limit) => actual_tokens.min(limit),
            None => actual_tokens,
        };
        if actual_tokens == estimated
            || (actual_tokens < estimated && !self.shared.limits.refund_unused)
        {
            return;
        }
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if let Some(g) = &mut state.tokens {
            if actual_tokens > estimated {
                g.charge(now, actual_tokens - estimated);
            } else {
                g.refund(now, estimated - actual_tokens);
            }
        }
    }

    fn release(&self, grant: Grant) {
        self.shared.give_back(grant.cost());
    }

    fn observe(&self, observation: &Observation) {
        if !observation.is_relevant() {
            return;
        }
        let empty = observation.empty_quotas();
        let shared = &self.shared;
        let now = shared.now();
        let mut guard = shared.lock();
        let state = &mut *guard;
        if let Some(g) = &mut state.requests
            && empty.requests
        {
            g.empty(now);
        }
        if let Some(g) = &mut state.tokens
            && empty.tokens
        {
            g.empty(now);
        }
        if let Some(wait) = observation.retry_after {
            // Capped: one response asking for a day must not freeze every later request.
            let wait = wait.min(shared.limits.max_pause);
            let wait = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            let until = now.saturating_add(wait);
            let from = now.max(state.paused_until);
            if until > from {
                let by = until - from;
                state.paused_until = until;
                for g in [&mut state.requests, &mut state.tokens]
                    .into_iter()
                    .flatten()
                {
                    g.delay(now, by);
                }
                // Under the lock, so a reservation made after this sees the new TAT and the
                // new shift together.
                shared.shift.fetch_add(by, Ordering::Relaxed);
                metrics::counter!("volley_rate_limit_pauses_total").increment(1);
            }
        }
    }
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn now(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few numbers updated in single statements: a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn give_back(&self, cost: Cost) {
        let now = self.now();
        let mut state = self.lock();
        if let Some(g) = &mut state.requests {
            g.refund(now, u64::from(cost.requests));
        }
        if let Some(g) = &mut state.tokens {
            g.refund(now, cost.tokens);
        }
    }
}

/// The error for a cost above a whole minute's budget, which no wait can satisfy.
fn too_large(id: RequestId, cost: Cost, shared: &Shared) -> Option<Error> {
    too_large_for(id, cost, shared.max_requests, shared.max_tokens)
}

/// The error for a cost above the per-minute limits given, which no wait can satisfy; the
/// shared limiter uses the same words.
pub(super) fn too_large_for(
    id: RequestId,
    cost: Cost,
    max_requests: Option<u64>,
    max_tokens: Option<u64>,
) -> Option<Error> {
    let check = |needed: u64, limit: Option<u64>, what: &str| {
        let limit = limit?;
        (needed > limit).then(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "request {id} needs an estimated {} {what}, more than the whole \
                     {what}-per-minute budget of {}",
                    group_digits(needed),
                    group_digits(limit)
                ),
            )
        })
    };
    check(cost.tokens, max_tokens, "tokens")
        .or_else(|| check(u64::from(cost.requests), max_requests, "requests"))
}

/// `150000` as `150 000`, for messages people read.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_in_threes() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1 000");
        assert_eq!(group_digits(150_000), "150 000");
        assert_eq!(group_digits(1_234_567), "1 234 567");
    }
}
