//! The timeout layer: each deadline fires with its own kind, on paused time with a mock inner
//! service, and against the mock server over real sockets.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, RequestId, Response, Timings};
use volley_middleware::timeout::TimeoutLayer;
use volley_mock::{MockConfig, MockServer};

const MS: Duration = Duration::from_millis(1);

fn request() -> Request {
    Request::post("/chat/completions", r#"{"model":"m"}"#)
        .unwrap()
        .with_id(RequestId::from_u64(7))
}

fn full(id: RequestId) -> Response {
    Response::new(
        StatusCode::OK,
        HeaderMap::new(),
        Body::Full(Bytes::from_static(b"{}")),
        Timings::start(),
        id,
    )
}

/// A stream whose chunk `i` arrives `gaps[i]` after the previous one.
fn stream(id: RequestId, gaps: Vec<Duration>) -> Response {
    let chunks =
        futures_util::stream::iter(gaps.into_iter().enumerate()).then(|(i, gap)| async move {
            sleep(gap).await;
            Ok::<_, Error>(Bytes::from(format!("data: {i}\n\n")))
        });
    Response::new(
        StatusCode::OK,
        HeaderMap::new(),
        Body::Stream(BodyStream::new(chunks)),
        Timings::start(),
        id,
    )
}

/// An inner service that answers after `head_after` with a full body, or a stream with `gaps`.
fn inner(
    head_after: Duration,
    gaps: Option<Vec<Duration>>,
) -> impl tower::Service<Request, Response = Response, Error = Error, Future: Send> + Clone {
    service_fn(move |request: Request| {
        let gaps = gaps.clone();
        async move {
            sleep(head_after).await;
            Ok(match gaps {
                Some(gaps) => stream(request.id(), gaps),
                None => full(request.id()),
            })
        }
    })
}

/// Reads a body to its end: the chunks delivered, and the error that ended it, if any.
async fn drain(response: Response) -> (Vec<Bytes>, Option<Error>) {
    let Body::Stream(mut body) = response.into_parts().1 else {
        panic!("expected a stream");
    };
    let mut chunks = Vec::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(e) => {
                assert!(
                    body.next().await.is_none(),
                    "the stream ends after a timeout"
                );
                return (chunks, Some(e));
            }
        }
    }
    (chunks, None)
}

#[tokio::test(start_paused = true)]
async fn a_response_in_time_passes() {
    let layer = TimeoutLayer::new().first_byte(1000 * MS).attempt(2000 * MS);
    let response = layer
        .layer(inner(900 * MS, None))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), "{}");
}

#[tokio::test(start_paused = true)]
async fn no_deadline_passes_anything_through() {
    let layer = TimeoutLayer::new();
    let start = Instant::now();
    let response = layer
        .layer(inner(
            Duration::from_secs(3600),
            Some(vec![Duration::from_secs(600); 3]),
        ))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    assert_eq!((chunks.len(), error.is_none()), (3, true));
    assert_eq!(start.elapsed(), Duration::from_secs(5400));
}

