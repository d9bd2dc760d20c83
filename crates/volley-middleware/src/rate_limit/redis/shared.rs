//! The state one [`RedisLimiter`](super::RedisLimiter) keeps in this process, and what the
//! caller-side operations do to it.
//!
//! Callers never wait for each other: `acquire` takes a leased permit or joins a FIFO queue,
//! and `settle`, `release` and `observe` add to a pending report, all under one short lock.
//! One task per limiter (the dispatcher) does every round trip, one at a time: it sends the
//! pending report and reserves send times for everything queued (plus a lease, when leasing),
//! in order, in one script call, then hands each request its deadline. Deadlines are the
//! server's waits added to this process's clock when the reply arrived, so clocks never need
//! to agree. When Redis fails, the dispatcher retries with backoff (fail closed) or hands the
//! queue to the local fallback and probes Redis every second.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::super::{Cost, LocalLimiter, Observation, RateLimiter};
use super::config::Config;
use super::stats::Counters;
use super::store::{Reply, Store};

/// How long settlements and releases wait to be batched with others.
pub(super) const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// How many recent token costs size a leased permit.
pub(super) const RECENT: usize = 16;

/// What a request waiting in the queue is told.
pub(super) enum Assignment {
    /// Send at `deadline` (pushed back by pauses learnt after `shift_seen`).
    Reserved { deadline: Instant, shift_seen: u64 },
    /// Redis is down: ask the local fallback.
    Fallback(LocalLimiter),
}

/// Where `acquire` got to without waiting.
pub(super) enum Entry {
    Reserved { deadline: Instant, shift_seen: u64 },
    Queued(oneshot::Receiver<Assignment>),
    Fallback(LocalLimiter),
}

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) store: Box<dyn Store>,
    /// The fallback, with `LocalFallback`.
    pub(super) local: Option<LocalLimiter>,
    pub(super) state: Mutex<State>,
    pub(super) notify: Notify,
    /// Nanoseconds every reservation made in this process has been pushed back by pauses,
    /// ever. Only grows; written under the state lock, read without it by waiters.
    pub(super) shift: AtomicU64,
    pub(super) counters: Counters,
    pub(super) closed: AtomicBool,
}

pub(super) struct State {
    pub(super) queue: VecDeque<Queued>,
    /// Leased permits nobody has taken yet, in time order.
    pub(super) pool: VecDeque<Slot>,
    pub(super) pending: Pending,
    pub(super) fallback: bool,
    /// Whether the fallback granted anything during this outage.
    pub(super) sent_locally: bool,
    /// Whether a lease top-up was asked for.
    pub(super) top_up: bool,
    pub(super) recent: [u64; RECENT],
    pub(super) recent_next: usize,
    /// The end of the latest reservation in each bucket, and the latest deadline.
    pub(super) floors: [Instant; 2],
    pub(super) horizon: Instant,
    /// The state's epoch and pause total as last seen.
    pub(super) epoch: u64,
    pub(super) shift_us: u64,
    pub(super) last_heard: Instant,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) probe_at: Instant,
    pub(super) last_warn: Option<Instant>,
    pub(super) rng: SmallRng,
}

pub(super) struct Queued {
    pub(super) cost: Cost,
    pub(super) tx: oneshot::Sender<Assignment>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) at: Instant,
    pub(super) expires: Instant,
    pub(super) cost: Cost,
}

/// What this process has to tell Redis.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) give_back: [u64; 2],
    pub(super) charge: u64,
    pub(super) empty: [bool; 2],
    pub(super) pause_until: Option<Instant>,
    /// When the first item arrived; `None` when there is nothing to send.
    pub(super) since: Option<Instant>,
    /// Send at once (a 429 or an empty quota), not after [`FLUSH_DELAY`].
    pub(super) urgent: bool,
}

