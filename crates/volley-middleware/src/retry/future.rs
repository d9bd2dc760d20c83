//! The future of [`Retry`](super::Retry): attempt, classify, sleep, attempt again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, RequestId, Response, ResponseHead};

use super::Policy;
use super::policy::Tally;

pin_project! {
    /// The future of a [`Retry`](super::Retry) service's `call`: the response of the first
    /// attempt that succeeds, or the error of the last one.
    ///
    /// When retries are on, it owns a clone of the inner service and a copy of the request for
    /// the next attempt, and allocates nothing else until an attempt fails.
    pub struct ResponseFuture<S>
    where
        S: Service<Request>,
    {
        // The service retries go through; `None` when retries are off.
        service: Option<S>,
        policy: Policy,
        // A copy for the next attempt; `None` when no further attempt may be made.
        request: Option<Request>,
        id: RequestId,
        // Attempts started so far.
        attempt: u32,
        // Failed attempts that count toward `max_retries` (rate signals do not).
        counted: u32,
        // When the first attempt started: rate signals are bounded by time from here.
        started: Instant,
        // A 2xx answer that is an error object, while the policy decides: handed over as it
        // came when no retry follows.
        answer: Option<Response>,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Waiting for the inner service's response.
        Called { #[pin] future: F },
        // A stream response: waiting for its first chunk before handing it over. `held`: the
        // bytes read so far that carry no event (comments), handed over with the first that do.
        FirstChunk { head: Option<ResponseHead>, stream: Option<BodyStream>, held: Option<Bytes> },
        // Backing off before the next attempt.
        Sleeping { #[pin] sleep: Sleep },
        // Waiting for the inner service to be ready for the next attempt.
        Retrying,
        // Finished with an error.
        Done,
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    pub(crate) fn new(
        service: Option<S>,
        policy: Policy,
        request: Option<Request>,
        id: RequestId,
        future: S::Future,
    ) -> ResponseFuture<S> {
        ResponseFuture {
            service,
            policy,
            request,
            id,
            attempt: 1,
            counted: 0,
            started: Instant::now(),
            answer: None,
            state: State::Called { future },
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let failed = match this.state.as_mut().project() {
                StateProj::Called { future } => match ready!(future.poll(cx)) {
                    // With retrying on, a stream is only handed over once its first chunk
                    // has arrived, so that a stream broken before it can be retried.
                    Ok(response) if response.is_stream() && this.policy.max_retries() > 0 => {
                        let (head, body) = response.into_parts();
                        let Body::Stream(stream) = body else {
                            unreachable!("is_stream() said the body is a stream")
                        };
                        this.state.set(State::FirstChunk {
                            head: Some(head),
                            stream: Some(stream),
                            held: None,
                        });
                        continue;
                    }
                    Ok(response) => match this.request.as_ref().and_then(|request| {
                        error_in_answer(&response, request, this.policy, *this.id)
                    }) {
                        Some(error) => {
                            *this.answer = Some(response);
                            error
                        }
                        None => return Poll::Ready(Ok(finished(response, *this.attempt))),
                    },
                    Err(error) => error,
                },
                StateProj::FirstChunk { head, stream, held } => {
                    let body = stream
                        .as_mut()
                        .expect("FirstChunk holds its stream until it is left");
                    match ready!(Pin::new(body).poll_next(cx)) {
                        // An empty chunk carries no byte: keep waiting for a real one.
                        Some(Ok(chunk)) if chunk.is_empty() => continue,
                        Some(Ok(chunk)) => {
                            let chunk = match held.take() {
                                Some(before) => [before, chunk].concat().into(),
                                None => chunk,
                            };
                            // Comments alone (OpenRouter's `: OPENROUTER PROCESSING` while the
                            // upstream provider has not answered) carry no event: the stream
                            // may still fail before its first, so wait for it, within a bound.
                            if chunk.len() <= MAX_HELD_BYTES && only_comments(&chunk) {
                                *held = Some(chunk);
                                continue;
                            }
                            // An error event before anything reached the caller fails the
                            // attempt as a whole (an overloaded or erring server that answered
                            // 200 first). Only looked for while another attempt may follow.
                            let id = *this.id;
                            let error = this.request.as_ref().and_then(|request| {
                                let dialect = request.dialect();
                                let context = format_args!("request {id}");
                                dialect.error_at_stream_start(&chunk, context)?;
                                // The provider's text goes into the error: without secrets.
                                let scrubbed = scrubbed(this.policy, request, chunk.clone());
                                dialect.error_at_stream_start(&scrubbed, context)
                            });
                            match error {
                                Some(error) => error,
                                None => {
                                    let response = hand_over(head, stream, chunk);
                                    return Poll::Ready(Ok(finished(response, *this.attempt)));
                                }
                            }
                        }
                        // A 200 event stream that ends before its first byte carries no
                        // answer (a proxy or server that gave up after the head): it is a
                        // stream broken before its first byte. The ended stream is dropped
                        // with the attempt, never polled again.
                        None => Error::new(
                            ErrorKind::StreamBroken,
                            format!(
                                "request {}: the event stream ended before its first {}",
                                this.id,
                                if held.is_some() { "event" } else { "byte" }
                            ),
                        ),
                        Some(Err(error)) => error,
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Retrying);
                    continue;
                }
                StateProj::Done => panic!("retry ResponseFuture polled after completion"),
                StateProj::Retrying => {
                    let service = this
                        .service
                        .as_mut()
                        .expect("a retry is only scheduled while a service is kept");
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    let request = this
                        .request
                        .take()
                        .expect("a retry is only scheduled while a request copy is kept");
                    *this.attempt += 1;
                    // Rate signals do not count toward `max_retries`, so any attempt may be
                    // followed by another: keep a copy (it shares the body's bytes).
                    *this.request = Some(request.clone());
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                    continue;
                }
            };
            // Either way the failed attempt's state is dropped now: a broken stream, and
            // anything below that it held (a concurrency permit), is released before the
            // backoff.
            let tally = Tally {
                attempt: *this.attempt,
                counted: *this.counted,
                elapsed: this.started.elapsed(),
                remaining: this
                    .request
                    .as_ref()
                    .and_then(Request::deadline)
                    .map(|at| at.saturating_duration_since(Instant::now().into_std())),
            };
            let answer = this.answer.take();
            match this.policy.next(failed, tally, *this.id) {
                Ok((wait, counts)) => {
                    *this.counted += u32::from(counts);
                    this.state.set(State::Sleeping {
                        sleep: tokio::time::sleep(wait),
                    });
                }
                Err(error) => {
                    this.state.set(State::Done);
                    // Not retried (any more): the answer goes to the caller as the server
                    // sent it, as it would have without this layer.
                    return Poll::Ready(match answer {
                        Some(response) => Ok(finished(response, *this.attempt)),
                        None => Err(error),
                    });
                }
            }
        }
    }
}

/// The error a whole 2xx answer is in fact ([`Dialect::is_error_reply`]: a gateway's 200 with
/// `{"error": ..}`), so that it is classified as the error it names: a rate limit, or the HTTP
/// status its `code` names ([`Dialect::error_in_answer`]). The answer itself is what the
/// caller gets when no retry follows. Only looked for while another attempt may follow; one
/// SIMD search of a body that never says `"error"`.
///
/// [`Dialect::is_error_reply`]: volley_core::Dialect::is_error_reply
/// [`Dialect::error_in_answer`]: volley_core::Dialect::error_in_answer
fn error_in_answer(
    response: &Response,
    request: &Request,
    policy: &Policy,
    id: RequestId,
) -> Option<Error> {
    let dialect = request.dialect();
    let Body::Full(body) = response.body() else {
        return None;
    };
    if !response.is_error_reply(dialect) {
        return None;
    }
    // The provider's text goes into the error: without secrets.
    let scrubbed = scrubbed(policy, request, body.clone());
    let headers = response.headers();
    // The answer's own word on waiting and retrying counts as an error status's would:
    // `Retry-After`, `x-should-retry`.
    let wait = volley_core::headers::retry_after(headers, std::time::SystemTime::now());
    Some(
        dialect
            .error_in_answer(&scrubbed, format_args!("request {id}"))
            .with_headers(headers.clone())
            .with_retry_after(wait),
    )
}

/// A provider's `text` without the secrets the policy knows of (the client's keys) nor those
/// `request` carries in its own headers (a tenant's key).
fn scrubbed(policy: &Policy, request: &Request, text: Bytes) -> Bytes {
    let own = volley_core::redact::request_secrets(request.headers());
    volley_core::redact::scrub_secrets(policy.scrub(text), &own)
}

/// The most bytes of comments held back before a stream's first event: beyond, the stream is
/// handed over as it is.
const MAX_HELD_BYTES: usize = 8 * 1024;

/// Whether `bytes` (a stream's start, possibly ending mid-line) hold nothing but SSE comment
/// lines (`:` first) and blank lines, after an optional byte order mark.
fn only_comments(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes
        .split(|&b| b == b'\n' || b == b'\r')
        .all(|line| line.is_empty() || line[0] == b':')
}

/// Reassembles a stream response whose first chunk has been read.
fn hand_over(
    head: &mut Option<ResponseHead>,
    stream: &mut Option<BodyStream>,
    first: Bytes,
) -> Response {
    let head = head
        .take()
        .expect("FirstChunk holds its head until it is left");
    let rest = stream.take();
    let max = rest.as_ref().map_or(
        volley_core::DEFAULT_MAX_BODY_BYTES,
        BodyStream::max_collect_bytes,
    );
    let body = BodyStream::new(Replay {
        first: Some(first),
        rest,
    })
    .with_max_collect_bytes(max);
    Response::from_parts(head, Body::Stream(body))
}

/// Logs the attempt count of a response that needed retries.
fn finished(response: Response, attempts: u32) -> Response {
    if attempts > 1 {
        tracing::debug!(request = %response.request_id(), attempts, "succeeded after retries");
    }
    response
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<Request>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request", &self.id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A stream that yields the chunk already read, then the rest of the original stream.
struct Replay {
    first: Option<Bytes>,
    rest: Option<BodyStream>,
}

impl Stream for Replay {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(Pin::new(rest).poll_next(cx));
        if next.is_none() {
            // The original stream need not be fused: never poll it after its end.
            self.rest = None;
        }
        Poll::Ready(next)
    }
}
