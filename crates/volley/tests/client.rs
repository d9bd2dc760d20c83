//! The facade against volley-mock over real loopback sockets.

use std::time::Duration;

use futures_util::StreamExt;
use volley::openai::{ChatCompletionRequest, ChatMessage, EmbeddingsRequest};
use volley::{Client, ErrorKind};
use volley_mock::{MockConfig, MockServer};

fn request(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

/// A client without retries of a gateway that answers every request with a 200 whose body
/// is an error object (`upstream failed`, code 502).
async fn gateway_answering_502_with_a_200() -> Client {
    let port = volley_testkit::raw::serve(|_| {
        let body = r#"{"error":{"message":"upstream failed","code":502}}"#;
        volley_testkit::raw::json_response("200 OK", &[], body)
    })
    .await;
    raw_client(port, 0)
}

/// A client of the raw server on `port`, with `retries`.
fn raw_client(port: u16, retries: u32) -> Client {
    Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .retries(retries)
        .build()
        .unwrap()
}

async fn setup(config: MockConfig) -> (MockServer, Client) {
    let server = MockServer::start(config).await.unwrap();
    let client = Client::builder().base_url(server.url()).build().unwrap();
    (server, client)
}

#[tokio::test]
async fn chat_returns_the_reply_and_usage() {
    let (_server, client) = setup(MockConfig::default()).await;
    let reply = client.chat(&request("hello")).await.unwrap();
    assert!(!reply.text().unwrap().is_empty());
    let usage = reply.usage.unwrap();
    assert_eq!(usage.completion_tokens, 16);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

#[tokio::test]
async fn chat_refuses_a_streaming_request() {
    let (server, client) = setup(MockConfig::default()).await;
    let mut r = request("x");
    r.stream = Some(true);
    let err = client.chat(&r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(server.stats().requests_total, 0, "nothing was sent");
}

#[tokio::test]
async fn chat_stream_yields_every_token_then_usage() {
    let (_server, client) = setup(MockConfig::default()).await;
    let mut stream = client.chat_stream(request("hello")).await.unwrap();
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(t) = chunk.delta_text() {
            text.push_str(t);
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    let non_stream = client.chat(&request("hello")).await.unwrap();
    assert_eq!(text, non_stream.text().unwrap(), "same content both ways");
    assert_eq!(usage.unwrap().completion_tokens, 16);
}

#[tokio::test]
async fn a_cut_stream_ends_in_stream_broken() {
    let (_server, client) = setup(MockConfig {
        faults: "cut=1".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let mut stream = client.chat_stream(request("hello")).await.unwrap();
    let mut chunks = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => chunks += 1,
            Some(Err(e)) => break e,
            None => panic!("a cut stream must not end cleanly"),
        }
    };
    assert!(chunks > 0);
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
}

/// `n` choices, whole and streamed: each choice's text is the whole answer, and a stream of
/// two choices ends cleanly once both finished.
#[tokio::test]
async fn n_choices_whole_and_streamed() {
    let (_server, client) = setup(MockConfig::default()).await;
    let mut three = request("hello");
    three.n = Some(3);
    let reply = client.chat(&three).await.unwrap();
    assert_eq!(reply.choices.len(), 3);
    let text = reply.text().unwrap().to_owned();
    for (i, choice) in reply.choices.iter().enumerate() {
        assert_eq!(choice.index as usize, i);
        assert_eq!(
            choice.message.content.as_ref().and_then(|c| c.as_text()),
            Some(text.as_str())
        );
    }
    assert_eq!(reply.usage.unwrap().completion_tokens, 3 * 16);

    let mut two = request("hello");
    two.n = Some(2);
    let mut stream = client.chat_stream(two).await.unwrap();
    let mut texts = [String::new(), String::new()];
    let mut finished = [false, false];
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in &chunk.choices {
            let i = choice.index as usize;
            if let Some(content) = &choice.delta.content {
                texts[i].push_str(content);
            }
            finished[i] |= choice.finish_reason.is_some();
        }
    }
    assert_eq!(finished, [true, true]);
    assert_eq!(texts[0], text);
    assert_eq!(texts[1], text);
}

/// A server on loopback that answers one request with `events` as an event stream and then
/// closes the connection: a body that ends without `[DONE]`. Returns the base URL.
async fn serve_events_then_close(events: &'static str) -> String {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let parts = vec![format!("{head}{events}")];
    let port = volley_testkit::raw::answer_once_in_parts(parts, std::time::Duration::ZERO).await;
    format!("http://127.0.0.1:{port}/v1")
}

/// A chunk that carries an image in base64 (6 MiB on one `data:` line, as OpenRouter's
/// `delta.images` or a Responses stream's `response.completed` can) reads with the default
/// caps; a client whose caps are lower fails the stream with a decode error naming the cap.
#[tokio::test]
async fn a_large_event_reads_by_default_and_the_caps_are_the_client_s() {
    use volley::core::sse::Limits;
    let image = "A".repeat(6 << 20);
    let events: &'static str = Box::leak(
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{image}\"}}}}]}}\n\n\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n\
             data: [DONE]\n\n"
        )
        .into_boxed_str(),
    );
    let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("draw")]);
    for (limits, fits) in [
        (None, true),
        (Some(Limits::new().max_line_bytes(1 << 20)), false),
    ] {
        let mut builder = Client::builder()
            .base_url(serve_events_then_close(events).await)
            .retries(0);
        if let Some(limits) = limits {
            builder = builder.sse_limits(limits);
        }
        let client = builder.build().unwrap();
        let mut stream = client.chat_stream(request.clone()).await.unwrap();
        let first = stream.next().await.unwrap();
        if fits {
            assert_eq!(first.unwrap().delta_text().map(str::len), Some(6 << 20));
            assert!(stream.next().await.unwrap().is_ok());
            assert!(stream.next().await.is_none());
        } else {
            let error = first.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::BodyDecode);
            assert!(error.to_string().contains("max_line_bytes"), "{error}");
        }
    }
}