impl Shared {
    /// The state after the first reply (`first`), which connecting already fetched.
    pub(super) fn new(
        config: Config,
        store: Box<dyn Store>,
        local: Option<LocalLimiter>,
        first: &Reply,
    ) -> Shared {
        let now = Instant::now();
        let seed = std::collections::hash_map::RandomState::new().hash_one(config.key.as_str());
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pool: VecDeque::new(),
                pending: Pending::default(),
                fallback: false,
                sent_locally: false,
                top_up: false,
                recent: [0; RECENT],
                recent_next: 0,
                floors: [now; 2],
                horizon: now,
                epoch: first.epoch,
                shift_us: first.shift,
                last_heard: now,
                failures: 0,
                retry_at: None,
                probe_at: now,
                last_warn: None,
                rng: SmallRng::seed_from_u64(seed),
            }),
            config,
            store,
            local,
            notify: Notify::new(),
            shift: AtomicU64::new(0),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few statements that cannot panic half way: a poisoned lock still
        // guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a leased permit for `cost`, or joins the queue.
    pub(super) fn enter(&self, cost: Cost) -> Entry {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.recent[st.recent_next] = cost.tokens;
        st.recent_next = (st.recent_next + 1) % RECENT;
        if st.fallback
            && let Some(local) = &self.local
        {
            st.sent_locally = true;
            return Entry::Fallback(local.clone());
        }
        if st.queue.is_empty()
            && let Some(deadline) = self.take_slot(st, cost, now)
        {
            let shift_seen = self.shift.load(Ordering::Relaxed);
            let wake = st.top_up || st.pending.since.is_some();
            drop(guard);
            if wake {
                self.notify.notify_one();
            }
            return Entry::Reserved {
                deadline,
                shift_seen,
            };
        }
        let (tx, rx) = oneshot::channel();
        st.queue.push_back(Queued { cost, tx });
        drop(guard);
        self.notify.notify_one();
        Entry::Queued(rx)
    }

    /// Gives back a reservation that was never used.
    pub(super) fn give_back(&self, cost: Cost) {
        self.report(|p| {
            p.give_back[0] = p.give_back[0].saturating_add(u64::from(cost.requests));
            p.give_back[1] = p.give_back[1].saturating_add(cost.tokens);
        });
    }

    /// Corrects a token charge of `estimated` to `actual`, as the in-process limiter does.
    pub(super) fn settle(&self, estimated: u64, actual: u64) {
        let Some(tokens) = self.config.tokens else {
            return;
        };
        // A peer's number: more than a minute's budget is charged as a minute's worth.
        let actual = actual.min(tokens.limit);
        if actual == estimated || (actual < estimated && !self.config.limits.refund_unused) {
            return;
        }
        self.report(|p| {
            if actual > estimated {
                p.charge = p.charge.saturating_add(actual - estimated);
            } else {
                p.give_back[1] = p.give_back[1].saturating_add(estimated - actual);
            }
        });
    }

    /// Learns from a response: an empty quota empties the shared bucket, a 429's wait pauses
    /// every process. Both go to Redis at once.
    pub(super) fn observe(&self, observation: &Observation) {
        if !observation.is_relevant() {
            return;
        }
        let empty = observation.empty_quotas();
        let wait = observation
            .retry_after
            .map(|wait| wait.min(self.config.limits.max_pause));
        let now = Instant::now();
        let fallback = {
            let mut st = self.lock();
            if wait.is_some() {
                // Leased permits would let requests through before the pause reaches Redis.
                self.return_pool(&mut st);
            }
            let p = &mut st.pending;
            p.empty[0] |= empty.requests;
            p.empty[1] |= empty.tokens;
            if let Some(wait) = wait {
                let until = now + wait;
                p.pause_until = Some(p.pause_until.map_or(until, |u| u.max(until)));
            }
            p.urgent = true;
            p.since.get_or_insert(now);
            st.fallback
        };
        self.notify.notify_one();
        if fallback && let Some(local) = &self.local {
            local.observe(observation);
        }
    }

    /// Adds to the pending report, to go within [`FLUSH_DELAY`]; wakes the dispatcher when
    /// the report was empty (otherwise it already knows when to send it).
    fn report(&self, add: impl FnOnce(&mut Pending)) {
        let now = Instant::now();
        let mut st = self.lock();
        add(&mut st.pending);
        let first = st.pending.since.is_none();
        st.pending.since.get_or_insert(now);
        drop(st);
        if first {
            self.notify.notify_one();
        }
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

impl Pending {
    /// Adds `other` (a report that failed to go) back; without its refunds when `refunds` is
    /// false.
    pub(super) fn merge(&mut self, other: Pending, refunds: bool) {
        if refunds {
            for i in 0..2 {
                self.give_back[i] = self.give_back[i].saturating_add(other.give_back[i]);
            }
        }
        self.charge = self.charge.saturating_add(other.charge);
        for i in 0..2 {
            self.empty[i] |= other.empty[i];
        }
        self.pause_until = self.pause_until.max(other.pause_until);
        self.urgent |= other.urgent;
        let has_any = self.give_back != [0, 0]
            || self.charge > 0
            || self.empty != [false, false]
            || self.pause_until.is_some();
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .filter(|_| has_any);
    }
}
