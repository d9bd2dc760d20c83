//! `--provider anthropic`, run as a user would: the real binary as a child process, against
//! an in-process volley-mock serving `/v1/messages` (or its own `--mock`). Keys come from
//! ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN, the base URL from ANTHROPIC_BASE_URL the SDK's
//! way, and the key is never printed.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use volley_mock::{MockConfig, MockServer};

/// The longest any child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
const KEY: &str = "sk-ant-cli-secret-0123456789abcdef";

/// The binary with a clean environment: none of the variables it reads are inherited.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("VOLLEY_")
            || name.starts_with("OPENAI_")
            || name.starts_with("ANTHROPIC_")
            || name.starts_with("AZURE_")
            || name.to_ascii_lowercase().ends_with("_proxy")
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs to completion with stdout and stderr captured, bounded in time.
fn output(cmd: &mut Command) -> (ExitStatus, String, String) {
    let done = volley_testkit::process::run_bounded(cmd, CHILD_TIMEOUT);
    (done.status, done.stdout, done.stderr)
}

fn keyed_mock(rt: &tokio::runtime::Runtime, faults: &str) -> MockServer {
    rt.block_on(MockServer::start(MockConfig {
        require_api_key: Some(KEY.to_owned()),
        faults: faults.parse().unwrap(),
        retry_after: Duration::from_millis(1),
        ..MockConfig::default()
    }))
    .unwrap()
}

/// The server's root, as ANTHROPIC_BASE_URL names it (without /v1).
fn sdk_base_url(server: &MockServer) -> String {
    server
        .url()
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_owned()
}

#[test]
fn chat_with_the_mock_answers_plain_and_streamed_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (status, plain, err) = output(volley(dir.path()).args([
        "chat",
        "--provider",
        "anthropic",
        "--mock",
        "--usage",
        "hello",
    ]));
    assert!(status.success(), "{err}");
    assert!(!plain.trim().is_empty());
    assert!(
        err.contains("usage: ") && err.contains(" output = "),
        "{err}"
    );
    let (status, streamed, err) = output(volley(dir.path()).args([
        "chat",
        "--provider",
        "anthropic",
        "--mock",
        "--stream",
        "hello",
    ]));
    assert!(status.success(), "{err}");
    assert_eq!(streamed, plain, "the stream decodes to the same text");
}

/// Anthropic's API version 2026-10-21 (the default with bearer auth) answers a temperature
/// with HTTP 400 whatever its value: the flag is refused before anything is sent, naming the
/// version that takes it; with that version (or x-api-key auth, which sends it) it goes out.
#[test]
fn temperature_is_refused_where_the_api_version_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let ask = |extra: &[&str]| {
        let mut cmd = volley(dir.path());
        cmd.args([
            "chat",
            "--provider",
            "anthropic",
            "--mock",
            "--temperature",
            "0.2",
        ])
        .args(extra)
        .arg("hello");
        output(&mut cmd)
    };
    let (status, _, err) = ask(&[]);
    assert_eq!(status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("2026-10-21") && err.contains("--anthropic-version 2023-06-01"),
        "{err}"
    );
    let (status, _, err) = ask(&["--anthropic-version", "2027-01-01"]);
    assert!(!status.success() && err.contains("2027-01-01"), "{err}");
    for allowed in [
        &["--anthropic-version", "2023-06-01"][..],
        &["--anthropic-auth", "x-api-key"],
    ] {
        let (status, out, err) = ask(allowed);
        assert!(status.success(), "{allowed:?}: {err}");
        assert!(!out.trim().is_empty());
    }
}

