//! The OpenAI endpoints over real loopback sockets: shapes, usage numbers, errors, auth, gzip,
//! HTTP/2.

mod common;

use std::io::Read as _;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use volley_mock::{MockConfig, OutputTokens};

#[tokio::test]
async fn chat_completion_has_openai_shape_and_usage() {
    let server = server(MockConfig::default()).await;
    let reply = post(&client(), &chat_url(&server), &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 16);
    assert!(
        content.starts_with("token0 token1 ") && content.ends_with(" token15"),
        "{content}"
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": CHAT_BODY_PROMPT_TOKENS,
            "completion_tokens": 16,
            "total_tokens": CHAT_BODY_PROMPT_TOKENS + 16,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    );
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| id.starts_with("req_mock")),
        "an x-request-id, as OpenAI sends"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn max_tokens_caps_the_output_with_finish_reason_length() {
    let server = server(MockConfig {
        output_tokens: OutputTokens::Fixed(10),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let mut body = chat_body(false);
    body["max_tokens"] = json!(3);
    let v = post(&client, &url, &body, &[]).await.unwrap().json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "token0 token1 token2"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // `max_completion_tokens` wins over `max_tokens`; a cap above the output changes nothing.
    body["max_completion_tokens"] = json!(50);
    let v = post(&client, &url, &body, &[]).await.unwrap().json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 10);
}

#[tokio::test]
async fn chat_stream_sends_one_chunk_per_token_then_usage_then_done() {
    let server = server(MockConfig {
        output_tokens: OutputTokens::Fixed(5),
        ..MockConfig::default()
    })
    .await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&client(), &chat_url(&server), &body, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = sse_data(reply.text());
    assert_eq!(events.len(), 5 + 2, "{events:?}");
    assert_eq!(events[6], "[DONE]");
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut content = String::new();
    for (i, chunk) in chunks[..5].iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["model"], "gpt-4o-mini");
        let choice = &chunk["choices"][0];
        assert_eq!(choice["delta"].get("role").is_some(), i == 0, "{chunk}");
        let finish = if i == 4 { json!("stop") } else { Value::Null };
        assert_eq!(choice["finish_reason"], finish);
        assert!(chunk["usage"].is_null());
        content.push_str(choice["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(content, "token0 token1 token2 token3 token4");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = &chunks[5];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens"], CHAT_BODY_PROMPT_TOKENS);

    let stats = server.stats();
    assert_eq!((stats.streams_completed, stats.chunks_sent), (1, 7));
}

