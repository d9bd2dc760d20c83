//! The concurrency limit: slots shared across clones and layers, the queue, and permits held
//! until a streaming body ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::{HeaderMap, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tower::{Layer as _, Service, ServiceExt as _};
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, Response, Timings};
use volley_middleware::limit::{ConcurrencyLimit, ConcurrencyLimitLayer};

type Answer = oneshot::Sender<Result<Response, Error>>;

/// An inner service whose responses the test hands out one by one.
#[derive(Clone, Default)]
struct Gate {
    pending: Arc<Mutex<Vec<Answer>>>,
}

impl Gate {
    /// Answers the oldest unanswered call.
    fn answer(&self, result: Result<Response, Error>) {
        let sender = self.pending.lock().unwrap().remove(0);
        sender.send(result).expect("the caller is waiting");
    }

    fn waiting(&self) -> usize {
        self.pending.lock().unwrap().len()
    }
}

impl Service<Request> for Gate {
    type Response = Response;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().push(tx);
        Box::pin(async move { rx.await.expect("the test answers every call") })
    }
}

fn request() -> Request {
    Request::get("/models").unwrap()
}

fn full() -> Result<Response, Error> {
    Ok(response(Body::Full(Bytes::from_static(b"{}"))))
}

fn response(body: Body) -> Response {
    Response::new(
        StatusCode::OK,
        HeaderMap::new(),
        body,
        Timings::start(),
        volley_core::RequestId::from_u64(1),
    )
}

/// A streaming body fed through a channel; `None` from the channel ends it.
fn channel_body() -> (mpsc::UnboundedSender<Result<Bytes, Error>>, Body) {
    struct Chunks(mpsc::UnboundedReceiver<Result<Bytes, Error>>);
    impl Stream for Chunks {
        type Item = Result<Bytes, Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Body::Stream(BodyStream::new(Chunks(rx))))
}

fn is_ready<S: Service<Request>>(service: &mut S) -> bool {
    service
        .poll_ready(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

async fn next_chunk(body: &mut BodyStream) -> Option<Result<Bytes, Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await
}

/// Makes a clone of `service` ready and calls it, driving the response in a task.
async fn start(
    service: &ConcurrencyLimit<Gate>,
) -> tokio::task::JoinHandle<Result<Response, Error>> {
    let mut clone = service.clone();
    clone.ready().await.unwrap();
    tokio::spawn(clone.call(request()))
}

#[tokio::test(start_paused = true)]
async fn a_fourth_call_waits_for_a_slot() {
    let gate = Gate::default();
    let layer = ConcurrencyLimitLayer::new(3);
    let service = layer.layer(gate.clone());
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(start(&service).await);
    }
    assert_eq!((layer.available_permits(), layer.in_flight()), (0, 3));

    let fourth = tokio::spawn({
        let service = service.clone();
        async move { service.oneshot(request()).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!fourth.is_finished());
    tokio::task::yield_now().await;
    assert_eq!(
        gate.waiting(),
        3,
        "the fourth has not reached the inner service"
    );

    gate.answer(full());
    calls.remove(0).await.unwrap().unwrap();
    // The freed slot goes to the fourth, which reaches the inner service.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(gate.waiting(), 3);
    assert_eq!(service.in_flight(), 3);
    for _ in 0..3 {
        gate.answer(full());
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    fourth.await.unwrap().unwrap();
    assert_eq!(layer.available_permits(), 3);
}

#[tokio::test(start_paused = true)]
async fn errors_free_the_slot() {
    let gate = Gate::default();
    let service = ConcurrencyLimit::new(gate.clone(), 1);
    let call = start(&service).await;
    gate.answer(Err(Error::new(ErrorKind::Connection, "reset")));
    assert!(call.await.unwrap().is_err());
    assert_eq!(service.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_slot_until_it_ends() {
    let gate = Gate::default();
    let service = ConcurrencyLimit::new(gate.clone(), 1);
    let call = start(&service).await;
    let (tx, body) = channel_body();
    gate.answer(Ok(response(body)));
    let answered = call.await.unwrap().unwrap();
    assert_eq!(
        service.available_permits(),
        0,
        "headers arrived, body has not"
    );
    let Body::Stream(mut body) = answered.into_parts().1 else {
        panic!("a stream")
    };
    tx.send(Ok(Bytes::from_static(b"data: 1\n\n"))).unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "data: 1\n\n");
    assert_eq!(service.available_permits(), 0);
    assert!(!is_ready(&mut service.clone()));

    drop(tx);
    assert!(next_chunk(&mut body).await.is_none());
    assert_eq!(
        service.available_permits(),
        1,
        "released at the end, body still alive"
    );
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_or_broken_stream_frees_its_slot() {
    let gate = Gate::default();
    let service = ConcurrencyLimit::new(gate.clone(), 1);

    let call = start(&service).await;
    let (tx, body) = channel_body();
    gate.answer(Ok(response(body)));
    let answered = call.await.unwrap().unwrap();
    assert_eq!(service.available_permits(), 0);
    drop(answered);
    assert_eq!(service.available_permits(), 1, "dropped half way");
    drop(tx);

    let call = start(&service).await;
    let (tx, body) = channel_body();
    gate.answer(Ok(response(body)));
    let Body::Stream(mut body) = call.await.unwrap().unwrap().into_parts().1 else {
        panic!("a stream")
    };
    tx.send(Err(Error::new(ErrorKind::StreamBroken, "cut")))
        .unwrap();
    assert!(next_chunk(&mut body).await.unwrap().is_err());
    assert_eq!(service.available_permits(), 1, "released on the error");
}

#[tokio::test(start_paused = true)]
async fn one_layer_is_one_budget_and_clones_do_not_copy_permits() {
    let gate = Gate::default();
    let layer = ConcurrencyLimitLayer::new(1);
    let mut a = layer.layer(gate.clone());
    let mut b = layer.clone().layer(gate.clone());
    assert!(is_ready(&mut a));
    assert!(!is_ready(&mut b), "b shares a's budget");
    let mut c = a.clone();
    assert!(!is_ready(&mut c), "a clone does not get a's permit");
    drop(a);
    assert!(
        is_ready(&mut b),
        "dropping a ready service frees its permit"
    );
    assert_eq!(layer.in_flight(), 1);
    drop((b, c));
    assert_eq!(layer.in_flight(), 0);
}

#[test]
#[should_panic(expected = "concurrency limit of 0")]
fn zero_slots_is_refused() {
    let _ = ConcurrencyLimitLayer::new(0);
}
