//! [`RedisAcquire`]: waits for a send time from Redis (or the local fallback), then sleeps
//! until it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use volley_core::{Error, ErrorKind, RequestId};

use super::super::local::{MAX_PAUSE_SPREAD, fit_stretch, past_deadline};
use super::super::{Cost, Grant, LocalAcquire, LocalLimiter, RateLimiter};
use super::shared::{Assignment, Entry, Shared};

/// The future of [`RedisLimiter`](super::RedisLimiter)'s
/// [`acquire`](super::super::RateLimiter::acquire): waits for the dispatcher to reserve a send
/// time in Redis (or takes a leased one), then sleeps until it, later if a 429 paused every
/// process meanwhile. While Redis is down it waits (failing closed) or asks the local fallback.
/// Started by [`acquire_before`](super::super::RateLimiter::acquire_before), it fails, unsent,
/// when the send time it is given is at or past the caller's deadline.
/// Dropping it before it completes gives the reservation back.
pub struct RedisAcquire(Inner);

enum Inner {
    Failed(Option<Error>),
    Ready(Option<Grant>),
    Queued {
        shared: Arc<Shared>,
        id: RequestId,
        cost: Cost,
        started: Instant,
        until: Option<Instant>,
        rx: oneshot::Receiver<Assignment>,
    },
    Sleeping(Waiter),
    Local {
        acquire: LocalAcquire,
        started: Instant,
    },
    Done,
}

struct Waiter {
    shared: Arc<Shared>,
    id: RequestId,
    cost: Cost,
    started: Instant,
    /// When the caller stops waiting ([`RateLimiter::acquire_before`]).
    until: Option<Instant>,
    /// When the request may be sent: `base`, stretched when nothing paces the sends.
    deadline: Instant,
    /// The send time Redis gave, pushed back by pauses learnt since.
    base: Instant,
    /// When no bucket paces the sends: a random part, drawn once, of the spread of a pause's
    /// end that this request takes ([`Waiter::stretch`]).
    fraction: Option<f64>,
    shift_seen: u64,
    /// Boxed only when the request has to wait.
    sleep: Option<Pin<Box<Sleep>>>,
    fired: bool,
}

impl RedisAcquire {
    /// Starts acquiring `cost` for request `id`, whose caller stops waiting at `until`.
    pub(super) fn start(
        shared: &Arc<Shared>,
        id: RequestId,
        cost: Cost,
        until: Option<std::time::Instant>,
    ) -> RedisAcquire {
        let until = until.map(Instant::from_std);
        if let Some(error) = shared.config.too_large(id, cost) {
            metrics::counter!("volley_rate_limit_too_large_total").increment(1);
            return RedisAcquire(Inner::Failed(Some(error)));
        }
        if shared.config.dims().iter().all(Option::is_none) && !shared.config.learns() {
            return RedisAcquire(Inner::Ready(Some(Grant::new(cost, Duration::ZERO))));
        }
        let started = Instant::now();
        RedisAcquire(match shared.enter(cost) {
            Entry::Reserved {
                deadline,
                shift_seen,
            } => Inner::Sleeping(Waiter::new(
                shared.clone(),
                (id, cost),
                started,
                until,
                deadline,
                shift_seen,
            )),
            Entry::Queued(rx) => Inner::Queued {
                shared: shared.clone(),
                id,
                cost,
                started,
                until,
                rx,
            },
            Entry::Fallback(local) => local_acquire(&local, shared, id, cost, started, until),
        })
    }
}

/// The local fallback's acquire, for a cost cut to the fallback's own limits: a request within
/// the shared limits but above its share still goes (as the whole of the share), never fails.
fn local_acquire(
    local: &LocalLimiter,
    shared: &Shared,
    id: RequestId,
    cost: Cost,
    started: Instant,
    until: Option<Instant>,
) -> Inner {
    let limits = local.limits();
    let cap = |n: u64, limit: Option<u64>| limit.map_or(n, |limit| n.min(limit));
    let local_cost = Cost {
        requests: u32::try_from(cap(u64::from(cost.requests), limits.requests_per_minute()))
            .unwrap_or(u32::MAX),
        tokens: cap(cost.tokens, limits.tokens_per_minute()),
        input_tokens: cap(cost.input_tokens, limits.input_tokens_per_minute()),
        output_tokens: cap(cost.output_tokens, limits.output_tokens_per_minute()),
    };
    shared.counters.local_grants.fetch_add(1, Ordering::Relaxed);
    Inner::Local {
        acquire: local.acquire_before(id, local_cost, until.map(Instant::into_std)),
        started,
    }
}

impl Waiter {
    fn new(
        shared: Arc<Shared>,
        (id, cost): (RequestId, Cost),
        started: Instant,
        until: Option<Instant>,
        deadline: Instant,
        shift_seen: u64,
    ) -> Waiter {
        let now = Instant::now();
        // When held by a pause (nothing else delays a send no bucket paces), now or by one
        // learnt while it waits, it takes this part of the pause's spread.
        let fraction = shared.unpaced().then(crate::jitter::fraction);
        let mut waiter = Waiter {
            shared,
            id,
            cost,
            started,
            until,
            deadline,
            base: deadline,
            fraction,
            shift_seen,
            sleep: None,
            fired: false,
        };
        waiter.stretch(now);
        waiter
    }

