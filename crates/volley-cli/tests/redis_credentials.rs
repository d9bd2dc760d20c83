//! `volley run --shared-limit`: the limit is shared per credential, as the library keys it
//! (one key at one endpoint, one budget), seen in the keys the processes leave in Redis.
//!
//! Ignored unless asked for (`-- --include-ignored`, as in CI); asked for without
//! `REDIS_URL`, it fails (volley-testkit's `redis` module).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use volley_mock::{MockConfig, MockServer};
use volley_testkit::redis::unique_prefix;
use volley_testkit::require_redis;

fn volley(dir: &Path, key: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("OPENAI_API_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in [
        "OPENAI_BASE_URL",
        "VOLLEY_CONCURRENCY",
        "VOLLEY_RPM",
        "VOLLEY_TPM",
        "VOLLEY_CACHE",
        "VOLLEY_SHARED_LIMIT",
        "VOLLEY_SHARED_PREFIX",
        "VOLLEY_BASE_URL",
        "VOLLEY_API_KEY_ENV",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// The keys under `pattern`, by `KEYS` over a plain RESP connection to `url`'s host and port
/// (a test Redis without a password).
/// Runs `cmd` to its end, bounded by 40 s, and fails the test unless it succeeded.
fn run_ok(cmd: &mut Command, what: &str) {
    let done = volley_testkit::process::run_bounded(cmd, Duration::from_secs(40));
    assert!(done.status.success(), "{what}: {}", done.stderr);
}

fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis_command(url, &["KEYS", pattern])
        .into_iter()
        .flatten()
        .collect();
    keys.sort();
    keys
}

/// A command whose answer is an array of bulk strings (`None` for a nil), over a plain RESP
/// connection to `url`'s host and port.
fn redis_command(url: &str, args: &[&str]) -> Vec<Option<String>> {
    let address = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let count: usize = line
        .trim_end()
        .strip_prefix('*')
        .unwrap_or_else(|| panic!("not an array: {line}"))
        .parse()
        .unwrap();
    let mut values = Vec::new();
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).unwrap(); // $<length>, or $-1 for a nil
        if line.trim_end() == "$-1" {
            values.push(None);
            continue;
        }
        line.clear();
        reader.read_line(&mut line).unwrap();
        values.push(Some(line.trim_end().to_owned()));
    }
    values
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn the_shared_limit_is_keyed_by_the_credential() {
    let url = require_redis!();
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let line = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":4}}"#;
    std::fs::write(&input, format!("{line}\n")).unwrap();
    let prefix = unique_prefix("credentials");
    let run = |key: &str, round: &str| {
        let out = dir.path().join(format!("{round}.jsonl"));
        run_ok(
            volley(dir.path(), key)
                .args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
                .args(["--quiet", "--base-url", &server.url(), "--rpm", "600"])
                .args(["--shared-limit", &url, "--shared-prefix", &prefix]),
            round,
        );
    };
    let pattern = format!("{prefix}:ratelimit:*");
    // A limiter's key outlives its run by a minute: each run's key is still there after it.
    run("sk-credential-one", "one");
    let first = redis_keys(&url, &pattern);
    assert_eq!(first.len(), 1, "{first:?}");
    run("sk-credential-one", "one-again");
    assert_eq!(redis_keys(&url, &pattern), first, "one key, one budget");
    run("sk-credential-two", "two");
    let both = redis_keys(&url, &pattern);
    assert_eq!(both.len(), 2, "another key, another budget: {both:?}");
    assert!(both.contains(&first[0]));
    for key in &both {
        assert!(!key.contains("sk-credential"), "the key is hashed: {key}");
    }
    rt.block_on(server.shutdown());
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn input_and_output_token_limits_are_shared_through_redis() {
    let url = require_redis!();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let line = r#"{"custom_id":"a","params":{"model":"claude-test","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}"#;
    std::fs::write(
        &input,
        format!("{line}\n{}\n", line.replace("\"a\"", "\"b\"")),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let prefix = unique_prefix("split-tokens");
    run_ok(
        volley(dir.path(), "sk-split")
            .args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .args(["--quiet", "--mock", "--provider", "anthropic"])
            .args(["--input-tpm", "600000", "--output-tpm", "60000"])
            .args(["--shared-limit", &url, "--shared-prefix", &prefix]),
        "split tokens",
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
    // The input- and output-token buckets live in the shared state, and nothing else is
    // limited.
    let keys = redis_keys(&url, &format!("{prefix}:ratelimit:*"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let fields = redis_command(&url, &["HMGET", &keys[0], "r", "t", "i", "o"]);
    assert!(fields[0].is_none() && fields[1].is_none(), "{fields:?}");
    assert!(fields[2].is_some() && fields[3].is_some(), "{fields:?}");
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn a_learned_limit_is_shared_through_redis() {
    let url = require_redis!();
    let rt = volley_testkit::process::server_runtime(1);
    // The provider states 600 requests a minute in its headers; the run is given no limit.
    let server = rt
        .block_on(MockServer::start(MockConfig {
            rate_limits: volley_mock::RateLimits {
                rpm: Some(600),
                ..volley_mock::RateLimits::NONE
            },
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..8)
        .map(|i| {
            format!(
                r#"{{"custom_id":"l{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4}}}}"#
            ) + "\n"
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out.jsonl");
    let prefix = unique_prefix("learned");
    run_ok(
        volley(dir.path(), "sk-learned")
            .args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .args(["--quiet", "--base-url", &server.url()])
            .args(["--shared-limit", &url, "--shared-prefix", &prefix]),
        "learned",
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 8);
    // The learned limit is in the shared state, for every process with this prefix and key.
    let keys = redis_keys(&url, &format!("{prefix}:ratelimit:*"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let fields = redis_command(&url, &["HMGET", &keys[0], "lr", "r"]);
    assert_eq!(fields[0].as_deref(), Some("600"), "{fields:?}");
    assert!(fields[1].is_some(), "{fields:?}");
    rt.block_on(server.shutdown());
}
