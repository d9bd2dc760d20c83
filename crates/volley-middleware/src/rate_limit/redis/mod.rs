//! [`RedisLimiter`]: one RPM/TPM budget shared by every process that uses the same API key,
//! kept in Redis (feature `redis`).
//!
//! Each process builds a `RedisLimiter` from [`SharedLimits`] and puts it in its stack with
//! [`RateLimitLayer::with_limiter`](super::RateLimitLayer::with_limiter). The limits are
//! enforced together: four processes at a 1 200 RPM limit send 1 200 requests a minute between
//! them, in the order they asked. Anthropic's input- and output-token limits
//! ([`Limits::input_tokens`], [`Limits::output_tokens`]) are shared the same way: each is a
//! bucket of its own, debited with the request's estimate and settled with the usage the
//! answer reports.
//!
//! # Semantics
//!
//! The same as [`LocalLimiter`]'s (see the [parent module](super)), with the state in Redis:
//! the GCRA runs in a Lua script, atomically, on the Redis server's clock (`TIME`), so hosts
//! whose clocks disagree still agree on the schedule. [`Limits`]' burst,
//! headroom and jitter margin mean the same; requests get send times in the order they called
//! `acquire` (a batch of one process's requests goes in its order, and processes' batches in
//! the order they reach Redis), then sleep until them with no lock held; a cost above a
//! whole minute's budget fails at once with `ErrorKind::InvalidInput`; dropping an acquire
//! future gives its reservation back; `release` gives a cost back; `settle` corrects the token
//! charge (unused tokens back unless [`Limits::refund_unused`] is off, extra ones charged up to a
//! minute's worth). A `Retry-After` on a 429 pauses every process, capped at
//! [`Limits::max_pause`], and pushes back the requests every process already has waiting; a
//! reported `remaining: 0` empties the shared bucket.
//!
//! `settle`, `release` and `observe` never wait: they add to a report that a background task
//! sends with its next round trip, within 5 ms (a 429 at once). The same task makes every
//! round trip, one at a time, and reserves send times for everything that queued meanwhile in
//! that one script call, so a thousand concurrent callers cost a few round trips, not a
//! thousand. A reply says how long from the server's now each request must wait; the process
//! adds that to its own clock when the reply arrives, so a slow reply makes requests later,
//! never earlier. A process learns of a pause another process started with its next round
//! trip, and at least every 100 ms while it has requests waiting (a small call, only when
//! nothing else went to Redis meanwhile). The script needs Redis 5 or later (or Valkey).
//!
//! # Learned limits
//!
//! With [`Limits::auto`] (or [`Limits::learn_requests`], [`Limits::learn_tokens`]) and no such
//! limit given, the limits are learned from the provider's `x-ratelimit-limit-*` headers as
//! the in-process limiter learns them, and shared: the process that reads a new value sends
//! it with its next round trip (at once), the script keeps it in the state and paces every
//! process's reservations by it, and every reply tells each process the limit in force
//! ([`RedisLimiter::learned`]). A changed header replaces it, whichever process reads it. Until
//! a limit is known each process starts slowly, as the in-process limiter does (four requests,
//! then the others wait for the first answer, at most 10 s); a process that connects after a
//! limit was learned starts with it. The learned limit expires with the state, a minute after
//! a quiet spell, and is learned again. The local fallback learns on its own, at the whole
//! limit (it cannot know the share before a limit is learned).
//!
//! # Leasing
//!
//! With [`SharedLimits::lease`]`(k)`, each round trip also reserves permits for requests that
//! have not arrived yet, up to `k` in hand, and hands them out without a round trip (a mutex
//! and no I/O); it fetches more when fewer than half are left. A leased permit is a place in
//! the shared schedule: it can be taken from its time until half the [jitter
//! margin](Limits::jitter_margin) after it, and is given back (with the next report) if nobody
//! takes it by then, when the next request needs more tokens than it carries (the largest
//! estimate among the last 16 requests), or when the limiter is dropped. A request that takes
//! one with tokens to spare gives the rest back.
//!
//! How large may `k` be? A lease of `k` lets one process hold `k / rate` seconds of the shared
//! schedule: requests from other processes queue behind it even when this process ends up
//! not using it. A permit given back frees its quota for later requests, but the requests
//! already scheduled behind it keep their times, so each time a process's demand stops, up to
//! `k / rate` seconds of sending are lost (measured: four processes leasing 4 at 1 200 RPM
//! run at the limit while busy, and lose about half a second when they stop). At 1 200 RPM
//! (20 a second) a lease of 10 holds half a second of everyone's quota; at 60 000 RPM, 10 ms.
//! Keep `k / rate` below about 100 ms, so the unfairness is lost in the latency of an LLM
//! call, and `k` below the burst divided by the number of processes, so the processes' leases
//! fit in one burst together: at 1 200 RPM that allows 2 (the burst rule alone would allow 5
//! for four processes), at 60 000 RPM with four processes 100 (250 by the burst rule).
//! Accuracy does not depend on `k`: a permit is used at most half the jitter margin after its
//! time, which the margin absorbs.
//!
//! The default is no leasing (`k = 1`): at the request rates of LLM APIs a round trip (well
//! under a millisecond to a nearby Redis) is noise next to the call it guards, concurrent
//! requests share round trips anyway, and without leases every grant is in exact shared
//! order. Lease when one process makes thousands of requests a second, or Redis is far away.
//!
//! # When Redis fails
//!
//! A round trip fails when Redis is unreachable, refuses, or does not answer within twice the
//! command timeout
//! ([`RedisOptions::response_timeout`](crate::redis::RedisOptions::response_timeout)).
//! Requests that already have their send time keep it; what happens to the others is
//! [`FailureMode`]'s choice:
//!
//! - [`FailureMode::FailClosed`] (the default): they wait, in order, while the limiter retries
//!   with backoff (50 ms doubling to 2 s), and go once Redis answers. A warning naming the
//!   server (its URL without the password) is logged at most every 5 s. No request fails
//!   because of the outage, and the provider's limit is never exceeded. A refusal no wait
//!   heals ([`crate::redis::is_permanent`]: a password changed and the connection dropped,
//!   the user's ACL no longer allows the script, a cluster node answering a connection not
//!   made with [`RedisOptions::cluster`](crate::redis::RedisOptions::cluster)) that goes on
//!   for [`SharedLimits::give_up_on_refusal_after`] (30 s) fails the requests waiting with
//!   `ErrorKind::Config`, logged as an error at most every 5 s; later requests fail the same
//!   way at each round trip until Redis accepts the limiter again (`volley run` stops at the
//!   first). This is the default
//!   because it needs no knowledge of the deployment: a fallback must guess how many
//!   processes share the limit, and a wrong guess overshoots the provider's limit in exactly
//!   the moment nothing coordinates the processes.
//! - [`FailureMode::LocalFallback`]` { processes: n }`: the process limits itself in-process at
//!   `1 / n` of each limit and burst until Redis answers again (it asks every second), then
//!   switches back; if it sent anything locally, the shared buckets restart empty rather than
//!   full, so the switch cannot double a burst. Settlements go to the limiter that granted.
//!
//! A Redis that restarts empty just works: the next call recreates the state, and each
//! process restores the end of its own pending reservations into it, so they are not granted a
//! second time. A round trip that timed out may still have been applied; its reservations are
//! then lost (the safe side) and its refunds are not sent twice.
//!
//! # Keys
//!
//! One hash per limiter: `<prefix>:ratelimit:{<credential hash>}`, fields `r`, `t`, `i` and `o`
//! (when the request, token, input-token and output-token buckets are full again; only those
//! of the limits configured are written), `until` (a pause), `shift` (pauses added so far) and
//! `epoch` (when the state was created), in microseconds of the server's clock, and `lr`, `lt`
//! (the learned request and token limits per minute, when learned). The `i` and
//! `o` fields were added without a new key version: a script that knows only `r` and `t`
//! leaves them alone. The
//! credential hash is 16 bytes of a BLAKE3 key derivation from the
//! [`CredentialId`](volley_core::cache_key::CredentialId), itself a hash of the API key:
//! neither can be turned back into the key. The hash expires a minute after its buckets are
//! full again, so an idle limiter leaves nothing behind. Processes sharing a prefix and
//! credential must configure the same [`Limits`].
//!
//! # Redis Cluster
//!
//! Use [`RedisOptions::cluster`](crate::redis::RedisOptions::cluster). The script declares
//! its only key, so it runs on the node that owns the key's slot; the `{...}` hash tag keeps
//! every key of one limiter (everything up to the closing brace is the same for all of them)
//! in that slot. A script missing after a
//! failover or a resharding is loaded again (`EVALSHA`, `NOSCRIPT`, `SCRIPT LOAD`). A server
//! that refuses `SCRIPT LOAD` as an unknown or unsupported command (twemproxy and Envoy's
//! Redis proxy do; so does a server with the command renamed away) gets the script whole with
//! every call (`EVAL`), a few KiB more per round trip. The
//! state holds times of the primary's wall clock (`TIME`): after a failover to a node whose
//! clock differs by `d`, or a step of the clock by `d`, the buckets look `d` fuller or emptier
//! once, so keep the servers' clocks synchronised (the clients' clocks do not matter).
//!
//! # Runtime
//!
//! [`RedisLimiter::connect`] starts the background task on the current tokio runtime; use the
//! limiter while that runtime runs. When the last clone is dropped, the task gives back its
//! leased permits, sends its last report and ends. [`RedisLimiter::stats`] counts round trips,
//! errors, leases and fallbacks.
//!
//! # Examples
//!
//! Defaults: fail closed, no leasing, the anonymous credential, prefix `volley`.
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use volley_middleware::rate_limit::{Limits, RateLimitLayer, RedisLimiter, SharedLimits};
//! use volley_middleware::redis::RedisOptions;
//! # fn transport() -> tower::util::BoxCloneService<volley_core::Request, volley_core::Response, volley_core::Error> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_req: volley_core::Request| async {
//! #         Err::<volley_core::Response, _>(volley_core::Error::new(volley_core::ErrorKind::Cancelled, "demo"))
//! #     }))
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), volley_core::Error> {
//! let limits = Limits::per_minute().requests(500).tokens(200_000);
//! let redis = RedisOptions::new("redis://127.0.0.1:6379");
//! let limiter = RedisLimiter::connect(SharedLimits::new(redis, limits)).await?;
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::with_limiter(limiter))
//!     .service(transport());
//! # drop(service);
//! # Ok(())
//! # }
//! ```
//!
//! Customised: a cluster, the limits of one API key, small leases, and a local fallback for
//! eight processes.
//!
//! ```no_run
//! use std::time::Duration;
//! use volley_core::ApiKey;
//! use volley_core::cache_key::CredentialId;
//! use volley_middleware::rate_limit::{FailureMode, Limits, RedisLimiter, SharedLimits};
//! use volley_middleware::redis::RedisOptions;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), volley_core::Error> {
//! let key = ApiKey::new("sk-live-123");
//! let redis = RedisOptions::new("rediss://:password@redis-0.internal:6379")
//!     .seed("rediss://:password@redis-1.internal:6379")
//!     .cluster(true)
//!     .response_timeout(Duration::from_millis(200));
//! let limits = Limits::per_minute().requests(60_000).tokens(10_000_000);
//! let limiter = RedisLimiter::connect(
//!     SharedLimits::new(redis, limits)
//!         .prefix("batch-prod")
//!         .credential(&CredentialId::from_api_key(&key))
//!         .lease(16)
//!         .on_failure(FailureMode::LocalFallback { processes: 8 }),
//! )
//! .await?;
//! println!("{:?}", limiter.stats());
//! # Ok(())
//! # }
//! ```

