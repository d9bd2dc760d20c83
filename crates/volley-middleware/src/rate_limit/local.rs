//! [`LocalLimiter`]: the in-process limiter, a FIFO GCRA on tokio's clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;
use volley_core::dialect::TokenUsage;
use volley_core::headers::RateLimitInfo;
use volley_core::{Error, ErrorKind, RequestId};

use super::gcra::Gcra;
use super::learn::{MIN_LEARNED, infer_window, per_minute};
use super::loss;
use super::per_model::Models;
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
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    limits: Limits,
    /// The largest request and token costs a request may have: the per-minute limits.
    max_requests: Option<u64>,
    max_tokens: Option<u64>,
    /// The input- and output-token limits per minute, when given: the largest such costs,
    /// and the caps of a settlement.
    max_input: Option<u64>,
    max_output: Option<u64>,
    /// Time zero of every nanosecond count below.
    epoch: Instant,
    state: Mutex<State>,
    /// Nanoseconds every pending reservation has been pushed back by pauses, ever. Waiters
    /// compare it with the value they saw when they reserved. Only grows; written under the
    /// state lock, read without it.
    pub(super) shift: AtomicU64,
    /// Which limits are learned: requests, tokens, input tokens, output tokens.
    learns: [bool; 4],
    /// The `*-limit` header values last learned, in that order (0: none yet), compared without
    /// the lock on every answer.
    learned_headers: [AtomicU64; 4],
    /// The learned limits per minute (0: none): a learned token limit caps a settlement as a
    /// given one does, and asks for token estimates.
    learned_per_minute: [AtomicU64; 4],
    /// The slow start while limits are learned: [`PROBE_WINDOW`] probes until the first
    /// answer (or error) is observed; then the semaphore is closed, which lets everyone through. `None`
    /// when nothing is learned.
    pub(super) gate: Option<Arc<Semaphore>>,
    /// The limiters of the models seen, when limits are learned per model.
    pub(super) models: Option<Models>,
    /// The answers observed, for a request rate found from 429s (see `loss`).
    answers: loss::Answers,
    /// Whether the provider counts requests without stating the limit: an answer carried
    /// `x-ratelimit-remaining-requests` and no `x-ratelimit-limit-requests` (Azure OpenAI).
    remaining_only: std::sync::atomic::AtomicBool,
}

/// How many requests go before the first answer while limits are learned: a small window, as
/// TCP's initial window (RFC 3390's four segments), so that a run does not open with a burst
/// of 429s. Providers' bursts are a second's worth, so four fit any tier above 240 a minute;
/// below that the 429s pause the queue.
pub(super) const PROBE_WINDOW: usize = 4;

/// How long requests wait behind the slow start's probes before they go anyway: a probe whose
/// answer never comes (a server that hangs, with no timeout below the limiter) must not stall
/// the run. A probe whose caller gives up hands its place on at once
/// ([`RateLimiter::abandon`](super::RateLimiter::abandon)).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    /// Input and output tokens, limited apart (Anthropic's ITPM and OTPM).
    input: Option<Gcra>,
    output: Option<Gcra>,
    /// No send before this time (a 429's `Retry-After`).
    paused_until: u64,
    /// How much later than `paused_until` a send held by the last pause may go, at random,
    /// when nothing paces the sends ([`State::unpaced`]): a fifth of the pause, at most
    /// [`MAX_PAUSE_SPREAD`]. Nanoseconds.
    pause_spread: u64,
    /// The request rate found from 429s while no request limit is stated, in force as
    /// `requests`; `None` otherwise.
    loss: Option<loss::LossRate>,
}

/// The most a pause's end is spread over when nothing paces the sends: 8 s, the retry
/// policy's default backoff cap, which caps its stretch of a server's wait the same way.
pub(super) const MAX_PAUSE_SPREAD: Duration = Duration::from_secs(8);

impl State {
    /// Whether no bucket paces the sends (limits learned, none yet; or none at all): the end of
    /// a pause would then let every send it held go at one instant.
    fn unpaced(&self) -> bool {
        self.requests.is_none()
            && self.tokens.is_none()
            && self.input.is_none()
            && self.output.is_none()
    }