/// A server on loopback that answers every request, on connections it keeps alive, with
/// `events` as a chunked event stream whose terminating chunk it sends `after` them, in a
/// write of its own, as uvicorn (vLLM's server) does a moment after. Returns the base URL.
async fn serve_streams_ending_late(events: &'static str, after: Duration) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while volley_testkit::raw::read_request(&mut socket, &mut buf)
                    .await
                    .is_some()
                {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n",
                        events.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(after).await;
                    if socket.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/v1")
}

/// A stream whose body ends a moment after its last event (`[DONE]`, `message_stop`) still
/// gives its connection back to the pool: the rest is read on a task of its own, so four
/// streams one after another take one connection, not four.
#[tokio::test]
async fn a_body_that_ends_after_its_last_event_keeps_its_connection() {
    let events = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let client = Client::builder()
        .base_url(serve_streams_ending_late(events, Duration::from_millis(5)).await)
        .build()
        .unwrap();
    let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
    for _ in 0..4 {
        let mut stream = client.chat_stream(request.clone()).await.unwrap();
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            text.push_str(chunk.unwrap().delta_text().unwrap_or(""));
        }
        assert_eq!(text, "hi");
        // Past the terminator's delay: the drained connection is back in the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.connection_stats().opened, 1);

    let events = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",",
        "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],",
        "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,",
        "\"output_tokens\":1}}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let client = Client::builder()
        .provider(volley::Provider::Anthropic)
        .base_url(serve_streams_ending_late(events, Duration::from_millis(5)).await)
        .api_key("sk-ant-test")
        .build()
        .unwrap();
    let request = volley::anthropic::MessagesRequest::new(
        "claude-test",
        16,
        vec![volley::anthropic::InputMessage::user("hi")],
    );
    for _ in 0..4 {
        let mut stream = client.messages_stream(&request).await.unwrap();
        while let Some(event) = stream.next().await {
            event.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.connection_stats().opened, 1);

    // A body kept open long after its last event holds the one slot for the drain's bound
    // only: the next request goes out on a new connection, long before the body would end.
    let events = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let client = Client::builder()
        .base_url(serve_streams_ending_late(events, Duration::from_secs(30)).await)
        .concurrency(1)
        .build()
        .unwrap();
    let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
    for _ in 0..2 {
        let stream =
            tokio::time::timeout(Duration::from_secs(10), client.chat_stream(request.clone()));
        let mut stream = stream.await.expect("the slot came back").unwrap();
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    }
    assert_eq!(client.connection_stats().opened, 2);
}

/// Streams `request` from a server that sends `events` and closes: the chunks, then the
/// error the stream ended with, if any. Without retries: the server answers once, and an
/// error in the first bytes would otherwise be retried.
async fn stream_until_close(
    events: &'static str,
    request: ChatCompletionRequest,
) -> (usize, Option<volley::Error>) {
    let base = serve_events_then_close(events).await;
    let client = Client::builder().base_url(base).retries(0).build().unwrap();
    let mut stream = client.chat_stream(request).await.unwrap();
    let mut chunks = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => chunks += 1,
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream ends after its error"
                );
                return (chunks, Some(e));
            }
        }
    }
    (chunks, None)
}

fn without_usage(mut request: ChatCompletionRequest) -> ChatCompletionRequest {
    request.stream_options = Some(volley::openai::StreamOptions {
        include_usage: Some(false),
        ..Default::default()
    });
    request
}

