//! The dispatcher: the one task per limiter that talks to Redis. Each turn it looks at the
//! state ([`Shared::plan`]): the queue, the pending report, the leases, whether a pause check
//! is due or Redis is failing; then makes at most one round trip and applies its outcome
//! ([`Shared::finish`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use volley_core::{Error, ErrorKind};

use super::super::Cost;
use super::config::FailureMode;
use super::shared::{Assignment, FLUSH_DELAY, Pending, Queued, Shared, Slot, State};
use super::stats::Counters;
use super::store::{Call, DIMS, MAX_WAIT_US, Reply, units};

/// Most reservations one round trip makes.
const BATCH_MAX: usize = 512;
/// While requests wait on their deadlines, Redis is asked at least this often whether another
/// process started a pause: one small call per process every 100 ms, only while it has
/// requests waiting and nothing else to send.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often the local fallback asks whether Redis is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Backoff between failed round trips while failing closed: doubling from the base to the cap.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(2);
/// At most one warning about an unreachable Redis this often.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// One round trip in preparation.
pub(super) struct Trip {
    call: Call,
    exact: Vec<Queued>,
    lease: Cost,
    pending: Pending,
}

pub(super) enum Plan {
    /// Boxed: a trip carries four buckets' worth of report, and one allocation per round
    /// trip is nothing next to the round trip.
    Trip(Box<Trip>),
    Wait(Option<Instant>),
    Exit,
}

impl Shared {
    /// Decides what the dispatcher does next.
    pub(super) fn plan(&self) -> Plan {
        let now = Instant::now();
        let closed = self.closed.load(Ordering::Relaxed);
        let mut guard = self.lock();
        let st = &mut *guard;
        self.expire(st, now);
        if closed {
            self.return_pool(st);
        }
        let gate_at = self.gate_deadline(st, now);
        if st.fallback {
            // Everything queued goes to the local limiter, in order.
            while let Some(queued) = st.queue.pop_front() {
                if let Some(local) = &self.local {
                    st.sent_locally = true;
                    let _ = queued.tx.send(Assignment::Fallback(local.clone()));
                }
            }
            if closed {
                return Plan::Exit;
            }
            if now < st.probe_at {
                return Plan::Wait(Some(st.probe_at));
            }
            let empty = st.sent_locally;
            let mut trip = self.trip(st, now, 0, 0);
            // What the processes sent locally during the outage is not in Redis: start the
            // shared buckets empty rather than full.
            for flag in &mut trip.call.empty {
                *flag |= empty;
            }
            return Plan::Trip(Box::new(trip));
        }
        self.serve_from_pool(st, now);
        if let Some(at) = st.retry_at {
            if now < at {
                return Plan::Wait(Some(at));
            }
            st.retry_at = None;
            if closed && st.queue.is_empty() {
                // Redis is failing and nobody waits: the last report is lost.
                return Plan::Exit;
            }
        }
        let queued = st.queue.len().min(BATCH_MAX);
        let lease = self.config.lease as usize;
        let speculative = if lease > 1 && !closed && (queued > 0 || st.top_up) {
            lease.saturating_sub(queued + st.pool.len())
        } else {
            0
        };
        st.top_up = false;
        let flush_at = st.pending.since.map(|since| {
            if st.pending.urgent || closed {
                since
            } else {
                since + FLUSH_DELAY
            }
        });
        let sync_at = (st.horizon > now).then(|| st.last_heard + SYNC_INTERVAL);
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if queued > 0 || speculative > 0 || due(flush_at) || due(sync_at) {
            return Plan::Trip(Box::new(self.trip(st, now, queued, speculative)));
        }
        if closed && st.queue.is_empty() {
            return Plan::Exit;
        }
        // A permit is usable up to and including its expiry: look again just after it.
        let expiry = st
            .pool
            .front()
            .map(|slot| slot.expires + Duration::from_millis(1));
        let wake = [expiry, flush_at, sync_at, gate_at]
            .into_iter()
            .flatten()
            .min();
        Plan::Wait(wake)
    }