#[test]
fn the_key_and_base_url_are_read_as_the_sdk_reads_them() {
    let rt = volley_testkit::process::server_runtime(2);
    let server = keyed_mock(&rt, "");
    let dir = tempfile::tempdir().unwrap();
    let chat = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = volley(dir.path());
        cmd.args(["chat", "--provider", "anthropic"])
            .args(extra)
            .arg("hi");
        for (name, value) in envs {
            cmd.env(name, value);
        }
        // OpenAI's variables are not Anthropic's: a bogus one must not be used.
        cmd.env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1");
        cmd.env("OPENAI_API_KEY", "sk-openai-wrong");
        output(&mut cmd)
    };
    let root = sdk_base_url(&server);
    for variable in ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"] {
        let (status, out, err) = chat(&[(variable, KEY), ("ANTHROPIC_BASE_URL", &root)], &[]);
        assert!(status.success(), "{variable}: {err}");
        assert!(!out.trim().is_empty());
        assert!(
            !out.contains(KEY) && !err.contains(KEY),
            "the key was printed"
        );
    }
    // ANTHROPIC_API_KEY wins over ANTHROPIC_AUTH_TOKEN, as in the SDK.
    let (status, _, err) = chat(
        &[
            ("ANTHROPIC_API_KEY", KEY),
            ("ANTHROPIC_AUTH_TOKEN", "sk-ant-wrong"),
            ("ANTHROPIC_BASE_URL", &root),
        ],
        &[
            "--anthropic-auth",
            "x-api-key",
            "--anthropic-beta",
            "feature-1",
        ],
    );
    assert!(status.success(), "{err}");

    // A wrong key: a clear 401, and neither key is printed.
    let (status, out, err) = chat(
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-wrong-key-42"),
            ("ANTHROPIC_BASE_URL", &root),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("401"), "{err}");
    assert!(!out.contains("sk-ant-wrong-key-42") && !err.contains("sk-ant-wrong-key-42"));

    // No key, to a server on this machine: sent without one (a local server may need none),
    // saying which variables are read, so that its 401 is understood.
    let (status, _, err) = chat(&[("ANTHROPIC_BASE_URL", &root)], &[]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("ANTHROPIC_API_KEY") && err.contains("ANTHROPIC_AUTH_TOKEN"),
        "{err}"
    );
    // A variable named for the key and unset is a mistake even there.
    let (status, _, err) = chat(
        &[("ANTHROPIC_BASE_URL", &root)],
        &["--api-key-env", "MY_UNSET_KEY_VARIABLE"],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("MY_UNSET_KEY_VARIABLE"), "{err}");

    // --print-config: the SDK's base URL with /v1, and where it came from.
    let (status, out, err) = chat(
        &[("ANTHROPIC_API_KEY", KEY), ("ANTHROPIC_BASE_URL", &root)],
        &["--print-config"],
    );
    assert!(status.success(), "{err}");
    let base = out.lines().find(|l| l.starts_with("base_url")).unwrap();
    assert!(base.contains(&format!("{root}/v1")), "{base}");
    assert!(base.contains("$ANTHROPIC_BASE_URL"), "{base}");
    let key_env = out.lines().find(|l| l.starts_with("api_key_env")).unwrap();
    assert!(key_env.contains("ANTHROPIC_API_KEY (set)"), "{key_env}");
    assert!(!out.contains(KEY));
    let (_, out, _) = chat(&[], &["--print-config"]);
    let base = out.lines().find(|l| l.starts_with("base_url")).unwrap();
    assert!(base.contains("https://api.anthropic.com/v1"), "{base}");
}

fn message_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "custom_id": format!("id-{i}"),
                "params": {
                    "model": "claude-test",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": format!("say {i}")}],
                },
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn run_reads_message_batches_and_retries_overload_until_every_line_succeeds() {
    const LINES: usize = 200;
    let rt = volley_testkit::process::server_runtime(2);
    let server = keyed_mock(&rt, "529=0.3");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), message_lines(LINES)).unwrap();
    let (status, out, err) = output(
        volley(dir.path())
            .env("ANTHROPIC_API_KEY", KEY)
            .args([
                "run",
                "in.jsonl",
                "-o",
                "out.jsonl",
                "--provider",
                "anthropic",
            ])
            .args([
                "--base-url",
                &server.url(),
                "--max-retries",
                "10",
                "--quiet",
            ]),
    );
    assert!(status.success(), "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), LINES);
    assert!(
        records.iter().all(|r| r["result"]["type"] == "succeeded"),
        "every line succeeded"
    );
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), LINES);
    assert!(
        server.stats().status_count(529) > 0,
        "some answers were 529"
    );
    for text in [&out, &err, &text] {
        assert!(!text.contains(KEY), "the key was printed");
    }

    // A file of the other format is refused at its first line, and nothing is sent.
    server.reset_stats();
    let openai = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
    std::fs::write(dir.path().join("openai.jsonl"), format!("{openai}\n")).unwrap();
    let (status, _, err) = output(
        volley(dir.path())
            .env("ANTHROPIC_API_KEY", KEY)
            .args([
                "run",
                "openai.jsonl",
                "-o",
                "out2.jsonl",
                "--provider",
                "anthropic",
            ])
            .args(["--base-url", &server.url()]),
    );
    assert!(!status.success());
    assert!(
        err.contains("line 1: this is a file in the OpenAI Batch format"),
        "{err}"
    );
    assert_eq!(server.stats().requests_total, 0);
    let (status, out, _) = output(volley(dir.path()).args([
        "run",
        "openai.jsonl",
        "--validate",
        "--provider",
        "anthropic",
    ]));
    assert!(!status.success(), "{out}");
}