/// OpenRouter reports an error in the middle of a stream as a chunk with an `error` object
/// after the chunk's own fields and `finish_reason: "error"`, then `[DONE]`: the stream fails
/// with the provider's message, where the chunk would otherwise pass as the last one.
#[tokio::test]
async fn an_error_object_after_a_chunks_own_fields_fails_the_stream() {
    let events = concat!(
        "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"provider\":\"openai\",",
        "\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected unexpectedly\"},",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (chunks, error) = stream_until_close(events, without_usage(request("hello"))).await;
    assert_eq!(chunks, 1);
    let error = error.expect("the provider's error ends the stream");
    assert_eq!(error.kind(), ErrorKind::StreamBroken, "{error}");
    let api = error.api_error().expect("the provider's error object");
    assert_eq!(api.message, "Provider disconnected unexpectedly");
}

/// An error in the middle of a stream is of the kind the same error gets at the stream's start
/// (and from `MessageStream`): a rate limit is `RateLimited`, a request the provider refuses
/// (its context window exceeded) a `Status` that no retry heals; and `chat_stream` answered
/// with a 200 whose body is an error object gives the error it names, not a decode error.
#[tokio::test]
async fn errors_in_and_instead_of_a_stream_keep_their_kind() {
    const FIRST: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    let cases: [(&'static str, ErrorKind); 4] = [
        // Names neither a type nor a code: only that the stream failed.
        (
            "event: error\ndata: {\"message\":\"boom\"}\n\n",
            ErrorKind::StreamBroken,
        ),
        (
            "data: {\"error\":{\"message\":\"slow down\",\"code\":429}}\n\n",
            ErrorKind::RateLimited,
        ),
        (
            "data: {\"error\":{\"message\":\"too long\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}\n\n",
            ErrorKind::Status,
        ),
        (
            "event: error\ndata: {\"error\":{\"message\":\"gone\",\"type\":\"server_error\"}}\n\n",
            ErrorKind::StreamBroken,
        ),
    ];
    for (error_event, kind) in cases {
        let events: &'static str = Box::leak(format!("{FIRST}{error_event}").into_boxed_str());
        let (chunks, error) = stream_until_close(events, without_usage(request("hello"))).await;
        assert_eq!(chunks, 1);
        let error = error.expect("the error ends the stream");
        assert_eq!(error.kind(), kind, "{error}");
    }

    let client = gateway_answering_502_with_a_200().await;
    let err = client.chat_stream(request("hello")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status, "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(502), "{err}");
    assert!(err.to_string().contains("upstream failed"), "{err}");
}

/// An error event as a stream's first bytes fails the attempt in the retry layer, which
/// quotes the provider's message in its error: a key the provider echoed is taken out first,
/// as from every error body.
#[tokio::test]
async fn an_error_event_that_echoes_the_key_is_retried_and_shown_without_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const KEY: &str = "sk-echo-secret-0123456789";
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let port = volley_testkit::raw::serve(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        let body = format!(
            "data: {{\"error\":{{\"message\":\"upstream rejected {KEY}\",\"type\":\"server_error\"}}}}\n\n"
        );
        volley_testkit::raw::event_stream_response(&body)
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .retries(1)
        .build()
        .unwrap();
    let err = client
        .chat_stream(request("hello"))
        .await
        .expect_err("every attempt failed");
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "retried once");
    let shown = format!("{err} {err:?} {}", err.report());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        err.api_error()
            .is_some_and(|api| api.message.contains("***")),
        "{shown}"
    );
}

/// A tenant's own key, sent in the request's headers rather than the client's, is taken out of
/// the error the retry layer builds from a stream's first event, as it is from error bodies.
#[tokio::test]
async fn a_request_s_own_key_is_taken_out_of_an_error_event() {
    const TENANT: &str = "sk-tenant-secret-0123456789";
    let port = volley_testkit::raw::serve(move |_| {
        let body = format!(
            "data: {{\"error\":{{\"message\":\"upstream rejected {TENANT}\",\"type\":\"server_error\"}}}}\n\n"
        );
        volley_testkit::raw::event_stream_response(&body)
    })
    .await;
    let client = raw_client(port, 1);
    let mut body = serde_json::to_value(request("hello")).unwrap();
    body["stream"] = serde_json::Value::Bool(true);
    let raw = volley::core::Request::post_json("/chat/completions", &body)
        .unwrap()
        .with_header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {TENANT}")).unwrap(),
        );
    let err = client.send(raw).await.expect_err("every attempt failed");
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    let shown = format!("{err} {err:?} {}", err.report());
    assert!(!shown.contains(TENANT), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

/// llama.cpp's server (and servers built on its older code) reports a failure inside a stream
/// with an `error: {..}` line, which is no event, and ends the stream: the caller gets the
/// server's message, not only "ended before [DONE]"; at the stream's start, the attempt fails
/// in the retry layer and is sent again.
#[tokio::test]
async fn a_llama_cpp_error_line_ends_the_stream_with_its_message() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const ERROR: &str =
        r#"error: {"code":500,"message":"the KV cache is full","type":"server_error"}"#;
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
    let chunk = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;
    let port = volley_testkit::raw::answer_once_in_parts(
        vec![format!("{head}{chunk}\n\n"), format!("{ERROR}\n\n")],
        Duration::from_millis(100),
    )
    .await;
    let client = raw_client(port, 0);
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        let mut stream = client.chat_stream(without_usage(request("hi"))).await?;
        let first = stream.next().await.expect("a first chunk")?;
        assert_eq!(first.choices[0].delta.content.as_deref(), Some("Hel"));
        stream.next().await.expect("an error after the first chunk")
    })
    .await
    .expect("the call ends");
    let err = outcome.expect_err("the stream failed");
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    assert!(err.to_string().contains("the KV cache is full"), "{err}");

    // At the start: retried, and the last attempt's message is the caller's.
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let port = volley_testkit::raw::serve(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        volley_testkit::raw::event_stream_response(&format!("{ERROR}\n\n"))
    })
    .await;
    let client = raw_client(port, 1);
    let err = tokio::time::timeout(Duration::from_secs(30), client.chat_stream(request("hi")))
        .await
        .expect("the call ends")
        .expect_err("every attempt failed");
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
    assert!(err.to_string().contains("the KV cache is full"), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "retried once");
}

/// With `n: 2`, the first choice's `finish_reason` is not the end: a body that stops while
/// the second choice is still being written is broken, one that stops after both finished is
/// not (a server that leaves out `[DONE]`).
#[tokio::test]
async fn a_stream_of_two_choices_cut_after_the_first_finished_is_broken() {
    let mut two = without_usage(request("hello"));
    two.n = Some(2);
    let cut = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    );
    let (chunks, error) = stream_until_close(cut, two.clone()).await;
    assert_eq!(chunks, 3);
    let error = error.expect("choice 1 never finished");
    assert_eq!(error.kind(), ErrorKind::StreamBroken, "{error}");

    let whole = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    );
    let (chunks, error) = stream_until_close(whole, two).await;
    assert_eq!((chunks, error.map(|e| e.to_string())), (3, None));
}

/// A server that puts usage in every chunk (vLLM's `continuous_usage_stats`) has not sent its
/// last chunk when the first one carries usage: cut there, the stream is broken; cut after the
/// last choice finished and usage followed, it is whole.
#[tokio::test]
async fn usage_in_every_chunk_does_not_make_a_cut_stream_whole() {
    let cut = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],",
        "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
    );
    let (chunks, error) = stream_until_close(cut, request("hello")).await;
    assert_eq!(chunks, 1);
    let error = error.expect("the answer was cut after one token");
    assert_eq!(error.kind(), ErrorKind::StreamBroken, "{error}");

    let whole = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],",
        "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],",
        "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    );
    let (chunks, error) = stream_until_close(whole, request("hello")).await;
    assert_eq!((chunks, error.map(|e| e.to_string())), (2, None));
}

/// A server that ignores `stream_options` sends no usage; one that also leaves out `[DONE]`
/// has still sent the whole answer once every choice has finished. Usage the client asked
/// for on its own is no part of what such a stream owes; usage the caller asked for is.
#[tokio::test]
async fn usage_the_client_added_is_not_owed_by_a_stream_without_done() {
    let events = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    );
    let (chunks, error) = stream_until_close(events, request("hello")).await;
    assert_eq!((chunks, error.map(|e| e.to_string())), (2, None));

    let mut asked = request("hello");
    asked.stream_options = Some(volley::openai::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let (chunks, error) = stream_until_close(events, asked).await;
    assert_eq!(chunks, 2);
    let error = error.expect("the usage asked for never came");
    assert_eq!(error.kind(), ErrorKind::StreamBroken, "{error}");
}

