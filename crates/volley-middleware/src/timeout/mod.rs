//! Deadlines for one attempt: the whole attempt, the first byte, and the silence between the
//! chunks of a stream.
//!
//! [`TimeoutLayer`] has four separate settings, each failing with an [`ErrorKind`] of its own
//! and a message that names the request and the limit (`request 7: no response byte within
//! 10s`):
//!
//! | setting | covers | error kind |
//! |---|---|---|
//! | [`first_byte`](TimeoutLayer::first_byte) | from the call to the response head and, for a stream, to its first body chunk (the first token: what "time to first token" means for an LLM stream, whose head arrives at once) | [`ErrorKind::FirstByteTimeout`] |
//! | [`attempt`](TimeoutLayer::attempt) | from the call to the complete response; for a stream, to the head and the first chunk only | [`ErrorKind::Timeout`] |
//! | [`idle`](TimeoutLayer::idle) | between two chunks of a stream, from the first chunk on; every chunk restarts it | [`ErrorKind::IdleTimeout`] |
//! | [`stream_total`](TimeoutLayer::stream_total) | from the call to the end of a stream | [`ErrorKind::Timeout`] |
//!
//! Why `attempt` stops at a stream's first chunk: a whole-attempt deadline that also cut long
//! generations would have to be set for the longest answer, and would then be useless against a
//! slow start. A stream that is alive keeps going as long as chunks keep coming (`idle`); cap a
//! stream's total length with `stream_total` when you want that too. Non-streaming responses are
//! read to the end by the transport before it answers, so `attempt` covers their whole body.
//!
//! The transport answers a non-streaming request only once it has read the whole body, so for
//! those responses `first_byte` too runs until the body is complete; LLM APIs send the head
//! and a non-streaming body together, after the generation, so the difference does not show.
//!
//! The gap between a stream's head and its first chunk is governed by `first_byte` and
//! `attempt`, never by `idle`: a reasoning model may think for minutes before its first token
//! and then stream quickly.
//!
//! Every setting defaults to `None` (no deadline); the `volley` facade picks the defaults it
//! documents. A deadline costs one `tokio::time::Sleep` only when it is set, created on the
//! call and registered with the timer on its first poll. The timers are `tokio::time`, so a
//! paused test clock drives them. A chunk or response that is ready wins over a deadline that
//! passed at the same poll.
//!
//! Place the layer per attempt (inside retry), so each attempt gets its own deadlines.
//!
//! # Examples
//!
//! Defaults: no deadline at all, the layer passes everything through.
//!
//! ```
//! use volley_middleware::timeout::TimeoutLayer;
//!
//! let layer = TimeoutLayer::new();
//! assert_eq!(layer.first_byte_timeout(), None);
//! ```
//!
//! Customised, in a stack around any service:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use volley_core::{Error, Request, Response};
//! use volley_middleware::timeout::TimeoutLayer;
//!
//! # fn wrap(transport: tower::util::BoxService<Request, Response, Error>) {
//! let service = ServiceBuilder::new()
//!     .layer(
//!         TimeoutLayer::new()
//!             .first_byte(Duration::from_secs(30))
//!             .attempt(Duration::from_secs(120))
//!             .idle(Duration::from_secs(20))
//!             .stream_total(None),
//!     )
//!     .service(transport);
//! # let _ = service;
//! # }
//! ```
//!
//! [`ErrorKind`]: volley_core::ErrorKind
//! [`ErrorKind::FirstByteTimeout`]: volley_core::ErrorKind::FirstByteTimeout
//! [`ErrorKind::Timeout`]: volley_core::ErrorKind::Timeout
//! [`ErrorKind::IdleTimeout`]: volley_core::ErrorKind::IdleTimeout

mod body;
mod deadline;
mod error;
mod future;
mod layer;

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use volley_core::{Error, Request, Response};

pub use future::ResponseFuture;
pub use layer::TimeoutLayer;

use crate::timeout::layer::Limits;

/// Applies the deadlines of a [`TimeoutLayer`] to every call of the inner service.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limits: Limits,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with the deadlines configured on `layer`.
    pub fn new(inner: S, layer: &TimeoutLayer) -> Timeout<S> {
        Timeout {
            inner,
            limits: layer.limits(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let id = request.id();
        // Read the clock only when some deadline needs it.
        let start = self.limits.any().then(Instant::now);
        ResponseFuture::new(self.inner.call(request), id, self.limits, start)
    }
}
