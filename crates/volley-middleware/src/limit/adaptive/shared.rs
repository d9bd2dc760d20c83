//! The state every service of one [`AdaptiveConcurrencyLimitLayer`](super::AdaptiveConcurrencyLimitLayer)
//! shares: the semaphore whose size is the limit, the control law, and the permit that gives
//! a slot back (or takes it out of circulation after a cut).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::controller::{Controller, Outcome, Settings};

/// The gauge of the limit in force.
pub(super) const LIMIT_GAUGE: &str = "volley_concurrency_limit";

pub(super) struct Shared {
    pub(super) semaphore: Arc<Semaphore>,
    controller: Mutex<Controller>,
    /// Permits to take out of circulation as they come back: a cut larger than the permits
    /// free at the time.
    debt: AtomicUsize,
    pub(super) in_flight: AtomicUsize,
    pub(super) limit: AtomicUsize,
    pub(super) max: usize,
    gauge: Gauge,
}

impl Shared {
    pub(super) fn new(settings: Settings) -> Shared {
        let controller = Controller::new(settings, Instant::now());
        let limit = controller.limit();
        let gauge = metrics::gauge!(LIMIT_GAUGE);
        gauge.set(limit as f64);
        Shared {
            semaphore: Arc::new(Semaphore::new(limit)),
            controller: Mutex::new(controller),
            debt: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            max: settings.max,
            gauge,
        }
    }

    /// Learns from a finished request sent at `sent`.
    pub(super) fn record(&self, sent: Instant, outcome: Outcome) {
        if outcome == Outcome::Ignored {
            return;
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        // A few numbers updated in single statements: a poisoned lock is still good.
        let mut controller = self
            .controller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(limit) = controller.record(sent, outcome, in_flight, Instant::now()) {
            // Under the lock, so that resizes apply in the order they were decided.
            self.resize(limit);
        }
    }

    fn resize(&self, new: usize) {
        let old = self.limit.swap(new, Ordering::Relaxed);
        if new > old {
            let mut add = new - old;
            // Cancel debt first: permits not yet taken out need not be.
            let _ = self
                .debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |debt| {
                    let paid = debt.min(add);
                    add = new - old - paid;
                    Some(debt - paid)
                });
            if add > 0 {
                self.semaphore.add_permits(add);
            }
        } else if new < old {
            let cut = old - new;
            let forgotten = self.semaphore.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::Relaxed);
        }
        self.gauge.set(new as f64);
        tracing::debug!(from = old, to = new, "adaptive concurrency limit");
    }

    /// Takes one permit of debt, if there is any.
    fn pay_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .is_ok()
    }
}

/// One slot, held from `call` until the response (or its streaming body) is finished.
pub(super) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
}

impl Permit {
    pub(super) fn new(permit: OwnedSemaphorePermit, shared: Arc<Shared>) -> Permit {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Permit {
            permit: Some(permit),
            shared,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(permit) = self.permit.take()
            && self.shared.pay_debt()
        {
            // The limit was cut below the slots in use: this one leaves circulation.
            permit.forget();
        }
    }
}