/// OpenAI's 429 for a used-up quota is not a rate limit: the default client fails it after
/// one request instead of retrying it until `give_up_after` (ten minutes).
#[tokio::test]
async fn a_used_up_quota_fails_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let port = volley_testkit::raw::serve(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        volley_testkit::raw::json_response("429 Too Many Requests", &[], body)
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.chat(&request("hello")),
    )
    .await
    .expect("a used-up quota must not be retried until the client gives up")
    .unwrap_err();
    assert!(err.is_quota_exhausted(), "{err}");
    assert!(!err.is_rate_limited(), "{err}");
    assert!(
        err.to_string().contains("exceeded your current quota"),
        "{err}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once, never again");
}

#[tokio::test]
async fn a_malformed_stream_chunk_is_body_decode() {
    let (_server, client) = setup(MockConfig {
        faults: "malformed=1".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let mut stream = client.chat_stream(request("hello")).await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            last = Some(e);
        }
    }
    assert_eq!(last.unwrap().kind(), ErrorKind::BodyDecode);
}

#[tokio::test]
async fn embeddings_round_trip() {
    let (_server, client) = setup(MockConfig::default()).await;
    let req = EmbeddingsRequest::new(
        "text-embedding-3-small",
        vec!["a".to_owned(), "b".to_owned()],
    );
    let res = client.embeddings(&req).await.unwrap();
    assert_eq!(res.data.len(), 2);
    assert_eq!(res.data[0].embedding.to_f32().unwrap().len(), 8);
}

#[tokio::test]
async fn status_errors_carry_the_provider_message() {
    let (server, client) = setup(MockConfig {
        require_api_key: Some("sk-right".to_owned()),
        ..MockConfig::default()
    })
    .await;
    // No key: the mock says so, as OpenAI does.
    let err = client.chat(&request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status().unwrap().as_u16(), 401);
    let api = err.api_error().unwrap();
    assert!(api.message.contains("didn't provide an API key"), "{api:?}");
    // A wrong key.
    let wrong = Client::builder()
        .base_url(server.url())
        .api_key("sk-wrong")
        .build()
        .unwrap();
    let err = wrong.chat(&request("x")).await.unwrap_err();
    assert_eq!(
        err.api_error().unwrap().code.as_deref(),
        Some("invalid_api_key")
    );
}

#[tokio::test]
async fn clients_are_cheap_clones_sharing_one_pool() {
    let (_server, client) = setup(MockConfig::default()).await;
    let other = client.clone();
    client.chat(&request("a")).await.unwrap();
    other.chat(&request("b")).await.unwrap();
    let stats = client.connection_stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.opened, 1);
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Client>();
    // What a call gives back can be shared between threads too.
    fn assert_shared<T: Send + Sync + 'static>() {}
    assert_shared::<volley::core::Response>();
    assert_shared::<volley::ChatStream>();
    assert_shared::<volley::MessageStream>();
}

#[tokio::test]
async fn a_send_borrows_nothing_and_gives_its_slot_back() {
    let (server, _) = setup(MockConfig::default()).await;
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(1)
        .build()
        .unwrap();
    let http = || {
        volley::core::Request::new(
            http::Method::POST,
            http::uri::PathAndQuery::from_static("/chat/completions"),
        )
        .with_body(serde_json::to_vec(&request("spawned")).unwrap())
    };
    // The future borrows nothing: it can be spawned, and the client dropped meanwhile.
    let sending = client.send(http());
    let other = client.clone();
    drop(client);
    let response = tokio::spawn(sending).await.unwrap().unwrap();
    let reply: volley::openai::ChatCompletionResponse = response.json().await.unwrap();
    assert!(!reply.text().unwrap().is_empty());
    // The one slot is free again: the next request goes out.
    assert_eq!(other.in_flight(), 0);
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), other.send(http()))
        .await
        .expect("the slot was given back");
    assert!(next.unwrap().status().is_success());
    assert_eq!(other.connection_stats().requests, 2);
}

/// The call's deadline bounds the whole call, retries and backoff included, and gives its slot
/// back the moment it passes: with one slot, a request stuck on a slow server does not hold the
/// next one beyond the deadline.
#[tokio::test]
async fn the_deadline_bounds_the_call_and_frees_its_slot() {
    use std::time::Duration;
    let (server, _) = setup(MockConfig::default()).await;
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(1)
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let http = |headers: &[(&'static str, &'static str)]| {
        let mut request = volley::core::Request::new(
            http::Method::POST,
            http::uri::PathAndQuery::from_static("/chat/completions"),
        )
        .with_body(serde_json::to_vec(&request("deadline")).unwrap());
        for (name, value) in headers {
            request = request.with_header(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        request
    };
    let bound = Duration::from_secs(30);
    // 60 s of latency: the deadline passes first.
    let slow = client.send(http(&[("x-mock-latency", "60s")]));
    let err = tokio::time::timeout(bound, slow)
        .await
        .expect("the deadline ends the call")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("deadline of 300ms"), "{err}");
    // The one slot is free: the next request goes out at once and succeeds.
    assert_eq!(client.in_flight(), 0);
    let next = tokio::time::timeout(bound, client.send(http(&[])))
        .await
        .expect("the slot was given back");
    assert!(next.unwrap().status().is_success());

    // A server that fails every attempt: the retries (up to 1 000, each after a backoff of up
    // to 200 ms) stop at the deadline: as a timeout, or with the last 500 when the next
    // backoff would end past it.
    let policy = volley::middleware::retry::Policy::builder()
        .max_retries(1_000)
        .budget_enabled(false)
        .backoff_base(Duration::from_millis(200))
        .backoff_cap(Duration::from_millis(200))
        .build()
        .unwrap();
    let retrying = Client::builder()
        .base_url(server.url())
        .retry_policy(policy)
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let before = server.stats().requests_total;
    let err = tokio::time::timeout(bound, retrying.send(http(&[("x-mock-fault", "500")])))
        .await
        .expect("the deadline ends the call")
        .unwrap_err();
    let last_500 = err.status().map(|s| s.as_u16()) == Some(500);
    assert!(err.kind() == ErrorKind::Timeout || last_500, "{err}");
    assert!(
        server.stats().requests_total - before >= 2,
        "it was retried"
    );

    // A deadline of zero would fail every call: refused when the client is built.
    let zero = Client::builder()
        .base_url(server.url())
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(zero.kind(), ErrorKind::Config, "{zero}");

    // Without a deadline the same client setup waits for the answer.
    let patient = Client::builder().base_url(server.url()).build().unwrap();
    let reply = tokio::time::timeout(bound, patient.send(http(&[("x-mock-latency", "400ms")])))
        .await
        .expect("the answer comes");
    assert!(reply.unwrap().status().is_success());
}

/// A stream shows the response's headers (the provider's request id); a raw send decoded by
/// the client gives the typed answer beside the head, and a 200 whose body is an error object
/// is an error there, not an empty answer.
#[tokio::test]
async fn streams_and_raw_sends_keep_the_response_head() {
    let (_server, client) = setup(MockConfig::default()).await;
    let mut stream = client.chat_stream(request("head")).await.unwrap();
    let provider_id = stream.provider_request_id().map(str::to_owned);
    assert!(provider_id.as_deref().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        stream.headers().get("x-request-id").unwrap().to_str().ok(),
        provider_id.as_deref()
    );
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }

    let raw = volley::core::Request::post_json("/chat/completions", &request("raw")).unwrap();
    let response = client.send(raw).await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let answer: volley::openai::ChatCompletionResponse = client.decode(response).await.unwrap();
    assert!(answer.text().is_some_and(|t| !t.is_empty()));

    let gateway = gateway_answering_502_with_a_200().await;
    let raw = volley::core::Request::post_json("/chat/completions", &request("raw")).unwrap();
    let response = gateway.send(raw).await.unwrap();
    let err = gateway
        .decode::<volley::openai::ChatCompletionResponse>(response)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upstream failed"), "{err}");
}

