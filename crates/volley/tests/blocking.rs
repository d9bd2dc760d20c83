//! `volley::blocking::Client` from plain threads, against volley-mock over real loopback
//! sockets. The tests have no runtime of their own: the mock runs on a runtime kept in the
//! test, which the calling thread never enters while the blocking client works.

use http::HeaderValue;
use tokio::runtime::Runtime;
use volley::openai::{ChatCompletionRequest, ChatMessage, EmbeddingsRequest};
use volley::{Body, ErrorKind, Request, blocking};
use volley_mock::{LATENCY_HEADER, MockConfig, MockServer};

fn chat(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

/// The mock on a runtime of its own; keep the runtime alive as long as the server.
fn mock(config: MockConfig) -> (Runtime, MockServer) {
    let runtime = Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(config)).unwrap();
    (runtime, server)
}

fn client(server: &MockServer) -> blocking::Client {
    blocking::Client::builder()
        .base_url(server.url())
        .build()
        .unwrap()
}

#[test]
fn fan_out_runs_blocking_calls_in_parallel() {
    let (_runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    let requests = ["800ms", "700ms"].map(|latency| {
        Request::post_json("/chat/completions", &chat(latency))
            .unwrap()
            .with_header(
                LATENCY_HEADER.parse().unwrap(),
                HeaderValue::from_static(latency),
            )
    });
    let results = client.fan_out(requests, 2).unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result.unwrap().status(), 200);
    }
    let stats = server.stats();
    assert_eq!(stats.requests_total, 2);
    assert_eq!(
        stats.peak_in_flight, 2,
        "both requests were in flight at once"
    );
}

