//! [`ResponseFuture`]: one attempt at the chosen endpoint, and what it teaches the balancer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower_service::Service;
use volley_core::{Error, ErrorKind, Request, Response};

use super::BreakerState;
use super::Shared;
use super::breaker::Admission;
use super::endpoint::Observed;

pin_project! {
    /// The future of [`Balance`](super::Balance): the chosen endpoint's response. It counts
    /// the attempt at that endpoint until it completes or is dropped.
    pub struct ResponseFuture<S>
    where
        S: Service<Request>,
    {
        #[pin]
        state: State<S>,
        guard: Option<Guard<S>>,
        // With hedging: the copy, its timer, then the hedged attempt (boxed: only hedging
        // clients pay for it).
        hedge: Option<Box<Hedge<S>>>,
        // The first attempt's error, kept while the hedge may still answer.
        first_error: Option<Error>,
    }
}

/// A hedged attempt in flight, and its place at its endpoint.
type Attempt<S> = (Pin<Box<Oneshot<S, Request>>>, Guard<S>);

/// A hedge: waiting for its delay, then in flight at another endpoint.
struct Hedge<S: Service<Request>> {
    request: Option<Request>,
    timer: Pin<Box<tokio::time::Sleep>>,
    attempt: Option<Attempt<S>>,
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Request>,
    {
        Sending { #[pin] inner: Oneshot<S, Request> },
        Refused { error: Option<Error> },
    }
}

/// The attempt in flight at one endpoint: finished with an observation, or dropped (then it
/// counts as nothing, but still frees its place).
struct Guard<S> {
    shared: Arc<Shared<S>>,
    index: usize,
    admission: Admission,
    id: u64,
    started: Instant,
    finished: bool,
    /// Whether this is the request's first attempt (not a hedge): only those teach a
    /// learned hedging delay.
    first: bool,
    /// Whether a hedge of this attempt was sent: if the hedge wins, this attempt is learned
    /// as beaten.
    hedged: bool,
    /// Whether the request is a `POST` (a generation): its 404 says the endpoint does not
    /// serve the model, where a `GET`'s says an object is not there.
    post: bool,
}

impl<S> Guard<S> {
    fn record(&mut self, observed: Observed) -> Option<BreakerState> {
        self.finished = true;
        let now = Instant::now();
        let nanos = self.shared.selector.nanos(now);
        let elapsed = now.saturating_duration_since(self.started);
        // An answer's time, or a first attempt its hedge beat (dropped unanswered; slower
        // than the delay by an unknown amount).
        if self.first
            && let Some(learner) = &self.shared.hedge_learner
        {
            match observed {
                Observed::Answered => learner.record(elapsed),
                Observed::Nothing if self.hedged => learner.record_beaten(),
                _ => {}
            }
        }
        self.shared.selector.endpoints[self.index].finish(
            self.admission,
            observed,
            self.id,
            elapsed,
            nanos,
        )
    }
}

impl<S> Guard<S>
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// Records the outcome; a breaker that opened starts its active health check.
    fn finish(mut self, observed: Observed) {
        if self.record(observed) == Some(BreakerState::Open)
            && let Some(path) = &self.shared.health_check
        {
            super::health::start(&self.shared, self.index, path.clone());
        }
    }
}

impl<S> Drop for Guard<S> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(Observed::Nothing);
        }
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    pub(super) fn sending(
        inner: Oneshot<S, Request>,
        shared: Arc<Shared<S>>,
        index: usize,
        admission: Admission,
        // The request's id, and whether it is a `POST`.
        (id, post): (u64, bool),
        started: Instant,
        copy: Option<(Request, std::time::Duration)>,
    ) -> ResponseFuture<S> {
        let hedge = copy.map(|(request, delay)| {
            Box::new(Hedge {
                request: Some(request),
                timer: Box::pin(tokio::time::sleep_until(started + delay)),
                attempt: None,
            })
        });
        ResponseFuture {
            hedge,
            first_error: None,
            state: State::Sending { inner },
            guard: Some(Guard {
                shared,
                index,
                admission,
                id,
                started,
                finished: false,
                first: true,
                hedged: false,
                post,
            }),
        }
    }

    pub(super) fn refused(error: Error) -> ResponseFuture<S> {
        ResponseFuture {
            state: State::Refused { error: Some(error) },
            guard: None,
            hedge: None,
            first_error: None,
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = match this.state.project() {
            StateProj::Refused { error } => {
                return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                    Error::new(ErrorKind::Cancelled, "polled after completion")
                })));
            }
            StateProj::Sending { inner } => inner,
        };
        // The first attempt, until it answers (or fails while a hedge is in flight).
        if this.first_error.is_none()
            && let Poll::Ready(result) = inner.poll(cx)
        {
            let result = match this.guard.take() {
                Some(guard) => {
                    let observed = observe(&result, guard.post);
                    finish_holding_streams(guard, observed, result)
                }
                None => result,
            };
            match result {
                Err(error) if this.hedge.as_ref().is_some_and(|h| h.attempt.is_some()) => {
                    *this.first_error = Some(error);
                }
                // An answer wins; dropping the hedge cancels its attempt.
                result => {
                    *this.hedge = None;
                    return Poll::Ready(result);
                }
            }
        }
        let Some(hedge) = this.hedge.as_mut() else {
            return Poll::Pending;
        };
        if hedge.attempt.is_none() {
            if hedge.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let guard = this.guard.as_mut().expect("the first attempt is in flight");
            match start_hedge(guard, hedge.request.take()) {
                Some(attempt) => {
                    guard.hedged = true;
                    hedge.attempt = Some(attempt);
                }
                None => {
                    // No budget or no other endpoint: the first attempt goes on alone.
                    *this.hedge = None;
                    return Poll::Pending;
                }
            }
        }
        let (future, _) = hedge.attempt.as_mut().expect("just started");
        let result = ready!(future.as_mut().poll(cx));
        let (_, guard) = this
            .hedge
            .take()
            .and_then(|h| h.attempt)
            .expect("polled above");
        let observed = observe(&result, guard.post);
        let result = finish_holding_streams(guard, observed, result);
        match (result, this.first_error.take()) {
            // The hedge failed while the first attempt is still in flight: wait for it.
            // (Its poll above registered this task's waker.)
            (Err(_), None) => Poll::Pending,
            (result, _) => Poll::Ready(result),
        }
    }
}