#[test]
fn run_with_its_own_mock_speaks_anthropic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), message_lines(20)).unwrap();
    let (status, out, err) = output(volley(dir.path()).args([
        "run",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--provider",
        "anthropic",
        "--mock",
        "--quiet",
    ]));
    assert!(status.success(), "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 20);
    assert!(
        text.lines()
            .all(|l| l.contains(r#""result":{"type":"succeeded","message":{"#))
    );
}

#[test]
fn bench_speaks_anthropic_and_times_the_first_delta() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = output(volley(dir.path()).args([
        "bench",
        "--mock",
        "--provider",
        "anthropic",
        "--stream",
        "-c",
        "8",
        "-n",
        "50",
        "--quiet",
    ]));
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("50 requests (50 ok, 0 failed)"), "{out}");
    assert!(out.contains("time to first token ms:"), "{out}");
    assert!(
        out.contains("800 tokens") && out.contains("800 chunks"),
        "{out}"
    );
}

#[test]
fn input_and_output_token_limits_are_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), message_lines(20)).unwrap();
    let run = |extra: &[&str]| {
        output(
            volley(dir.path())
                .args([
                    "run",
                    "in.jsonl",
                    "-o",
                    "out.jsonl",
                    "--provider",
                    "anthropic",
                ])
                .args(["--mock", "--quiet"])
                .args(extra),
        )
    };
    let (status, out, err) = run(&["--input-tpm", "600000", "--output-tpm", "60000"]);
    assert!(status.success(), "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 20);

    let (status, out, _) = volley_with_env(dir.path(), "VOLLEY_OUTPUT_TPM", "8000")
        .args(["run", "--print-config", "--input-tpm", "30000"])
        .output()
        .map(|o| {
            (
                o.status,
                String::from_utf8_lossy(&o.stdout).into_owned(),
                (),
            )
        })
        .unwrap();
    assert!(status.success(), "{out}");
    let row = |key: &str| out.lines().find(|l| l.starts_with(key)).unwrap().to_owned();
    assert!(row("input_tpm").contains("30000") && row("input_tpm").contains("flag --input-tpm"));
    assert!(row("output_tpm").contains("8000") && row("output_tpm").contains("$VOLLEY_OUTPUT_TPM"));

    // Shared through Redis with --shared-limit: accepted, so the run fails only because
    // nothing answers there (exit 1, not a usage error).
    let (status, _, err) = run(&[
        "--output-tpm",
        "10",
        "--shared-limit",
        "redis://127.0.0.1:9",
    ]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--shared-limit: Redis is not reachable"),
        "{err}"
    );
}

fn volley_with_env(dir: &Path, name: &str, value: &str) -> Command {
    let mut cmd = volley(dir);
    cmd.env(name, value);
    cmd
}

/// A stream cut before `message_stop` fails, and the text that came before it is printed on a
/// line of its own, so that the error does not land after it on the same line.
#[test]
fn a_cut_stream_fails_after_the_text_printed_on_its_own_line() {
    let events = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
    );
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let rt = volley_testkit::process::server_runtime(1);
    let port = rt.block_on(volley_testkit::raw::answer_once_in_parts(
        vec![format!("{head}{events}")],
        Duration::ZERO,
    ));
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = output(
        volley(dir.path())
            .args(["chat", "--provider", "anthropic", "--stream"])
            .args(["--max-retries", "0", "--base-url"])
            .arg(format!("http://127.0.0.1:{port}/v1"))
            .arg("hi")
            .env("ANTHROPIC_API_KEY", KEY),
    );
    assert!(!status.success(), "{err}");
    assert!(err.contains("message_stop"), "{err}");
    assert_eq!(out, "Hel\n", "{err}");
}