mod acquire;
mod config;
mod dispatch;
mod learn;
mod lease;
#[cfg(test)]
mod replay;
mod shared;
mod stats;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use volley_core::dialect::TokenUsage;
use volley_core::{Error, RequestId};

use super::{Cost, Grant, Limits, LocalLimiter, Observation, RateLimiter};
use shared::Shared;
use store::{Call, RedisStore, Reply, Store};

pub use acquire::RedisAcquire;
pub use config::{DEFAULT_REFUSAL_GRACE, FailureMode, SharedLimits};
pub use stats::RedisLimiterStats;

/// Requests and tokens per minute shared through Redis by every process that uses the same
/// prefix and credential. See the [module docs](self).
///
/// Cheap to clone; clones share the connection, the background task and the leases. Build one
/// per process and credential, and share it between that process's stacks.
#[derive(Clone)]
pub struct RedisLimiter {
    handle: Arc<Handle>,
}

/// Closes the limiter when the last clone goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl RedisLimiter {
    /// Connects to Redis now, loads the script and checks that it runs, and starts the
    /// background task on the current tokio runtime.
    ///
    /// # Errors
    /// `ErrorKind::Config` for limits that make no sense, a lease of 0, a fallback for 0
    /// processes, or a URL that does not parse; `ErrorKind::Connect`, `Connection` or `Timeout`
    /// when Redis cannot be reached, refuses the credentials, or does not run the script. No
    /// message contains the password.
    pub async fn connect(options: SharedLimits) -> Result<RedisLimiter, Error> {
        let config = options.resolve()?;
        let local = match config.failure {
            FailureMode::LocalFallback { processes } => {
                Some(LocalLimiter::new(config.fallback_limits(processes))?)
            }
            FailureMode::FailClosed => None,
        };
        let store = RedisStore::connect(&options.redis, &config).await?;
        let first = store.call(&Call::default()).await?;
        Ok(RedisLimiter::start(config, Box::new(store), local, &first))
    }

    fn start(
        config: config::Config,
        store: Box<dyn Store>,
        local: Option<LocalLimiter>,
        first: &Reply,
    ) -> RedisLimiter {
        let shared = Arc::new(Shared::new(config, store, local, first));
        tokio::spawn(dispatch::run(shared.clone()));
        RedisLimiter {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// What the limiter has done since it connected.
    pub fn stats(&self) -> RedisLimiterStats {
        self.shared().counters.snapshot()
    }

    /// The limits this limiter enforces with the other processes.
    pub fn limits(&self) -> &Limits {
        &self.shared().config.limits
    }

    /// The limits learned from the provider's headers so far, per minute, by this process or
    /// any other sharing the state: `(requests, tokens)`, each `None` until learned (or when
    /// it is given, or not learned). As [`LocalLimiter::learned`].
    pub fn learned(&self) -> (Option<u64>, Option<u64>) {
        (self.learned_in(0), self.learned_in(1))
    }

    /// The input- and output-token limits learned so far, per minute (Anthropic's ITPM and
    /// OTPM), as [`learned`](Self::learned) for requests and tokens.
    pub fn learned_split(&self) -> (Option<u64>, Option<u64>) {
        (self.learned_in(2), self.learned_in(3))
    }

    /// Whether requests need a token estimate: a token limit is given, or has been learned,
    /// or may still be learned from this process's first answer (its slow start is on). As
    /// [`LocalLimiter::counts_tokens`].
    pub fn counts_tokens(&self) -> bool {
        let shared = self.shared();
        shared.config.tokens.is_some()
            || self.learned().1.is_some()
            || (shared.config.learn[1]
                && shared.slow_start.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn learned_in(&self, d: usize) -> Option<u64> {
        let learned = self.shared().learned[d].load(std::sync::atomic::Ordering::Relaxed);
        Some(learned).filter(|n| *n > 0)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The local fallback, when `grant` came from it.
    fn local_for(&self, grant: &Grant) -> Option<&LocalLimiter> {
        self.shared()
            .local
            .as_ref()
            .filter(|_| acquire::is_local(grant))
    }
}

impl RateLimiter for RedisLimiter {
    type Acquire = RedisAcquire;

    fn acquire(&self, id: RequestId, cost: Cost) -> RedisAcquire {
        RedisAcquire::start(self.shared(), id, cost, None)
    }

    fn acquire_before(
        &self,
        id: RequestId,
        cost: Cost,
        deadline: Option<std::time::Instant>,
    ) -> RedisAcquire {
        RedisAcquire::start(self.shared(), id, cost, deadline)
    }

    fn settle(&self, grant: Grant, actual_tokens: u64) {
        match self.local_for(&grant) {
            Some(local) => local.settle(grant, actual_tokens),
            None => self.shared().settle(grant.cost().tokens, actual_tokens),
        }
    }

    fn release(&self, grant: Grant) {
        match self.local_for(&grant) {
            Some(local) => local.release(grant),
            None => self.shared().give_back(grant.cost()),
        }
    }

    fn abandon(&self, grant: Grant) {
        match self.local_for(&grant) {
            Some(local) => local.abandon(grant),
            None => self.shared().abandoned(grant.cost()),
        }
    }

    fn observe(&self, observation: &Observation) {
        self.shared().observe(observation);
    }

    fn learns(&self) -> bool {
        self.shared().config.learns()
    }

    fn splits_tokens(&self) -> bool {
        let shared = self.shared();
        shared.config.splits_tokens()
            || self.learned_in(2).is_some()
            || self.learned_in(3).is_some()
            // As the in-process limiter: during the slow start the held requests need their
            // estimates for an input or output limit the first answer may teach.
            || ((shared.config.learn[2] || shared.config.learn[3])
                && shared.slow_start.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn settle_usage(&self, grant: Grant, usage: TokenUsage) {
        match self.local_for(&grant) {
            Some(local) => local.settle_usage(grant, usage),
            None => self.shared().settle_usage(grant.cost(), usage),
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.shared().config;
        f.debug_struct("RedisLimiter")
            .field("server", &config.server)
            .field("key", &config.key)
            .field("limits", &config.limits)
            .field("lease", &config.lease)
            .field("on_failure", &config.failure)
            .finish_non_exhaustive()
    }
}
