//! Anthropic's Messages API through the whole stack, against volley-mock's `/v1/messages`
//! over loopback: plain and streamed answers, overload retried to success, both auth
//! headers, the key never shown; and the official `anthropic` Python SDK reading the mock.

use std::time::Duration;

use futures_util::StreamExt as _;
use volley::anthropic::{InputMessage, MessagesRequest, StreamEvent};
use volley::transport::AnthropicAuth;
use volley::{Client, ErrorKind, Provider};
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-ant-test-0123456789abcdef";

fn request(text: &str) -> MessagesRequest {
    MessagesRequest::new("claude-test", 64, vec![InputMessage::user(text)])
}

fn config() -> MockConfig {
    MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    }
}

fn client(server: &MockServer, key: &str) -> Client {
    Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(key)
        .build()
        .unwrap()
}

#[tokio::test]
async fn messages_and_streams_carry_the_same_text() {
    let server = MockServer::start(config()).await.unwrap();
    let client = client(&server, KEY);
    let message = client.messages(&request("hello")).await.unwrap();
    assert_eq!(message.r#type, "message");
    assert_eq!(message.usage.output_tokens, 16);
    assert!(message.usage.input_tokens > 0);
    assert!(!message.text().is_empty());

    let stream = client.messages_stream(&request("hello")).await.unwrap();
    assert_eq!(stream.text().await.unwrap(), message.text());

    let mut stream = client.messages_stream(&request("hello")).await.unwrap();
    // Anthropic's `request-id`, from the response's head.
    assert!(
        stream
            .provider_request_id()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(stream.headers().contains_key("request-id"));
    assert!(format!("{stream:?}").starts_with("MessageStream"));
    let mut names = Vec::new();
    let mut output = None;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if let StreamEvent::MessageDelta(delta) = &event {
            output = Some(delta.usage.output_tokens);
        }
        names.push(event.type_name().to_owned());
    }
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    // The mock's `ping` is skipped by the stream.
    assert!(!names.iter().any(|n| n == "ping"), "{names:?}");
    assert_eq!(output, Some(16));
}

/// After `message_stop` the stream lets go of its body: the request's concurrency slot is free
/// and its connection back in the pool while the caller still holds the stream (at once when
/// the body's end came with the last event, else once the rest is drained, within
/// `DRAIN_FOR`).
#[tokio::test]
async fn a_finished_stream_gives_its_slot_and_connection_back() {
    let server = MockServer::start(config()).await.unwrap();
    let client = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(KEY)
        .concurrency(1)
        .build()
        .unwrap();
    let mut stream = client.messages_stream(&request("hello")).await.unwrap();
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event.unwrap().type_name().to_owned());
    }
    assert_eq!(last.as_deref(), Some("message_stop"));
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slot is free, the stream still held");
    let next = tokio::time::timeout(Duration::from_secs(10), client.messages(&request("again")))
        .await
        .expect("the finished stream gave its slot back");
    assert!(!next.unwrap().text().is_empty());
    let stats = client.connection_stats();
    assert_eq!(
        (stats.requests, stats.opened),
        (2, 1),
        "the second request reused the stream's connection"
    );
    drop(stream);
}

