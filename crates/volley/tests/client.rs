//! The facade against volley-mock over real loopback sockets.

use futures_util::StreamExt;
use volley::openai::{ChatCompletionRequest, ChatMessage, EmbeddingsRequest};
use volley::{Client, ErrorKind};
use volley_mock::{MockConfig, MockServer};

fn request(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
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
    let (_server, client) = setup(MockConfig {
        require_api_key: Some("sk-right".to_owned()),
        ..MockConfig::default()
    })
    .await;
    let err = client.chat(&request("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status().unwrap().as_u16(), 401);
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