    /// How much later than the pause's end a send it held goes, for a send whose random
    /// `fraction` (in `[0, 1)`, drawn once per request) is given: that part of the pause's
    /// spread when nothing paces the sends, else nothing (the buckets space them).
    fn pause_stretch(&self, fraction: f64) -> u64 {
        if self.unpaced() {
            // At most the spread: a fraction below 1 of a u64 converted back.
            (self.pause_spread as f64 * fraction) as u64
        } else {
            0
        }
    }
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
            input: gcra(resolved.input),
            output: gcra(resolved.output),
            paused_until: 0,
            pause_spread: 0,
            loss: None,
        };
        let learns = limits.learned_dimensions();
        let models = limits.learns_per_model().then(|| Models::new(&limits));
        Ok(LocalLimiter {
            shared: Arc::new(Shared {
                max_requests: resolved.requests.map(|(limit, _)| limit),
                max_tokens: resolved.tokens.map(|(limit, _)| limit),
                max_input: resolved.input.map(|(limit, _)| limit),
                max_output: resolved.output.map(|(limit, _)| limit),
                limits,
                epoch: Instant::now(),
                state: Mutex::new(state),
                shift: AtomicU64::new(0),
                learns,
                learned_headers: Default::default(),
                learned_per_minute: Default::default(),
                gate: learns
                    .contains(&true)
                    .then(|| Arc::new(Semaphore::new(PROBE_WINDOW))),
                models,
                answers: loss::Answers::default(),
                remaining_only: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Whether requests need a token estimate: a token limit is given, or has been learned,
    /// or may still be learned from the first answer (the slow start is on). The `volley`
    /// facade estimates a prompt's tokens only then. With limits learned per model: when any
    /// model's limiter does, and before any model was seen.
    ///
    /// A request held at the slow start's gate reserves when the gate opens, under the token
    /// limit the first answer taught; made without an estimate, it would reserve no tokens.
    pub fn counts_tokens(&self) -> bool {
        self.shared.max_tokens.is_some() || self.learned_in(1).is_some() || self.slow_start()
    }

    /// Whether a token limit may still be learned from a first answer: the slow start is on
    /// here, or for a model seen (before any model was seen, here only).
    fn slow_start(&self) -> bool {
        let open = |shared: &Shared| shared.gate.as_ref().is_some_and(|g| !g.is_closed());
        if !self.shared.learns[1] {
            return false;
        }
        let models = self.shared.models.as_ref().and_then(|models| {
            // Before any model was seen, this limiter's own.
            models.with_each(|mut all| (all.len() > 0).then(|| all.any(|l| open(&l.shared))))
        });
        models.unwrap_or_else(|| open(&self.shared))
    }

    /// The limits learned from the provider's headers so far, per minute: `(requests,
    /// tokens)`, each `None` until learned (or when it is given, or not learned). With limits
    /// learned per model, the lowest any model learned ([`for_model`](Self::for_model) gives
    /// one model's).
    pub fn learned(&self) -> (Option<u64>, Option<u64>) {
        (self.learned_in(0), self.learned_in(1))
    }

    /// The input- and output-token limits learned so far, per minute (Anthropic's ITPM and
    /// OTPM), as [`learned`](Self::learned) for requests and tokens.
    pub fn learned_split(&self) -> (Option<u64>, Option<u64>) {
        (self.learned_in(2), self.learned_in(3))
    }

    /// Dimension `d`'s learned limit here, or the lowest of every model's.
    fn learned_in(&self, d: usize) -> Option<u64> {
        let models = self.shared.models.as_ref().and_then(|models| {
            models.with_each(|all| all.filter_map(|limiter| limiter.shared.learned(d)).min())
        });
        models.into_iter().chain(self.shared.learned(d)).min()
    }

    /// The limits this limiter enforces.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// How long the pause a rate-limited answer started (the wait a 429 asked for) still
    /// holds this limiter's sends, or `None` when no pause is in force; with limits learned
    /// per model, the longest of any model's (which holds that model's sends only). Sends it
    /// held may still go up to a fifth of it later, spread out, when nothing else paces them.
    /// For a progress display.
    pub fn paused_for(&self) -> Option<Duration> {
        let left = |shared: &Shared| {
            let until = shared.lock().paused_until;
            until.checked_sub(shared.now()).filter(|&left| left > 0)
        };
        let models =
            self.shared.models.as_ref().and_then(|models| {
                models.with_each(|all| all.filter_map(|l| left(&l.shared)).max())
            });
        models
            .into_iter()
            .chain(left(&self.shared))
            .max()
            .map(Duration::from_nanos)
    }
}

impl RateLimiter for LocalLimiter {
    type Acquire = LocalAcquire;

    fn acquire(&self, id: RequestId, cost: Cost) -> LocalAcquire {
        self.acquire_before(id, cost, None)
    }

    fn acquire_before(
        &self,
        id: RequestId,
        cost: Cost,
        deadline: Option<std::time::Instant>,
    ) -> LocalAcquire {
        let until = deadline.map(|at| self.shared.nanos(Instant::from_std(at)));
        let ask = Ask { id, cost, until };
        // Refused before the slow start's gate: a request that is never sent must not take
        // (and keep) one of its probe permits.
        if let Some(error) = too_large(id, cost, &self.shared) {
            metrics::counter!("volley_rate_limit_too_large_total").increment(1);
            return LocalAcquire::failed(error);
        }
        if let Some(gate) = &self.shared.gate
            && !gate.is_closed()
        {
            match gate.try_acquire() {
                // The probe: its permit is given back only if it is never sent.
                Ok(permit) => permit.forget(),
                Err(TryAcquireError::Closed) => {}
                Err(TryAcquireError::NoPermits) => {
                    return LocalAcquire::gated(self.shared.clone(), ask);
                }
            }
        }
        self.shared.reserve(ask)
    }

    fn settle(&self, grant: Grant, actual_tokens: u64) {
        settle(&self.shared, grant, actual_tokens);
    }

    fn release(&self, grant: Grant) {
        self.shared.give_back(grant.cost());
    }

    fn abandon(&self, grant: Grant) {
        self.shared.probe_returned(grant.cost());
    }

    fn observe(&self, observation: &Observation) {
        observe(&self.shared, observation);
    }

    fn learns(&self) -> bool {
        self.shared.gate.is_some()
    }

    fn for_request(&self, request: &volley_core::Request) -> LocalLimiter {
        self.for_request_model(request)
    }

    fn splits_tokens(&self) -> bool {
        let shared = &self.shared;
        shared.max_input.is_some()
            || shared.max_output.is_some()
            || shared.learned(2).is_some()
            || shared.learned(3).is_some()
            // An input or output limit may still come with the first answer: the requests
            // held at the gate reserve under it when it opens, and need their estimates.
            || ((shared.learns[2] || shared.learns[3])
                && shared.gate.as_ref().is_some_and(|g| !g.is_closed()))
    }

    fn settle_usage(&self, grant: Grant, usage: TokenUsage) {
        settle_split(&self.shared, &grant, usage);
        settle(&self.shared, grant, usage.total());
    }
}

impl Shared {
    /// Reserves a send time for `cost` and waits for it. `cost` fits the given limits:
    /// [`RateLimiter::acquire`] refused it otherwise, before the slow start's gate (the limits
    /// are fixed when the limiter is made, so a request held at the gate still fits).
    pub(super) fn reserve(self: &Arc<Shared>, ask: Ask) -> LocalAcquire {
        let Ask { id, cost, until } = ask;
        let shared = self;
        let now = shared.now();
        let mut state = shared.lock();
        let mut at = now.max(state.paused_until);
        // Held by a pause: with nothing to space the sends, each goes a random part of the
        // pause's spread after its end, so that they do not all go at once. The part is drawn
        // once: a later pause moves the send to the same part of its own spread. With a
        // deadline, the part is at most that part of half the time the call has left.
        // Drawn only when needed: most requests are never held by a pause.
        let (fraction, stretch) = if at > now {
            let fraction = crate::jitter::fraction();
            let stretch = Duration::from_nanos(state.pause_stretch(fraction));
            let left = until.map(|until| Duration::from_nanos(until.saturating_sub(at)));
            let stretch = fit_stretch(stretch, fraction, left);
            (
                Some(fraction),
                u64::try_from(stretch.as_nanos()).unwrap_or(u64::MAX),
            )
        } else {
            (None, 0)
        };
        at = at.saturating_add(stretch);
        if let Some(g) = &state.requests {
            at = at.max(g.earliest(now, u64::from(cost.requests)));
        }
        if let Some(g) = &state.tokens {
            at = at.max(g.earliest(now, cost.tokens));
        }
        if let Some(g) = &state.input {
            at = at.max(g.earliest(now, cost.input_tokens));
        }
        if let Some(g) = &state.output {
            at = at.max(g.earliest(now, cost.output_tokens));
        }
        if let Some(until) = until
            && at > now
            && at >= until
        {
            // Nothing is committed: the caller would stop waiting before the send. A probe
            // permit it took at the slow start's gate goes back to the next request.
            drop(state);
            shared.probe_returned(cost);
            return LocalAcquire::failed(past_deadline(id, at - now, until.saturating_sub(now)));
        }
        // Every limit records the send at the same instant, the latest any of them allows: a
        // request held back by one limit must not leave another thinking it went earlier.
        if let Some(g) = &mut state.requests {
            g.commit(at, u64::from(cost.requests));
        }
        if let Some(g) = &mut state.tokens {
            g.commit(at, cost.tokens);
        }
        if let Some(g) = &mut state.input {
            g.commit(at, cost.input_tokens);
        }
        if let Some(g) = &mut state.output {
            g.commit(at, cost.output_tokens);
        }
        // The grant records what was reserved.
        let reserved = cost.reserved_in([
            state.tokens.is_some(),
            state.input.is_some(),
            state.output.is_some(),
        ]);
        let shift_seen = shared.shift.load(Ordering::Relaxed);
        drop(state);
        LocalAcquire::waiting(
            shared.clone(),
            ask.with_cost(reserved),
            [now, at, shift_seen],
            (fraction, stretch),
        )
    }

    /// A limit learned so far, per minute: dimension `d` in the order requests, tokens,
    /// input tokens, output tokens.
    fn learned(&self, d: usize) -> Option<u64> {
        Some(self.learned_per_minute[d].load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The most one answer's usage of dimension `d` is believed: a limit given (per minute,
    /// larger requests are refused up front), else the learned limit over its whole window (a
    /// minute, an hour or a day, as its headers state it: a request of an hourly budget may use
    /// more than the hour's per-minute pace).
    fn usage_cap(&self, given: Option<u64>, d: usize) -> Option<u64> {
        given.or_else(|| Some(self.learned_headers[d].load(Ordering::Relaxed)).filter(|n| *n > 0))
    }

    /// Learns the limits an answer's headers state, when they are learned and changed, and
    /// plausible ([`MIN_LEARNED`]).
    fn learn(&self, info: &RateLimitInfo) {
        for (d, (limit, remaining, reset)) in info.quotas().into_iter().enumerate() {
            if self.learns[d]
                && let Some(limit) = limit.filter(|l| *l >= MIN_LEARNED[d])
                && limit != self.learned_headers[d].load(Ordering::Relaxed)
            {
                let per_min = self.apply_learned(d, limit, remaining, reset);
                self.learned_headers[d].store(limit, Ordering::Relaxed);
                self.learned_per_minute[d].store(per_min, Ordering::Relaxed);
            }
        }
    }

    /// Puts a learned limit of dimension `d` in force, keeping what was already sent; returns
    /// it per minute.
    fn apply_learned(
        &self,
        d: usize,
        limit: u64,
        remaining: Option<u64>,
        reset: Option<Duration>,
    ) -> u64 {
        let window = infer_window(limit, remaining, reset);
        let per_min = per_minute(limit, window);
        let burst = (per_min / 60).max(1);
        let headroom = self.limits.headroom;
        let jitter = u64::try_from(self.limits.jitter_margin.as_nanos()).unwrap_or(u64::MAX);
        let now = self.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let slot = match d {
            0 => &mut state.requests,
            1 => &mut state.tokens,
            2 => &mut state.input,
            _ => &mut state.output,
        };
        let mut gcra = Gcra::relimited(
            slot.as_ref(),
            now.max(state.paused_until),
            per_min,
            burst,
            headroom,
            jitter,
        );
        if d == 0 && state.loss.take().is_some() {
            // A stated limit replaces the rate found from 429s.
            self.answers
                .grow_at
                .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(remaining) = remaining {
            // The provider's bucket may hold less than a full burst (the probe, or another
            // process, used some): ours holds no more.
            gcra.hold(now, remaining);
        }
        *slot = Some(gcra);
        drop(guard);
        let dimension = ["requests", "tokens", "input_tokens", "output_tokens"][d];
        tracing::info!(
            dimension,
            limit,
            window_secs = window.as_secs(),
            per_minute = per_min,
            "learned a rate limit from the provider's headers"
        );
        metrics::gauge!("volley_rate_limit_learned_per_minute", "dimension" => dimension)
            .set(per_min as f64);
        per_min
    }
}

/// The settlement of a grant with the reported usage; see [`RateLimiter::settle`].
fn settle(shared: &Shared, grant: Grant, actual_tokens: u64) {
    {
        let estimated = grant.cost().tokens;
        // A peer's number: a broken or hostile server may report any usage. No request can use
        // more than its limit's whole window (a given limit's minute: larger requests are
        // refused up front; a learned limit's minute, hour or day), so more is charged as that
        // instead of wedging the bucket for years.
        let actual_tokens = match shared.usage_cap(shared.max_tokens, 1) {
            Some(limit) => actual_tokens.min(limit),
            None => actual_tokens,
        };
        if actual_tokens == estimated || (actual_tokens < estimated && !shared.limits.refund_unused)
        {
            return;
        }
        let now = shared.now();
        let mut state = shared.lock();
        if let Some(g) = &mut state.tokens {
            if actual_tokens > estimated {
                g.charge(now, actual_tokens - estimated);
            } else {
                g.refund(now, estimated - actual_tokens);
            }
        }
    }
}

/// The settlement of the input- and output-token limits with the usage the answer reports:
/// each is corrected from its estimate to its count (capped as [`settle`] caps the total: a
/// peer's number), as [`settle`] corrects the total.
fn settle_split(shared: &Shared, grant: &Grant, usage: TokenUsage) {
    let cost = grant.cost();
    let dimensions = [
        (
            shared.usage_cap(shared.max_input, 2),
            cost.input_tokens,
            usage.input,
        ),
        (
            shared.usage_cap(shared.max_output, 3),
            cost.output_tokens,
            usage.output,
        ),
    ];
    if dimensions.iter().all(|(max, ..)| max.is_none()) {
        return;
    }
    let now = shared.now();
    let mut guard = shared.lock();
    let state = &mut *guard;
    for ((max, estimated, actual), gcra) in dimensions
        .into_iter()
        .zip([&mut state.input, &mut state.output])
    {
        let (Some(max), Some(g)) = (max, gcra) else {
            continue;
        };
        let actual = actual.min(max);
        if actual > estimated {
            g.charge(now, actual - estimated);
        } else if actual < estimated && shared.limits.refund_unused {
            g.refund(now, estimated - actual);
        }
    }
}

/// What an answer, an error or a 429 teaches the limiter; see [`RateLimiter::observe`].
fn observe(shared: &Shared, observation: &Observation) {
    {
        if let Some(gate) = &shared.gate
            && !gate.is_closed()
        {
            // An answer came: the slow start is over, whatever it said.
            gate.close();
        }
        shared.learn(&observation.info);
        if shared.learns[0] {
            shared.count_for_loss_rate(observation);
        }
        if !observation.is_relevant() {
            return;
        }
        let now = shared.now();
        let empty = observation.empty_quotas();
        let mut guard = shared.lock();
        let state = &mut *guard;
        if observation.rate_limited {
            shared.lower_loss_rate(state, now);
        }
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
        // A token quota used up, or a 429 that names none: the input and output buckets are
        // token quotas too.
        for g in [&mut state.input, &mut state.output].into_iter().flatten() {
            if empty.tokens {
                g.empty(now);
            }
        }
        if let Some(wait) = observation.retry_after {
            // Capped: one response asking for a day must not freeze every later request.
            let wait = wait.min(shared.limits.max_pause);
            let spread = (wait / 5).min(MAX_PAUSE_SPREAD);
            let wait = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            let until = now.saturating_add(wait);
            let from = now.max(state.paused_until);
            if until > from {
                let by = until - from;
                state.paused_until = until;
                state.pause_spread = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
                let all = [
                    &mut state.requests,
                    &mut state.tokens,
                    &mut state.input,
                    &mut state.output,
                ];
                for g in all.into_iter().flatten() {
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

impl Shared {
    /// After a 429: when requests are learned, the provider counts requests without stating
    /// the limit, and no request limit is known, the request rate the answers show is put
    /// in force, or lowered (see `loss`).
    fn lower_loss_rate(&self, state: &mut State, now: u64) {
        let stated =
            self.learned(0).is_some() || (state.requests.is_some() && state.loss.is_none());
        if !self.learns[0] || stated || !self.remaining_only.load(Ordering::Relaxed) {
            return;
        }
        if let Some(rate) = loss::after_429(state.loss, &self.answers, now) {
            self.put_loss_rate(state, rate, now);
        }
    }

    /// Counts an answer for the loss rate, once the provider has shown it counts requests
    /// without stating the limit; a provider that states it (or none) costs one load here.
    /// The clock is read for the first answer and while a loss rate is in force.
    fn count_for_loss_rate(&self, observation: &Observation) {
        let info = &observation.info;
        if info.remaining_requests.is_some()
            && info.limit_requests.is_none()
            && !self.remaining_only.load(Ordering::Relaxed)
        {
            self.remaining_only.store(true, Ordering::Relaxed);
        }
        if observation.rate_limited || !self.remaining_only.load(Ordering::Relaxed) {
            return;
        }
        self.answers.record(|| self.now());
        if self.answers.growing() {
            let now = self.now();
            if self.answers.grow_due(now) {
                self.grow_loss_rate(now);
            }
        }
    }

    /// Five seconds without a 429 under a loss rate: 10 % more.
    fn grow_loss_rate(&self, now: u64) {
        let mut state = self.lock();
        if let Some(current) = state.loss
            && self.answers.grow_due(now)
        {
            let rate = loss::grown(current, &self.answers, now);
            self.put_loss_rate(&mut state, rate, now);
        }
    }

    fn put_loss_rate(&self, state: &mut State, rate: loss::LossRate, now: u64) {
        let per_minute = rate.per_minute;
        let burst = loss::burst(per_minute);
        let jitter = u64::try_from(self.limits.jitter_margin.as_nanos()).unwrap_or(u64::MAX);
        let headroom = self.limits.headroom;
        state.requests = Some(Gcra::relimited(
            state.requests.as_ref(),
            now.max(state.paused_until),
            per_minute,
            burst,
            headroom,
            jitter,
        ));
        if state.loss.is_none() {
            tracing::info!(
                per_minute,
                "429s without a stated request limit: requests paced at the rate answered"
            );
        }
        state.loss = Some(rate);
        metrics::gauge!("volley_rate_limit_loss_rate_per_minute").set(per_minute as f64);
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
    /// How much later than the end of a pause a send it pushed back goes, for the send's
    /// random `fraction` (see [`State::pause_stretch`]), and when that pause ends.
    pub(super) fn pause_stretch(&self, fraction: f64) -> (u64, u64) {
        let state = self.lock();
        (state.pause_stretch(fraction), state.paused_until)
    }

    /// `at` in nanoseconds since the epoch (0 for an instant before it).
    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

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

    /// A grant that will bring no answer: while the gate is shut every grant is a probe, and
    /// one never sent, or abandoned after it was sent, lets the next caller probe instead.
    fn probe_returned(&self, cost: Cost) {
        if cost.requests > 0
            && let Some(gate) = &self.gate
            && !gate.is_closed()
        {
            gate.add_permits(1);
        }
    }

    pub(super) fn give_back(&self, cost: Cost) {
        self.probe_returned(cost);
        let now = self.now();
        let mut state = self.lock();
        if let Some(g) = &mut state.requests {
            g.refund(now, u64::from(cost.requests));
        }
        if let Some(g) = &mut state.tokens {
            g.refund(now, cost.tokens);
        }
        if let Some(g) = &mut state.input {
            g.refund(now, cost.input_tokens);
        }
        if let Some(g) = &mut state.output {
            g.refund(now, cost.output_tokens);
        }
    }
}

/// The error for a cost above a whole minute's budget, which no wait can satisfy.
fn too_large(id: RequestId, cost: Cost, shared: &Shared) -> Option<Error> {
    too_large_for(
        id,
        cost,
        [
            shared.max_requests,
            shared.max_tokens,
            shared.max_input,
            shared.max_output,
        ],
    )
}

/// What a request asks of the limiter: its cost, and when its caller stops waiting.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask {
    pub(super) id: RequestId,
    pub(super) cost: Cost,
    /// The call's deadline, nanoseconds since the limiter's epoch.
    pub(super) until: Option<u64>,
}

impl Ask {
    fn with_cost(self, cost: Cost) -> Ask {
        Ask { cost, ..self }
    }
}

/// The stretch of a send held by a pause (`stretch`: its random `fraction` of the pause's
/// spread), kept within the first half of the time `left` from the pause's end to its call's
/// deadline: at most that `fraction` of half of it. The held sends still go spread out (not
/// at one instant, the herd the spread is for), and each with at least half its time left,
/// rather than failing unsent. With no time left it is as it was (the send fails).
pub(super) fn fit_stretch(stretch: Duration, fraction: f64, left: Option<Duration>) -> Duration {
    match left {
        Some(left) if !left.is_zero() => stretch.min((left / 2).mul_f64(fraction)),
        _ => stretch,
    }
}

/// The error for request `id`, which would wait `wait` nanoseconds, longer than the `left`
/// before its caller stops waiting ([`RateLimiter::acquire_before`]).
pub(crate) fn past_deadline(id: RequestId, wait: u64, left: u64) -> Error {
    let wait = Duration::from_nanos(wait);
    Error::new(
        ErrorKind::RateLimited,
        format!(
            "request {id} not sent: the rate limiter would hold it {:.3} s (a 429 paused \
             the sends, or the limit is used up), past the call's deadline {:.3} s away",
            wait.as_secs_f64(),
            Duration::from_nanos(left).as_secs_f64(),
        ),
    )
    .with_retry_after(Some(wait))
    .with_request_sent(false)
    .with_source(HeldBack)
}

/// The source of a limiter's refusal of a request it would hold past its deadline
/// ([`past_deadline`]): it tells that refusal, made in this process, from a 429 that nobody
/// sent on either (a proxy's refusal of the tunnel). Its text is in the refusal's message, so
/// a report does not repeat it.
#[derive(Debug)]
pub(crate) struct HeldBack;

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rate limiter would hold it")
    }
}

impl std::error::Error for HeldBack {}

/// Asserts that `err` is a limiter's refusal of a request it would hold past its deadline
/// ([`past_deadline`]): rate-limited, not sent, with the wait it would have had (`wait`,
/// within a tenth) and a message that says so.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_held_past_deadline(err: &Error, wait: Duration) {
    assert!(err.is_rate_limited() && is_held_back(err), "{err}");
    assert!(!err.is_request_sent(), "{err}");
    let had = err.retry_after().expect("the wait it would have had");
    assert!(had > wait * 9 / 10 && had < wait * 11 / 10, "{had:?}");
    assert!(err.to_string().contains("deadline"), "{err}");
}

/// Whether `error` is a limiter's refusal of a request it would hold past its deadline.
pub(crate) fn is_held_back(error: &Error) -> bool {
    std::error::Error::source(error).is_some_and(|source| source.is::<HeldBack>())
}

/// The error for a cost above the per-minute limits given (requests, tokens, input tokens,
/// output tokens), which no wait can satisfy; the shared limiter uses the same words.
pub(super) fn too_large_for(id: RequestId, cost: Cost, limits: [Option<u64>; 4]) -> Option<Error> {
    let [max_requests, max_tokens, max_input, max_output] = limits;
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
    let split = |needed: u64, limit: Option<u64>, what: &str| {
        let limit = limit?;
        (needed > limit).then(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "request {id} needs an estimated {} {what} tokens, more than the whole \
                     {what}-tokens-per-minute budget of {}",
                    group_digits(needed),
                    group_digits(limit)
                ),
            )
        })
    };
    check(cost.tokens, max_tokens, "tokens")
        .or_else(|| check(u64::from(cost.requests), max_requests, "requests"))
        .or_else(|| split(cost.input_tokens, max_input, "input"))
        .or_else(|| split(cost.output_tokens, max_output, "output"))
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
