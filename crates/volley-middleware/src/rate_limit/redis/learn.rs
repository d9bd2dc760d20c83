//! Limits learned from the provider's headers, shared through Redis.
//!
//! A process that reads a new `x-ratelimit-limit-requests` or `-tokens` value turns it into a
//! per-minute limit (the window inferred as the in-process limiter does) and sends it with its
//! next round trip; the script keeps it in the state (fields `lr`, `lt`, `li`, `lo`) and paces every
//! process's reservations by it, so all processes that share the state use one learned limit,
//! whoever learned it. Every reply carries the limits in force, which this process uses for
//! what it computes itself (restore floors, leases, settlement caps).
//!
//! Until a limit is known the slow start of the in-process limiter applies, per process:
//! [`PROBE_WINDOW`] requests go, the others wait for the first answer (or
//! [`PROBE_TIMEOUT`]). A process that connects after another one learned a limit starts with
//! it and skips the slow start.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use volley_core::headers::RateLimitInfo;

use super::super::Cost;
use super::super::learn::{MIN_LEARNED, infer_window, per_minute};
use super::super::local::{PROBE_TIMEOUT, PROBE_WINDOW};
use super::config::{Config, Dim};
use super::shared::{Queued, Shared, State};
use super::store::DIMS;

/// What this process knows of the learned limits.
pub(super) struct Learning {
    /// The slow start, while it lasts.
    gate: Option<Gate>,
    /// The `*-limit` header values this process read last, per bucket (0: none), so an
    /// unchanged header is not sent again.
    seen: [u64; DIMS],
    /// The learned limits per minute in force, per bucket (0: none), from the last reply, and
    /// the buckets they make.
    pub(super) learned: [u64; DIMS],
    dims: [Option<Dim>; DIMS],
}

/// The slow start: probes left, and the requests waiting behind them.
struct Gate {
    probes: usize,
    waiting: VecDeque<Queued>,
    /// When the first request began to wait.
    since: Option<Instant>,
}

impl Learning {
    /// What a process starts with, given the connecting call's learned limits.
    pub(super) fn new(config: &Config, learned: [u64; DIMS]) -> Learning {
        let mut learning = Learning {
            // Nothing learned yet by any process: a slow start.
            gate: (config.learns() && learned == [0; DIMS]).then(|| Gate {
                probes: PROBE_WINDOW,
                waiting: VecDeque::new(),
                since: None,
            }),
            seen: [0; DIMS],
            learned: [0; DIMS],
            dims: [None; DIMS],
        };
        learning.set(config, learned);
        learning
    }

    /// Whether the slow start is on.
    pub(super) fn slow_start(&self) -> bool {
        self.gate.is_some()
    }

    /// The `*-limit` header values this process read last, per bucket (0: none): a learned
    /// limit over its whole window.
    pub(super) fn seen(&self) -> [u64; DIMS] {
        self.seen
    }

    fn set(&mut self, config: &Config, learned: [u64; DIMS]) {
        for (i, limit) in learned.into_iter().enumerate() {
            if config.learn[i] {
                self.learned[i] = limit;
                self.dims[i] = (limit > 0).then(|| config.learned_dim(limit));
            }
        }
    }
}

impl Shared {
    /// The limits in force: the given ones, and the learned ones known so far.
    pub(super) fn dims_in_force(&self, st: &State) -> [Option<Dim>; DIMS] {
        let mut dims = self.config.dims();
        for ((dim, learns), learned) in dims.iter_mut().zip(self.config.learn).zip(st.learning.dims)
        {
            if learns {
                *dim = learned;
            }
        }
        dims
    }

    /// Whether `cost` waits behind the slow start's probes: then it is queued there and the
    /// receiver is returned.
    pub(super) fn gate(
        &self,
        st: &mut State,
        cost: Cost,
        now: Instant,
    ) -> Option<tokio::sync::oneshot::Receiver<super::shared::Assignment>> {
        let gate = st.learning.gate.as_mut()?;
        if gate.probes > 0 {
            gate.probes -= 1;
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        gate.waiting.push_back(Queued { cost, tx });
        gate.since.get_or_insert(now);
        Some(rx)
    }

    /// A probe that will bring no answer (never sent, or given up after it was sent): the
    /// next waiting request probes instead. Whether one was moved to the queue.
    pub(super) fn probe_returned(&self, st: &mut State) -> bool {
        let Some(gate) = st.learning.gate.as_mut() else {
            return false;
        };
        match gate.waiting.pop_front() {
            Some(next) => {
                st.queue.push_back(next);
                true
            }
            None => {
                gate.probes += 1;
                false
            }
        }
    }

    /// Ends the slow start: everyone waiting joins the queue, in order. Whether anyone did.
    fn open_gate(&self, st: &mut State) -> bool {
        let Some(gate) = st.learning.gate.take() else {
            return false;
        };
        self.slow_start.store(false, Ordering::Relaxed);
        let any = !gate.waiting.is_empty();
        st.queue.extend(gate.waiting);
        any
    }

    /// Opens the gate when its requests have waited [`PROBE_TIMEOUT`] (a probe whose answer
    /// never came must not stall the run); otherwise when to look again.
    pub(super) fn gate_deadline(&self, st: &mut State, now: Instant) -> Option<Instant> {
        let since = st.learning.gate.as_ref()?.since?;
        let at = since + PROBE_TIMEOUT;
        if now < at {
            return Some(at);
        }
        self.open_gate(st);
        None
    }

    /// What an answer teaches: the slow start is over, and a changed limit header is learned
    /// and sent to Redis at once. Whether the dispatcher has something new to do.
    pub(super) fn learn(&self, st: &mut State, info: &RateLimitInfo, now: Instant) -> bool {
        let mut changed = self.open_gate(st);
        for (i, (limit, remaining, reset)) in info.quotas().into_iter().enumerate() {
            let Some(limit) = limit.filter(|l| *l >= MIN_LEARNED[i]) else {
                continue;
            };
            if !self.config.learn[i] || limit == st.learning.seen[i] {
                continue;
            }
            st.learning.seen[i] = limit;
            let window = infer_window(limit, remaining, reset);
            let per_min = per_minute(limit, window);
            st.pending.learned[i] = per_min;
            st.pending.urgent = true;
            st.pending.since.get_or_insert(now);
            // Used here at once; the shared value comes back with the reply.
            self.apply_learned(st, i, per_min);
            let dimension = ["requests", "tokens", "input_tokens", "output_tokens"][i];
            tracing::info!(
                dimension,
                limit,
                window_secs = window.as_secs(),
                per_minute = per_min,
                "learned a rate limit from the provider's headers; sharing it through Redis"
            );
            changed = true;
        }
        changed
    }

    /// The learned limits a reply says are in force; any ends the slow start (another process
    /// learned it).
    pub(super) fn learned_from(&self, st: &mut State, learned: [u64; DIMS]) {
        if !self.config.learns() {
            return;
        }
        for (i, per_min) in learned.into_iter().enumerate() {
            // A value sent but not yet answered stays until its own reply.
            if st.pending.learned[i] == 0 {
                self.apply_learned(st, i, per_min);
            }
        }
        if learned != [0; DIMS] {
            self.open_gate(st);
        }
    }

    fn apply_learned(&self, st: &mut State, i: usize, per_min: u64) {
        if !self.config.learn[i] {
            return;
        }
        let mut learned = st.learning.learned;
        learned[i] = per_min;
        st.learning.set(&self.config, learned);
        self.learned[i].store(per_min, Ordering::Relaxed);
    }
}
