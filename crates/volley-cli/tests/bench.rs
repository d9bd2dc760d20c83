//! `volley bench`, run as a user would: against the embedded mock, and against a separate
//! mock server on loopback.

use std::process::Command;

use serde_json::Value;
use volley_mock::{MockConfig, MockServer};

fn volley() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "warn");
    cmd
}

fn read_results(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bench_mock_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = volley()
        .args([
            "bench",
            "--mock",
            "--latency",
            "20ms",
            "--concurrency",
            "16",
            "--requests",
            "200",
            "--name",
            "cli-test",
            "--quiet",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("cli-test: 200 requests (200 ok, 0 failed)"),
        "{stdout}"
    );
    assert!(stdout.contains("latency ms: p50"), "{stdout}");

    let results = read_results(&report);
    assert_eq!(results["schema_version"], 1);
    assert_eq!(results["summary"]["requests"], 200);
    assert_eq!(results["summary"]["ok"], 200);
    assert_eq!(results["config"]["mode"], "closed");
    assert_eq!(results["config"]["concurrency"], 16);
    assert_eq!(results["config"]["embedded_mock"], true);
    // The mock's /stats were read: the server saw every request.
    assert_eq!(results["server"]["requests"], 200);
    let p50 = results["latency"]["p50"].as_f64().unwrap();
    assert!(p50 >= 20.0, "latency p50 {p50} ms below the mock's 20 ms");

    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "charts are inline SVG");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("cli-test"), "{md}");
}

