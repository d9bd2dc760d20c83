//! `volley run` against what the shared mock does not cover: a provider that refuses the key
//! with `403` (a raw responder on loopback), and `--cache` (memory and disk) seen from the
//! server's side.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-volley-run-stops-test-0123456789";

/// The binary with a clean environment and the key set.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("OPENAI_API_KEY", KEY)
        .stdin(Stdio::null());
    for name in [
        "OPENAI_BASE_URL",
        "VOLLEY_CONCURRENCY",
        "VOLLEY_RPM",
        "VOLLEY_TPM",
        "VOLLEY_MAX_RETRIES",
        "VOLLEY_TIMEOUT",
        "VOLLEY_CACHE",
        "VOLLEY_SHARED_LIMIT",
        "VOLLEY_BASE_URL",
        "VOLLEY_API_KEY_ENV",
        "VOLLEY_API_KEY",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs `cmd` to the end, bounded: `volley run` stops by itself in every test here, and a
/// hang fails the test instead of hanging the suite.
fn run(cmd: &mut Command) -> volley_testkit::process::Finished {
    volley_testkit::process::run_bounded(cmd, std::time::Duration::from_secs(60))
}

/// `n` chat lines; with `same_body` every line asks the same thing (a cache answers all but
/// the first).
fn write_input(path: &Path, n: usize, same_body: bool) {
    let mut text = String::new();
    for i in 0..n {
        let content = if same_body {
            "say the same".to_owned()
        } else {
            format!("say {i}")
        };
        let mut line = serde_json::json!({
            "custom_id": format!("id-{i:04}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 8},
        });
        // Identical requests ask for the same answer at temperature 0 (at another, a repeat is
        // another sample, which the cache keeps apart).
        if same_body {
            line["body"]["temperature"] = serde_json::json!(0);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server that answers every request with `403` (OpenAI's body for a key used from a
/// country it does not serve) and closes the connection; counts the requests.
fn forbidding_server() -> (String, Arc<AtomicUsize>) {
    answering_server(
        "403 Forbidden",
        r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#,
    )
}

/// A server that answers every request with `status` and the JSON `body` and closes the
/// connection; counts the requests.
fn answering_server(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = socket.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    socket,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, requests)
}

/// Runs 200 lines at 4 at once against `server` (its URL and request count), whose every
/// answer is `status`: the run exits 1 saying `says`, and no new line is taken after the first
/// answer (what was in flight may finish); each record has that status.
fn stops_the_run(server: (String, Arc<AtomicUsize>), status: u16, says: &str, extra: &[&str]) {
    const LINES: usize = 200;
    let (url, requests) = server;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_input(&input, LINES, false);
    let output = run(volley(dir.path())
        .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
        .args(["--base-url", &url, "--concurrency", "4"])
        .args(extra));
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
    let sent = requests.load(Ordering::SeqCst);
    assert!(
        (1..=LINES / 4).contains(&sent),
        "{sent} of {LINES} requests sent"
    );
    let recorded = records(&out);
    assert!(
        !recorded.is_empty() && recorded.len() <= sent,
        "{recorded:?}"
    );
    assert!(
        recorded
            .iter()
            .all(|r| r["response"]["status_code"] == status)
    );
}

#[test]
fn a_403_stops_the_run() {
    stops_the_run(
        forbidding_server(),
        403,
        "rejected the credentials (HTTP 403)",
        &["--max-retries", "0"],
    );
}

/// Requests that all come back 404 (a base URL without its /v1) stop the run, and the
/// message says what to check.
#[test]
fn a_run_whose_requests_all_404_stops() {
    stops_the_run(
        answering_server(
            "404 Not Found",
            r#"{"error":{"message":"Unknown request URL: POST /chat/completions. Please check the URL for typos.","type":"invalid_request_error","param":null,"code":"unknown_url"}}"#,
        ),
        404,
        "ends in /v1",
        &[],
    );
}

/// A 429 saying the quota is used up stops the run too, and says so; retries would not help
/// (the default policy fails it at once).
#[test]
fn a_used_up_quota_stops_the_run() {
    let server = answering_server(
        "429 Too Many Requests",
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
    );
    stops_the_run(
        server,
        429,
        "the account's quota is used up (HTTP 429): You exceeded your current quota",
        &[],
    );
}

/// Identical lines at temperature 0 are sent once with a cache.
#[test]
fn run_cache_memory_sends_identical_lines_once() {
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_input(&input, 20, true);
    // One slot: lines go one after the other.
    let output = run(volley(dir.path())
        .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
        .args(["--base-url", &server.url(), "--concurrency", "1"])
        .args(["--cache", "memory"]));
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(records(&out).len(), 20);
    // The first answer is cached as its slot is freed: the next line may miss it by a hair,
    // the one after cannot (without the cache: 20).
    let sent = rt.block_on(async { server.stats() }).requests_total;
    assert!((1..=3).contains(&sent), "{sent} of 20 identical lines sent");
    rt.block_on(server.shutdown());
}

#[test]
fn run_cache_disk_answers_a_second_run_without_the_server() {
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let cache = format!("disk:{}", dir.path().join("cache").display());
    write_input(&input, 10, false);
    for (round, sent) in [("first", 10), ("second", 10)] {
        let out = dir.path().join(format!("{round}.jsonl"));
        let output = run(volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
            .args(["--base-url", &server.url(), "--concurrency", "4"])
            .args(["--cache", &cache]));
        let stderr = &output.stderr;
        assert_eq!(output.status.code(), Some(0), "{round}: {stderr}");
        let recorded = records(&out);
        assert_eq!(recorded.len(), 10, "{round}");
        assert!(recorded.iter().all(|r| r["response"]["status_code"] == 200));
        // The second run's answers all come from the disk cache: the server sees nothing new.
        assert_eq!(
            rt.block_on(async { server.stats() }).requests_total,
            sent,
            "{round}"
        );
    }
    rt.block_on(server.shutdown());
}
