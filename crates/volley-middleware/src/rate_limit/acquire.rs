//! [`LocalAcquire`]: sleeps until a reserved send time, following pauses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::time::Sleep;
use volley_core::Error;

use super::local::{Ask, PROBE_TIMEOUT, Shared, fit_stretch, past_deadline};
use super::{Cost, Grant};

/// The future of [`LocalLimiter`](super::LocalLimiter)'s
/// [`acquire`](super::RateLimiter::acquire): sleeps until the reserved send time, later if a
/// 429 paused the queue meanwhile. Dropping it before it completes gives the reservation back.
pub struct LocalAcquire(Inner);

impl LocalAcquire {
    pub(super) fn failed(error: Error) -> LocalAcquire {
        LocalAcquire(Inner::Failed(Some(error)))
    }

    /// A request behind the slow start's probe: it reserves once the gate opens.
    pub(super) fn gated(shared: Arc<Shared>, ask: Ask) -> LocalAcquire {
        let gate = shared
            .gate
            .clone()
            .expect("only a limiter with a slow-start gate queues behind it");
        LocalAcquire(Inner::Gated(Gated {
            acquire: Box::pin(gate.acquire_owned()),
            timeout: Box::pin(tokio::time::sleep(PROBE_TIMEOUT)),
            shared,
            ask,
        }))
    }

    /// A reservation of `ask` made at `reserved_at` for a send at `send_at`, nanoseconds
    /// since the limiter's epoch, when pauses had shifted the queue by `shift_seen`;
    /// `(fraction, stretch)`: the send's random part of a pause's spread, and the stretch
    /// its send time holds now.
    pub(super) fn waiting(
        shared: Arc<Shared>,
        ask: Ask,
        [reserved_at, send_at, shift_seen]: [u64; 3],
        (fraction, stretch): (Option<f64>, u64),
    ) -> LocalAcquire {
        LocalAcquire(Inner::Waiting(Waiter {
            fraction,
            stretch,
            shared,
            cost: ask.cost,
            id: ask.id,
            until: ask.until,
            reserved_at,
            send_at,
            shift_seen,
            sleep: None,
            fired: false,
        }))
    }
}

type GateAcquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>;

enum Inner {
    Failed(Option<Error>),
    Gated(Gated),
    Waiting(Waiter),
    Done,
}

/// Waiting for the slow start's gate: nothing is reserved yet, so nothing is given back if
/// it is dropped.
struct Gated {
    acquire: GateAcquire,
    timeout: Pin<Box<Sleep>>,
    shared: Arc<Shared>,
    ask: Ask,
}

struct Waiter {
    shared: Arc<Shared>,
    cost: Cost,
    id: volley_core::RequestId,
    /// The call's deadline, nanoseconds since the limiter's epoch.
    until: Option<u64>,
    reserved_at: u64,
    /// When the request may be sent, nanoseconds since the limiter's epoch.
    send_at: u64,
    /// This send's part of a pause's spread, in `[0, 1)`, drawn once, when first needed
    /// (see `Shared::pause_stretch`).
    fraction: Option<f64>,
    /// The stretch `send_at` holds, that part of the last pause's spread.
    stretch: u64,
    shift_seen: u64,
    /// Boxed only when the request has to wait, so one that goes at once allocates nothing.
    sleep: Option<Pin<Box<Sleep>>>,
    fired: bool,
}

impl Future for LocalAcquire {
    type Output = Result<Grant, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Inner::Gated(gated) = &mut self.0 {
            match gated.acquire.as_mut().poll(cx) {
                // A probe permit given back by a probe that was never sent: this is the probe.
                Poll::Ready(Ok(permit)) => permit.forget(),
                // Closed: an answer came, everyone goes.
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    ready!(gated.timeout.as_mut().poll(cx));
                    // The probe's answer never came back to us: stop waiting for it.
                    if let Some(gate) = &gated.shared.gate {
                        gate.close();
                    }
                }
            }
            let mut next = gated.shared.reserve(gated.ask);
            self.0 = std::mem::replace(&mut next.0, Inner::Done);
        }
        let waiter = match &mut self.0 {
            Inner::Waiting(waiter) => waiter,
            Inner::Failed(error) => {
                return Poll::Ready(Err(error
                    .take()
                    .expect("LocalAcquire polled after completion")));
            }
            Inner::Done | Inner::Gated(_) => panic!("LocalAcquire polled after completion"),
        };
        loop {
            // A pause since the reservation pushes it back by as much as everything else.
            let shift = waiter.shared.shift.load(Ordering::Relaxed);
            if shift != waiter.shift_seen {
                // The same part of the new pause's spread as of the last one's.
                let fraction = *waiter.fraction.get_or_insert_with(crate::jitter::fraction);
                let (stretch, paused_until) = waiter.shared.pause_stretch(fraction);
                let mut base = waiter
                    .send_at
                    .saturating_sub(waiter.stretch)
                    .saturating_add(shift - waiter.shift_seen);
                if stretch > 0 {
                    // Nothing paces the sends: no earlier than the new pause's end (a send
                    // stretched past the last one's, when the new one came after it, moved
                    // by the new wait alone would land inside it).
                    base = base.max(paused_until);
                }
                let left = waiter
                    .until
                    .map(|until| Duration::from_nanos(until.saturating_sub(base)));
                let stretch = fit_stretch(Duration::from_nanos(stretch), fraction, left);
                waiter.stretch = u64::try_from(stretch.as_nanos()).unwrap_or(u64::MAX);
                waiter.send_at = base.saturating_add(waiter.stretch);
                waiter.shift_seen = shift;
                waiter.sleep = None;
                waiter.fired = false;
                if let Some(until) = waiter.until
                    && waiter.send_at >= until
                {
                    // Pushed back past the call's deadline: give the place back at once.
                    let now = waiter.shared.now();
                    let error = past_deadline(
                        waiter.id,
                        waiter.send_at.saturating_sub(now),
                        until.saturating_sub(now),
                    );
                    waiter.shared.give_back(waiter.cost);
                    self.0 = Inner::Done;
                    return Poll::Ready(Err(error));
                }
            }
            if waiter.fired || waiter.send_at <= waiter.reserved_at {
                break;
            }
            let deadline = waiter.shared.instant(waiter.send_at);
            let sleep = waiter
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            ready!(sleep.as_mut().poll(cx));
            waiter.fired = true;
        }
        let waited = if waiter.send_at > waiter.reserved_at {
            Duration::from_nanos(waiter.shared.now().saturating_sub(waiter.reserved_at))
        } else {
            Duration::ZERO
        };
        let grant = Grant::new(waiter.cost, waited);
        self.0 = Inner::Done;
        Poll::Ready(Ok(grant))
    }
}

impl Drop for LocalAcquire {
    fn drop(&mut self) {
        if let Inner::Waiting(waiter) = &self.0 {
            waiter.shared.give_back(waiter.cost);
        }
    }
}

impl fmt::Debug for LocalAcquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            Inner::Failed(_) => "failed",
            Inner::Gated(_) => "gated",
            Inner::Waiting(_) => "waiting",
            Inner::Done => "done",
        };
        f.debug_tuple("LocalAcquire").field(&state).finish()
    }
}