#[test]
fn bench_streams_against_a_separate_server_and_prints_json() {
    let runtime = volley_testkit::process::server_runtime(1);
    let config = MockConfig {
        inter_token: "1ms".parse().unwrap(),
        ..MockConfig::default()
    };
    let server = runtime.block_on(MockServer::start(config)).unwrap();
    let out = volley()
        .args(["bench", "--base-url", &server.url()])
        .args(["--stream", "--rate", "200", "--arrivals", "constant"])
        .args(["--requests", "40", "--max-tokens", "8", "--json", "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["config"]["mode"], "open");
    assert_eq!(results["config"]["stream"], true);
    assert_eq!(results["summary"]["ok"], 40);
    // Eight content chunks per stream, every one counted.
    assert_eq!(results["summary"]["chunks"], 320);
    assert_eq!(results["ttft"]["count"], 40);
    assert_eq!(
        runtime.block_on(async { server.stats() }).requests_total,
        40
    );
}

#[test]
fn bench_counts_errors_by_kind_and_fails_when_nothing_succeeds() {
    let out = volley()
        .args([
            "bench", "--mock", "--faults", "500=1", "-c", "4", "-n", "20",
        ])
        .args(["--json", "--quiet"])
        .output()
        .unwrap();
    // Every request failed: the target is not reachable in any useful sense.
    assert!(!out.status.success());
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["summary"]["failed"], 20);
    assert_eq!(results["errors"]["status_500"], 20);
}

/// `--find-knee` counts only successes as throughput: against a mock answering every
/// request 500 no step is the knee and the command fails; against a healthy one it finds one.
#[test]
fn the_knee_is_found_only_among_steps_that_succeed() {
    let out = volley()
        .args(["bench", "--mock", "--faults", "500=1", "--find-knee", "4"])
        .args(["--requests", "2", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("knee: none found"), "{stdout}");
    assert!(stdout.contains("| 4 | 0.0 |"), "{stdout}");

    let out = volley()
        .args(["bench", "--mock", "--latency", "20ms", "--find-knee", "2"])
        .args(["--requests", "2", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("knee: "), "{stdout}");
    assert!(stdout.contains("| 2 | 100.0 |"), "{stdout}");
}

/// A first Ctrl-C stops starting requests; a second cancels those in flight (a server that
/// holds them for an hour), writes the results with them counted as unfinished, and exits
/// 130. `--duration` with `--grace` bounds the same wait without a signal.
#[test]
fn a_second_ctrl_c_cancels_what_is_in_flight_and_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = volley()
        .args(["bench", "--mock", "--latency", "1h", "-c", "2", "-n", "10"])
        .args(["--json", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let interrupt = |notice: &str| {
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_to_string(&stderr_path)
            .unwrap()
            .contains(notice)
        {
            assert!(std::time::Instant::now() < deadline, "no {notice:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // Time for both requests to be sent to the embedded mock.
    std::thread::sleep(std::time::Duration::from_secs(2));
    interrupt("finishing the requests in flight");
    interrupt("cancelling the requests in flight");
    let status =
        volley_testkit::process::wait_bounded(&mut child, std::time::Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(&stdout_path).unwrap()).unwrap();
    assert_eq!(results["summary"]["unfinished"], 2, "{results}");
    assert_eq!(results["summary"]["requests"], 0, "{results}");
    assert_eq!(results["interrupted"], true);

    let out = volley()
        .args(["bench", "--mock", "--latency", "1h", "-c", "2"])
        .args([
            "--duration",
            "200ms",
            "--grace",
            "200ms",
            "--json",
            "--quiet",
        ])
        .output()
        .unwrap();
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["summary"]["unfinished"], 2, "{results}");
    // --grace alone means nothing.
    let out = volley()
        .args(["bench", "--mock", "-n", "2", "--grace", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--timeout` bounds each request: against a mock that stalls every request for an hour,
/// the run ends at once, each request a timeout.
#[test]
fn bench_timeout_bounds_each_request() {
    let out = volley()
        .args([
            "bench", "--mock", "--faults", "stall=1", "-c", "2", "-n", "4",
        ])
        .args(["--timeout", "300ms", "--json", "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["errors"]["timeout"], 4, "{results}");
}

/// The body is the user's to shape for a real server: the output length under OpenAI's new
/// name, streams without stream_options, more members; a member the bench writes itself is
/// refused before anything is sent.
#[test]
fn bench_bodies_take_the_fields_a_server_needs() {
    let out = volley()
        .args(["bench", "--mock", "--stream", "-c", "2", "-n", "6"])
        .args([
            "--max-tokens-field",
            "max_completion_tokens",
            "--no-stream-usage",
        ])
        .args([
            "--body-field",
            "temperature=0",
            "--body-field",
            "ignore_eos=true",
        ])
        .args(["--json", "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["summary"]["ok"], 6, "{results}");

    for bad in ["model=\"x\"", "temperature", "temperature=zero"] {
        let out = volley()
            .args(["bench", "--mock", "-n", "1", "--body-field", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

/// The names of a running process's threads (Linux).
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn bench_runs_on_as_many_runtimes_as_threads_asked_for() {
    // One runtime and three: the lanes (four per runtime) and their connections spread over
    // them; every request is counted once, and no more connections than slots are opened.
    for threads in ["1", "3"] {
        let mut child = volley()
            .args([
                "bench",
                "--mock",
                "--latency",
                "50ms",
                "-c",
                "24",
                "-n",
                "300",
            ])
            .args(["--threads", threads, "--json", "--quiet"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // While it runs (about 0.6 s of requests): the load generator's own threads, every
        // name seen in any look (a look may come while threads start or end).
        let expected: &[&str] = match threads {
            "1" => &[],
            _ => &["volley-bench-1", "volley-bench-2"],
        };
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            seen.extend(thread_names(child.id()));
            let all_seen = seen.iter().any(|n| n.starts_with("volley-mock"))
                && expected.iter().all(|n| seen.contains(*n));
            // Ended (and reaped: a zombie's task list holds its main thread alone).
            if all_seen || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--threads {threads}: {stderr}");
        if cfg!(target_os = "linux") {
            let workers: Vec<_> = seen
                .iter()
                .filter(|n| n.starts_with("volley-bench-"))
                .collect();
            assert_eq!(workers, expected, "--threads {threads}: threads {seen:?}");
        }
        let results: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(results["summary"]["requests"], 300, "--threads {threads}");
        assert_eq!(results["summary"]["ok"], 300, "--threads {threads}");
        assert_eq!(results["server"]["requests"], 300, "--threads {threads}");
        let opened = results["connections"]["opened"].as_u64().unwrap();
        assert!((1..=24).contains(&opened), "--threads {threads}: {opened}");
        assert!(results["summary"]["peak_in_flight"].as_u64().unwrap() <= 24);
    }
    let out = volley()
        .args(["bench", "--mock", "-n", "1", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--threads must be at least 1"), "{stderr}");
}

/// Against the default target (volley mock's port on loopback, where anything may listen),
/// the exported key is not sent unless a target or key variable is named.
#[test]
fn the_key_is_not_sent_to_the_default_target() {
    let dir = tempfile::tempdir().unwrap();
    let output = volley()
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "sk-real-key-do-not-send")
        .args(["bench", "--requests", "1", "--concurrency", "1"])
        .args([
            "--quiet",
            "--report",
            dir.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not sending the API key to the default target"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-real-key-do-not-send"), "{stderr}");
}

#[test]
fn bench_needs_a_stop_condition() {
    let out = volley().args(["bench", "--mock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--requests"), "{stderr}");
}

#[test]
fn bench_help_names_the_flags_scripts_use() {
    let out = volley().args(["bench", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--concurrency",
        "--rate",
        "--ramp",
        "--requests",
        "--duration",
        "--base-url",
        "--stream",
        "--report",
        "--quiet",
        "--mock",
        "--latency",
        "--faults",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// `--base-url` twice and `--hedge`: the load is balanced over both servers, and the JSON
/// results have a row per endpoint whose attempts are what each server received.
#[test]
fn bench_balances_a_repeated_base_url_and_reports_each_endpoint() {
    let runtime = volley_testkit::process::server_runtime(1);
    let start = || {
        runtime
            .block_on(MockServer::start(MockConfig {
                latency: "2ms".parse().unwrap(),
                ..MockConfig::default()
            }))
            .unwrap()
    };
    let (a, b) = (start(), start());
    let out = volley()
        .args(["bench", "--base-url", &a.url(), "--base-url", &b.url()])
        .args([
            "--concurrency",
            "8",
            "--requests",
            "300",
            "--json",
            "--quiet",
        ])
        .args(["--hedge", "5s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["summary"]["ok"], 300);
    let endpoints = results["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{results}");
    let (at_a, at_b) =
        runtime.block_on(async { (a.stats().requests_total, b.stats().requests_total) });
    assert_eq!(endpoints[0]["attempts"], at_a);
    assert_eq!(endpoints[1]["attempts"], at_b);
    assert_eq!(at_a + at_b, 300, "no hedge at 5 s of 2 ms answers");
    assert!(at_a > 0 && at_b > 0, "{at_a} {at_b}");
    assert_eq!(results["hedges"], 0);
}
