//! Self-tuning with default settings, against volley-mock over loopback: 429s that do not fail
//! lines, and rate limits learned from the provider's headers. Counts are asserted, never
//! times.

use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{Client, ErrorKind, Request};
use volley_mock::{MockConfig, MockServer, RateLimits};
use volley_testkit::runs::assert_no_line_failed;

/// volley-mock with `config`, and a client of it with default settings.
async fn mock_and_client(config: MockConfig) -> (MockServer, Client) {
    let server = MockServer::start(config).await.unwrap();
    let client = Client::builder().base_url(server.url()).build().unwrap();
    (server, client)
}

/// The mock's counts after a run in which no line failed (asserted, and printed).
fn no_line_failed<T>(
    results: &[Result<T, volley::Error>],
    server: &MockServer,
    client: &Client,
) -> volley_mock::Stats {
    let stats = server.stats();
    assert_no_line_failed(
        results,
        stats.requests_total,
        stats.rate_limited,
        client.learned_rate_limits(),
    );
    stats
}

/// A mock that enforces `rpm` requests a minute (stating it in its headers, but on Azure
/// paths).
async fn limited_to(rpm: u32) -> MockServer {
    MockServer::start(MockConfig {
        rate_limits: RateLimits {
            rpm: Some(rpm),
            ..RateLimits::NONE
        },
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn request(i: usize) -> Request {
    let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(format!("{i}"))]);
    Request::post_json("/chat/completions", &chat).unwrap()
}

/// 20 % 429 with `Retry-After: 1`, 5 % 500 and 2 % dropped connections, default settings: a
/// 429 is a rate signal that pauses the shared queue and does not use up the retries, so no
/// line fails because of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_fails_because_of_429s() {
    let (server, client) = mock_and_client(MockConfig {
        faults: "429=0.2,500=0.05,reset=0.02".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let lines = 1_000;
    let results = client.fan_out_collect((0..lines).map(request), 256).await;
    let rate_limited = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::RateLimited)
        })
        .count();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let stats = server.stats();
    let sent_429 = stats.status_count(429);
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{:?}: {e}", e.kind())))
        .collect();
    eprintln!(
        "{lines} lines: {failed} failed ({rate_limited} on 429s); {} attempts, {sent_429} 429s; errors: {errors:?}",
        stats.requests_total
    );
    assert!(sent_429 > 50, "the mock answered {sent_429} 429s");
    assert_eq!(rate_limited, 0, "lines failed on 429s");
    // Four 500s or resets before a success fail a line; the 429s between them are not
    // counted, so each counted attempt is one of those with a chance of 0.07 / 0.8: 0.0875⁴
    // per line, 0.06 lines expected in 1 000 (a CI run saw 2). More than 3 is a one in two
    // million chance; were 429s counted, 5 lines would fail on them.
    assert!(failed <= 3, "{failed} lines failed");
}

/// A server that enforces 600 requests a minute and states it in `x-ratelimit-limit-requests`;
/// no limit given: the limit is learned after a one-request slow start, and at most 5 % of
/// the attempts are answered 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_learned_from_headers() {
    let server = limited_to(600).await;
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let lines = 300;
    let results = client.fan_out_collect((0..lines).map(request), 256).await;
    let stats = no_line_failed(&results, &server, &client);
    assert_eq!(client.learned_rate_limits(), (Some(600), None));
    assert!(
        stats.rate_limited * 20 <= stats.requests_total,
        "{} of {} attempts were 429s",
        stats.rate_limited,
        stats.requests_total
    );
}

/// `concurrency_auto`: a server that holds 64 requests at once (200 ms answers) and answers
/// 503 beyond: every line succeeds and at most 10 % of the attempts are 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_finds_a_hard_capacity() {
    let server = MockServer::start(MockConfig {
        latency: "200ms".parse().unwrap(),
        capacity: "max=64".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .concurrency_auto(512)
        .build()
        .unwrap();
    let lines = 1_500;
    let results = client.fan_out_collect((0..lines).map(request), 512).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let stats = server.stats();
    let unavailable = stats.status_count(503);
    eprintln!(
        "{lines} lines: {failed} failed; {} attempts, {unavailable} 503s; limit {}",
        stats.requests_total,
        client.concurrency_limit()
    );
    assert_eq!(failed, 0);
    assert!(
        unavailable * 10 <= stats.requests_total,
        "{unavailable} of {} attempts were 503s",
        stats.requests_total
    );
    assert!(client.concurrency_limit() <= 512);
}

/// Azure OpenAI states only `x-ratelimit-remaining-*` (no limit, no reset): nothing can be
/// learned, and the loss signals take over: after the first 429s the requests are paced at
/// the rate answered. 300 lines against 600 requests a minute through the mock's Azure
/// path, no limit given, 256 at once: every line succeeds, no limit is learned, and the 429s
/// are the first burst's (at most 256) and a few more, not the 1 800 of pausing alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_remaining_only_headers_fall_back_to_the_loss_signals() {
    let server = limited_to(600).await;
    let base = server.url().trim_end_matches("/v1").to_owned() + "/openai/v1";
    let client = Client::builder()
        .provider(volley::Provider::Azure)
        .base_url(base)
        .api_key("azure-test-key")
        .build()
        .unwrap();
    let lines = 300;
    let results = client.fan_out_collect((0..lines).map(request), 256).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let stats = server.stats();
    eprintln!(
        "{lines} lines: {failed} failed; {} attempts, {} 429s",
        stats.requests_total, stats.rate_limited
    );
    assert_eq!(failed, 0, "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(client.learned_rate_limits(), (None, None));
    assert!(stats.rate_limited > 0, "the limit was never reached");
    assert!(
        stats.rate_limited <= 256 + lines as u64 / 5,
        "{} 429s: not paced after the first burst",
        stats.rate_limited
    );
}

/// A token limit learned from the first answer applies to the requests that waited behind
/// the slow start's probes, so they need a token estimate although none was known when they
/// were made. 120 000 tokens a minute (a second's 2 000 at once), no limit given, 24 chats of
/// about 400 tokens (as the mock counts them) made at once: four probes go, then the others
/// are paced by the learned limit (no 429s measured; up to 8 allowed for a loaded machine,
/// where the mock shares the client's runtime) instead of going together with no tokens
/// reserved (35 to 44 429s measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_by_the_slow_start_reserve_the_tokens_learned() {
    let (server, client) = mock_and_client(MockConfig {
        rate_limits: RateLimits {
            tpm: Some(120_000),
            ..RateLimits::NONE
        },
        // Answers take a while, as a provider's do: the first answer's remaining tokens
        // count all four probes.
        latency: "100ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let lines = 24;
    let chats: Vec<ChatCompletionRequest> = (0..lines)
        .map(|i| {
            // Digits: the mock charges a token per 4 bytes, Volley's estimate one per 3 digits,
            // so the estimate is not what falls short.
            let text = format!("{i} {}", "0123456789".repeat(160));
            let mut chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)]);
            chat.max_tokens = Some(16);
            chat
        })
        .collect();
    let results = client.fan_out_chat_collect(&chats, 64).await;
    let stats = no_line_failed(&results, &server, &client);
    assert_eq!(client.learned_rate_limits(), (None, Some(120_000)));
    assert!(
        stats.rate_limited <= 8,
        "{} of {} attempts were 429s",
        stats.rate_limited,
        stats.requests_total
    );
}