    /// Puts the send time `fraction` of the spread of the wait left after `base`: a fifth of
    /// that wait, at most [`MAX_PAUSE_SPREAD`], as the in-process limiter spreads a pause's
    /// end. The sends a pause held, here and in every process that shares it, then go over a
    /// while after its end instead of at one instant. Never before `base`, the pause's end,
    /// and with a deadline, within the first half of the time the caller has left
    /// ([`fit_stretch`]).
    fn stretch(&mut self, now: Instant) {
        if let Some(fraction) = self.fraction {
            let spread = (self.base.saturating_duration_since(now) / 5).min(MAX_PAUSE_SPREAD);
            let left = self
                .until
                .map(|until| until.saturating_duration_since(self.base));
            self.deadline = self.base + fit_stretch(spread.mul_f64(fraction), fraction, left);
        }
    }

    /// The grant once the send time comes; an error, unsent, when the send time is at or past
    /// the caller's deadline: seen when the reservation comes, or, when a pause learnt since
    /// pushed it back, at the time it was to be sent (the caller gives the reservation back).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Grant, Error>> {
        loop {
            // A pause learnt since the reservation pushes it back by as much as everything
            // else.
            let shift = self.shared.shift.load(Ordering::Relaxed);
            let now = Instant::now();
            if shift != self.shift_seen {
                let by = Duration::from_nanos(shift.wrapping_sub(self.shift_seen));
                self.base += by;
                self.deadline += by;
                self.stretch(now);
                self.shift_seen = shift;
                self.sleep = None;
                self.fired = false;
            }
            if self.fired || self.deadline <= now {
                break;
            }
            if let Some(until) = self.until
                && self.deadline >= until
            {
                let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                return Poll::Ready(Err(past_deadline(
                    self.id,
                    nanos(self.deadline - now),
                    nanos(until.saturating_duration_since(now)),
                )));
            }
            let deadline = self.deadline;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            ready!(sleep.as_mut().poll(cx));
            self.fired = true;
        }
        let waited = Instant::now().saturating_duration_since(self.started);
        Poll::Ready(Ok(Grant::new(self.cost, waited)))
    }
}

impl Future for RedisAcquire {
    type Output = Result<Grant, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.0 {
                Inner::Failed(error) => {
                    let error = error.take().expect("RedisAcquire polled after completion");
                    self.0 = Inner::Done;
                    return Poll::Ready(Err(error));
                }
                Inner::Ready(grant) => {
                    let grant = grant.take().expect("RedisAcquire polled after completion");
                    self.0 = Inner::Done;
                    return Poll::Ready(Ok(grant));
                }
                Inner::Queued {
                    shared,
                    id,
                    cost,
                    started,
                    until,
                    rx,
                } => {
                    let next = match ready!(Pin::new(rx).poll(cx)) {
                        Ok(Assignment::Reserved {
                            deadline,
                            shift_seen,
                            cost: reserved,
                        }) => Inner::Sleeping(Waiter::new(
                            shared.clone(),
                            (*id, reserved),
                            *started,
                            *until,
                            deadline,
                            shift_seen,
                        )),
                        Ok(Assignment::Fallback(local)) => {
                            local_acquire(&local, shared, *id, *cost, *started, *until)
                        }
                        Ok(Assignment::Failed(error)) => Inner::Failed(Some(error)),
                        // The dispatcher is gone: only when its runtime shut down.
                        Err(_) => Inner::Failed(Some(Error::new(
                            ErrorKind::Cancelled,
                            "the shared rate limiter's background task has stopped (its runtime \
                             shut down)",
                        ))),
                    };
                    self.0 = next;
                }
                Inner::Sleeping(waiter) => {
                    let result = ready!(waiter.poll(cx));
                    if result.is_err() {
                        // Not sent: the reservation goes back, as when the caller drops it.
                        waiter.shared.give_back(waiter.cost);
                    }
                    self.0 = Inner::Done;
                    return Poll::Ready(result);
                }
                Inner::Local { acquire, started } => {
                    let result = ready!(Pin::new(acquire).poll(cx));
                    let started = *started;
                    self.0 = Inner::Done;
                    // The grant carries what the fallback charged (the cost cut to its share),
                    // so a settlement or release corrects that charge, not the uncut one.
                    return Poll::Ready(result.map(|local_grant| {
                        let waited = Instant::now().saturating_duration_since(started);
                        Grant::new(local_grant.cost(), waited).marked_fallback()
                    }));
                }
                Inner::Done => panic!("RedisAcquire polled after completion"),
            }
        }
    }
}

impl Drop for RedisAcquire {
    fn drop(&mut self) {
        match &mut self.0 {
            Inner::Sleeping(waiter) => waiter.shared.give_back(waiter.cost),
            Inner::Queued { shared, rx, .. } => {
                // Reserved but not yet seen: give it back. Not yet reserved: the dispatcher
                // sees the closed channel and skips it.
                if let Ok(Assignment::Reserved { cost, .. }) = rx.try_recv() {
                    shared.give_back(cost);
                }
            }
            // The local fallback's future gives its own reservation back.
            _ => {}
        }
    }
}

impl fmt::Debug for RedisAcquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            Inner::Failed(_) => "failed",
            Inner::Ready(_) => "ready",
            Inner::Queued { .. } => "queued",
            Inner::Sleeping(_) => "waiting",
            Inner::Local { .. } => "local",
            Inner::Done => "done",
        };
        f.debug_tuple("RedisAcquire").field(&state).finish()
    }
}

/// Whether the local fallback granted `grant`: its settlement goes back to the fallback.
pub(super) fn is_local(grant: &Grant) -> bool {
    grant.is_fallback()
}
