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
async fn streams_without_chunks_and_without_retries_pass_through() {
    let mock = Mock::new(|_| stream(vec![]));
    let response = run(&mock, quick().build().unwrap()).await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), "");

    // With retrying off the stream is handed over at once, errors and all.
    let mock = Mock::new(|_| stream(vec![Err(ErrorKind::StreamBroken)]));
    let policy = quick().max_retries(0).build().unwrap();
    let response = run(&mock, policy).await.unwrap();
    assert_eq!(
        response.bytes().await.unwrap_err().kind(),
        ErrorKind::StreamBroken
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_broken_on_every_attempt_ends_in_its_error() {
    let mock = Mock::new(|_| stream(vec![Err(ErrorKind::StreamBroken)]));
    let policy = quick().max_retries(2).build().unwrap();
    let err = run(&mock, policy).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken);
    assert_eq!(mock.calls(), 3);
}