/// Records an attempt's outcome; a stream it answered with stays in its endpoint's count of
/// requests in flight until the stream ends or is dropped, as its place under the endpoint's
/// cap does: the load power of two choices compares, the saturation of `max_in_flight` and
/// [`EndpointStats::in_flight`](super::EndpointStats) see the streams still running.
fn finish_holding_streams<S>(
    guard: Guard<S>,
    observed: Observed,
    result: Result<Response, Error>,
) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let streaming = result.as_ref().is_ok_and(Response::is_stream);
    let held = streaming.then(|| StreamInFlight::new(&guard.shared, guard.index));
    guard.finish(observed);
    match (result, held) {
        (Ok(response), Some(held)) => Ok(response
            .map_stream(|stream| stream.wrap(|s| crate::limit::body::PermitStream::new(s, held)))),
        (result, _) => result,
    }
}

/// One request in flight at an endpoint, counted until it is dropped.
struct StreamInFlight<S> {
    shared: Arc<Shared<S>>,
    index: usize,
}

impl<S> StreamInFlight<S> {
    fn new(shared: &Arc<Shared<S>>, index: usize) -> StreamInFlight<S> {
        shared.selector.endpoints[index]
            .outstanding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StreamInFlight {
            shared: Arc::clone(shared),
            index,
        }
    }
}

impl<S> Drop for StreamInFlight<S> {
    fn drop(&mut self) {
        self.shared.selector.endpoints[self.index]
            .outstanding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends the hedge of the request `guard` tracks to another endpoint (the same one when it
/// is alone), when the budget allows.
fn start_hedge<S>(first: &Guard<S>, request: Option<Request>) -> Option<Attempt<S>>
where
    S: Service<Request, Response = Response, Error = Error> + Clone,
{
    let shared = &first.shared;
    let share = shared.hedging?.budget;
    let request = request?;
    let now = Instant::now();
    let index = shared
        .selector
        .select(first.id, now, Some(first.index))
        .ok()?;
    if !shared.hedge_budget.try_hedge(share) {
        return None;
    }
    // Its breaker may have refused it since (the last probe slot taken): then no hedge, and
    // the budget gets it back.
    let Ok((index, admission)) =
        shared
            .selector
            .admit_from(index, first.id, now, Some(first.index))
    else {
        shared.hedge_budget.give_back();
        return None;
    };
    metrics::counter!(super::HEDGES_TOTAL).increment(1);
    let future = Box::pin(Oneshot::new(shared.services[index].clone(), request));
    let guard = Guard {
        shared: Arc::clone(shared),
        index,
        admission,
        id: first.id,
        started: now,
        finished: false,
        first: false,
        hedged: false,
        post: first.post,
    };
    Some((future, guard))
}

/// What an attempt's result says about its endpoint. Connection errors, timeouts and 5xx are
/// failures; 429 and 529 are rate signals; 401, 403 (unless it flags the input), a `POST`'s
/// 404 (`post`: a model the endpoint does not serve) and the quota used up are refusals of
/// this endpoint (its key, its deployments, its account); any other answer, 4xx included,
/// shows a working endpoint. Errors of the request itself (invalid input, cancelled) say
/// nothing.
pub(crate) fn observe(result: &Result<Response, Error>, post: bool) -> Observed {
    match result {
        Ok(response) => by_status(response.status().as_u16(), None, post),
        Err(error) if error.is_quota_exhausted() => Observed::Refused,
        // A moderation refusal is the prompt's, not the endpoint's.
        Err(error)
            if error.status() == Some(http::StatusCode::FORBIDDEN)
                && error
                    .body()
                    .is_some_and(|body| volley_core::ApiError::flags_the_input(body)) =>
        {
            Observed::Answered
        }
        Err(error) => match error.kind() {
            // The endpoint's own limiter, not the provider: it was never sent.
            ErrorKind::RateLimited if !error.is_request_sent() => {
                Observed::Held(error.retry_after())
            }
            ErrorKind::RateLimited => Observed::RateLimited(error.retry_after()),
            ErrorKind::Status => error.status().map_or(Observed::Nothing, |s| {
                by_status(s.as_u16(), error.retry_after(), post)
            }),
            ErrorKind::Connect
            | ErrorKind::Tls
            | ErrorKind::Connection
            | ErrorKind::Timeout
            | ErrorKind::FirstByteTimeout
            | ErrorKind::IdleTimeout
            | ErrorKind::StreamBroken => Observed::Failed,
            _ => Observed::Nothing,
        },
    }
}

fn by_status(status: u16, retry_after: Option<std::time::Duration>, post: bool) -> Observed {
    match status {
        429 | 529 => Observed::RateLimited(retry_after),
        401 | 403 => Observed::Refused,
        404 if post => Observed::Refused,
        500..=599 => Observed::ServerError,
        _ => Observed::Answered,
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("endpoint", &self.guard.as_ref().map(|g| g.index))
            .finish_non_exhaustive()
    }
}