#[test]
fn fan_out_chat_returns_replies_in_input_order() {
    let (_runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    let requests: Vec<_> = (0..4).map(|i| chat(&"word ".repeat(i * 40 + 1))).collect();
    let replies = client.fan_out_chat(&requests, 4).unwrap();
    let prompt_tokens: Vec<_> = replies
        .into_iter()
        .map(|r| r.unwrap().usage.unwrap().prompt_tokens)
        .collect();
    assert!(
        prompt_tokens.windows(2).all(|w| w[0] < w[1]),
        "input order: {prompt_tokens:?}"
    );
}

#[test]
fn chat_and_embeddings_work_without_a_runtime() {
    let (_runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    let reply = client.chat(&chat("hello")).unwrap();
    assert!(!reply.text().unwrap().is_empty());
    assert_eq!(reply.usage.unwrap().completion_tokens, 16);

    let embeddings = client
        .embeddings(&EmbeddingsRequest::new(
            "text-embedding-3-small",
            vec!["a".to_owned(), "b".to_owned()],
        ))
        .unwrap();
    assert_eq!(embeddings.data.len(), 2);
}

#[test]
fn send_returns_complete_bodies_even_for_streams() {
    let (_runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    let mut streamed = chat("hello");
    streamed.stream = Some(true);
    let requests = [
        Request::post_json("/chat/completions", &streamed).unwrap(),
        Request::post_json("/chat/completions", &chat("hello")).unwrap(),
    ];
    let [first, second] = <[_; 2]>::try_from(client.fan_out(requests, 2).unwrap()).unwrap();
    let single = client
        .send(Request::post_json("/chat/completions", &streamed).unwrap())
        .unwrap();
    for response in [first.unwrap(), single] {
        let Body::Full(bytes) = response.body() else {
            panic!("a blocking response is complete");
        };
        assert!(bytes.ends_with(b"data: [DONE]\n\n"), "{bytes:?}");
    }
    let Body::Full(bytes) = second.unwrap().into_parts().1 else {
        panic!("a blocking response is complete");
    };
    assert!(bytes.starts_with(b"{"));
    assert_eq!(server.stats().streams_completed, 2);
}

#[test]
fn chat_stream_iterates_every_chunk() {
    let (_runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    let mut text = String::new();
    let mut usage = None;
    for chunk in client.chat_stream(chat("hello")).unwrap() {
        let chunk = chunk.unwrap();
        if let Some(t) = chunk.delta_text() {
            text.push_str(t);
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    assert_eq!(text, client.chat(&chat("hello")).unwrap().text().unwrap());
    assert_eq!(usage.unwrap().completion_tokens, 16);
    assert_eq!(server.stats().streams_completed, 1);
}

/// Anthropic's Messages API from a plain thread: the whole answer, and its stream as an
/// iterator of events that carries the same text; the head's `request-id` is kept; inside a
/// runtime both are refused, and the refused stream lets go of its slot at once.
#[test]
fn messages_and_message_streams_work_without_a_runtime() {
    use volley::anthropic::{InputMessage, MessagesRequest, StreamEvent};
    let (runtime, server) = mock(MockConfig::default());
    let client = blocking::Client::builder()
        .provider(volley::Provider::Anthropic)
        .base_url(server.url())
        .api_key("sk-ant-test-0123456789abcdef")
        .concurrency(1)
        .deadline(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let request = MessagesRequest::new("claude-test", 64, vec![InputMessage::user("hello")]);
    let message = client.messages(&request).unwrap();
    assert_eq!(message.usage.output_tokens, 16);
    let text = client.messages_stream(&request).unwrap().text().unwrap();
    assert_eq!(text, message.text());

    let stream = client.messages_stream(&request).unwrap();
    assert!(
        stream
            .provider_request_id()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(format!("{stream:?}").starts_with("blocking::MessageStream"));
    let names: Vec<String> = stream
        .map(|event| event.unwrap())
        .map(|event: StreamEvent| event.type_name().to_owned())
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));

    let mut stream = client.messages_stream(&request).unwrap();
    runtime.block_on(async {
        let error = client.messages(&request).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        let error = stream.next().unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(stream.next().is_none(), "the stream ends after the error");
    });
    // The one slot is free although the refused stream is still held.
    assert_eq!(client.messages(&request).unwrap().text(), message.text());
    drop(stream);
}

#[test]
fn calls_from_threads_share_one_client() {
    let (_runtime, server) = mock(MockConfig {
        latency: "2s".parse().unwrap(),
        ..MockConfig::default()
    });
    let client = client(&server);
    std::thread::scope(|scope| {
        for i in 0..4 {
            let client = client.clone();
            scope.spawn(move || client.chat(&chat(&format!("thread {i}"))).unwrap());
        }
    });
    let stats = server.stats();
    assert_eq!(stats.requests_total, 4);
    assert_eq!(
        stats.peak_in_flight, 4,
        "calls from threads run in parallel"
    );
}

#[test]
fn calls_inside_a_runtime_return_a_config_error() {
    let (runtime, server) = mock(MockConfig::default());
    // One slot: the refused stream, still held below, must have let go of it.
    let client = blocking::Client::builder()
        .base_url(server.url())
        .concurrency(1)
        .deadline(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let mut stream = client.chat_stream(chat("hello")).unwrap();
    runtime.block_on(async {
        let error = client.chat(&chat("hello")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("async"), "{error}");
        let error = client.fan_out(Vec::new(), 1).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        let error = stream.next().unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(stream.next().is_none(), "the stream ends after the error");
    });
    assert_eq!(server.stats().requests_total, 1, "only the stream was sent");
    // The same client still works outside the runtime, with the stream not yet dropped.
    client.chat(&chat("hello")).unwrap();
    drop(stream);
}

#[test]
fn dropping_the_last_clone_inside_a_runtime_neither_blocks_nor_panics() {
    let (runtime, server) = mock(MockConfig::default());
    let client = client(&server);
    client.chat(&chat("hello")).unwrap();
    let clone = client.clone();
    drop(client);
    // On a thread of its own, so a drop that blocks fails the test instead of hanging it.
    let (done, dropped) = std::sync::mpsc::channel();
    let handle = runtime.handle().clone();
    std::thread::spawn(move || {
        handle.block_on(async move { drop(clone) });
        let _ = done.send(());
    });
    match dropped.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("dropping the last clone inside a runtime blocked for 30 s")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("dropping the last clone inside a runtime panicked")
        }
    }
}

#[test]
fn build_reports_zero_worker_threads() {
    let error = blocking::Client::builder()
        .worker_threads(0)
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
}

#[test]
fn the_client_is_clone_send_and_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<blocking::Client>();
}