#[tokio::test]
async fn chat_stream_without_usage_and_with_a_cap() {
    let server = server(MockConfig::default()).await;
    let mut body = chat_body(true);
    body["max_tokens"] = json!(2);
    let reply = post(&client(), &chat_url(&server), &body, &[])
        .await
        .unwrap();
    let events = sse_data(reply.text());
    assert_eq!(events.len(), 3, "{events:?}");
    let last: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(last.get("usage").is_none());
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn embeddings_as_floats_and_base64() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let url = format!("{}/embeddings", server.url());
    let body =
        json!({"model": "text-embedding-3-small", "input": ["hello world", "bye", "hello world"]});
    let v = post(&client, &url, &body, &[]).await.unwrap().json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 8);
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    // 11 + 3 + 11 bytes, each input rounded up separately: 3 + 1 + 3.
    assert_eq!(v["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));

    let body = json!({
        "model": "text-embedding-3-small",
        "input": ["hello world"],
        "encoding_format": "base64",
    });
    let v = post(&client, &url, &body, &[]).await.unwrap().json();
    let bytes = base64_decode(v["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vectors[0]);

    let body = json!({"model": "m", "input": [[1, 2, 3]], "dimensions": 3});
    let v = post(&client, &url, &body, &[]).await.unwrap().json();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
}

#[tokio::test]
async fn models_and_paths_without_v1() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let v = get(&client, &format!("{}/models", server.url()))
        .await
        .unwrap()
        .json();
    assert_eq!(v["object"], "list");
    assert!(v["data"].as_array().unwrap().len() >= 2);
    assert_eq!(v["data"][0]["object"], "model");

    let bare = format!("http://{}/chat/completions", server.addr());
    let reply = post(&client, &bare, &chat_body(false), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["object"], "chat.completion");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let server = server(MockConfig::default()).await;
    let client = client();
    let url = chat_url(&server);

    let invalid = send_raw_body(&client, &url, b"{\"model\": ").await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let v = invalid.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["code"].is_null());
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));

    let no_model = post(
        &client,
        &url,
        &json!({"messages": [{"role": "user", "content": "x"}]}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_model.json()["error"]["param"], "model");

    for n in [0, 129] {
        let too_many =
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": n});
        let reply = post(&client, &url, &too_many, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "n = {n}");
        assert_eq!(reply.json()["error"]["param"], "n");
    }
    // A token budget of 0 is refused as OpenAI refuses it.
    for param in ["max_tokens", "max_completion_tokens"] {
        let zero = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], param: 0});
        let reply = post(&client, &url, &zero, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{param}");
        let error = &reply.json()["error"];
        assert_eq!(error["param"], param);
        assert_eq!(error["code"], "integer_below_min_value");
    }
    let no_messages = post(&client, &url, &json!({"model": "m"}), &[])
        .await
        .unwrap();
    assert_eq!(no_messages.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_messages.json()["error"]["param"], "messages");

    let unknown = post(
        &client,
        &format!("{}/completions/legacy", server.url()),
        &json!({}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["code"], "unknown_url");

    let wrong_method = send(&client, Method::GET, &url, None, &[]).await.unwrap();
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert_eq!(
        wrong_method.json()["error"]["type"],
        "invalid_request_error"
    );

    let bad_header = post(&client, &url, &chat_body(false), &[("x-mock-fault", "418")])
        .await
        .unwrap();
    assert_eq!(bad_header.status, StatusCode::BAD_REQUEST);
    let bad_latency = post(
        &client,
        &url,
        &chat_body(false),
        &[("x-mock-latency", "soon")],
    )
    .await
    .unwrap();
    assert_eq!(bad_latency.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_latency.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-mock-latency")
    );
    // A latency too long to be a deadline: a 400 too, never a dropped connection.
    let endless = post(
        &client,
        &url,
        &chat_body(true),
        &[("x-mock-latency", "10000000000000000000")],
    )
    .await
    .unwrap();
    assert_eq!(endless.status, StatusCode::BAD_REQUEST);

    let stats = server.stats();
    assert_eq!(stats.requests_total, 12);
    assert_eq!(stats.status_count(400), 10);
    assert_eq!(stats.status_count(404), 1);
    assert_eq!(stats.status_count(405), 1);
}

