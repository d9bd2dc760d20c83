//! Metrics through the `metrics` facade, and a `tracing` span per call.
//!
//! [`MetricsLayer`] records, for every call of the service it wraps:
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `volley_requests_total` | counter | `scope`, `outcome` | one per call: `outcome="ok"`, or the error's [`ErrorKind::as_str`] (`"rate_limited"`, `"first_byte_timeout"`, ...); a call the caller dropped before its end is `"cancelled"` |
//! | `volley_request_duration_seconds` | histogram | `scope` | from the call to the end of the response, streams included |
//! | `volley_time_to_first_byte_seconds` | histogram | `scope` | to the response head (as the transport timed it) for complete bodies, to the first non-empty chunk for streams |
//! | `volley_in_flight` | gauge | `scope` | calls started and not yet finished (a stream until it ends) |
//! | `volley_tokens_total` | counter | `scope`, `direction` | `direction="in"`: prompt tokens, `"out"`: completion tokens, from the response's `usage` (not a cache hit's, see below); recorded by the `request` scope only (finding the usage scans the body) |
//!
//! Users pick the exporter (Prometheus, StatsD, ...) by installing a `metrics` recorder. The
//! handles are registered when the layer is applied to a service, so install the recorder
//! first; after that, recording costs atomic operations, with no registry lookup and no
//! allocation per call.
//!
//! Tokens are read cheaply, by the scans of `volley_core::openai` that the rate limiter uses
//! too: from a successful complete body, only the `usage` object found by a backwards byte
//! search is parsed; a stream is scanned line by line as it goes by (a usage object split
//! across network reads is found), and the last usage it carried is counted once, when the
//! call finishes. The last, because OpenAI sends one usage chunk at the end (with
//! `stream_options.include_usage`) while servers such as vLLM with `continuous_usage_stats`
//! repeat the cumulative usage in every chunk.
//!
//! A stream dropped right after its `data: [DONE]` event, before its end was polled, is a
//! success (`ok`): callers often stop reading there. Dropped earlier, it is `cancelled`.
//!
//! A 200 can fail after all: a stream that carries an error event (an `event: error`, data
//! that is an error object, as vLLM and OpenRouter send mid-stream, or the Responses API's
//! `response.failed`), or a whole body that is an
//! error object ([`Dialect::is_error_reply`]), counts as the error's kind
//! ([`Dialect::error_in_stream`], [`Dialect::error_in_answer`]): `rate_limited`; in a
//! stream, `stream_broken` for a server error or an overload; `status` otherwise (a whole
//! body's `{"error": {"code": 502}}` is a `status` whose status is 502). A stream that ends without its
//! end-of-stream event and without an error is `ok` here: the Responses API and other event
//! streams have no `[DONE]`; `ChatStream` reports a cut chat stream to its caller.
//!
//! Every call the layer sees is counted: a request-scope layer placed outside the cache counts
//! cache hits as requests too (their outcome, duration, first byte). Told that a cache sits
//! inside ([`MetricsLayer::replays`], as the `volley` facade does), it leaves their tokens
//! out: a replay (`x-volley-cache: hit`) was billed once, when the answer first came, so
//! `volley_tokens_total` counts the tokens the provider reported for answers it gave.
//!
//! # Request and attempt
//!
//! The layer can sit twice in a stack: the `volley` facade puts one of scope
//! [`Scope::Request`] outside the cache and retry, and one of scope [`Scope::Attempt`]
//! inside them, per endpoint, so the attempt outcomes show what was retried. The two counts
//! differ by more than the retries: the cache's hits are requests without an attempt, and a
//! hedged copy is an attempt of its own (the copy that loses is dropped, and counted
//! `cancelled`). Count retries with `volley_retries_total`.
//!
//! # Tracing
//!
//! Each call runs in a `DEBUG` span `volley.request` or `volley.attempt` with the fields
//! `request` (the id), `method` and `path` (without the query string, which can carry a key),
//! and ends with a `DEBUG` event `finished` with `outcome` and `duration_ms`. No header value,
//! body or credential is ever recorded. With `DEBUG` disabled the span costs one check of a
//! cached callsite interest.
//!
//! # Examples
//!
//! Defaults: one layer of scope `request`.
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_core::{Error, Request, Response};
//! use volley_middleware::metrics::MetricsLayer;
//!
//! # fn wrap(transport: tower::util::BoxService<Request, Response, Error>) {
//! let service = ServiceBuilder::new()
//!     .layer(MetricsLayer::new())
//!     .service(transport);
//! # let _ = service;
//! # }
//! ```
//!
//! Customised: requests outside retry, attempts inside.
//!
//! ```
//! use tower::ServiceBuilder;
//! use volley_middleware::metrics::{MetricsLayer, Scope};
//!
//! # fn stack<S, R>(transport: S, retry: R)
//! # where R: tower::Layer<volley_middleware::metrics::Metrics<S>>,
//! # {
//! let service = ServiceBuilder::new()
//!     .layer(MetricsLayer::new().scope(Scope::Request))
//!     .layer(retry)
//!     .layer(MetricsLayer::new().scope(Scope::Attempt))
//!     .service(transport);
//! # let _ = service;
//! # }
//! ```
//!
//! [`ErrorKind::as_str`]: volley_core::ErrorKind::as_str
//! [`Dialect::is_error_reply`]: volley_core::Dialect::is_error_reply
//! [`Dialect::error_in_stream`]: volley_core::Dialect::error_in_stream
//! [`Dialect::error_in_answer`]: volley_core::Dialect::error_in_answer

