//! The batch engine in Anthropic's Message Batches format, against volley-mock's
//! `/v1/messages` over real loopback sockets: overload retried until every line succeeds,
//! resume, `retry_failed`, line-numbered input errors, a file of the other format refused at
//! its first line, and the key never written.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use volley::middleware::retry::Policy;
use volley::{Client, ErrorKind, Provider};
use volley_batch::{BatchOptions, BatchRunner, Format, Input, Progress, validate_format};
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-ant-batch-secret-0123456789";

fn message_line(id: &str) -> String {
    json!({
        "custom_id": id,
        "params": {
            "model": "claude-test",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": format!("say something about {id}")}],
        },
    })
    .to_string()
}

fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let text: String = lines.into_iter().map(|l| l + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn numbered(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| message_line(&format!("req-{i}")))
}

fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn config() -> MockConfig {
    MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    }
}

/// An Anthropic client that retries overload up to `retries` times, fast.
fn client(server: &MockServer, retries: u32) -> Client {
    let policy = Policy::builder()
        .max_retries(retries)
        .backoff_base(Duration::from_millis(1))
        .backoff_cap(Duration::from_millis(10))
        .budget_enabled(false)
        .build()
        .unwrap();
    Client::builder()
        .provider(Provider::Anthropic)
        .base_url(server.url())
        .api_key(KEY)
        .retry_policy(policy)
        .build()
        .unwrap()
}

fn options(dir: &Path) -> BatchOptions {
    BatchOptions {
        errors: Some(dir.join("errors.jsonl")),
        format: Format::Anthropic,
        ..BatchOptions::new(dir.join("out.jsonl"))
    }
}

