//! Provider-style rate limits over real loopback sockets: 429s with OpenAI's body and
//! `Retry-After`, `x-ratelimit-*` headers on every response, refill over time, statistics.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;
use volley_mock::{MockConfig, OutputTokens, RateLimits};

fn limited(limits: &str) -> MockConfig {
    MockConfig {
        rate_limits: limits.parse().unwrap(),
        output_tokens: OutputTokens::Fixed(16),
        ..MockConfig::default()
    }
}

/// Tokens one `chat_body` request costs: its prompt plus the 16 tokens of the answer.
const CHAT_COST: u64 = CHAT_BODY_PROMPT_TOKENS + 16;

#[tokio::test]
async fn requests_over_the_rpm_get_an_openai_429() {
    // 60 RPM: one a second, burst 1.
    let server = server(limited("rpm=60")).await;
    let client = client();
    let url = chat_url(&server);
    let ok = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(
        ok.header("x-ratelimit-limit-tokens").is_none(),
        "no TPM set"
    );

    let refused = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let v = refused.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 60"),
        "{message}"
    );
    let wait_ms: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((1..=1000).contains(&wait_ms), "{wait_ms}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    let reset = refused.header("x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with("ms") || reset == "1s", "{reset}");

    let stats = server.stats();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.status_count(429), 1);
    assert_eq!(stats.faults.total(), 0, "not an injected fault");
    server.shutdown().await;
}

#[tokio::test]
async fn tokens_are_prompt_plus_answer_and_refill_over_time() {
    // 1 500 TPM: 25 tokens a second, one per 40 ms (slow, so that a loaded machine's pauses
    // between requests refill little); a burst of exactly two requests.
    const MS_PER_TOKEN: u64 = 40;
    let limits = format!("tpm=1500,burst_tokens={}", 2 * CHAT_COST);
    let server = server(limited(&limits)).await;
    let client = client();
    let url = chat_url(&server);
    for remaining in [CHAT_COST, 0] {
        let ok = post(&client, &url, &chat_body(false), &[]).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        let reported: u64 = ok
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        // A few tokens may have refilled between the two reads of the clock (200 ms).
        assert!((remaining..remaining + 5).contains(&reported), "{reported}");
        assert_eq!(ok.json()["usage"]["total_tokens"], CHAT_COST);
    }
    let refused = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    let wait_ms: u64 = refused.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(
        wait_ms <= CHAT_COST * MS_PER_TOKEN,
        "{wait_ms} ms for {CHAT_COST} tokens at one per {MS_PER_TOKEN} ms"
    );

    tokio::time::sleep(Duration::from_millis(wait_ms + 20)).await;
    let ok = post(&client, &url, &chat_body(false), &[]).await.unwrap();
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "refilled after the advertised wait"
    );

    // A lower max_tokens means a shorter answer and a smaller charge.
    let mut body = chat_body(false);
    body["max_tokens"] = json!(1);
    tokio::time::sleep(Duration::from_millis(2 * CHAT_COST * MS_PER_TOKEN + 20)).await;
    for _ in 0..3 {
        let ok = post(&client, &url, &body, &[]).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_above_the_minute_is_too_large() {
    let server = server(limited("tpm=20")).await;
    let refused = post(&client(), &chat_url(&server), &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("Request too large for gpt-4o-mini"),
        "{message}"
    );
    assert!(refused.header("retry-after").is_none());
    assert_eq!(refused.header("x-ratelimit-limit-tokens"), Some("20"));
    server.shutdown().await;
}

#[tokio::test]
async fn streams_embeddings_and_models_are_limited_and_carry_the_headers() {
    let server = server(limited("rpm=6000,tpm=600000")).await;
    let client = client();
    let stream = post(&client, &chat_url(&server), &chat_body(true), &[])
        .await
        .unwrap();
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("x-ratelimit-limit-tokens"), Some("600000"));
    let embeddings = post(
        &client,
        &format!("{}/embeddings", server.url()),
        &json!({"model": "text-embedding-3-small", "input": "hello"}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(embeddings.status, StatusCode::OK);
    assert_eq!(
        embeddings.header("x-ratelimit-limit-requests"),
        Some("6000")
    );
    let models = get(&client, &format!("{}/models", server.url()))
        .await
        .unwrap();
    assert!(models.header("x-ratelimit-reset-requests").is_some());
    // Statistics are never limited or decorated.
    let stats = get(&client, &format!("http://{}/stats", server.addr()))
        .await
        .unwrap();
    assert!(
        stats
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-ratelimit"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_concurrent_requests_gets_exactly_the_burst() {
    // 600 RPM, burst 10: of 30 simultaneous requests 10 pass, plus one per 100 ms they took.
    let server = server(limited("rpm=600")).await;
    let client = h2_client();
    let url = chat_url(&server);
    let started = std::time::Instant::now();
    let replies = join_all((0..30).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post(&client, &url, &chat_body(false), &[]).await.unwrap() })
    }))
    .await;
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(
        (10..=10 + refilled).contains(&ok),
        "{ok} passed, {refilled} refilled"
    );
    let stats = server.stats();
    assert_eq!(stats.rate_limited, 30 - ok as u64);
    assert_eq!(stats.status_count(429), 30 - ok as u64);
    server.shutdown().await;
}

#[tokio::test]
async fn no_limits_no_headers() {
    let server = server(MockConfig::default()).await;
    let ok = post(&client(), &chat_url(&server), &chat_body(false), &[])
        .await
        .unwrap();
    assert!(
        ok.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-ratelimit"))
    );
    assert_eq!(server.config().rate_limits, RateLimits::NONE);
    server.shutdown().await;
}

/// On Azure OpenAI's paths the mock states its limits as Azure does: only the
/// `x-ratelimit-remaining-*` headers, no limit and no reset.
#[tokio::test]
async fn azure_paths_carry_only_the_remaining_headers() {
    let server = server(limited("rpm=600,tpm=100000")).await;
    let client = client();
    let origin = chat_url(&server).replace("/v1/chat/completions", "");
    for url in [
        format!("{origin}/openai/v1/chat/completions"),
        format!("{origin}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"),
    ] {
        let ok = post(&client, &url, &chat_body(false), &[]).await.unwrap();
        assert_eq!(ok.status, StatusCode::OK, "{url}");
        assert!(
            ok.header("x-ratelimit-remaining-requests").is_some(),
            "{url}"
        );
        assert!(ok.header("x-ratelimit-remaining-tokens").is_some(), "{url}");
        for absent in [
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ] {
            assert!(ok.header(absent).is_none(), "{url}: {absent}");
        }
    }
    // The OpenAI path keeps all three.
    let ok = post(&client, &chat_url(&server), &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("600"));
}