/// A 429 whose `Retry-After` ends past the call's deadline is not waited for: the call fails
/// at once as that 429, its wait on the error for the caller to reschedule, instead of
/// sleeping to the deadline and failing as a timeout. A wait that fits is still made.
#[tokio::test]
async fn a_wait_past_the_deadline_returns_the_429_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let port = volley_testkit::raw::serve(move |head| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let wait = if head.contains("x-short") {
            "retry-after-ms: 100"
        } else {
            "retry-after: 30"
        };
        // The long wait's request is the first; the short wait's first attempt the second.
        if n <= 1 {
            volley_testkit::raw::json_response(
                "429 Too Many Requests",
                &[wait.to_owned()],
                r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
            )
        } else {
            volley_testkit::raw::json_response("200 OK", &[], r#"{"id":"x","choices":[]}"#)
        }
    })
    .await;
    // A client each: the first 429's 30 s pauses its client's sends.
    let client = || {
        Client::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1"))
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let post = |short: bool| {
        let mut request =
            volley::core::Request::post_json("/chat/completions", &request("wait")).unwrap();
        if short {
            request = request.with_header(
                http::HeaderName::from_static("x-short"),
                http::HeaderValue::from_static("1"),
            );
        }
        request
    };
    let bound = Duration::from_secs(30);
    let err = tokio::time::timeout(bound, client().send(post(false)))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(err.is_rate_limited(), "the 429, not a timeout: {err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "not retried");
    // 100 ms fits in the deadline: retried, and the second answer is the call's.
    let reply = tokio::time::timeout(bound, client().send(post(true)))
        .await
        .expect("the call ends")
        .unwrap();
    assert!(reply.status().is_success());
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

/// A server that answers its first request with a 429 asking for 30 s, and every later one
/// with a 200 (`"id": "x"`); its port, and how many requests it has had.
async fn paused_for_30_s_once() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let port = volley_testkit::raw::serve(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            volley_testkit::raw::json_response(
                "429 Too Many Requests",
                &["retry-after: 30".to_owned()],
                r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
            )
        } else {
            volley_testkit::raw::json_response("200 OK", &[], r#"{"id":"x","choices":[]}"#)
        }
    })
    .await;
    (port, seen)
}

/// A call on a client whose sends a 429 paused for longer than the call's deadline fails at
/// once, unsent, as rate-limited with the pause's wait on the error, instead of waiting in the
/// limiter until its timer ends it as a timeout.
#[tokio::test]
async fn a_call_held_past_its_deadline_by_a_pause_fails_at_once() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (port, seen) = paused_for_30_s_once().await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let bound = Duration::from_secs(30);
    let first = tokio::time::timeout(bound, client.chat(&request("first")))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(first.is_rate_limited(), "{first}");
    let err = tokio::time::timeout(bound, client.chat(&request("second")))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(
        err.is_rate_limited(),
        "held by the pause, not a timeout: {err}"
    );
    assert!(!err.is_request_sent(), "{err}");
    assert!(
        err.retry_after()
            .is_some_and(|wait| wait > Duration::from_secs(25)),
        "{err}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the second was not sent");
}

/// With two endpoints, a call the first endpoint's limiter holds back past its deadline (a
/// 429 paused its sends for 30 s) is not failed: the retry goes to the other endpoint at once.
#[tokio::test]
async fn a_call_held_back_by_one_endpoint_goes_to_another_at_once() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (paused, seen) = paused_for_30_s_once().await;
    let other = volley_testkit::raw::serve(|_| {
        volley_testkit::raw::json_response("200 OK", &[], r#"{"id":"y","choices":[]}"#)
    })
    .await;
    // Every call goes to the first while it is up (priority 0); the second is the fallback.
    let client = Client::builder()
        .endpoint(volley::Endpoint::new(format!("http://127.0.0.1:{paused}/v1")).name("paused"))
        .endpoint(
            volley::Endpoint::new(format!("http://127.0.0.1:{other}/v1"))
                .name("other")
                .priority(1),
        )
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let bound = Duration::from_secs(30);
    let first = tokio::time::timeout(bound, client.chat(&request("first")))
        .await
        .expect("the call ends");
    assert!(
        first.as_ref().is_err_and(|e| e.is_rate_limited()),
        "the 429's wait is past the deadline: {first:?}"
    );
    for n in 0..3 {
        let answer = tokio::time::timeout(bound, client.chat(&request("next")))
            .await
            .expect("the call ends")
            .unwrap_or_else(|e| panic!("call {n} was held back, not moved: {e}"));
        assert_eq!(answer.id, "y");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "nothing more sent to the paused one"
    );
}