#[tokio::test]
async fn a_stream_cut_short_is_an_error() {
    let server = MockServer::start(MockConfig {
        faults: "cut=1".parse().unwrap(),
        ..config()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(KEY)
        .retries(0)
        .build()
        .unwrap();
    let result = match client.messages_stream(&request("hello")).await {
        Ok(stream) => stream.text().await,
        Err(e) => Err(e),
    };
    assert_eq!(result.unwrap_err().kind(), ErrorKind::StreamBroken);
}

/// Anthropic may answer 200 and then send `overloaded_error` as the stream's first event:
/// nothing reached the caller yet, so the attempt is retried, and the caller gets the second
/// attempt's stream.
#[tokio::test]
async fn an_error_event_before_anything_reached_the_caller_is_retried() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let port = volley_testkit::raw::serve(move |_head| {
        let body = if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            OVERLOADED
        } else {
            STREAM
        };
        volley_testkit::raw::event_stream_response(body)
    })
    .await;
    let client = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    let stream = client.messages_stream(&request("hello")).await.unwrap();
    assert_eq!(stream.text().await.unwrap(), "Hello");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn overload_is_retried_until_every_request_succeeds() {
    let server = MockServer::start(MockConfig {
        faults: "529=0.3".parse().unwrap(),
        retry_after: Duration::from_millis(1),
        ..config()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(KEY)
        .retries(10)
        .build()
        .unwrap();
    let calls = (0..30).map(|i| {
        let client = client.clone();
        async move { client.messages(&request(&format!("line {i}"))).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stats = server.stats();
    assert!(stats.faults.unavailable > 0, "some answers were 529");
    assert_eq!(
        stats.responses_by_status.get("529").copied(),
        Some(stats.faults.unavailable)
    );
}

#[tokio::test]
async fn either_auth_header_is_accepted_and_the_key_is_never_shown() {
    let server = MockServer::start(config()).await.unwrap();
    let legacy = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(KEY)
        .anthropic_auth(AnthropicAuth::XApiKey)
        .build()
        .unwrap();
    legacy.messages(&request("hi")).await.unwrap();

    let wrong = "sk-ant-wrong-0123456789abcdef";
    let client = client(&server, wrong);
    let err = client.messages(&request("hi")).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    for shown in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{client:?}"),
        format!("{legacy:?}"),
    ] {
        assert!(!shown.contains(wrong) && !shown.contains(KEY), "{shown}");
    }
}

/// The official Python SDK parses the mock's answers, plain and streamed. Skipped (with a
/// line saying so) when the SDK is not installed, unless `VOLLEY_REQUIRE_ANTHROPIC_SDK=1`
/// (set by `.ci/run`, which installs it).
#[tokio::test]
async fn the_official_python_sdk_reads_the_mock() {
    let has_sdk = std::process::Command::new("python3")
        .args(["-c", "import anthropic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sdk {
        assert!(
            std::env::var("VOLLEY_REQUIRE_ANTHROPIC_SDK").as_deref() != Ok("1"),
            "VOLLEY_REQUIRE_ANTHROPIC_SDK=1 but `import anthropic` fails"
        );
        println!("skipped: the anthropic Python SDK is not installed (pip install anthropic)");
        return;
    }
    let server = MockServer::start(config()).await.unwrap();
    // The SDK's base URL has no `/v1`.
    let base = server.url().trim_end_matches("/v1").to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/anthropic_sdk.py");
    // Bounded: the script makes five requests with no retries and a 30 s timeout each.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .env("ANTHROPIC_BASE_URL", &base)
            .env("ANTHROPIC_API_KEY", KEY)
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("sdk ok"), "{stdout}");
    assert!(server.stats().requests_total >= 4);
}

/// A server that enforces 1 200 requests and 120 000 tokens a minute and states them in
/// `anthropic-ratelimit-*` headers.
async fn limited_server() -> MockServer {
    MockServer::start(MockConfig {
        rate_limits: volley_mock::RateLimits {
            rpm: Some(1_200),
            tpm: Some(120_000),
            ..volley_mock::RateLimits::NONE
        },
        ..config()
    })
    .await
    .unwrap()
}

/// Raw requests through an Anthropic client (`send`, `fan_out`: the facade's way to fan out
/// Messages calls) are read as Anthropic's: the limits are learned from the
/// `anthropic-ratelimit-*` headers as for `messages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_through_an_anthropic_client_are_read_as_anthropic() {
    let server = limited_server().await;
    let client = client(&server, KEY);
    let results: Vec<_> = futures_util::stream::iter(0..40)
        .map(|i| {
            let client = client.clone();
            async move {
                let raw = volley::core::Request::post_json("/messages", &request(&format!("{i}")))?;
                assert_eq!(raw.dialect(), volley::core::Dialect::OpenAi, "the default");
                client.send(raw).await?.bytes().await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(client.learned_rate_limits(), (Some(1_200), Some(120_000)));

    // The provider set on the one endpoint, or on a whole transport, is the client's: its
    // raw requests are read as Anthropic's too.
    let by_endpoint = Client::builder()
        .endpoint(
            volley::Endpoint::new(server.url())
                .provider(Provider::Anthropic)
                .api_key(KEY),
        )
        .build()
        .unwrap();
    let by_transport = Client::builder()
        .transport(
            volley::transport::Builder::new()
                .provider(Provider::Anthropic)
                .base_url(server.url())
                .api_key(KEY),
        )
        .build()
        .unwrap();
    for client in [by_endpoint, by_transport] {
        let raw = volley::core::Request::post_json("/messages", &request("one")).unwrap();
        client.send(raw).await.unwrap().bytes().await.unwrap();
        assert_eq!(client.learned_rate_limits(), (Some(1_200), Some(120_000)));
    }
}

/// [`limited_server`], no limit given: both limits are learned (after the slow start), and at
/// most 5 % of the attempts are answered 429. Counts, never times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_learned_from_anthropic_headers() {
    let server = limited_server().await;
    let client = client(&server, KEY);
    let lines = 120;
    let results: Vec<_> = futures_util::stream::iter(0..lines)
        .map(|i| {
            let client = client.clone();
            async move { client.messages(&request(&format!("line {i}"))).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let stats = server.stats();
    volley_testkit::runs::assert_no_line_failed(
        &results,
        stats.requests_total,
        stats.rate_limited,
        client.learned_rate_limits(),
    );
    assert_eq!(client.learned_rate_limits(), (Some(1_200), Some(120_000)));
    assert!(
        stats.rate_limited * 20 <= stats.requests_total,
        "{} of {} attempts were 429s",
        stats.rate_limited,
        stats.requests_total
    );
}

/// A server on loopback that answers one request with a `message_start` event, then, once
/// the caller has it, `error` (an event the retry layer cannot take back), and closes.
/// Returns the base URL.
async fn serve_start_then(error: &'static str) -> String {
    let start = concat!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",",
        "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],",
        "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,",
        "\"output_tokens\":1}}}\n\n",
    );
    let parts = vec![start.to_owned(), error.to_owned()];
    let port = volley_testkit::raw::answer_once_in_parts(parts, Duration::from_millis(100)).await;
    format!("http://127.0.0.1:{port}/v1")
}

/// An `error` event ends a message stream with an error even when its data is empty, and an
/// error object that came without an `event:` line is an error whatever the order of its
/// keys, with the provider's message: neither is handed on as an event, nor lost in "ended
/// before message_stop".
#[tokio::test]
async fn error_events_of_any_shape_end_a_message_stream_with_the_error() {
    for (error, says) in [
        ("event: error\ndata:\n\n", "error event"),
        (
            "data: {\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded now\"},\"type\":\"error\"}\n\n",
            "Overloaded now",
        ),
    ] {
        let client = Client::builder()
            .provider(Provider::Anthropic)
            .base_url(serve_start_then(error).await)
            .api_key(KEY)
            .retries(0)
            .build()
            .unwrap();
        let mut stream = client.messages_stream(&request("hello")).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(matches!(first, StreamEvent::MessageStart(_)), "{first:?}");
        let end = stream.next().await.unwrap();
        let error = end.expect_err("an error, not an event");
        assert!(error.to_string().contains(says), "{error}");
        assert!(!error.to_string().contains("message_stop"), "{error}");
        assert!(stream.next().await.is_none());
    }
}

/// Events whose data has no `type` (a proxy that rewrote them) take their event name's, as
/// Anthropic's SDKs read them: the text arrives and `message_stop` ends the stream, instead of
/// unknown events and "ended before message_stop".
#[tokio::test]
async fn an_event_without_a_type_in_its_data_takes_its_event_name() {
    let rest = concat!(
        "event: content_block_start\ndata: {\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"index\":0}\n\n",
        "event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
        "data: {\"index\":0}\n\n",
        "event: future_event\ndata: {\"index\":0}\n\n",
        // A ping whose `event:` line was dropped is still skipped.
        "data: {\"type\":\"ping\"}\n\n",
        "event: message_stop\ndata: {}\n\n",
    );
    let client = Client::builder()
        .provider(Provider::Anthropic)
        .base_url(serve_start_then(rest).await)
        .api_key(KEY)
        .retries(0)
        .build()
        .unwrap();
    let mut stream = client.messages_stream(&request("hello")).await.unwrap();
    let mut names = Vec::new();
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        text.extend(event.text_delta());
        names.push(event.type_name().to_owned());
    }
    assert_eq!(text, "Hi");
    // An event of another name (the default `message`, one Volley does not know) stays
    // unknown, as it came.
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "",
            "",
            "message_stop"
        ]
    );
}
