//! Plain, streaming, compressed and HTTP/2 requests through the transport to volley-mock over
//! real loopback sockets.

mod common;

use common::*;
use futures_util::StreamExt;
use http::header::ACCEPT_ENCODING;
use http::{HeaderValue, StatusCode};
use volley_core::{Body, Request};
use volley_mock::MockConfig;
use volley_transport::Transport;

#[tokio::test]
async fn plain_chat_completion() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    let response = transport.send(chat()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.is_stream());
    let timings = *response.timings();
    assert!(timings.first_byte.is_some() && timings.done.is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(server.stats().requests_total, 1);
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    for _ in 0..5 {
        transport.send(chat()).await.unwrap();
    }
    let stats = transport.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.opened, 1, "{stats:?}");
    assert_eq!(stats.reused(), 4);
    assert_eq!(stats.open(), 1);
}

#[tokio::test]
async fn models_and_embeddings() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    let models: serde_json::Value = transport
        .send(Request::get("/models").unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let body = r#"{"model":"text-embedding-3-small","input":["a","b"]}"#;
    let embeddings: serde_json::Value = transport
        .send(Request::post("/embeddings", body).unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn streaming_arrives_as_events() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    let response = transport.send(chat_stream()).await.unwrap();
    assert!(response.is_stream());
    let mut events = response.events();
    let mut chunks = 0;
    let mut saw_usage = false;
    let mut saw_done = false;
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if event.is_done() {
            saw_done = true;
            continue;
        }
        let chunk: serde_json::Value = serde_json::from_str(event.data()).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if chunk["usage"].is_object() {
            saw_usage = true;
        } else {
            chunks += 1;
        }
    }
    assert!(saw_done && saw_usage);
    // One chunk per output token: 16 by default.
    assert_eq!(
        MockConfig::default().output_tokens,
        volley_mock::OutputTokens::Fixed(16)
    );
    assert_eq!(chunks, 16);
}

#[tokio::test]
async fn gzip_responses_are_decoded() {
    let server = mock(MockConfig {
        gzip: true,
        ..MockConfig::default()
    })
    .await;

    // Without decoding, asking for gzip by hand shows the mock really compresses...
    let raw = Transport::builder()
        .base_url(server.url())
        .gzip(false)
        .brotli(false)
        .build()
        .unwrap();
    let compressed = raw
        .send(chat().with_header(ACCEPT_ENCODING, HeaderValue::from_static("gzip")))
        .await
        .unwrap();
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    let Body::Full(bytes) = compressed.body() else {
        panic!("a JSON reply is read whole")
    };
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");

    // ...and the default transport asks for it and decodes it.
    let transport = transport(&server);
    let body: serde_json::Value = transport.send(chat()).await.unwrap().json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

/// Content codings are case-insensitive and `x-gzip` is gzip (RFC 9110, 8.4.1): a server
/// that spells them so (none of volley-mock's answers does) is decoded all the same, and a
/// coding the transport cannot decode is handed on as sent.
#[tokio::test]
async fn content_codings_are_read_in_any_case_and_x_gzip_is_gzip() {
    use std::io::Write;
    const JSON: &str = r#"{"object":"chat.completion"}"#;
    // The last one is no coding the transport decodes.
    const CODINGS: [&str; 6] = ["gzip", "GZIP", "Gzip", "x-gzip", "X-GZIP", "x-unknown"];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(JSON.as_bytes()).unwrap();
    let gzipped = encoder.finish().unwrap();
    // The request's path names the coding by its index: /v1/<index>/chat/completions (the
    // raw server sees the head in lower case).
    let port = volley_testkit::raw::serve(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or_default();
        let index: usize = path.split('/').nth(2).unwrap_or_default().parse().unwrap();
        let coding = CODINGS[index];
        let body: &[u8] = if coding == "x-unknown" {
            b"opaque"
        } else {
            &gzipped
        };
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: \
             {coding}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    })
    .await;
    for (index, coding) in CODINGS.iter().enumerate() {
        let transport = Transport::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1/{index}"))
            .build()
            .unwrap();
        let response = transport.send(chat()).await.unwrap();
        let Body::Full(bytes) = response.body() else {
            panic!("a JSON reply is read whole")
        };
        if *coding == "x-unknown" {
            // A coding it does not know is no reason to fail: body and header stay as sent.
            assert_eq!(response.headers()["content-encoding"], "x-unknown");
            assert_eq!(&bytes[..], b"opaque");
        } else {
            assert!(
                !response.headers().contains_key("content-encoding"),
                "{coding}: a decoded body keeps no coding: {:?}",
                response.headers()
            );
            assert_eq!(&bytes[..], JSON.as_bytes(), "{coding}");
        }
    }
}