#[tokio::test]
async fn required_api_key_is_checked_and_never_echoed() {
    let key = "sk-mock-secret-0123456789";
    let server = server(MockConfig {
        require_api_key: Some(key.into()),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&server);
    let good = format!("Bearer {key}");
    // A wrong key that does not contain the right one: the 401 quotes the key presented (as
    // OpenAI's does), never the one configured.
    let wrong = "Bearer sk-mock-wrong-42";
    for headers in [vec![], vec![("authorization", wrong)]] {
        let reply = post(&client, &url, &chat_body(false), &headers)
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        // No key at all is told apart from a wrong one, as OpenAI tells it.
        if headers.is_empty() {
            assert!(reply.json()["error"]["code"].is_null(), "{}", reply.text());
            assert!(reply.text().contains("didn't provide an API key"));
        } else {
            assert_eq!(reply.json()["error"]["code"], "invalid_api_key");
        }
        assert!(!reply.text().contains(key));
        assert_eq!(
            reply.text().contains("sk-mock-wrong-42"),
            !headers.is_empty(),
            "{}",
            reply.text()
        );
        assert!(
            reply
                .headers
                .values()
                .all(|v| !v.to_str().unwrap().contains(key))
        );
    }
    let reply = post(
        &client,
        &url,
        &chat_body(false),
        &[("authorization", &good)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!format!("{:?}", server.config()).contains(key));
    assert_eq!(server.stats().status_count(401), 2);
}

#[tokio::test]
async fn any_authorization_is_accepted_without_a_required_key() {
    let server = server(MockConfig::default()).await;
    let reply = post(
        &client(),
        &chat_url(&server),
        &chat_body(false),
        &[("authorization", "Bearer whatever")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn gzip_only_when_configured_and_accepted() {
    let gzip_server = server(MockConfig {
        gzip: true,
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = chat_url(&gzip_server);
    let reply = post(
        &client,
        &url,
        &chat_body(false),
        &[("accept-encoding", "gzip, br")],
    )
    .await
    .unwrap();
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&reply.body[..])
        .read_to_end(&mut json)
        .unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["object"], "chat.completion");

    // Not asked for: plain. Streams are never compressed.
    let plain = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.json()["object"], "chat.completion");
    let stream = post(
        &client,
        &url,
        &chat_body(true),
        &[("accept-encoding", "gzip")],
    )
    .await
    .unwrap();
    assert_eq!(stream.header("content-encoding"), None);
    assert_eq!(sse_data(stream.text()).last(), Some(&"[DONE]"));

    // Not configured: plain even when accepted.
    let off = server(MockConfig::default()).await;
    let reply = post(
        &client,
        &chat_url(&off),
        &chat_body(false),
        &[("accept-encoding", "gzip")],
    )
    .await
    .unwrap();
    assert_eq!(reply.header("content-encoding"), None);
    reply.json();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_carries_1024_concurrent_requests_on_one_connection() {
    let server = server(MockConfig {
        // Long enough that a loaded machine gets most of the 1 024 in before the first answer.
        latency: volley_mock::Latency::Fixed(std::time::Duration::from_secs(2)),
        ..MockConfig::default()
    })
    .await;
    let client = h2_client();
    let url = chat_url(&server);
    // One request first, so the pool has its connection before the rush (a cold legacy pool
    // may race a second connection).
    let warm = post(&client, &url, &chat_body(false), &[("x-mock-latency", "0")])
        .await
        .unwrap();
    assert_eq!(warm.status, StatusCode::OK);
    let requests = (0..1024).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { post(&client, &url, &chat_body(false), &[]).await })
    });
    let replies = join_all(requests).await;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Streams work over h2 as well.
    let stream = post(&client, &url, &chat_body(true), &[("x-mock-latency", "0")])
        .await
        .unwrap();
    assert_eq!(sse_data(stream.text()).len(), 17);

    let stats = server.stats();
    assert_eq!(stats.requests_total, 1026);
    assert_eq!(stats.status_count(200), 1026);
    assert_eq!(stats.connections_total, 1);
    // One-sided: at most the 1 024 sent at once, and most of them.
    assert!(
        (512..=1024).contains(&stats.peak_in_flight),
        "peak {}",
        stats.peak_in_flight
    );
    assert_eq!(stats.in_flight, 0);
}

async fn send_raw_body(client: &HttpClient, url: &str, body: &'static [u8]) -> Reply {
    use http_body_util::{BodyExt as _, Full};
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for quad in text.trim_end_matches('=').as_bytes().chunks(4) {
        let n = quad
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | u32::from(value(c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..quad.len()]);
    }
    out
}

/// Every rejection of a Messages request is in Anthropic's dialect, with a `request-id`, even
/// one made before the body is read: no key (401 `authentication_error`), a path under
/// `/v1/messages` the mock does not serve (404), the wrong method (405), a bad mock header
/// (400), and over capacity (529 `overloaded_error`, as Anthropic answers overload).
#[tokio::test]
async fn messages_rejections_are_in_anthropics_dialect() {
    let server = server(MockConfig {
        require_api_key: Some("sk-ant-right".to_owned()),
        capacity: volley_mock::Capacity {
            max_in_flight: Some(1),
            knee: None,
        },
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let messages = format!("{}/messages", server.url());
    let body = json!({"model": "claude", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]});
    let anthropic = |reply: &Reply, status: u16, kind: &str| {
        assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
        let error = reply.json();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
        assert!(
            reply
                .header("request-id")
                .is_some_and(|id| id.starts_with("req_")),
            "{:?}",
            reply.headers
        );
    };
    let version = ("anthropic-version", "2023-06-01");
    let reply = post(&client, &messages, &body, &[version]).await.unwrap();
    anthropic(&reply, 401, "authentication_error");
    let key = ("x-api-key", "sk-ant-right");
    let tokens = format!("{messages}/count_tokens");
    let reply = post(&client, &tokens, &body, &[key, version])
        .await
        .unwrap();
    anthropic(&reply, 404, "not_found_error");
    let reply = send(&client, Method::GET, &messages, None, &[key, version])
        .await
        .unwrap();
    anthropic(&reply, 405, "invalid_request_error");
    let bad = ("x-mock-fault", "418");
    let reply = post(&client, &messages, &body, &[key, version, bad])
        .await
        .unwrap();
    anthropic(&reply, 400, "invalid_request_error");
    // `max_tokens` of 0 is refused, as Anthropic refuses it.
    let zero = json!({"model": "claude", "max_tokens": 0,
        "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&client, &messages, &zero, &[key, version])
        .await
        .unwrap();
    anthropic(&reply, 400, "invalid_request_error");

    // One request held in flight; the next is over capacity.
    let held = {
        let (client, messages, body) = (client.clone(), messages.clone(), body.clone());
        tokio::spawn(async move {
            let slow = ("x-mock-latency", "500ms");
            post(&client, &messages, &body, &[key, version, slow]).await
        })
    };
    for _ in 0..500 {
        if server.stats().in_flight == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(server.stats().in_flight, 1);
    let reply = post(&client, &messages, &body, &[key, version])
        .await
        .unwrap();
    anthropic(&reply, 529, "overloaded_error");
    assert_eq!(held.await.unwrap().unwrap().status, StatusCode::OK);

    // The OpenAI routes keep OpenAI's shape.
    let reply = post(
        &client,
        &format!("{}/chat/completions", server.url()),
        &chat_body(false),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

/// A request rejected before its body is needed (here a wrong key) is answered once its body
/// has been read: a client still sending a large body gets the 401, not a reset connection.
#[tokio::test]
async fn a_rejected_request_with_a_large_body_gets_its_answer() {
    let server = server(MockConfig {
        require_api_key: Some("sk-right".to_owned()),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = format!("{}/chat/completions", server.url());
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(8 << 20)}]});
    for _ in 0..3 {
        let reply = post(&client, &url, &big, &[("authorization", "Bearer sk-wrong")])
            .await
            .expect("an answer, not a reset");
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        server.stats().connections_total,
        1,
        "the connection was kept"
    );
}

/// The other endpoints a Batch file may name answer in OpenAI's shape: legacy completions,
/// the Responses API (cut by `max_output_tokens` as it reports it), moderations (one result
/// per input), and a model by id.
#[tokio::test]
async fn completions_responses_moderations_and_a_model_by_id() {
    let server = server(MockConfig {
        output_tokens: OutputTokens::Fixed(10),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let url = |path: &str| format!("{}{path}", server.url());

    let reply = post(
        &client,
        &url("/completions"),
        &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 4}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["text"].as_str().unwrap().split(' ').count(),
        4
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);
    // A prompt array is a batch: `n` choices for each prompt, indexed in order, as OpenAI
    // answers it; a token array is one prompt.
    for (prompt, choices) in [
        (json!(["a", "b"]), 6),
        (json!([[1, 2], [3]]), 6),
        (json!([1, 2, 3]), 3),
        (json!("one"), 3),
    ] {
        let body = json!({"model": "m", "prompt": prompt, "n": 3, "max_tokens": 2});
        let v = post(&client, &url("/completions"), &body, &[])
            .await
            .unwrap()
            .json();
        let got = v["choices"].as_array().unwrap();
        assert_eq!(got.len(), choices, "{prompt}");
        for (i, choice) in got.iter().enumerate() {
            assert_eq!(choice["index"], i, "{prompt}");
        }
        assert_eq!(v["usage"]["completion_tokens"], 2 * choices, "{prompt}");
    }

    let reply = post(
        &client,
        &url("/responses"),
        &json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(
        (&v["object"], &v["status"]),
        (&json!("response"), &json!("completed"))
    );
    let text = &v["output"][0]["content"][0];
    assert_eq!(text["type"], "output_text");
    assert_eq!(text["text"].as_str().unwrap().split(' ').count(), 10);
    assert_eq!(v["usage"]["output_tokens"], 10);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
    let cut = post(
        &client,
        &url("/responses"),
        &json!({"model": "m", "input": "hi", "max_output_tokens": 3}),
        &[],
    )
    .await
    .unwrap()
    .json();
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
    let streamed = post(
        &client,
        &url("/responses"),
        &json!({"model": "m", "input": "hi", "stream": true}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(streamed.status, StatusCode::BAD_REQUEST);
    assert_eq!(streamed.json()["error"]["param"], "stream");

    let v = post(
        &client,
        &url("/moderations"),
        &json!({"input": ["one", "two"]}),
        &[],
    )
    .await
    .unwrap()
    .json();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][1]["flagged"], false);
    assert_eq!(v["results"][0]["categories"]["violence"], false);
    // Which input types each category was checked on (async-openai requires the field).
    assert_eq!(
        v["results"][0]["category_applied_input_types"]["violence"],
        json!(["text"])
    );

    let model = get(&client, &url("/models/gpt-4o")).await.unwrap();
    assert_eq!(model.status, StatusCode::OK);
    assert_eq!(model.json()["object"], "model");
    let missing = get(&client, &url("/models/no-such-model")).await.unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
    // An Anthropic client (it sends `anthropic-version`) gets Anthropic's shapes.
    let version = [("anthropic-version", "2023-06-01")];
    let list = send(&client, Method::GET, &url("/models"), None, &version)
        .await
        .unwrap()
        .json();
    let first = &list["data"][0];
    assert_eq!(first["type"], "model");
    assert!(first["display_name"].is_string() && first["created_at"].is_string());
    assert_eq!(list["has_more"], false);
    let id = first["id"].as_str().unwrap();
    let model = send(
        &client,
        Method::GET,
        &url(&format!("/models/{id}")),
        None,
        &version,
    )
    .await
    .unwrap();
    assert_eq!(model.status, StatusCode::OK);
    assert_eq!(model.json()["id"], id);
    let missing = send(&client, Method::GET, &url("/models/gpt-4o"), None, &version)
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
    server.shutdown().await;
}

/// `stream_options` without `stream: true` is refused as OpenAI refuses it.
#[tokio::test]
async fn stream_options_without_a_stream_is_a_400() {
    let server = server(MockConfig::default()).await;
    let mut body = chat_body(false);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&client(), &chat_url(&server), &body, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["param"], "stream_options");
    server.shutdown().await;
}

/// An Anthropic stream as the API sends it: `message_start` with the cache fields of its
/// usage, then `content_block_start`, then a `ping`, before the deltas.
#[tokio::test]
async fn an_anthropic_stream_starts_as_anthropics_does() {
    let server = server(MockConfig::default()).await;
    let reply = post(
        &client(),
        &format!("{}/messages", server.url()),
        &json!({"model": "claude-test", "max_tokens": 8, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        &[("anthropic-version", "2023-06-01")],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let events: Vec<&str> = reply
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events[..4],
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    let start: Value = serde_json::from_str(
        reply
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(start["message"]["usage"]["cache_creation_input_tokens"], 0);
    server.shutdown().await;
}