async fn after_successes(progress: Arc<Progress>, n: u64) {
    while progress.snapshot().succeeded < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The `custom_id` and `result.type` of every record.
fn results(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["custom_id"].as_str().unwrap_or("null").to_owned(),
                r["result"]["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_on_thirty_percent_of_answers_still_gives_every_line_a_message() {
    const LINES: usize = 300;
    let server = MockServer::start(MockConfig {
        faults: "529=0.3".parse().unwrap(),
        retry_after: Duration::from_millis(1),
        ..config()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_lines(&input, numbered(LINES));
    let summary = BatchRunner::new(client(&server, 10), Input::Path(input), options(dir.path()))
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!(summary.succeeded, LINES as u64);

    let out = records(&dir.path().join("out.jsonl"));
    let results = results(&out);
    let ids: HashSet<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        (results.len(), ids.len()),
        (LINES, LINES),
        "one outcome per line"
    );
    assert!(results.iter().all(|(_, t)| t == "succeeded"), "{results:?}");
    for record in &out {
        let message = &record["result"]["message"];
        assert_eq!(message["type"], "message");
        assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0);
    }
    assert!(
        summary.tokens_out > 0 && summary.tokens_in > 0,
        "{summary:?}"
    );
    let stats = server.stats();
    assert!(stats.status_count(529) > 0, "some answers were 529");
    assert_eq!(summary.retries, stats.status_count(529), "{summary:?}");
    assert!(records(&dir.path().join("errors.jsonl")).is_empty());

    // The key is in no file and no summary.
    for name in ["out.jsonl", "errors.jsonl"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(!text.contains(KEY), "{name} holds the key");
    }
    assert!(!format!("{summary:?}").contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_and_failures_are_retried_on_request() {
    const LINES: usize = 400;
    // Slow enough that the stop, taken after 100 answers, comes before the last answer even
    // on a loaded machine.
    let server = MockServer::start(MockConfig {
        latency: "50ms".parse().unwrap(),
        ..config()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_lines(
        &input,
        numbered(LINES).chain([r#"{"custom_id":"no-params"}"#.to_owned()]),
    );
    let out_path = dir.path().join("out.jsonl");
    let concurrency = 32;
    let opts = || BatchOptions {
        concurrency,
        grace: Duration::from_millis(5),
        ..options(dir.path())
    };

    let runner = BatchRunner::new(client(&server, 0), Input::Path(input.clone()), opts());
    let stop = after_successes(runner.progress(), 100);
    let first = runner.run(stop).await.unwrap();
    assert!(first.interrupted, "{first:?}");
    assert!(
        first.succeeded >= 100 && first.succeeded < LINES as u64,
        "{first:?}"
    );
    let sent_first = server.stats().requests_total;
    server.reset_stats();

    let second = BatchRunner::new(client(&server, 0), Input::Path(input.clone()), opts())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(second.skipped, first.succeeded + first.invalid);
    assert_eq!(second.succeeded, LINES as u64 - first.succeeded);
    assert_eq!(
        server.stats().requests_total,
        second.succeeded,
        "nothing recorded is sent again"
    );
    assert!(sent_first + second.succeeded <= LINES as u64 + concurrency as u64);
    let out = records(&out_path);
    let results = results(&out);
    let ids: HashSet<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        (results.len(), ids.len()),
        (LINES + 1, LINES + 1),
        "one outcome per line"
    );

    // The line without params is errored, named by its line, and in the errors file.
    let bad: Vec<&Value> = out
        .iter()
        .filter(|r| r["line"] == LINES as u64 + 1)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["custom_id"], "no-params");
    assert_eq!(bad[0]["result"]["type"], "errored");
    let error = &bad[0]["result"]["error"]["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "missing_field");
    assert_eq!(
        error["message"],
        format!("line {}: field `params` is missing", LINES + 1)
    );
    let errors = records(&dir.path().join("errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_failures_are_sent_again_with_retry_failed_and_the_last_record_wins() {
    const LINES: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_lines(&input, numbered(LINES));
    let overloaded = MockServer::start(MockConfig {
        faults: "529=0.5".parse().unwrap(),
        retry_after: Duration::from_millis(1),
        ..config()
    })
    .await
    .unwrap();
    let first = BatchRunner::new(
        client(&overloaded, 0),
        Input::Path(input.clone()),
        // With no retries, a 529 is final at once.
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert!(first.failed > 10 && first.failed < 90, "{first:?}");
    let errored: Vec<Value> = records(&dir.path().join("out.jsonl"))
        .into_iter()
        .filter(|r| r["result"]["type"] == "errored")
        .collect();
    assert_eq!(errored.len() as u64, first.failed);
    for record in &errored {
        assert_eq!(record["result"]["error"]["type"], "error", "{record}");
        assert_eq!(
            record["result"]["error"]["error"]["type"], "overloaded_error",
            "{record}"
        );
    }

    let healthy = MockServer::start(config()).await.unwrap();
    let second = BatchRunner::new(
        client(&healthy, 0),
        Input::Path(input.clone()),
        BatchOptions {
            retry_failed: true,
            ..options(dir.path())
        },
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert!(second.all_succeeded(), "{second:?}");
    assert_eq!(second.succeeded, first.failed);
    assert_eq!(healthy.stats().requests_total, first.failed);
    // The last record of each id is its outcome: every id ends in a success.
    let mut last = std::collections::HashMap::new();
    for (id, result) in results(&records(&dir.path().join("out.jsonl"))) {
        last.insert(id, result);
    }
    assert_eq!(last.len(), LINES);
    assert!(last.values().all(|r| r == "succeeded"), "{last:?}");
}

#[tokio::test]
async fn a_file_of_the_other_format_is_refused_at_its_first_line() {
    let server = MockServer::start(config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let openai_line = json!({
        "custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": []},
    });
    write_lines(
        &input,
        ["".to_owned(), openai_line.to_string(), message_line("b")],
    );
    let error = BatchRunner::new(
        client(&server, 0),
        Input::Path(input.clone()),
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let text = error.to_string();
    assert!(
        text.contains("line 2: this is a file in the OpenAI Batch format"),
        "{text}"
    );
    assert!(text.contains("--provider openai"), "{text}");
    assert!(!dir.path().join("out.jsonl").exists(), "nothing is written");
    assert_eq!(server.stats().requests_total, 0, "nothing is sent");
    let error = validate_format(Input::Path(input.clone()), 1 << 20, Format::Anthropic)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("line 2:"), "{error}");

    // And the other way round: a Message Batches file read as OpenAI's.
    write_lines(&input, numbered(3));
    let error = BatchRunner::new(
        client(&server, 0),
        Input::Path(input),
        BatchOptions {
            format: Format::OpenAi,
            ..options(dir.path())
        },
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("line 1: this is a file in the Anthropic Message Batches format"),
        "{text}"
    );
    assert!(text.contains("--provider anthropic"), "{text}");
}

/// An output written in the other format (an OpenAI run's, resumed with the Anthropic
/// provider, or the other way round) is refused before anything is sent or written: records
/// of both formats in one file would be misread by either SDK's reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_of_the_other_format_is_refused() {
    let server = MockServer::start(config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_lines(&input, numbered(2));
    let openai = r#"{"id":"batch_req_1","custom_id":"req-0","response":{"status_code":200,"request_id":"r","body":{}},"error":null}"#;
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, format!("{openai}\n")).unwrap();
    let err = BatchRunner::new(
        client(&server, 0),
        Input::Path(input.clone()),
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("OpenAI Batch format"), "{err}");
    assert_eq!(server.stats().requests_total, 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{openai}\n")
    );

    // The same file resumed in its own format is read as before.
    let openai_run = BatchOptions {
        format: Format::OpenAi,
        ..options(dir.path())
    };
    let chat = json!({"custom_id": "req-0", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}});
    std::fs::write(&input, format!("{chat}\n")).unwrap();
    let summary = BatchRunner::new(client(&server, 0), Input::Path(input), openai_run)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.skipped, 1, "{summary:?}");
}
