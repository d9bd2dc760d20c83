//! Balancing over several endpoints: power of two choices over Peak-EWMA load, weights,
//! fallback groups by priority, and a circuit breaker per endpoint.
//!
//! [`Balance`] holds one inner service per endpoint (in the facade, each endpoint's own rate
//! limit, concurrency limit, timeout and transport) and sends each request to one of them:
//!
//! 1. **Fallback groups.** Endpoints of priority 0 take all traffic while one of them is
//!    available (breaker not open, not at its [`max_in_flight`](EndpointConfig::max_in_flight));
//!    priority 1 only while every endpoint of priority 0 is open or saturated, and so on.
//! 2. **Power of two choices.** Within the group, two endpoints are drawn by weight and the
//!    one with the lower load gets the request: its Peak-EWMA time to the response head
//!    (a slower answer is taken at once, faster ones are averaged in over about 5 s, as
//!    tower's `load::PeakEwma`) × (requests in flight + 1) ÷ weight, × 8 for an endpoint that
//!    answered 429 within its `Retry-After` (2 s when it gave none). An endpoint that refused
//!    a request in a way no wait heals soon (401; 403, unless it flags the prompt; a `POST`'s
//!    404, a model it does not serve; its quota used up) counts its refusal as a 30 s answer
//!    in its load (not in its mean latency) and is × 8 for a minute: it answers in
//!    milliseconds, and would otherwise look like the fastest endpoint and draw nearly every
//!    request, to fail it. It is tried again about every half minute while another endpoint
//!    answers.
//! 3. **Retries move.** The request's id is remembered (in a small table, per endpoint) when
//!    it failed there, so a retry of it goes to another endpoint when one is available.
//! 4. **Circuit breakers.** Each endpoint has a breaker ([`BreakerConfig`]): it opens on
//!    consecutive failures or an error rate over a sliding window (connection errors,
//!    timeouts and 5xx count; 4xx do not: a refusal counts for nothing, but for a half-open
//!    breaker's probe, which it closes, and the same refusal from every endpoint is better
//!    reported than hidden behind open breakers; 429 is a rate signal, not a failure), lets a few
//!    probe requests through after a cool-down with jitter, and closes after they succeed.
//!    State changes are logged (`tracing`) and counted (`volley_endpoint_breaker_transitions_total`).
//! 5. **Health checks.** While a breaker is open, an active check (`GET /models` under the
//!    endpoint's base URL by default, [`BreakerConfig::health_check`]) is sent through the
//!    endpoint's own service when each cool-down ends: an answer (anything but a 5xx or a
//!    connection failure) lets probe requests through; a failure opens the breaker for the
//!    next, doubled cool-down. No user request is spent on a dead endpoint, and healthy
//!    endpoints are never checked (`volley_endpoint_health_checks_total`).
//!    When every breaker is open, requests fail at once with `ErrorKind::Connect`, request not
//!    sent (the retry layer backs off and tries again).
//!
//! Tower's own `balance::p2c` works over a `Discover` stream of services and needs
//! `Load` on each; here endpoints are few and known at build time, and the breakers and
//! groups need the same bookkeeping, so the selector is our own over the same idea.
//!
//! Counts per endpoint are in [`Balance::stats`] and in the `metrics` facade:
//! `volley_endpoint_requests_total{endpoint, outcome}` with the outcomes `sent`, `answered`,
//! `rate_limited`, `server_error`, `failed` (refusals included).
//!
//! # Example
//!
//! ```
//! use tower::{Service, ServiceExt};
//! use volley_core::{Error, Request, Response};
//! use volley_middleware::balance::{Balance, BreakerConfig, EndpointConfig};
//! # fn endpoint(name: &'static str) -> tower::util::BoxCloneSyncService<Request, Response, Error> {
//! #     tower::util::BoxCloneSyncService::new(tower::service_fn(move |_req: Request| async move {
//! #         Err::<Response, _>(Error::new(volley_core::ErrorKind::Connect, name))
//! #     }))
//! # }
//!
//! let balance = Balance::new(
//!     vec![
//!         (EndpointConfig::new("east").weight(2), endpoint("east")),
//!         (EndpointConfig::new("west"), endpoint("west")),
//!         (EndpointConfig::new("fallback").priority(1), endpoint("fallback")),
//!     ],
//!     BreakerConfig::new().consecutive_failures(3),
//! );
//! assert_eq!(balance.stats().len(), 3);
//! ```

mod breaker;
mod endpoint;
mod future;
mod health;
mod hedge;
mod select;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::util::Oneshot;
use tower_service::Service;
use volley_core::{Error, ErrorKind, Request, Response};

pub use breaker::{BreakerConfig, BreakerState};
pub use endpoint::{EndpointConfig, EndpointStats};
pub use future::ResponseFuture;
pub use hedge::Hedging;

use endpoint::EndpointState;
use select::Selector;