/// The deadline counts from the call's start, the wait for a slot included: a call that
/// waited 2 s of its 3 s for the one slot, then got a 429 asking for 2 s, fails at once as
/// that 429 rather than retry into a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_counts_the_wait_for_a_slot() {
    use std::time::Duration;
    let (server, _) = setup(MockConfig {
        retry_after: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await;
    let client = Client::builder()
        .base_url(server.url())
        .concurrency(1)
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    let with = |name: &'static str, value: &'static str| {
        volley::core::Request::post_json("/chat/completions", &request("slot"))
            .unwrap()
            .with_header(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            )
    };
    let holder = tokio::spawn(client.send(with("x-mock-latency", "2s")));
    // The holder takes the slot first.
    while client.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.send(with("x-mock-fault", "429")),
    )
    .await
    .expect("the call ends")
    .unwrap_err();
    assert!(err.is_rate_limited(), "the 429, not a timeout: {err}");
    assert!(holder.await.unwrap().is_ok());
}

/// A reply in a coding the transport does not decode (zstd, asked for by a header of the
/// caller's or sent unasked) fails to decode with a message that names the coding.
#[tokio::test]
async fn a_reply_still_encoded_says_so() {
    let port = volley_testkit::raw::serve(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: zstd\r\n\
          content-length: 6\r\n\r\n(\xb5/\xfd\x00\x00"
            .to_vec()
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = client.chat(&request("hi")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
    assert!(
        err.to_string().contains("still encoded as \"zstd\""),
        "{err}"
    );
}

/// A 200 whose body is an error object naming a retryable failure (OpenRouter's and LiteLLM's
/// `{"error": {"code": 502}}`, a rate limit) is retried like the status it names, and the
/// next answer is the reply.
#[tokio::test]
async fn a_success_status_with_a_retryable_error_body_is_retried() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    const UPSTREAM: &str = r#"{"error":{"message":"Provider returned error","code":502}}"#;
    const LIMITED: &str =
        r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":429}}"#;
    const REPLY: &str = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}"#;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let port = volley_testkit::raw::serve(move |_| {
        let body = match seen.fetch_add(1, Ordering::SeqCst) {
            0 => UPSTREAM,
            1 => LIMITED,
            _ => REPLY,
        };
        volley_testkit::raw::json_response("200 OK", &[], body)
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), client.chat(&request("hi")))
        .await
        .expect("the call ends")
        .expect("the third answer is the reply");
    assert_eq!(reply.text(), Some("hello"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A 200 whose body is an error object (a gateway's `{"error": ...}`, vLLM's
/// `{"object": "error", ...}` behind some hosts) is an error with the provider's message, not
/// an empty answer, from `chat`, `embeddings` and `fan_out_chat` alike.
#[tokio::test]
async fn a_success_status_with_an_error_body_is_an_error() {
    const GATEWAY: &str = r#"{"error":{"message":"upstream overloaded","type":"server_error"}}"#;
    const VLLM: &str = r#"{"object":"error","message":"The model `gpt-x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    // The base URL's last segment picks the body: /v1/gateway or /v1/vllm.
    let port = volley_testkit::raw::serve(|head| {
        let body = if head.contains("/vllm/") {
            VLLM
        } else {
            GATEWAY
        };
        volley_testkit::raw::json_response("200 OK", &[], body)
    })
    .await;
    let client = |which: &str| {
        Client::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1/{which}"))
            .build()
            .unwrap()
    };
    let bound = std::time::Duration::from_secs(30);
    for (which, message) in [
        ("gateway", "upstream overloaded"),
        ("vllm", "does not exist"),
    ] {
        let client = client(which);
        let err = tokio::time::timeout(bound, client.chat(&request("hi")))
            .await
            .expect("the call ends")
            .expect_err("an error body is no answer");
        assert_eq!(err.kind(), ErrorKind::Status, "{err}");
        assert!(err.to_string().contains(message), "{which}: {err}");
        assert!(
            err.api_error()
                .is_some_and(|api| api.message.contains(message)),
            "{which}: {:?}",
            err.api_error()
        );
        let embeddings = EmbeddingsRequest::new("text-embedding-3-small", vec!["hi".into()]);
        let err = tokio::time::timeout(bound, client.embeddings(&embeddings))
            .await
            .expect("the call ends")
            .expect_err("an error body is no answer");
        assert!(err.to_string().contains(message), "{which}: {err}");
        let results: Vec<_> = tokio::time::timeout(
            bound,
            client
                .fan_out_chat([request("a"), request("b")], 2)
                .collect(),
        )
        .await
        .expect("the calls end");
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|(_, r)| r.is_err()), "{which}");
    }
}

/// An event with empty data (`data:` alone, a keep-alive some proxies send) carries no chunk
/// and breaks nothing; a `null` token count in the usage chunk reads as 0.
#[tokio::test]
async fn a_stream_passes_over_empty_events_and_null_counts() {
    let port = volley_testkit::raw::serve(|_| {
        let chunk = |delta: &str| {
            format!(
                r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#
            )
        };
        let body = [
            chunk(r#"{"role":"assistant","content":"Hel"}"#),
            "data:".to_owned(),
            chunk(r#"{"content":"lo"}"#),
            "data: ".to_owned(),
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned(),
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":null,"total_tokens":5}}"#.to_owned(),
            "data: [DONE]".to_owned(),
        ]
        .map(|event| format!("{event}\n\n"))
        .concat();
        volley_testkit::raw::event_stream_response(&body)
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.chat_stream(request("hi")),
    )
    .await
    .expect("the call ends")
    .unwrap();
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("every chunk reads");
        if let Some(content) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&content);
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    assert_eq!(text, "Hello");
    let usage = usage.expect("the usage chunk");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 0));
}

/// The call's deadline covers the stream sent again without `stream_options` too: two answers
/// of 600 ms each do not fit in a deadline of 1 s.
#[tokio::test]
async fn the_deadline_covers_a_stream_sent_again_without_options() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut answered = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            while volley_testkit::raw::read_request(&mut socket, &mut buf)
                .await
                .is_some()
            {
                tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                answered += 1;
                let answer = if answered == 1 {
                    let body = r#"{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}"#;
                    volley_testkit::raw::json_response("400 Bad Request", &[], body)
                } else {
                    volley_testkit::raw::event_stream_response(
                        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                    )
                };
                if socket.write_all(&answer).await.is_err() {
                    break;
                }
            }
        }
    });
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .deadline(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.chat_stream(request("hello")),
    )
    .await
    .expect("the call ends");
    let Err(err) = outcome else {
        panic!("the deadline passed before the second answer");
    };
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

