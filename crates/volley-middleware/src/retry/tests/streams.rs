//! Streams: retried only before their first chunk reaches the caller.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_stream_broken_before_its_first_chunk_is_retried() {
    let mock = Mock::new(|n| match n {
        1 => stream(vec![Err(ErrorKind::StreamBroken)]),
        2 => stream(vec![Ok(""), Err(ErrorKind::IdleTimeout)]),
        _ => stream(vec![Ok("data: a\n\n"), Ok("data: b\n\n")]),
    });
    let response = run(&mock, quick().build().unwrap()).await.unwrap();
    assert!(response.is_stream());
    assert_eq!(response.bytes().await.unwrap(), "data: a\n\ndata: b\n\n");
    assert_eq!(mock.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_broken_after_its_first_chunk_goes_to_the_caller() {
    let mock = Mock::new(|_| stream(vec![Ok("a"), Ok("b"), Err(ErrorKind::StreamBroken)]));
    let response = run(&mock, quick().build().unwrap()).await.unwrap();
    let Body::Stream(mut body) = response.into_parts().1 else {
        panic!("a stream")
    };
    assert_eq!(next(&mut body).await.unwrap().unwrap(), "a");
    assert_eq!(next(&mut body).await.unwrap().unwrap(), "b");
    let err = next(&mut body).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert!(next(&mut body).await.is_none());
    assert_eq!(mock.calls(), 1);
}

async fn next(body: &mut BodyStream) -> Option<Result<Bytes, Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await
}

#[tokio::test(start_paused = true)]
async fn an_empty_event_stream_is_broken_and_never_polled_again() {
    // A 200 event stream that ends before its first byte carries no answer: it is a stream
    // broken before its first byte, retried like one.
    let mock = Mock::new(|n| match n {
        1 => ended_stream(vec![]),
        2 => ended_stream(vec![Ok(""), Ok("")]),
        _ => ended_stream(vec![Ok("data: a\n\n")]),
    });
    let response = run(&mock, quick().build().unwrap()).await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), "data: a\n\n");
    assert_eq!(mock.calls(), 3);

    // Empty on every attempt: the caller gets the error, not an empty success.
    let mock = Mock::new(|_| ended_stream(vec![]));
    let err = run(&mock, quick().max_retries(2).build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert!(err.is_request_sent());
    assert_eq!(mock.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn streams_without_retries_pass_through() {
    // With retrying off the stream is handed over at once, errors and all.
    let mock = Mock::new(|_| stream(vec![Err(ErrorKind::StreamBroken)]));
    let policy = quick().max_retries(0).build().unwrap();
    let response = run(&mock, policy).await.unwrap();
    assert_eq!(
        response.bytes().await.unwrap_err().kind(),
        ErrorKind::StreamBroken
    );
    assert_eq!(mock.calls(), 1);
    let mock = Mock::new(|_| stream(vec![]));
    let policy = quick().max_retries(0).build().unwrap();
    let response = run(&mock, policy).await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), "");
}

/// A stream of `items` that panics if it is polled again after it ended: streams need not be
/// fused, and polling one after its end is a bug.
fn ended_stream(items: Vec<Result<&'static str, ErrorKind>>) -> Result<Response, Error> {
    let Body::Stream(inner) = stream(items)?.into_parts().1 else {
        unreachable!("`stream` makes a stream")
    };
    let body = BodyStream::new(Unfused {
        inner,
        ended: false,
    });
    Ok(response(Body::Stream(body)))
}

struct Unfused {
    inner: BodyStream,
    ended: bool,
}

impl Stream for Unfused {
    type Item = Result<Bytes, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        assert!(!self.ended, "polled after its end");
        let next = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        self.ended = next.is_none();
        Poll::Ready(next)
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_broken_on_every_attempt_ends_in_its_error() {
    let mock = Mock::new(|_| stream(vec![Err(ErrorKind::StreamBroken)]));
    let policy = quick().max_retries(2).build().unwrap();
    let err = run(&mock, policy).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert_eq!(mock.calls(), 3);
}

/// Anthropic's `overloaded_error` event at the start of a stream that answered 200 is an
/// overload, as a 529 is: a rate signal, retried without using up `max_retries`.
#[tokio::test(start_paused = true)]
async fn an_overloaded_event_at_the_stream_start_is_a_rate_signal() {
    const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let mock = Mock::new(|n| match n {
        1..=3 => stream(vec![Ok(OVERLOADED)]),
        _ => stream(vec![Ok(
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )]),
    });
    let policy = quick().max_retries(1).build().unwrap();
    let anthropic = request().with_dialect(volley_core::Dialect::Anthropic);
    let response = Retry::new(mock.clone(), policy)
        .oneshot(anthropic)
        .await
        .unwrap();
    assert!(
        response
            .bytes()
            .await
            .unwrap()
            .ends_with(b"message_stop\"}\n\n")
    );
    assert_eq!(mock.calls(), 4);

    // Another error event (here a server error) counts toward `max_retries`.
    const API_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}\n\n";
    let mock = Mock::new(|_| stream(vec![Ok(API_ERROR)]));
    let policy = quick().max_retries(1).build().unwrap();
    let anthropic = request().with_dialect(volley_core::Dialect::Anthropic);
    let err = Retry::new(mock.clone(), policy)
        .oneshot(anthropic)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert_eq!(mock.calls(), 2);
}

/// Comments before the first event (OpenRouter's `: OPENROUTER PROCESSING` while the
/// upstream provider has not answered) carry nothing: an error event after them is still at
/// the stream's start, and the attempt is retried. The comments reach the caller with the
/// first event.
#[tokio::test(start_paused = true)]
async fn comments_before_the_first_event_keep_the_retry_window_open() {
    const PROCESSING: &str = ": OPENROUTER PROCESSING\n\n";
    const FAILED: &str = "data: {\"id\":\"gen-1\",\"error\":{\"code\":502,\"message\":\"Provider returned error\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";
    let mock = Mock::new(|n| match n {
        1 => stream(vec![Ok(": OPENROUTER "), Ok("PROCESSING\n\n"), Ok(FAILED)]),
        _ => stream(vec![
            Ok(PROCESSING),
            Ok("data: a\n\n"),
            Ok("data: [DONE]\n\n"),
        ]),
    });
    let response = run(&mock, quick().max_retries(1).build().unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap(),
        ": OPENROUTER PROCESSING\n\ndata: a\n\ndata: [DONE]\n\n"
    );
    assert_eq!(mock.calls(), 2);

    // Comments and then the end: no answer, broken, retried.
    let mock = Mock::new(|_| ended_stream(vec![Ok(PROCESSING)]));
    let err = run(&mock, quick().max_retries(1).build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert!(err.to_string().contains("before its first event"), "{err}");
    assert_eq!(mock.calls(), 2);
}