    /// A round trip with the pending report, `queued` requests from the queue and
    /// `speculative` leased permits.
    fn trip(&self, st: &mut State, now: Instant, queued: usize, speculative: usize) -> Trip {
        let exact: Vec<Queued> = st
            .queue
            .drain(..queued)
            .filter(|q| !q.tx.is_closed())
            .collect();
        // A leased permit carries the largest of the recent costs in each limited bucket.
        let dims = self.dims_in_force(st);
        let largest = |limited: bool, of: fn(&Cost) -> u64| {
            if limited {
                st.recent.iter().map(of).max().unwrap_or(0)
            } else {
                0
            }
        };
        let lease = Cost {
            requests: 1,
            tokens: largest(dims[1].is_some(), |c| c.tokens),
            input_tokens: largest(dims[2].is_some(), |c| c.input_tokens),
            output_tokens: largest(dims[3].is_some(), |c| c.output_tokens),
        };
        let reserve = exact
            .iter()
            .map(|q| q.cost)
            .chain(std::iter::repeat_n(lease, speculative))
            .collect();
        let pending = std::mem::take(&mut st.pending);
        let micros = |at: Instant| {
            u64::try_from(at.saturating_duration_since(now).as_micros()).unwrap_or(u64::MAX)
        };
        let call = Call {
            epoch_seen: st.epoch,
            floors: st.floors.map(micros),
            give_back: pending.give_back,
            charge: pending.charge,
            empty: pending.empty,
            pause_us: pending.pause_until.map_or(0, micros),
            learned: std::array::from_fn(|i| match pending.learned[i] {
                0 => st.learning.learned[i],
                fresh => fresh,
            }),
            fresh: pending.learned.map(|l| l > 0),
            reserve,
        };
        Trip {
            call,
            exact,
            lease,
            pending,
        }
    }

