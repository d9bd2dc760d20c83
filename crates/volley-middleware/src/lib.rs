//! # volley-middleware
//!
//! Tower layers for calling LLM HTTP APIs, each usable alone in any `tower::ServiceBuilder`
//! over a `Service<volley_core::Request, Response = volley_core::Response, Error =
//! volley_core::Error>`:
//!
//! - [`retry`]: classification, exponential backoff with full jitter, `Retry-After`, a retry
//!   budget;
//! - [`rate_limit`]: requests and tokens per minute (GCRA), settled with real usage, or
//!   learned from the provider's headers;
//! - [`limit`]: a concurrency limit whose permits are held until the body is finished, fixed
//!   or adaptive (slow start, cut on overload, settled at the server's latency knee);
//! - [`timeout`]: whole attempt, time to first byte, idle time between stream chunks;
//! - [`cache`]: memory and disk caches keyed by request and credential;
//! - [`balance`]: several endpoints: power of two choices over Peak-EWMA load, weights,
//!   fallback groups, a circuit breaker per endpoint, retries that move;
//! - [`metrics`]: counters and histograms through the `metrics` facade, and `tracing` spans.
//!
//! The order the `volley` facade composes them in, and why:
//!
//! ```text
//! caller ─▶ Cache ─▶ Retry ─▶ RateLimit ─▶ ConcurrencyLimit ─▶ Timeout ─▶ transport
//! ```
//!
//! This crate does not depend on the transport: it wraps any service.
#![deny(missing_docs)]

pub mod balance;
pub mod cache;
mod jitter;
pub mod limit;
pub mod metrics;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retry;
pub mod timeout;
