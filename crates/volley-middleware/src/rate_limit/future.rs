//! [`ResponseFuture`]: wait for the grant, then for the inner service, then settle.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use metrics::Histogram;
use pin_project_lite::pin_project;
use tower_service::Service;
use volley_core::{Dialect, Error, Request, Response};

use super::settle::SettlingStream;
use super::{Cost, Grant, Observation, RateLimiter};

pin_project! {
    /// The future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<S, L>
    where
        S: Service<Request>,
        L: RateLimiter,
    {
        #[pin]
        state: State<S, S::Future, L::Acquire>,
        grant: GrantGuard<L>,
        wait: Histogram,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, A> {
        /// Waiting for the limiter; the inner service is not asked for readiness yet, so
        /// nothing below (a concurrency slot) is held meanwhile.
        Acquiring {
            #[pin]
            acquire: A,
            service: Option<S>,
            request: Option<Request>,
        },
        /// Granted; waiting for the inner service to be ready.
        Ready {
            service: S,
            request: Option<Request>,
        },
        /// Sent.
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<S, L> ResponseFuture<S, L>
where
    S: Service<Request>,
    L: RateLimiter,
{
    pub(super) fn new(
        limiter: L,
        service: S,
        request: Request,
        wait: Histogram,
    ) -> ResponseFuture<S, L> {
        let limiter = limiter.for_request(&request);
        let cost = if limiter.splits_tokens() {
            super::Cost::split_of(&request)
        } else {
            super::Cost::of(&request)
        };
        let acquire = limiter.acquire_before(request.id(), cost, request.deadline());
        let dialect = request.dialect();
        ResponseFuture {
            state: State::Acquiring {
                acquire,
                service: Some(service),
                request: Some(request),
            },
            grant: GrantGuard {
                limiter,
                grant: None,
                sent: false,
                dialect,
            },
            wait,
        }
    }
}

impl<S, L> Future for ResponseFuture<S, L>
where
    S: Service<Request, Response = Response, Error = Error>,
    L: RateLimiter,
{
    type Output = Result<Response, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Acquiring {
                    acquire,
                    service,
                    request,
                } => {
                    let grant = ready!(acquire.poll(cx))?;
                    this.wait.record(grant.waited().as_secs_f64());
                    this.grant.grant = Some(grant);
                    let service = service.take().expect("service taken only here");
                    let request = request.take();
                    this.state.set(State::Ready { service, request });
                }
                StateProj::Ready { service, request } => {
                    // An error here drops the guard, which gives the unsent grant back.
                    ready!(service.poll_ready(cx))?;
                    let request = request.take().expect("request taken only here");
                    let future = service.call(request);
                    this.grant.sent = true;
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    return Poll::Ready(this.grant.finish(result));
                }
            }
        }
    }
}

impl<S, L> fmt::Debug for ResponseFuture<S, L>
where
    S: Service<Request>,
    L: RateLimiter,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Ready { .. } => "ready",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Holds the grant between the limiter and the outcome. Dropped before the request was
/// handed to the inner service (the caller gave up while it waited, or the inner service
/// failed to get ready), it gives the grant back. Once handed over the request may have
/// reached the provider, so a caller giving up then refunds nothing (the limiter is told it
/// was [abandoned](RateLimiter::abandon)).
struct GrantGuard<L: RateLimiter> {
    limiter: L,
    grant: Option<Grant>,
    sent: bool,
    /// How the answer states its usage and its limits.
    dialect: Dialect,
}

impl<L: RateLimiter> GrantGuard<L> {
    /// Learns from the outcome of a sent request and settles its grant.
    fn finish(&mut self, result: Result<Response, Error>) -> Result<Response, Error> {
        let Some(grant) = self.grant.take() else {
            return result;
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if !error.is_request_sent() {
                    // The provider never saw it, so it never counted it.
                    self.limiter.release(grant);
                    return Err(error);
                }
                let observation = Observation::of_error_in(self.dialect, &error);
                if observation.is_relevant() || self.limiter.learns() {
                    // A 429 means the estimate was, if anything, optimistic: no refund.
                    self.limiter.observe(&observation);
                }
                if error.status().is_some_and(never_generated) {
                    // Refused before any generation: the request counted, its tokens did not.
                    let tokens = Cost {
                        requests: 0,
                        ..grant.cost()
                    };
                    self.limiter.release(grant.with_cost(tokens));
                }
                return Err(error);
            }
        };
        let mut observation = Observation::from_headers_in(self.dialect, response.headers());
        if response.is_error_reply(self.dialect) {
            // A gateway's 200 with `{"error": {"code": 429}}`: a 429 in all but its status.
            let error = self.dialect.error_in_answer(body_of(&response), "answer");
            if error.is_rate_limited() || error.is_overloaded() {
                observation.rate_limited = error.is_rate_limited();
                observation.retry_after = volley_core::headers::retry_after(
                    response.headers(),
                    std::time::SystemTime::now(),
                );
            }
        }
        if observation.is_relevant() || self.limiter.learns() {
            self.limiter.observe(&observation);
        }
        if !response.is_stream() {
            // One scan of the body, shared with the metrics layer and the caller.
            if let Some(usage) = response.usage(self.dialect) {
                self.limiter.settle_usage(grant, usage);
            }
            return Ok(response);
        }
        let limiter = self.limiter.clone();
        let dialect = self.dialect;
        Ok(response
            .map_stream(|stream| stream.wrap(|s| SettlingStream::new(s, limiter, grant, dialect))))
    }
}

/// The body of a complete response; nothing for a stream.
fn body_of(response: &Response) -> &[u8] {
    match response.body() {
        volley_core::Body::Full(bytes) => bytes,
        volley_core::Body::Stream(_) => &[],
    }
}

/// Whether a sent request answered with `status` was refused before anything was generated:
/// a malformed request (400, 422), a bad or unauthorised key (401, 403), an unknown model or
/// path (404). A 429 or a 5xx may come after the generation ran (a timeout in a gateway, a
/// crash half way), so their charge stands.
fn never_generated(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

impl<L: RateLimiter> Drop for GrantGuard<L> {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            if self.sent {
                // Sent, and given up before its outcome: no answer will come from it.
                self.limiter.abandon(grant);
            } else {
                self.limiter.release(grant);
            }
        }
    }
}
