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

use volley_core::dialect::TokenUsage;

use super::super::{Cost, LocalLimiter, Observation, RateLimiter};
use super::config::Config;
use super::learn::Learning;
use super::stats::Counters;
use super::store::{DIMS, Reply, Store, units};

/// How long settlements and releases wait to be batched with others.
pub(super) const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// How many recent costs size a leased permit.
pub(super) const RECENT: usize = 16;

/// What a request waiting in the queue is told.
pub(super) enum Assignment {
    /// Send at `deadline` (pushed back by pauses learnt after `shift_seen`); `cost` is what
    /// was reserved (see [`Shared::reserved`]).
    Reserved {
        deadline: Instant,
        shift_seen: u64,
        cost: Cost,
    },
    /// Redis is down: ask the local fallback.
    Fallback(LocalLimiter),
    /// Redis refused in a way no wait heals, failing closed: the request fails with this.
    Failed(volley_core::Error),
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
    /// The learned limits per minute in force, per bucket (0: none), for
    /// [`RedisLimiter::learned`](super::RedisLimiter::learned), read without the lock.
    pub(super) learned: [AtomicU64; DIMS],
    /// Whether this process's slow start is on (no limit learned yet by any process, no
    /// answer yet here), read without the lock: requests then need a token estimate.
    pub(super) slow_start: AtomicBool,
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
    pub(super) recent: [Cost; RECENT],
    pub(super) recent_next: usize,
    /// The end of the latest reservation in each bucket, and the latest deadline.
    pub(super) floors: [Instant; DIMS],
    pub(super) horizon: Instant,
    /// The state's epoch and pause total as last seen.
    pub(super) epoch: u64,
    pub(super) shift_us: u64,
    pub(super) last_heard: Instant,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) probe_at: Instant,
    pub(super) last_warn: Option<Instant>,
    /// Since when Redis has refused the limiter in a way waiting does not heal (reset by an
    /// answer).
    pub(super) refused_since: Option<Instant>,
    pub(super) rng: SmallRng,
    /// Limits learned from the provider's headers, and the slow start.
    pub(super) learning: Learning,
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

/// What this process has to tell Redis, per bucket (requests, tokens, input, output tokens).
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) give_back: [u64; DIMS],
    pub(super) charge: [u64; DIMS],
    pub(super) empty: [bool; DIMS],
    pub(super) pause_until: Option<Instant>,
    /// Limits per minute just learned from a header, per bucket (0: none).
    pub(super) learned: [u64; DIMS],
    /// When the first item arrived; `None` when there is nothing to send.
    pub(super) since: Option<Instant>,
    /// Send at once (a 429 or an empty quota), not after [`FLUSH_DELAY`].
    pub(super) urgent: bool,
}

impl Shared {
    /// Whether no bucket paces the sends (limits learned, none yet): the end of a pause
    /// would then let every send it held go at one instant.
    pub(super) fn unpaced(&self) -> bool {
        self.config
            .dims()
            .iter()
            .zip(&self.learned)
            .all(|(dim, learned)| dim.is_none() && learned.load(Ordering::Relaxed) == 0)
    }