/// The counter of attempts per endpoint, labelled `endpoint` and `outcome`.
pub const ENDPOINT_REQUESTS_TOTAL: &str = "volley_endpoint_requests_total";
/// The counter of hedged copies sent.
pub const HEDGES_TOTAL: &str = "volley_hedges_total";
/// The counter of active health checks, labelled `endpoint` and `outcome` (`alive`, `dead`).
pub const HEALTH_CHECKS_TOTAL: &str = "volley_endpoint_health_checks_total";
/// The counter of circuit-breaker state changes, labelled `endpoint` and `state` (the new
/// state: `open`, `half_open`, `closed`).
pub const BREAKER_TRANSITIONS_TOTAL: &str = "volley_endpoint_breaker_transitions_total";

/// Sends each request to one of several endpoints. See the [module docs](self).
///
/// Always ready: readiness is the chosen endpoint's business, awaited inside the response
/// future (each endpoint's limits wait there). Clones share the endpoints and their state.
pub struct Balance<S> {
    shared: Arc<Shared<S>>,
}

pub(crate) struct Shared<S> {
    services: Box<[S]>,
    pub(crate) selector: Selector,
    /// The path of the active health check, if any.
    health_check: Option<http::uri::PathAndQuery>,
    pub(crate) hedging: Option<Hedging>,
    pub(crate) hedge_budget: hedge::Budget,
    /// With a learned hedging delay: the recent times to the response head.
    pub(crate) hedge_learner: Option<hedge::Learner>,
}

impl<S> Balance<S> {
    /// A balancer over `endpoints`, each with the breaker settings `breaker`.
    ///
    /// # Panics
    /// If `endpoints` is empty.
    pub fn new(endpoints: Vec<(EndpointConfig, S)>, breaker: BreakerConfig) -> Balance<S> {
        Balance::with_hedging(endpoints, breaker, None)
    }

    /// As [`Balance::new`], with hedged requests (see [`Hedging`], and its warning about
    /// paying twice) when `hedging` is given.
    ///
    /// # Panics
    /// If `endpoints` is empty.
    pub fn with_hedging(
        endpoints: Vec<(EndpointConfig, S)>,
        breaker: BreakerConfig,
        hedging: Option<Hedging>,
    ) -> Balance<S> {
        assert!(!endpoints.is_empty(), "a balancer needs an endpoint");
        let mut states = Vec::with_capacity(endpoints.len());
        let mut services = Vec::with_capacity(endpoints.len());
        for (i, (config, service)) in endpoints.into_iter().enumerate() {
            states.push(EndpointState::new(config, breaker.clone(), i as u64 + 1));
            services.push(service);
        }
        Balance {
            shared: Arc::new(Shared {
                services: services.into_boxed_slice(),
                selector: Selector::new(states),
                health_check: breaker.health_check,
                hedging,
                hedge_budget: hedge::Budget::default(),
                hedge_learner: hedging.as_ref().and_then(hedge::Learner::new),
            }),
        }
    }

    /// Each endpoint's counts and breaker state, in the order given to [`Balance::new`].
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.shared
            .selector
            .endpoints
            .iter()
            .map(EndpointState::stats)
            .collect()
    }

    /// Hedged copies sent so far.
    pub fn hedges(&self) -> u64 {
        self.shared.hedge_budget.hedges()
    }

    /// The endpoints' services, in the order given to [`Balance::new`].
    pub fn get_ref(&self) -> &[S] {
        &self.shared.services
    }
}

impl<S> Clone for Balance<S> {
    fn clone(&self) -> Balance<S> {
        Balance {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for Balance<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .shared
            .selector
            .endpoints
            .iter()
            .map(|e| e.config.name())
            .collect();
        f.debug_struct("Balance")
            .field("endpoints", &names)
            .finish()
    }
}

impl<S> Service<Request> for Balance<S>
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let now = Instant::now();
        let id = request.id().as_u64();
        let shared = &self.shared;
        let Ok((index, admission)) = shared.selector.choose(id, now, None) else {
            return ResponseFuture::refused(
                Error::new(
                    ErrorKind::Connect,
                    format!("request {id}: every endpoint's circuit breaker is open; not sent"),
                )
                .with_request_sent(false),
            );
        };
        let copy = shared.hedging.and_then(|hedging| {
            shared.hedge_budget.request();
            let delay = match hedging.delay {
                hedge::Delay::Fixed(delay) => delay,
                // Nothing learned yet: no hedge.
                hedge::Delay::Learned { .. } => shared.hedge_learner.as_ref()?.delay()?,
            };
            Some((request.clone(), delay))
        });
        let post = request.method() == http::Method::POST;
        let inner = Oneshot::new(shared.services[index].clone(), request);
        ResponseFuture::sending(
            inner,
            Arc::clone(shared),
            index,
            admission,
            (id, post),
            now,
            copy,
        )
    }
}

#[cfg(test)]
mod tests;
