//! The tower stack the facade builds, in DESIGN.md's order:
//!
//! ```text
//! Metrics(request) ─▶ Cache? ─▶ Retry ─▶ RateLimit? ─▶ ConcurrencyLimit ─▶ Metrics(attempt) ─▶ Timeout ─▶ Transport
//! ```
//!
//! - The cache is outermost: a hit costs no quota and no slot. Request metrics sit outside it
//!   so hits are counted as requests.
//! - Retry is outside the limits: a request sleeping in backoff holds no slot, and every
//!   attempt pays its own quota. Attempt metrics sit inside the limits, so they measure what
//!   was sent (in flight never exceeds the concurrency; durations exclude queueing), and
//!   attempts − requests = retries.
//! - The concurrency permit is held until the body or stream is finished; the limit is fixed
//!   or adaptive (`concurrency_auto`), an `Either`.
//! - Timeouts are per attempt, closest to the transport. The call's deadline
//!   (`ClientBuilder::deadline`) is not a layer: `Client::send`'s future holds it, so it also
//!   covers the wait for the first attempt's slot, which happens in the stack's `poll_ready`.
//! - With several endpoints (`ClientBuilder::endpoint`), a `Balance` sits between Retry and
//!   the limits, and each endpoint has its own rate limit, optional cap, timeouts and
//!   transport under the one concurrency ceiling; with one endpoint the balancer is not
//!   there at all (the `Routed` either is always `Left`).
//!
//! Optional layers are `tower::util::Either`s, so the stack is one concrete type: cloning it
//! per call is a handful of `Arc` increments, with no allocation.
//!
//! The rate-limit slot holds a [`SlotLimiter`]: the in-process `LocalLimiter` itself without
//! the `redis` feature, and with it an enum of the local and the Redis limiter whose acquire
//! future is an either-future, so the local path stays unboxed either way.

use tower::util::Either;
use volley_middleware::balance::Balance;
use volley_middleware::cache::Cache;
use volley_middleware::limit::{AdaptiveConcurrencyLimit, ConcurrencyLimit};
use volley_middleware::metrics::Metrics;
use volley_middleware::rate_limit::RateLimit;
use volley_middleware::retry::Retry;
use volley_middleware::timeout::Timeout;
use volley_transport::Transport;

use crate::rate_limit::SlotLimiter;

type Sent = Metrics<Timeout<Transport>>;
type Attempt = Either<ConcurrencyLimit<Sent>, AdaptiveConcurrencyLimit<Sent>>;
type Limited = Either<RateLimit<Attempt, SlotLimiter>, Attempt>;
/// One endpoint of several: its own rate limit and optional cap of requests in flight, over
/// the client's concurrency ceiling (one budget shared by every endpoint), its timeouts and
/// its transport.
type OwnCap = Either<ConcurrencyLimit<Attempt>, Attempt>;
pub(crate) type Endpoint = Either<RateLimit<OwnCap, SlotLimiter>, OwnCap>;
/// One endpoint (`Limited`, exactly today's path), or several behind the balancer.
type Routed = Either<Limited, Balance<Endpoint>>;
type Retried = Retry<Routed>;
type Cached = Either<Cache<Retried>, Retried>;

/// The whole stack.
pub(crate) type Stack = Metrics<Cached>;