mod body;
mod future;
mod handles;
mod layer;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use volley_core::{Error, Request, Response};

pub use future::ResponseFuture;
pub use layer::MetricsLayer;

use handles::{Handles, Tracker};

/// `volley_requests_total`: calls by outcome.
pub const REQUESTS_TOTAL: &str = "volley_requests_total";
/// `volley_request_duration_seconds`: call durations.
pub const REQUEST_DURATION_SECONDS: &str = "volley_request_duration_seconds";
/// `volley_time_to_first_byte_seconds`: time to the head, or to a stream's first chunk.
pub const TIME_TO_FIRST_BYTE_SECONDS: &str = "volley_time_to_first_byte_seconds";
/// `volley_in_flight`: calls in progress.
pub const IN_FLIGHT: &str = "volley_in_flight";
/// `volley_tokens_total`: tokens by direction.
pub const TOKENS_TOTAL: &str = "volley_tokens_total";

/// What one call of the measured service stands for; the value of the `scope` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// A whole request, retries included (place the layer outside retry).
    #[default]
    Request,
    /// One attempt (place the layer inside retry).
    Attempt,
}

impl Scope {
    /// The label value: `"request"` or `"attempt"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Request => "request",
            Scope::Attempt => "attempt",
        }
    }
}

/// Describes the metrics (help text and units) to the installed recorder, for exporters that
/// show them. Optional; call once after installing the recorder.
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(REQUESTS_TOTAL, "Calls by outcome (ok or error kind).");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Call duration, to the end of the body or stream."
    );
    metrics::describe_histogram!(
        TIME_TO_FIRST_BYTE_SECONDS,
        Unit::Seconds,
        "Time to the response head, or to a stream's first chunk."
    );
    metrics::describe_gauge!(IN_FLIGHT, "Calls in progress.");
    metrics::describe_counter!(TOKENS_TOTAL, "Tokens reported in usage, by direction.");
}

/// Records metrics and a span for every call of the inner service. Built by
/// [`MetricsLayer`].
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S> Metrics<S> {
    pub(crate) fn from_handles(inner: S, handles: Arc<Handles>) -> Metrics<S> {
        Metrics { inner, handles }
    }

    /// The scope this service records as.
    pub fn scope(&self) -> Scope {
        self.handles.scope
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

impl<S> Service<Request> for Metrics<S>
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
        let id = request.id().as_u64();
        let method = request.method().as_str();
        // The path only: a query string may carry a key (`?key=...`).
        let path = request.path_and_query().path();
        let span = match self.handles.scope {
            Scope::Request => tracing::debug_span!("volley.request", request = id, method, path),
            Scope::Attempt => tracing::debug_span!("volley.attempt", request = id, method, path),
        };
        let tracker = Tracker::start(self.handles.clone(), span);
        let dialect = request.dialect();
        let future = {
            let _entered = tracker.span().enter();
            self.inner.call(request)
        };
        ResponseFuture::new(future, tracker, dialect)
    }
}

impl<S> fmt::Debug for Metrics<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("scope", &self.handles.scope)
            .finish_non_exhaustive()
    }
}
