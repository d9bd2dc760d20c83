//! `Client::fan_out` and the caller's tracing span, in a test binary of its own: `tracing`
//! caches whether a call site is enabled from the first thread that reaches it, so another
//! test's request, logged on a thread without this test's subscriber, could silence the call
//! sites this test reads.

use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley::{Client, Request};
use volley_mock::{MockConfig, MockServer};

fn request(i: usize) -> Request {
    let chat = ChatCompletionRequest::new(
        "gpt-4o-mini",
        vec![ChatMessage::user(format!("request {i}"))],
    );
    Request::post_json("/chat/completions", &chat).unwrap()
}

/// Each request runs in a task of its own, yet what the stack logs of it carries the span the
/// fan-out was made in (a job's id, here), as a request sent with `Client::send` would.
#[test]
fn requests_log_in_the_callers_span() {
    use tracing::Instrument;

    let (logs, _guard) = volley_testkit::logs::capture(tracing::Level::TRACE);
    // A current-thread runtime keeps every task on this thread, where the subscriber is set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = MockServer::start(MockConfig::default()).await.unwrap();
        let client = Client::builder().base_url(server.url()).build().unwrap();
        let job = tracing::info_span!("job", id = 7);
        let results = client
            .fan_out_collect((0..3).map(request), 2)
            .instrument(job)
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    });
    let logs = logs.text();
    let sending: Vec<&str> = logs.lines().filter(|l| l.contains("sending")).collect();
    assert_eq!(sending.len(), 3, "{logs}");
    assert!(sending.iter().all(|l| l.contains("job{id=7}")), "{logs}");
}
