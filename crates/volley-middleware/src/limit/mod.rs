//! A concurrency limit whose permits are held until the response body is finished: fixed
//! ([`ConcurrencyLimit`]) or adaptive ([`AdaptiveConcurrencyLimit`], module [`adaptive`]).
//!
//! [`ConcurrencyLimit`] lets at most `max` requests be in flight at once. A request is in
//! flight from the moment the service is ready to take it (its `poll_ready` returned a permit)
//! until its response is completely read: for a complete body that is when the response
//! arrives, for a streaming body (`Body::Stream`) it is when the stream ends (returns `None` or
//! an error) or is dropped. A slot therefore really means "one connection's worth of work",
//! which is what a provider's concurrency cap and the transport's pool care about.
//!
//! Waiters are served in FIFO order (tokio's semaphore is fair), and a request that is waiting
//! holds nothing but its place in the queue.
//!
//! # Why not tower's `ConcurrencyLimit`
//!
//! - tower releases the permit when the response future completes. For a streaming completion
//!   that is when the headers arrive, so a stream that runs for a minute holds no slot and the
//!   limit stops limiting exactly the requests that take longest.
//! - `tower::limit::ConcurrencyLimitLayer` creates a new semaphore every time it is applied,
//!   so two services built from one layer (or one stack cloned before layering) each get their
//!   own budget. [`ConcurrencyLimitLayer`] owns one semaphore and every service it builds, and
//!   every clone of those, shares it.
//!
//! # Where the permit is taken
//!
//! The permit is acquired in `poll_ready`, as tower's own limit does, not inside the response
//! future. That keeps tower's contract (a ready service has capacity; `call` never waits), and
//! it keeps time spent waiting for a slot out of anything below: a timeout layer that starts
//! its clock in `call` measures the attempt, not the queue. Layers above that must not hold a
//! slot while they wait (the rate limiter, retry backoff) simply poll the inner service for
//! readiness only once their own wait is over. A service that was made ready but is never
//! called keeps its permit until it is called or dropped.
//!
//! # Example
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_middleware::limit::ConcurrencyLimitLayer;
//! # fn transport() -> tower::util::BoxCloneService<volley_core::Request, volley_core::Response, volley_core::Error> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_req: volley_core::Request| async {
//! #         Err::<volley_core::Response, _>(volley_core::Error::new(volley_core::ErrorKind::Cancelled, "demo"))
//! #     }))
//! # }
//!
//! // One layer, one budget of 64 slots, however often the stack is built or cloned.
//! let limit = ConcurrencyLimitLayer::new(64);
//! let service = ServiceBuilder::new().layer(limit.clone()).service(transport());
//! let _another = ServiceBuilder::new().layer(limit.clone()).service(transport());
//! assert_eq!(limit.available_permits(), 64);
//! assert_eq!(limit.in_flight(), 0);
//! # drop(service);
//! ```

mod acquire;
pub mod adaptive;
pub(crate) mod body;
mod future;
mod layer;
mod service;

pub use adaptive::{AdaptiveConcurrencyLimit, AdaptiveConcurrencyLimitLayer};
pub use future::ResponseFuture;
pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;