    /// Applies the outcome of a round trip.
    pub(super) fn finish(&self, trip: Trip, result: Result<Reply, Error>) {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => return self.failed(st, trip, &error, now),
        };
        Counters::add(&self.counters.round_trips, 1);
        if st.fallback {
            st.fallback = false;
            st.sent_locally = false;
            self.counters
                .fallback_active
                .store(false, Ordering::Relaxed);
            tracing::info!(
                server = %self.config.server,
                "shared rate limiter: Redis answers again; back to the shared limits"
            );
        } else if st.failures > 0 {
            tracing::info!(
                server = %self.config.server,
                "shared rate limiter: Redis answers again; waiting requests resume"
            );
        }
        st.failures = 0;
        st.refused_since = None;
        st.last_heard = now;
        self.learn_shift(st, reply.epoch, reply.shift);
        self.learned_from(st, reply.learned);
        // What the script charged: the limits in force in Redis when it reserved.
        let charged = self.charged_buckets(&reply.learned);
        let shift_seen = self.shift.load(Ordering::Relaxed);
        let mut waits = reply.waits.into_iter().map(Duration::from_micros);
        Counters::add(&self.counters.reservations, trip.exact.len() as u64);
        for queued in trip.exact {
            // `parse` checked there is one wait per reservation.
            let deadline = now + waits.next().unwrap_or_default();
            self.note_reservation(st, deadline, queued.cost);
            let assignment = Assignment::Reserved {
                deadline,
                shift_seen,
                cost: queued.cost.reserved_in(charged),
            };
            if let Err(Assignment::Reserved { cost, .. }) = queued.tx.send(assignment) {
                Self::give_back_to(&mut st.pending, cost, now);
            }
        }
        for wait in waits {
            let at = now + wait;
            self.note_reservation(st, at, trip.lease);
            st.pool.push_back(Slot {
                at,
                expires: at + self.config.grace,
                cost: trip.lease,
            });
            Counters::add(&self.counters.leased, 1);
        }
        // Requests that queued during the round trip may take the new permits at once.
        self.serve_from_pool(st, now);
    }

    fn failed(&self, st: &mut State, trip: Trip, error: &Error, now: Instant) {
        Counters::add(&self.counters.errors, 1);
        st.failures = st.failures.saturating_add(1);
        for queued in trip.exact.into_iter().rev() {
            st.queue.push_front(queued);
        }
        // A call that timed out, or whose connection dropped after it was written, may have
        // been applied: giving back twice would loosen the limit, so what it gave back is
        // sent again only when Redis cannot have run it (the store says so).
        st.pending.merge(trip.pending, !error.is_request_sent());
        match self.config.failure {
            FailureMode::LocalFallback { processes } if self.local.is_some() => {
                st.probe_at = now + PROBE_INTERVAL;
                if !st.fallback {
                    st.fallback = true;
                    // Leased permits live in a Redis that does not answer.
                    st.pool.clear();
                    self.counters.fallback_active.store(true, Ordering::Relaxed);
                    Counters::add(&self.counters.fallbacks, 1);
                    tracing::warn!(
                        server = %self.config.server,
                        processes,
                        "shared rate limiter: Redis failed ({error}); limiting locally at \
                         1/{processes} of each limit until it answers"
                    );
                }
            }
            _ => {
                let exponent = st.failures.saturating_sub(1).min(16);
                let ceiling = RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_CAP);
                // Equal jitter: at least half the ceiling, so a down server is not hammered.
                let delay = ceiling / 2 + ceiling.mul_f64(st.rng.random::<f64>() / 2.0);
                st.retry_at = Some(now + delay);
                let refused_since = (error.kind() == ErrorKind::Config)
                    .then(|| *st.refused_since.get_or_insert(now));
                if refused_since.is_some_and(|since| now >= since + self.config.refused_for) {
                    self.refuse_waiting(st, error, now);
                } else if st.last_warn.is_none_or(|at| now >= at + WARN_EVERY) {
                    st.last_warn = Some(now);
                    tracing::warn!(
                        server = %self.config.server,
                        waiting = st.queue.len(),
                        "shared rate limiter: Redis failed ({error}); requests wait until it \
                         answers"
                    );
                }
            }
        }
    }

    /// Failing closed, after an error no wait heals (a password changed, an ACL that no
    /// longer allows the script, a cluster node: see [`crate::redis::is_permanent`]) went on
    /// for [`SharedLimits::give_up_on_refusal_after`](super::SharedLimits): the requests
    /// waiting fail with it (`ErrorKind::Config`) instead of waiting for ever. Later requests
    /// wait for the next round trip (the backoff's) and fail the same way until Redis accepts
    /// the limiter again.
    fn refuse_waiting(&self, st: &mut State, error: &Error, now: Instant) {
        if st.last_warn.is_none_or(|at| now >= at + WARN_EVERY) {
            st.last_warn = Some(now);
            tracing::error!(
                server = %self.config.server,
                failing = st.queue.len(),
                "shared rate limiter: Redis refused the limiter ({error}); the requests it \
                 limits fail until it accepts it again"
            );
        }
        let text = error.to_string();
        let text = text.strip_prefix("config error: ").unwrap_or(&text);
        let message = format!("{text}; no wait heals this, so the request was not sent");
        for queued in st.queue.drain(..) {
            let _ = queued.tx.send(Assignment::Failed(Error::new(
                ErrorKind::Config,
                message.clone(),
            )));
        }
    }

    /// Pushes everything reserved here back by pauses added since the last reply.
    fn learn_shift(&self, st: &mut State, epoch: u64, shift: u64) {
        let delta = if epoch == st.epoch {
            shift.saturating_sub(st.shift_us)
        } else {
            // The state was recreated: its total counts from zero.
            shift
        };
        st.epoch = epoch;
        st.shift_us = shift;
        if delta == 0 {
            return;
        }
        // A peer's number: a pause is never longer than a day.
        let by = Duration::from_micros(delta.min(MAX_WAIT_US));
        for slot in &mut st.pool {
            slot.at += by;
            slot.expires += by;
        }
        for floor in &mut st.floors {
            *floor += by;
        }
        st.horizon += by;
        self.shift.fetch_add(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Counters::add(&self.counters.pauses, 1);
    }

    fn note_reservation(&self, st: &mut State, deadline: Instant, cost: Cost) {
        let dims = self.dims_in_force(st);
        let costs = units(cost);
        for i in 0..DIMS {
            if let Some(dim) = dims[i] {
                let end = deadline + Duration::from_micros(dim.span(costs[i]));
                st.floors[i] = st.floors[i].max(end);
            }
        }
        st.horizon = st.horizon.max(deadline);
    }
}

/// The dispatcher: one round trip at a time, for as long as the limiter lives.
pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        match shared.plan() {
            Plan::Exit => return,
            Plan::Wait(Some(at)) => {
                let _ = tokio::time::timeout_at(at, shared.notify.notified()).await;
            }
            Plan::Wait(None) => shared.notify.notified().await,
            Plan::Trip(trip) => {
                let result = shared.store.call(&trip.call).await;
                shared.finish(*trip, result);
            }
        }
    }
}
