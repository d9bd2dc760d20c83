//! `Client::fan_out` and its helpers against volley-mock over real loopback sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use http::HeaderValue;
use volley::openai::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
use volley::{Client, ErrorKind, Request};
use volley_mock::{FAULT_HEADER, LATENCY_HEADER, MockConfig, MockServer};

fn chat(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

fn request(i: usize) -> Request {
    Request::post_json("/chat/completions", &chat(&format!("request {i}"))).unwrap()
}

fn failing(i: usize) -> Request {
    request(i).with_header(
        FAULT_HEADER.parse().unwrap(),
        HeaderValue::from_static("500"),
    )
}

async fn setup(latency: &str) -> (MockServer, Client) {
    let server = MockServer::start(MockConfig {
        latency: latency.parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .retries(0)
        .build()
        .unwrap();
    (server, client)
}

/// An iterator of requests that counts how many were taken.
fn counted(n: usize, pulled: &Arc<AtomicUsize>) -> impl Iterator<Item = Request> + Send + use<> {
    let pulled = pulled.clone();
    (0..n).map(move |i| {
        pulled.fetch_add(1, Ordering::SeqCst);
        request(i)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_keeps_every_slot_full_and_yields_every_index_once() {
    // A latency long enough that a loaded machine still starts half the slots' requests
    // within one answer's time.
    let (server, client) = setup("200ms").await;
    // Open the 50 connections first, so that the first wave is not spread out by connecting.
    let warm_up = client.fan_out_collect((0..50).map(request), 50).await;
    assert!(warm_up.iter().all(Result::is_ok));
    server.reset_stats();

    let lines = 200;
    let mut seen = vec![0_u32; lines];
    let mut results = client.fan_out((0..lines).map(request), 50);
    while let Some((index, result)) = results.next().await {
        let response = result.unwrap_or_else(|e| panic!("request {index}: {e}"));
        assert_eq!(response.status(), 200);
        seen[index] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "every index exactly once");
    let stats = server.stats();
    assert_eq!(stats.requests_total, lines as u64);
    // Never overfilled; kept busy (at least half the slots at once: how full they stay is a
    // benchmark's figure).
    assert!(
        (25..=50).contains(&stats.peak_in_flight),
        "{} in flight at the peak with 50 slots",
        stats.peak_in_flight
    );
}

#[tokio::test]
async fn a_failure_stays_at_its_index_and_cancels_nothing() {
    let (server, client) = setup("5ms").await;
    let requests = (0..20).map(|i| if i == 7 { failing(i) } else { request(i) });
    let results: Vec<_> = client.fan_out(requests, 4).collect().await;
    assert_eq!(results.len(), 20);
    for (index, result) in results {
        if index == 7 {
            let error = result.unwrap_err();
            assert_eq!(error.status().map(|s| s.as_u16()), Some(500), "{error}");
        } else {
            assert!(result.is_ok(), "request {index} failed");
        }
    }
    assert_eq!(
        server.stats().requests_total,
        20,
        "no retry, nothing dropped"
    );
}

#[tokio::test]
async fn collect_keeps_input_order_and_per_item_errors() {
    let (_server, client) = setup("1ms").await;
    // Later inputs have longer prompts (the mock counts their tokens) and answer sooner, so
    // completion order is the reverse of input order.
    let requests = (0..6).map(|i| {
        let chat = chat(&"word ".repeat(i * 40 + 1));
        let mut request = Request::post_json("/chat/completions", &chat).unwrap();
        if i == 2 {
            request = request.with_header(
                FAULT_HEADER.parse().unwrap(),
                HeaderValue::from_static("500"),
            );
        }
        request.with_header(
            LATENCY_HEADER.parse().unwrap(),
            HeaderValue::from_str(&format!("{}ms", 160 - i * 30)).unwrap(),
        )
    });
    let results = client.fan_out_collect(requests, 6).await;
    assert_eq!(results.len(), 6);
    let mut prompt_tokens = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        if i == 2 {
            assert_eq!(result.unwrap_err().status().map(|s| s.as_u16()), Some(500));
            continue;
        }
        let reply: ChatCompletionResponse = result.unwrap().json().await.unwrap();
        prompt_tokens.push(reply.usage.unwrap().prompt_tokens);
    }
    assert!(
        prompt_tokens.windows(2).all(|w| w[0] < w[1]),
        "input order: {prompt_tokens:?}"
    );
}

#[tokio::test]
async fn fan_out_chat_collect_returns_typed_replies_in_order() {
    let (_server, client) = setup("1ms").await;
    let mut requests: Vec<_> = (0..5).map(|i| chat(&"word ".repeat(i * 40 + 1))).collect();
    requests[3].stream = Some(true);
    let replies = client.fan_out_chat_collect(&requests, 2).await;
    assert_eq!(replies.len(), 5);
    let mut prompt_tokens = Vec::new();
    for (i, reply) in replies.into_iter().enumerate() {
        if i == 3 {
            assert_eq!(reply.unwrap_err().kind(), ErrorKind::InvalidInput);
            continue;
        }
        let reply = reply.unwrap();
        assert!(!reply.text().unwrap().is_empty());
        prompt_tokens.push(reply.usage.unwrap().prompt_tokens);
    }
    // The mock counts prompt tokens from the prompt's length: longer inputs come later.
    assert!(
        prompt_tokens.windows(2).all(|w| w[0] < w[1]),
        "input order: {prompt_tokens:?}"
    );
}

#[tokio::test]
async fn the_iterator_is_pulled_only_as_slots_free_up() {
    let (server, client) = setup("20ms").await;
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut results = client.fan_out(counted(1_000, &pulled), 10);
    let (_, first) = results.next().await.unwrap();
    first.unwrap();
    let after_first = pulled.load(Ordering::SeqCst);
    assert!(
        (10..=11).contains(&after_first),
        "{after_first} pulled after the first result"
    );
    drop(results);
    assert!(server.stats().requests_total <= 11);
}

#[tokio::test]
async fn concurrency_zero_is_treated_as_one() {
    let (server, client) = setup("5ms").await;
    let results = client.fan_out_collect((0..5).map(request), 0).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.stats().peak_in_flight, 1);
}

#[tokio::test]
async fn the_stream_is_send_and_runs_in_a_spawned_task() {
    let (server, client) = setup("1ms").await;
    let stream = client.fan_out((0..8).map(request), 4);
    let count = tokio::spawn(stream.count()).await.unwrap();
    assert_eq!(count, 8);
    assert_eq!(server.stats().requests_total, 8);
}

/// Collecting streamed responses reads each to its end in its task: the responses held for
/// the result would otherwise keep both of the client's slots, and the third request would
/// wait for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_reads_streams_to_the_end_so_their_slots_free_up() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(2)
        .retries(0)
        .build()
        .unwrap();
    let streamed = |i: usize| {
        let mut chat = chat(&format!("stream {i}"));
        chat.stream = Some(true);
        Request::post_json("/chat/completions", &chat).unwrap()
    };
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.fan_out_collect((0..5).map(streamed), 5),
    )
    .await
    .expect("every stream was read and its slot freed");
    assert_eq!(results.len(), 5);
    for result in results {
        let response = result.unwrap();
        assert!(!response.is_stream(), "read to its end");
        let body = response.bytes().await.unwrap();
        assert!(body.ends_with(b"data: [DONE]\n\n"), "{body:?}");
    }
}

/// A raw request pays its estimated tokens before it is sent, as a typed one does: four
/// requests of about 1 600 tokens under 2 000 tokens a second (a burst of 2 000) take about
/// 2.2 s,
/// where without an estimate all four would go at once and be charged only after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_pay_their_tokens_before_they_are_sent() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .rpm(0)
        .tpm(120_000)
        .retries(0)
        .build()
        .unwrap();
    let long = "word ".repeat(1_600);
    let requests = (0..4).map(|i| {
        let mut chat = chat(&format!("{i} {long}"));
        chat.max_tokens = Some(8);
        Request::post_json("/chat/completions", &chat).unwrap()
    });
    let started = std::time::Instant::now();
    let results = client.fan_out_collect(requests, 4).await;
    assert!(results.iter().all(Result::is_ok));
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(1_500), "{took:?}");
}

/// A raw request to an endpoint not billed by tokens (a file upload) pays nothing up front:
/// a body far above a minute's token budget is still sent (the mock has no `/files`: 404).
#[tokio::test]
async fn a_raw_upload_is_not_charged_tokens() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .rpm(0)
        .tpm(6_000)
        .retries(0)
        .build()
        .unwrap();
    let upload = serde_json::json!({"purpose": "batch", "data": "x".repeat(400_000)});
    let request = Request::post_json("/files", &upload).unwrap();
    let err = client.send(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status, "sent, not refused: {err}");
    assert_eq!(server.stats().requests_total, 1);
}
