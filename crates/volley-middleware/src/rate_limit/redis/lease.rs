//! Leased permits: places in the shared schedule fetched ahead of the requests that will use
//! them (see the module docs on leasing), handed out in order under the state lock.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::super::Cost;
use super::shared::{Assignment, Pending, Shared, Slot, State};
use super::stats::Counters;
use super::store::units;

impl Shared {
    /// The first leased permit that can still be used, when it fits `cost`. When it does not
    /// fit, every leased permit is given back: the request is reserved exactly, in order.
    pub(super) fn take_slot(&self, st: &mut State, cost: Cost, now: Instant) -> Option<Instant> {
        self.expire(st, now);
        let slot = *st.pool.front()?;
        let (held, needed) = (units(slot.cost), units(cost));
        if held.iter().zip(&needed).any(|(held, needed)| needed > held) {
            self.return_pool(st);
            return None;
        }
        st.pool.pop_front();
        Counters::add(&self.counters.lease_hits, 1);
        let unused = Cost {
            requests: slot.cost.requests - cost.requests,
            tokens: slot.cost.tokens - cost.tokens,
            input_tokens: slot.cost.input_tokens - cost.input_tokens,
            output_tokens: slot.cost.output_tokens - cost.output_tokens,
        };
        if unused != Cost::ZERO {
            st.pending.add_give_back(unused);
            st.pending.since.get_or_insert(now);
        }
        if st.pool.len() * 2 < self.config.lease as usize {
            st.top_up = true;
        }
        Some(slot.at)
    }

    /// Gives back leased permits that nobody took within the grace after their time.
    pub(super) fn expire(&self, st: &mut State, now: Instant) {
        while let Some(slot) = st.pool.front() {
            if slot.expires >= now {
                break;
            }
            let slot = *slot;
            st.pool.pop_front();
            Self::give_back_slot(&self.counters, st, slot, now);
        }
    }

    pub(super) fn return_pool(&self, st: &mut State) {
        let now = Instant::now();
        while let Some(slot) = st.pool.pop_front() {
            Self::give_back_slot(&self.counters, st, slot, now);
        }
    }

    fn give_back_slot(counters: &Counters, st: &mut State, slot: Slot, now: Instant) {
        Counters::add(&counters.leases_returned, 1);
        st.pending.add_give_back(slot.cost);
        st.pending.since.get_or_insert(now);
    }

    /// Hands leased permits to the requests at the head of the queue.
    pub(super) fn serve_from_pool(&self, st: &mut State, now: Instant) {
        while let Some(front) = st.queue.front() {
            if front.tx.is_closed() {
                st.queue.pop_front();
                continue;
            }
            let cost = front.cost;
            let Some(deadline) = self.take_slot(st, cost, now) else {
                break;
            };
            let queued = st.queue.pop_front().expect("the front was just seen");
            let shift_seen = self.shift.load(Ordering::Relaxed);
            // A leased permit was charged for all of `cost`'s buckets in force (see
            // `take_slot`).
            let assignment = Assignment::Reserved {
                deadline,
                shift_seen,
                cost,
            };
            if queued.tx.send(assignment).is_err() {
                Self::give_back_to(&mut st.pending, cost, now);
            }
        }
    }

    pub(super) fn give_back_to(pending: &mut Pending, cost: Cost, now: Instant) {
        pending.add_give_back(cost);
        pending.since.get_or_insert(now);
    }
}