#[tokio::test]
async fn h2c_multiplexes_over_one_connection() {
    let server = mock(MockConfig {
        latency: "500ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let transport = Transport::builder()
        .base_url(server.url())
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    // Warm up so the one connection exists before the burst.
    transport.send(chat()).await.unwrap();
    let results = futures_util::future::join_all((0..50).map(|_| transport.send(chat()))).await;
    assert!(results.iter().all(Result::is_ok));
    let stream = transport.send(chat_stream()).await.unwrap();
    let text = stream.bytes().await.unwrap();
    assert!(text.ends_with(b"data: [DONE]\n\n"));
    let stats = transport.stats();
    assert_eq!(stats.opened, 1, "HTTP/2 multiplexes: {stats:?}");
    assert_eq!(stats.requests, 52);
    // Multiplexed at once: at least half the burst in flight together (one-sided).
    let peak = server.stats().peak_in_flight;
    assert!((25..=50).contains(&peak), "peak {peak}");
}

#[tokio::test]
async fn base_url_prefix_is_kept() {
    let server = mock(MockConfig::default()).await;
    // The mock also serves paths without /v1, so a base URL without it must reach /models.
    let base = server.url();
    let root = base.trim_end_matches("/v1");
    let transport = Transport::builder().base_url(root).build().unwrap();
    let response = transport
        .send(Request::get("/v1/models").unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = mock(MockConfig {
        output_tokens: volley_mock::OutputTokens::Fixed(2_000),
        ..MockConfig::default()
    })
    .await;
    let transport = Transport::builder()
        .base_url(server.url())
        .max_body_bytes(4_096)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), volley_core::ErrorKind::BodyDecode);
    assert!(err.to_string().contains("4096 bytes"), "{err}");
}

/// Every request with a body carries its own length, once, whether its headers come from the
/// transport's prepared set (lengths alternating, so the kept length is both reused and
/// replaced) or are added to headers of its own; a request's own headers are kept.
#[tokio::test]
async fn each_request_carries_its_own_content_length() {
    let (origin, heads) = recorder().await;
    let transport = Transport::builder()
        .base_url(format!("{origin}/v1"))
        .api_key("sk-length-test")
        .build()
        .unwrap();
    let body = |n: usize| format!(r#"{{"model":"m","input":"{}"}}"#, "x".repeat(n));
    let lengths = [3, 3, 250, 3, 0, 250];
    for n in lengths {
        transport
            .send(Request::post("/embeddings", body(n)).unwrap())
            .await
            .unwrap();
    }
    let own = Request::post("/embeddings", body(7)).unwrap().with_header(
        http::HeaderName::from_static("x-tenant"),
        HeaderValue::from_static("t1"),
    );
    transport.send(own).await.unwrap();
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), lengths.len() + 1);
    for (head, n) in heads.iter().zip(lengths.iter().chain([&7])) {
        let expected = body(*n).len().to_string();
        let values: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("content-length: "))
            .collect();
        assert_eq!(values, [expected.as_str()], "{head}");
        assert_eq!(header(head, "content-type"), Some("application/json"));
        assert_eq!(header(head, "authorization"), Some("bearer sk-length-test"));
    }
    assert_eq!(header(&heads[lengths.len()], "x-tenant"), Some("t1"));
}

/// Every `accept-encoding` value in a recorded head, in order.
fn accepted(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.strip_prefix("accept-encoding: "))
        .map(str::to_owned)
        .collect()
}

/// Every request asks for the encodings the transport decodes, once, whether its headers
/// come from the transport's prepared set or are added to headers of its own, for each
/// setting of gzip and brotli; an `Accept-Encoding` of the request's own, or among the
/// default headers, is sent as it is and alone.
#[tokio::test]
async fn each_request_asks_for_the_encodings_it_decodes_once() {
    let (origin, heads) = recorder().await;
    let own = || {
        chat().with_header(
            http::HeaderName::from_static("x-tenant"),
            HeaderValue::from_static("t1"),
        )
    };
    for (gzip, brotli, expected) in [
        (true, true, Some("gzip,br")),
        (true, false, Some("gzip")),
        (false, true, Some("br")),
        (false, false, None),
    ] {
        let transport = Transport::builder()
            .base_url(format!("{origin}/v1"))
            .gzip(gzip)
            .brotli(brotli)
            .build()
            .unwrap();
        // Twice on the prepared headers: the first request must not have changed them.
        for request in [chat(), chat(), own()] {
            transport.send(request).await.unwrap();
            let head = heads.lock().unwrap().last().cloned().unwrap();
            assert_eq!(
                accepted(&head),
                expected.into_iter().collect::<Vec<_>>(),
                "gzip {gzip}, brotli {brotli}: {head}"
            );
        }
    }

    // The caller's choice, as a default header and as a request's own, wins and is alone.
    let transport = Transport::builder()
        .base_url(format!("{origin}/v1"))
        .default_header(ACCEPT_ENCODING, HeaderValue::from_static("identity"))
        .build()
        .unwrap();
    for request in [chat(), own()] {
        transport.send(request).await.unwrap();
        let head = heads.lock().unwrap().last().cloned().unwrap();
        assert_eq!(accepted(&head), ["identity"], "{head}");
    }
    let transport = Transport::builder()
        .base_url(format!("{origin}/v1"))
        .build()
        .unwrap();
    let request = chat().with_header(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    transport.send(request).await.unwrap();
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert_eq!(accepted(&head), ["gzip"], "{head}");
}

#[tokio::test]
async fn each_http2_request_asks_for_the_encodings_it_decodes_once() {
    // The same prepared headers go out over HTTP/2, as header fields of their own.
    let (origin, heads) = h2_recorder().await;
    for (gzip, brotli, expected) in [(true, true, Some("gzip,br")), (false, false, None)] {
        let transport = Transport::builder()
            .base_url(format!("{origin}/v1"))
            .http2_prior_knowledge(true)
            .gzip(gzip)
            .brotli(brotli)
            .build()
            .unwrap();
        // Only HTTP/2 is served there: an answer is one that went over HTTP/2.
        for _ in 0..2 {
            transport.send(chat()).await.unwrap();
            let head = heads.lock().unwrap().last().cloned().unwrap();
            assert_eq!(
                accepted(&head),
                expected.into_iter().collect::<Vec<_>>(),
                "gzip {gzip}, brotli {brotli}: {head}"
            );
            assert_eq!(
                header(&head, "content-type"),
                Some("application/json"),
                "{head}"
            );
        }
        // A request's own choice wins and is alone.
        let request = chat().with_header(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        transport.send(request).await.unwrap();
        let head = heads.lock().unwrap().last().cloned().unwrap();
        assert_eq!(accepted(&head), ["identity"], "{head}");
    }
}
