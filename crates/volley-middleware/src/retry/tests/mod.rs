//! The retry layer over a scripted inner service, in paused time: the mock and helpers here,
//! the tests by topic in the submodules.

mod attempts;
mod streams;
mod waits;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, Response, Timings};

use super::*;

type Answer = dyn Fn(usize) -> Result<Response, Error> + Send + Sync;
type MakeError = fn() -> Error;
/// A name and the error an attempt fails with.
type Case = (&'static str, MakeError);

/// An inner service that answers call `n` (from 1) with `answer(n)`, records when each call
/// came and what body it carried, and insists on `poll_ready` before every call.
struct Mock {
    answer: Arc<Answer>,
    calls: Arc<Mutex<Vec<(Instant, Bytes)>>>,
    ready: bool,
}

impl Clone for Mock {
    fn clone(&self) -> Mock {
        // Like a real service's clone, readiness is not copied.
        Mock {
            answer: Arc::clone(&self.answer),
            calls: Arc::clone(&self.calls),
            ready: false,
        }
    }
}

impl Mock {
    fn new(answer: impl Fn(usize) -> Result<Response, Error> + Send + Sync + 'static) -> Mock {
        Mock {
            answer: Arc::new(answer),
            calls: Arc::default(),
            ready: false,
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// The time between successive calls.
    fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }
}

impl Service<Request> for Mock {
    type Response = Response;
    type Error = Error;
    type Future = std::future::Ready<Result<Response, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        assert!(self.ready, "call without poll_ready");
        self.ready = false;
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), request.body().clone()));
            calls.len()
        };
        std::future::ready((self.answer)(n))
    }
}

struct Chunks(VecDeque<Result<Bytes, Error>>);

impl Stream for Chunks {
    type Item = Result<Bytes, Error>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn ok() -> Result<Response, Error> {
    Ok(response(Body::Full(Bytes::from_static(b"{}"))))
}

fn response(body: Body) -> Response {
    let id = volley_core::RequestId::from_u64(1);
    Response::new(StatusCode::OK, HeaderMap::new(), body, Timings::start(), id)
}

fn stream(items: Vec<Result<&'static str, ErrorKind>>) -> Result<Response, Error> {
    let items = items
        .into_iter()
        .map(|item| match item {
            Ok(text) => Ok(Bytes::from_static(text.as_bytes())),
            Err(kind) => Err(Error::new(kind, "test stream")),
        })
        .collect();
    Ok(response(Body::Stream(BodyStream::new(Chunks(items)))))
}

fn status(code: u16) -> Error {
    status_with(code, &[], None)
}

fn status_with(
    code: u16,
    headers: &[(&'static str, &str)],
    retry_after: Option<Duration>,
) -> Error {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let code = StatusCode::from_u16(code).unwrap();
    Error::from_status(code, map, b"", retry_after, "test")
}

/// OpenAI's 429 for an account whose quota or credit is used up.
fn quota_used_up() -> Error {
    Error::from_status(
        StatusCode::TOO_MANY_REQUESTS,
        HeaderMap::new(),
        br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        None,
        "test",
    )
}

/// Asserts that each gap waited what the server asked for, `waits` in milliseconds, and at
/// most `spread` more: a server's wait is stretched at random by up to a fifth of it, at most
/// the backoff cap (1 ms in [`quick`]), and a timer may round up by one millisecond.
#[track_caller]
fn assert_waited(gaps: &[Duration], waits: &[u64], spread: u64) {
    assert_eq!(gaps.len(), waits.len(), "{gaps:?}");
    for (gap, wait) in gaps.iter().zip(waits) {
        assert!(
            *gap >= ms(*wait) && *gap <= ms(wait + spread + 1),
            "{gap:?} outside {wait} ms + {spread} ms"
        );
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A policy with a 1 ms backoff and no budget, so that waits are the server's.
fn quick() -> PolicyBuilder {
    Policy::builder()
        .backoff_base(ms(1))
        .backoff_cap(ms(1))
        .budget_enabled(false)
}

fn request() -> Request {
    Request::post("/chat/completions", &b"{\"model\":\"m\"}"[..]).unwrap()
}

async fn run(mock: &Mock, policy: Policy) -> Result<Response, Error> {
    Retry::new(mock.clone(), policy).oneshot(request()).await
}

/// Fails `first` times with `make()`, then succeeds.
fn failing(first: usize, make: impl Fn() -> Error + Send + Sync + 'static) -> Mock {
    Mock::new(move |n| if n <= first { Err(make()) } else { ok() })
}