#[tokio::test(start_paused = true)]
async fn first_byte_fires_with_its_own_kind() {
    let layer = TimeoutLayer::new()
        .first_byte(Duration::from_secs(10))
        .attempt(Duration::from_secs(60));
    let start = Instant::now();
    let err = layer
        .layer(inner(Duration::from_secs(30), None))
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FirstByteTimeout);
    assert!(err.is_timeout());
    assert!(
        err.to_string()
            .contains("request 7: no response byte within 10s"),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn attempt_fires_with_its_own_kind() {
    let layer = TimeoutLayer::new().attempt(1500 * MS);
    let start = Instant::now();
    let err = layer
        .layer(inner(Duration::from_secs(30), None))
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string()
            .contains("request 7: no complete response within 1.5s"),
        "{err}"
    );
    assert_eq!(start.elapsed(), 1500 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_earlier_deadline_fires_whichever_it_is() {
    // The attempt deadline before the first-byte one: it is the one that ends the attempt.
    let layer = TimeoutLayer::new()
        .first_byte(Duration::from_secs(60))
        .attempt(Duration::from_secs(10));
    let start = Instant::now();
    let err = layer
        .layer(inner(Duration::from_secs(30), None))
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    // Equal deadlines: the more precise first-byte error.
    let layer = TimeoutLayer::new()
        .first_byte(Duration::from_secs(10))
        .attempt(Duration::from_secs(10));
    let err = layer
        .layer(inner(Duration::from_secs(30), None))
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FirstByteTimeout);
}

#[tokio::test(start_paused = true)]
async fn first_byte_covers_the_first_stream_chunk() {
    // The head arrives at once, the first token after 2 s.
    let layer = TimeoutLayer::new().first_byte(1000 * MS);
    let response = layer
        .layer(inner(Duration::ZERO, Some(vec![2000 * MS, 10 * MS])))
        .oneshot(request())
        .await
        .expect("the head arrives in time");
    let start = Instant::now();
    let (chunks, error) = drain(response).await;
    assert!(chunks.is_empty());
    let error = error.expect("the first chunk is late");
    assert_eq!(error.kind(), ErrorKind::FirstByteTimeout);
    assert!(error.to_string().contains("request 7"), "{error}");
    assert_eq!(start.elapsed(), 1000 * MS);

    // In time, the same stream passes.
    let layer = TimeoutLayer::new().first_byte(2500 * MS);
    let response = layer
        .layer(inner(Duration::ZERO, Some(vec![2000 * MS, 10 * MS])))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    assert_eq!((chunks.len(), error.is_none()), (2, true));
}

#[tokio::test(start_paused = true)]
async fn attempt_covers_a_stream_to_its_first_chunk_only() {
    let layer = TimeoutLayer::new().attempt(1000 * MS);
    // A long generation: 20 chunks 300 ms apart, 6 s in all, is not cut.
    let response = layer
        .layer(inner(100 * MS, Some(vec![300 * MS; 20])))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    assert_eq!((chunks.len(), error.is_none()), (20, true));

    // A slow first chunk is cut with the attempt's kind.
    let response = layer
        .layer(inner(100 * MS, Some(vec![1200 * MS])))
        .oneshot(request())
        .await
        .unwrap();
    let (_, error) = drain(response).await;
    assert_eq!(error.unwrap().kind(), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn idle_resets_on_every_chunk() {
    let layer = TimeoutLayer::new().idle(100 * MS);
    let response = layer
        .layer(inner(Duration::ZERO, Some(vec![50 * MS; 40])))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(chunks.len(), 40);
}

#[tokio::test(start_paused = true)]
async fn a_long_gap_fails_with_idle_after_the_earlier_chunks() {
    let layer = TimeoutLayer::new().idle(100 * MS);
    let response = layer
        .layer(inner(
            Duration::ZERO,
            Some(vec![50 * MS, 50 * MS, 50 * MS, 150 * MS, 50 * MS]),
        ))
        .oneshot(request())
        .await
        .unwrap();
    let start = Instant::now();
    let (chunks, error) = drain(response).await;
    assert_eq!(chunks, ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]);
    let error = error.expect("the fourth chunk is 150 ms late");
    assert_eq!(error.kind(), ErrorKind::IdleTimeout);
    assert!(
        error
            .to_string()
            .contains("request 7: stream idle for more than 100ms"),
        "{error}"
    );
    assert_eq!(start.elapsed(), 250 * MS);
}

#[tokio::test(start_paused = true)]
async fn idle_does_not_cover_the_wait_for_the_first_token() {
    // A reasoning model: 5 s to the first token, then quick chunks.
    let layer = TimeoutLayer::new().idle(100 * MS);
    let response = layer
        .layer(inner(
            Duration::ZERO,
            Some(vec![5000 * MS, 50 * MS, 50 * MS]),
        ))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    assert_eq!((chunks.len(), error.is_none()), (3, true));
}

#[tokio::test(start_paused = true)]
async fn stream_total_caps_the_whole_stream() {
    let layer = TimeoutLayer::new().idle(1000 * MS).stream_total(1000 * MS);
    let response = layer
        .layer(inner(200 * MS, Some(vec![300 * MS; 10])))
        .oneshot(request())
        .await
        .unwrap();
    let (chunks, error) = drain(response).await;
    // Chunks at 500, 800 ms arrive; the deadline passes at 1000 ms.
    assert_eq!(chunks.len(), 2);
    let error = error.unwrap();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(
        error.to_string().contains("stream not finished within 1s"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_of_the_inner_service_pass_through() {
    let layer = TimeoutLayer::new().first_byte(1000 * MS);
    let service = layer.layer(service_fn(|_: Request| async {
        Err::<Response, _>(Error::new(ErrorKind::Connect, "refused"))
    }));
    let err = service.oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
}

// Real sockets, short real times.

fn chat_stream() -> Request {
    Request::post(
        "/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn a_stalled_server_fails_first_byte_over_a_socket() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = volley_transport::Transport::builder()
        .base_url(server.url())
        .build()
        .unwrap();
    let service = TimeoutLayer::new().first_byte(200 * MS).layer(transport);
    let request = chat_stream().with_header(
        http::HeaderName::from_static("x-mock-fault"),
        http::HeaderValue::from_static("stall"),
    );
    let id = request.id();
    let err = service.oneshot(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FirstByteTimeout);
    assert!(err.to_string().contains(&format!("request {id}:")), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_token_stream_fails_idle_over_a_socket() {
    let server = MockServer::start(MockConfig {
        inter_token: "200ms".parse().unwrap(),
        ttft: Some("0ms".parse().unwrap()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let transport = volley_transport::Transport::builder()
        .base_url(server.url())
        .build()
        .unwrap();
    let service = TimeoutLayer::new()
        .first_byte(Duration::from_secs(5))
        .idle(50 * MS)
        .layer(transport);
    let response = service.oneshot(chat_stream()).await.unwrap();
    let (chunks, error) = drain(response).await;
    assert!(!chunks.is_empty(), "the first token arrives at once");
    assert_eq!(error.unwrap().kind(), ErrorKind::IdleTimeout);
    server.shutdown().await;
}
