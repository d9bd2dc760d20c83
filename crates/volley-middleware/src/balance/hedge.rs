//! Hedging (opt-in): when an attempt has no response head after a delay, the same request is
//! sent to another endpoint and the first answer wins; a budget caps the extra requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Hedged requests: after [`delay`](Hedging::after) without a response head, a copy goes to
/// another endpoint, the first answer wins and the other attempt is dropped (cancelled).
///
/// **A hedged request may be billed twice**: the provider may finish (and charge for) the
/// attempt that lost, since cancelling it refunds nothing. Turn hedging on only for clients
/// whose requests are safe and cheap to duplicate. Each copy takes a slot under the
/// concurrency ceiling and pays its endpoint's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Hedging {
    pub(crate) delay: Duration,
    pub(crate) budget: f64,
}

impl Hedging {
    /// Hedge a request that has no response head after `delay` (a little above the usual
    /// latency: the 95th percentile, say).
    pub fn after(delay: Duration) -> Hedging {
        Hedging {
            delay,
            budget: 0.05,
        }
    }

    /// The most extra requests, as a share of all requests (plus 10 to start with).
    ///
    /// Default: 0.05 (5 %).
    pub fn budget(mut self, share: f64) -> Hedging {
        self.budget = share.clamp(0.0, 1.0);
        self
    }
}

/// Counts requests and hedges, and decides whether one more hedge fits the budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    requests: AtomicU64,
    hedges: AtomicU64,
}

/// Hedges allowed before the share applies, so that a short run can hedge at all.
const INITIAL: f64 = 10.0;

impl Budget {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one hedge from the budget, if it allows one.
    pub(crate) fn try_hedge(&self, share: f64) -> bool {
        let requests = self.requests.load(Ordering::Relaxed) as f64;
        let allowed = requests * share + INITIAL;
        let taken = self.hedges.fetch_add(1, Ordering::Relaxed) as f64;
        if taken + 1.0 <= allowed {
            return true;
        }
        self.hedges.fetch_sub(1, Ordering::Relaxed);
        false
    }

    pub(crate) fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }
}
