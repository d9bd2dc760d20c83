//! An adaptive concurrency limit: as many requests in flight as the server takes without
//! overload or queueing, found while running, never above a maximum.
//!
//! [`AdaptiveConcurrencyLimit`] holds its permits as [`ConcurrencyLimit`](super::ConcurrencyLimit)
//! does (taken in `poll_ready`, held until the body or stream is finished), but the number of
//! permits moves:
//!
//! - **Slow start.** It begins at a small limit ([`DEFAULT_INITIAL`], 16) and doubles it
//!   every window of answers while nothing signals overload, so a run never opens with a
//!   burst of 503s.
//! - **Loss first.** A 429, 503 or 529, a refused connection or a timeout from a request sent
//!   under the current limit cuts it by the backoff factor (× 0.8), once per change: a burst
//!   of 503s from one overfull window cuts once.
//! - **Then latency.** Each window of successful answers (half the limit, at least 16) is
//!   judged by its median latency (smoothed over windows) against the unloaded baseline (the
//!   lowest smoothed median seen). Past the tolerance (1.2 ×) the limit is scaled down in proportion, which settles
//!   a server whose latency grows past its knee (a GPU server batching requests) just past
//!   the knee: the same throughput as any higher concurrency, without the queueing. Within
//!   it, the limit grows by its square root per window, if the window used at least half of it.
//!
//! Medians, not means, because LLM latency grows with output length: varied lengths move a
//! mean, not a median. The design follows the Vegas and Gradient2 limits of Netflix's
//! concurrency-limits and Envoy's adaptive concurrency filter (a baseline, a gradient, a
//! multiplicative cut on loss), with a minimum-of-medians baseline instead of a periodic probe
//! at minimum concurrency, which would cost throughput.
//!
//! # Metrics
//!
//! `volley_concurrency_limit` (gauge): the limit in force. The layer answers
//! [`limit`](AdaptiveConcurrencyLimitLayer::limit) and
//! [`in_flight`](AdaptiveConcurrencyLimitLayer::in_flight) for progress displays.
//!
//! # Examples
//!
//! Defaults, up to 512 in flight:
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_middleware::limit::AdaptiveConcurrencyLimitLayer;
//! # fn transport() -> tower::util::BoxCloneService<volley_core::Request, volley_core::Response, volley_core::Error> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_req: volley_core::Request| async {
//! #         Err::<volley_core::Response, _>(volley_core::Error::new(volley_core::ErrorKind::Cancelled, "demo"))
//! #     }))
//! # }
//!
//! let limit = AdaptiveConcurrencyLimitLayer::new(512);
//! let service = ServiceBuilder::new().layer(limit.clone()).service(transport());
//! assert_eq!(limit.limit(), 16);
//! # drop(service);
//! ```
//!
//! Customised: a larger first window and a stricter latency tolerance:
//!
//! ```
//! use volley_middleware::limit::AdaptiveConcurrencyLimitLayer;
//!
//! let limit = AdaptiveConcurrencyLimitLayer::new(1024)
//!     .initial(64)
//!     .min(4)
//!     .tolerance(1.2)
//!     .backoff(0.7);
//! assert_eq!(limit.limit(), 64);
//! ```

mod controller;
mod future;
mod layer;
mod service;
mod shared;
#[cfg(test)]
mod tests;

pub use future::ResponseFuture;
pub use layer::{
    AdaptiveConcurrencyLimitLayer, DEFAULT_BACKOFF, DEFAULT_INITIAL, DEFAULT_TOLERANCE,
};
pub use service::AdaptiveConcurrencyLimit;