/// Mistral's API (and servers built on FastAPI or pydantic that forbid unknown fields) refuses
/// `stream_options` with a 422 (`extra_forbidden`, the field named in `loc`, or in a bare
/// `detail` list): the stream is sent again without the options the client added, and later
/// streams go without them, as after Azure's 400.
#[tokio::test]
async fn a_422_that_forbids_stream_options_gets_streams_without_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let mistral = r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}"#;
    let fastapi = r#"{"detail":[{"type":"extra_forbidden","loc":["body","stream_options"],"msg":"Extra inputs are not permitted","input":{"include_usage":true}}]}"#;
    for refusal in [mistral, fastapi] {
        // The length of each request's body; the first (with the options) is refused.
        let lengths = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lengths);
        let port = volley_testkit::raw::serve(move |head| {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut seen = seen.lock().unwrap();
            seen.push(length);
            if seen.len() == 1 {
                volley_testkit::raw::json_response("422 Unprocessable Entity", &[], refusal)
            } else {
                volley_testkit::raw::event_stream_response(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                )
            }
        })
        .await;
        let client = Client::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1"))
            .build()
            .unwrap();
        for _ in 0..2 {
            let mut stream = client.chat_stream(request("hello")).await.unwrap();
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(chunk.unwrap().delta_text().unwrap_or_default());
            }
            assert_eq!(text, "Hi");
        }
        let lengths = lengths.lock().unwrap().clone();
        assert_eq!(lengths.len(), 3, "{lengths:?}");
        assert!(
            lengths[0] > lengths[1],
            "sent again without the options: {lengths:?}"
        );
        assert_eq!(
            lengths[1], lengths[2],
            "the next went without them: {lengths:?}"
        );
    }

    // A 422 about another field copies the body, `stream_options` and all, into its `input`:
    // no refusal of them. The error is the caller's, sent once.
    let other = r#"{"detail":[{"type":"missing","loc":["body","tools"],"msg":"Field required","input":{"model":"m","stream":true,"stream_options":{"include_usage":true}}}]}"#;
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    let port = volley_testkit::raw::serve(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
        volley_testkit::raw::json_response("422 Unprocessable Entity", &[], other)
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = client.chat_stream(request("hello")).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
    assert_eq!(answered.load(Ordering::Relaxed), 1, "sent again");
}

/// Azure OpenAI before API version 2024-09-01 answers `stream_options` with a 400 (as the
/// mock does on its deployment paths): the first stream is sent again without the options
/// the client added, and later streams go without them; a newer version streams usage.
#[tokio::test]
async fn a_server_that_refuses_stream_options_gets_streams_without_them() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let endpoint = server.url().trim_end_matches("/v1").to_owned();
    let builder = |version: &str| {
        Client::builder()
            .provider(volley::Provider::Azure)
            .azure_endpoint(endpoint.clone())
            .azure_deployment("gpt-4o-mini")
            .api_version(version)
            .api_key("azure-test-key")
    };
    let azure = |version: &str| builder(version).build().unwrap();
    // Text and usage of one stream.
    async fn read(client: &Client) -> (String, Option<u64>) {
        let mut stream = client.chat_stream(request("hello")).await.unwrap();
        let (mut text, mut usage) = (String::new(), None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            text.push_str(chunk.delta_text().unwrap_or_default());
            if let Some(u) = chunk.usage {
                usage = Some(u.completion_tokens);
            }
        }
        (text, usage)
    }

    let old = azure("2024-06-01");
    let (text, usage) = read(&old).await;
    assert!(!text.is_empty());
    assert_eq!(usage, None);
    assert_eq!(
        server.stats().status_count(400),
        1,
        "the first stream's refusal"
    );
    let (text, _) = read(&old).await;
    assert!(!text.is_empty());
    let stats = server.stats();
    assert_eq!(
        stats.status_count(400),
        1,
        "the second stream went without them"
    );
    assert_eq!(stats.requests_total, 3);

    // Options the caller set are the caller's: refused, the error is theirs.
    let mut own = request("hello");
    own.stream_options = Some(volley::openai::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let error = old.chat_stream(own).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(400), "{error}");

    let (_, usage) = read(&azure("2024-10-21")).await;
    assert_eq!(usage, Some(16));

    // One endpoint behind the balancer (hedged): still one endpoint, remembered.
    let before = server.stats().status_count(400);
    let hedged = builder("2024-06-01")
        .hedge(volley::Hedging::after(std::time::Duration::from_secs(60)))
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(!read(&hedged).await.0.is_empty());
    }
    assert_eq!(server.stats().status_count(400) - before, 1);

    // With several endpoints one's refusal says nothing of the others: each stream is
    // refused and sent again, and the client keeps asking.
    let before = server.stats().status_count(400);
    let deployment = format!("{endpoint}/openai/deployments/gpt-4o-mini");
    let two = Client::builder()
        .provider(volley::Provider::Azure)
        .api_version("2024-06-01")
        .api_key("azure-test-key")
        .endpoint(volley::Endpoint::new(deployment.clone()).name("a"))
        .endpoint(volley::Endpoint::new(deployment).name("b"))
        .build()
        .unwrap();
    for _ in 0..2 {
        let (text, usage) = read(&two).await;
        assert!(!text.is_empty());
        assert_eq!(usage, None);
    }
    assert_eq!(server.stats().status_count(400) - before, 2);
}