    /// The state after the first reply (`first`), which connecting already fetched.
    pub(super) fn new(
        config: Config,
        store: Box<dyn Store>,
        local: Option<LocalLimiter>,
        first: &Reply,
    ) -> Shared {
        let now = Instant::now();
        let seed = std::collections::hash_map::RandomState::new().hash_one(config.key.as_str());
        let learning = Learning::new(&config, first.learned);
        let slow_start = AtomicBool::new(learning.slow_start());
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pool: VecDeque::new(),
                pending: Pending::default(),
                fallback: false,
                sent_locally: false,
                top_up: false,
                recent: [Cost::ZERO; RECENT],
                recent_next: 0,
                floors: [now; DIMS],
                horizon: now,
                epoch: first.epoch,
                shift_us: first.shift,
                last_heard: now,
                failures: 0,
                retry_at: None,
                probe_at: now,
                last_warn: None,
                refused_since: None,
                rng: SmallRng::seed_from_u64(seed),
                learning,
            }),
            learned: std::array::from_fn(|i| {
                AtomicU64::new(if config.learn[i] { first.learned[i] } else { 0 })
            }),
            config,
            store,
            local,
            notify: Notify::new(),
            shift: AtomicU64::new(0),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            slow_start,
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
        st.recent[st.recent_next] = cost;
        st.recent_next = (st.recent_next + 1) % RECENT;
        if st.fallback
            && let Some(local) = &self.local
        {
            st.sent_locally = true;
            return Entry::Fallback(local.clone());
        }
        if let Some(rx) = self.gate(st, cost, now) {
            drop(guard);
            // The dispatcher opens the gate after a timeout: it needs to know when.
            self.notify.notify_one();
            return Entry::Queued(rx);
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

    /// The token buckets (tokens, input, output) Redis had when it answered with `learned`:
    /// the given limits, and the learned ones it stated.
    pub(super) fn charged_buckets(&self, learned: &[u64; DIMS]) -> [bool; 3] {
        let given = self.config.dims();
        std::array::from_fn(|i| {
            let d = i + 1;
            given[d].is_some() || (self.config.learn[d] && learned[d] > 0)
        })
    }

    /// Gives back a reservation that was never used.
    pub(super) fn give_back(&self, cost: Cost) {
        self.abandoned(cost);
        self.report(|p| p.add_give_back(cost));
    }

    /// A grant that will bring no answer (never sent, or sent and given up): while the slow
    /// start lasts every grant is a probe, and the next waiting request probes instead.
    pub(super) fn abandoned(&self, cost: Cost) {
        if cost.requests > 0 && self.probe_returned(&mut self.lock()) {
            self.notify.notify_one();
        }
    }

    /// Corrects a token charge of `estimated` to `actual`, as the in-process limiter does.
    pub(super) fn settle(&self, estimated: u64, actual: u64) {
        let mut corrections = [None; DIMS];
        corrections[1] = Some((estimated, actual));
        self.correct(corrections);
    }

    /// Corrects the token, input-token and output-token charges of `cost` to the usage the
    /// answer reported, as the in-process limiter's `settle_usage` does.
    pub(super) fn settle_usage(&self, cost: Cost, usage: TokenUsage) {
        self.correct([
            None,
            Some((cost.tokens, usage.total())),
            Some((cost.input_tokens, usage.input)),
            Some((cost.output_tokens, usage.output)),
        ]);
    }

    /// Reports `(estimated, actual)` corrections of the buckets that are limited.
    fn correct(&self, corrections: [Option<(u64, u64)>; DIMS]) {
        let refund = self.config.limits.refund_unused;
        let mut give_back = [0; DIMS];
        let mut charge = [0; DIMS];
        let (dims, seen) = {
            let st = self.lock();
            (self.dims_in_force(&st), st.learning.seen())
        };
        for (d, (dim, correction)) in dims.into_iter().zip(corrections).enumerate() {
            let (Some(dim), Some((estimated, actual))) = (dim, correction) else {
                continue;
            };
            // A peer's number: more than a limit's whole window is charged as that (a given
            // limit's minute; a learned limit's minute, hour or day, its `*-limit` header as
            // this process read it), instead of wedging the bucket.
            let window = if self.config.learn[d] {
                dim.limit.max(seen[d])
            } else {
                dim.limit
            };
            let actual = actual.min(window);
            if actual > estimated {
                charge[d] = actual - estimated;
            } else if refund {
                give_back[d] = estimated - actual;
            }
        }
        if give_back == [0; DIMS] && charge == [0; DIMS] {
            return;
        }
        self.report(|p| {
            for d in 0..DIMS {
                p.give_back[d] = p.give_back[d].saturating_add(give_back[d]);
                p.charge[d] = p.charge[d].saturating_add(charge[d]);
            }
        });
    }

    /// Learns from a response: a changed limit header is learned (when limits are learned),
    /// an empty quota empties the shared bucket, a 429's wait pauses every process. All go
    /// to Redis at once.
    pub(super) fn observe(&self, observation: &Observation) {
        if self.config.learns() {
            let now = Instant::now();
            let (changed, fallback) = {
                let mut st = self.lock();
                (self.learn(&mut st, &observation.info, now), st.fallback)
            };
            if changed {
                self.notify.notify_one();
            }
            if fallback
                && !observation.is_relevant()
                && let Some(local) = &self.local
            {
                // The fallback learns too (its slow start ends with an answer).
                local.observe(observation);
            }
        }
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
            // A token quota used up, or a 429 that names none: the input and output buckets
            // are token quotas too (as in the in-process limiter).
            for d in 1..DIMS {
                p.empty[d] |= empty.tokens;
            }
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
    /// Adds `cost` to what is given back.
    pub(super) fn add_give_back(&mut self, cost: Cost) {
        for (given, units) in self.give_back.iter_mut().zip(units(cost)) {
            *given = given.saturating_add(units);
        }
    }

    /// Adds `other` (a report that failed to go) back; without its refunds when `refunds` is
    /// false.
    pub(super) fn merge(&mut self, other: Pending, refunds: bool) {
        for i in 0..DIMS {
            if refunds {
                self.give_back[i] = self.give_back[i].saturating_add(other.give_back[i]);
            }
            self.charge[i] = self.charge[i].saturating_add(other.charge[i]);
            self.empty[i] |= other.empty[i];
        }
        self.pause_until = self.pause_until.max(other.pause_until);
        for i in 0..DIMS {
            if self.learned[i] == 0 {
                self.learned[i] = other.learned[i];
            }
        }
        self.urgent |= other.urgent;
        let has_any = self.give_back != [0; DIMS]
            || self.charge != [0; DIMS]
            || self.empty != [false; DIMS]
            || self.learned != [0; DIMS]
            || self.pause_until.is_some();
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .filter(|_| has_any);
    }
}