/// A concurrency above [`volley::MAX_CONCURRENCY`] is a `Config` error from `build`, not a
/// panic in the semaphore (whose own maximum is far smaller than `usize::MAX`); so is 0.
#[test]
fn an_impossible_concurrency_is_a_config_error() {
    for n in [0, volley::MAX_CONCURRENCY + 1, usize::MAX] {
        for builder in [
            Client::builder().concurrency(n),
            Client::builder().concurrency_auto(n),
        ] {
            let err = builder.base_url("http://127.0.0.1:9/v1").build().err();
            assert_eq!(
                err.map(|e| e.kind()),
                Some(volley::ErrorKind::Config),
                "{n}"
            );
        }
    }
    assert!(
        Client::builder()
            .concurrency(volley::MAX_CONCURRENCY)
            .base_url("http://127.0.0.1:9/v1")
            .build()
            .is_ok()
    );
    // An endpoint's own too, among several.
    let err = Client::builder()
        .endpoint(volley::Endpoint::new("http://127.0.0.1:9/v1").concurrency(usize::MAX))
        .endpoint(volley::Endpoint::new("http://127.0.0.1:10/v1"))
        .build()
        .err();
    assert_eq!(err.map(|e| e.kind()), Some(volley::ErrorKind::Config));
}

/// A 200 whose JSON is not the answer expected, a field of the wrong type holding the key the
/// server was sent and megabytes more: the decode error names the problem without the key,
/// and stays short (serde quotes the value it could not read).
#[tokio::test]
async fn a_reply_that_does_not_decode_shows_neither_the_key_nor_megabytes() {
    const KEY: &str = "sk-echoed-key-0123456789";
    let port = volley_testkit::raw::serve(move |head| {
        let auth = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let body = serde_json::json!({"choices": format!("{auth} {}", "x".repeat(1 << 20))});
        volley_testkit::raw::json_response("200 OK", &[], &body.to_string())
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .retries(0)
        .build()
        .unwrap();
    let err = client.chat(&request("hi")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
    let text = format!("{err} {} {err:?}", err.report());
    assert!(
        !text.contains(KEY),
        "the key in {}",
        &text[..text.len().min(500)]
    );
    assert!(
        text.contains("invalid type"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(text.len() < 2_000, "{} bytes", text.len());
}

/// A 200 that is no JSON at all (a proxy's login page, a server's plain text, nothing) fails
/// with what it is and says, its secrets scrubbed, not only serde's "expected value at line 1
/// column 1"; JSON after a byte order mark is read (RFC 8259 lets a parser ignore it), an
/// error object after one too.
#[tokio::test]
async fn a_reply_that_is_no_json_says_what_it_is() {
    const KEY: &str = "sk-page-echo-0123456789abcdef";
    // The first two requests get the page, the third the marked JSON, the fourth a marked
    // error object, the fifth an empty body, the sixth the page again.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let port = volley_testkit::raw::serve(move |_| {
        let (content_type, body) = match answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 | 1 | 5 => (
                "text/html; charset=utf-8",
                format!("<html><head><title>Sign in to the proxy ({KEY})</title></head><body>form</body></html>"),
            ),
            2 => (
                "application/json",
                "\u{feff}{\"id\":\"c\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"with a mark\"},\"finish_reason\":\"stop\"}]}".to_owned(),
            ),
            3 => (
                "application/json",
                "\u{feff}{\"error\":{\"message\":\"no such model\",\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}".to_owned(),
            ),
            _ => ("application/json", String::new()),
        };
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    let error = client.chat(&request("hello")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BodyDecode, "{error}");
    let text = error.to_string();
    assert!(
        text.contains(
            "no JSON object (content-type text/html; charset=utf-8): Sign in to the proxy"
        ),
        "{text}"
    );
    assert!(!text.contains(KEY), "{text}");
    let error = client.chat_stream(request("hello")).await.err().unwrap();
    let text = error.to_string();
    assert!(
        text.contains("got content type text/html; charset=utf-8: Sign in to the proxy (***)"),
        "{text}"
    );
    let reply = client.chat(&request("hello")).await.unwrap();
    assert_eq!(reply.text(), Some("with a mark"));
    let error = client.chat(&request("hello")).await.unwrap_err();
    assert_ne!(error.kind(), ErrorKind::BodyDecode, "{error}");
    assert!(error.to_string().contains("no such model"), "{error}");
    let error = client.chat(&request("hello")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the response body is empty (content-type application/json)"),
        "{error}"
    );
    // A request of the caller's own may carry secrets the client does not know of (a
    // tenant's key in a header of its own), which the page could echo: not quoted.
    let own = volley::Request::post_json("/chat/completions", &request("hello")).unwrap();
    let response = client.send(own).await.unwrap();
    let error = client
        .decode::<volley::openai::ChatCompletionResponse>(response)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.ends_with("no JSON object (content-type text/html; charset=utf-8)"),
        "{text}"
    );
}

/// What is left of a pause a 429 started is known while it holds (for a progress display):
/// none before it, about the `Retry-After` the 429 asked for after it.
#[tokio::test]
async fn a_429_s_pause_is_known_while_it_holds() {
    let port = volley_testkit::raw::serve(|_| {
        let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        volley_testkit::raw::json_response("429 Too Many Requests", &["retry-after: 30".into()], body)
    })
    .await;
    let client = raw_client(port, 0);
    assert_eq!(client.rate_limit_pause(), None);
    let err = client.chat(&request("hello")).await.expect_err("a 429");
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    let left = client.rate_limit_pause().expect("a pause holds");
    assert!(
        left > Duration::from_secs(20) && left <= Duration::from_secs(30),
        "{left:?}"
    );
}
