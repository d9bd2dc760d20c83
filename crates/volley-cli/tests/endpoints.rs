//! `volley run` with several endpoints, as a user runs it: `--base-url` repeated, and
//! `[[profile.NAME.endpoints]]` tables in `volley.toml`. Counts are asserted, never times.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use volley_mock::{MockConfig, MockServer};

/// The longest any child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary with a clean environment and a test key.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "error")
        .env("OPENAI_API_KEY", "sk-test-endpoints")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("VOLLEY_") || name == "OPENAI_BASE_URL" {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs to completion with stderr captured, bounded in time.
fn output(cmd: &mut Command) -> (ExitStatus, String) {
    let done = volley_testkit::process::run_bounded(cmd, CHILD_TIMEOUT);
    (done.status, done.stderr)
}

fn write_input(path: &Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(
            &serde_json::json!({
                "custom_id": format!("id-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("say {i}")}]},
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn succeeded(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"status_code\":200"))
        .count()
}

async fn mock(faults: &str) -> MockServer {
    MockServer::start(MockConfig {
        faults: faults.parse().unwrap(),
        latency: "2ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// A loopback base URL nothing listens on (connections are refused), and what keeps its port
/// from other tests while it lives.
fn refused_url() -> (volley_testkit::ports::RefusedPort, String) {
    let reserved = volley_testkit::ports::RefusedPort::new();
    let url = reserved.url();
    (reserved, url)
}

/// `--base-url` four times (good, failing 27 %, always 503, refused): every line succeeds, the
/// summary has a line per endpoint, and the dead endpoint gets at most 2 % of the requests.
#[test]
fn base_url_repeated_spreads_the_run_and_survives_dead_endpoints() {
    let rt = volley_testkit::process::server_runtime(2);
    let (good, flaky, dead) =
        rt.block_on(async { (mock("").await, mock("500=0.27").await, mock("503=1").await) });
    let (_reserved, refused) = refused_url();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let lines = 5_000;
    write_input(&input, lines);
    let mut cmd = volley(dir.path());
    // 32 slots: the first burst, sent before any answer, puts at most a quarter of them on
    // the dead endpoint; the bound is on what follows.
    cmd.args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["--concurrency", "32"]);
    for url in [good.url(), flaky.url(), dead.url(), refused.clone()] {
        cmd.args(["--base-url", &url]);
    }
    let (status, stderr) = output(&mut cmd);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(succeeded(&out), lines, "{stderr}");
    let dead_requests = dead.stats().requests_total;
    assert!(
        dead_requests * 100 <= lines as u64 * 2,
        "dead got {dead_requests}: {stderr}"
    );
    assert!(good.stats().requests_total > 0 && flaky.stats().requests_total > 0);
    let at_mocks: u64 = [&good, &flaky, &dead]
        .iter()
        .map(|m| m.stats().requests_total)
        .sum();
    // The summary's attempts are the transports' requests, at every endpoint: what reached
    // the mocks (attempts and the health checks of open breakers) plus the refused port's
    // attempts and health checks.
    let number_before = |text: &str, suffix: &str| -> u64 {
        let at = text
            .find(suffix)
            .unwrap_or_else(|| panic!("no {suffix:?} in {text:?}: {stderr}"));
        let digits: String = text[..at]
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    let refused_port = refused.rsplit(':').next().unwrap().trim_end_matches("/v1");
    let refused_line = stderr
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{refused_port}:")))
        .unwrap_or_else(|| panic!("no line for the refused endpoint: {stderr}"));
    let refused_sent: u64 = refused_line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let refused_checks = number_before(refused_line, " health checks");
    assert_eq!(
        number_before(&stderr, " attempts"),
        at_mocks + refused_sent + refused_checks,
        "the summary counts every endpoint's attempts: {stderr}"
    );
    let port = |url: &str| {
        url.rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    for url in [good.url(), dead.url(), refused] {
        let name = format!("endpoint 127.0.0.1:{}:", port(&url));
        assert!(
            stderr.contains(&name),
            "no summary line for {name}: {stderr}"
        );
    }
}

/// `[[profile.NAME.endpoints]]` tables: a priority-1 endpoint gets nothing while the first is
/// up; a `--base-url` flag replaces the profile's list.
#[test]
fn profile_endpoint_tables_and_a_flag_that_replaces_them() {
    let rt = volley_testkit::process::server_runtime(2);
    let (primary, fallback, other) =
        rt.block_on(async { (mock("").await, mock("").await, mock("").await) });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("volley.toml");
    std::fs::write(
        &config,
        format!(
            "[[profile.multi.endpoints]]\nurl = \"{}\"\nname = \"primary\"\n\n\
             [[profile.multi.endpoints]]\nurl = \"{}\"\nname = \"fallback\"\npriority = 1\n",
            primary.url(),
            fallback.url()
        ),
    )
    .unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    write_input(&input, 200);
    let base = ["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    let profile = ["--config", config.to_str().unwrap(), "--profile", "multi"];
    let (status, stderr) = output(volley(dir.path()).args(base).args(profile));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(succeeded(&out), 200);
    assert_eq!(primary.stats().requests_total, 200, "{stderr}");
    assert_eq!(fallback.stats().requests_total, 0);
    assert!(stderr.contains("endpoint fallback: 0 sent"), "{stderr}");

    let out2 = dir.path().join("out2.jsonl");
    let (status, stderr) = output(
        volley(dir.path())
            .args(["run", input.to_str().unwrap(), "-o", out2.to_str().unwrap()])
            .args(profile)
            .args(["--base-url", &other.url()]),
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(other.stats().requests_total, 200);
    assert_eq!(
        primary.stats().requests_total,
        200,
        "the flag replaces the tables"
    );
}

/// `--hedge` with the breaker flags: an endpoint that leaves 5 % of requests unanswered beside a
/// healthy one, a run that never retries: every line succeeds (a stalled one through its hedge,
/// which goes to the other endpoint), and the summary counts the copies. `--print-config`
/// shows the settings and where they came from.
#[test]
fn hedge_and_breaker_flags_reach_the_client() {
    let rt = volley_testkit::process::server_runtime(2);
    // Only one endpoint stalls: a hedge to a second stalling one could stall too (and with
    // the same seed, the two stall at the same arrival indices), failing its line.
    let mock = |faults: &str| {
        MockServer::start(MockConfig {
            faults: faults.parse().unwrap(),
            latency: "2ms".parse().unwrap(),
            stall_duration: Duration::from_secs(30),
            ..MockConfig::default()
        })
    };
    let (a, b) = rt.block_on(async { (mock("stall=0.05").await, mock("").await) });
    let (a, b) = (a.unwrap(), b.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let lines = 300;
    write_input(&input, lines);
    let flags = [
        "--hedge",
        "300ms",
        "--hedge-budget",
        "20%",
        "--breaker-failures",
        "50",
        "--health-check",
        "off",
    ];
    let mut cmd = volley(dir.path());
    cmd.args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args([
            "--concurrency",
            "16",
            "--max-retries",
            "0",
            "--timeout",
            "5s",
        ])
        .args(["--base-url", &a.url(), "--base-url", &b.url()])
        .args(flags);
    let (status, stderr) = output(&mut cmd);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(succeeded(&out), lines, "{stderr}");
    let sent = a.stats().requests_total + b.stats().requests_total;
    assert!(sent > lines as u64, "nothing was hedged: {stderr}");
    assert!(
        stderr.contains(&format!("hedged copies sent: {}", sent - lines as u64)),
        "{stderr}"
    );
    // Counted among the attempts (the client's requests sent), and said so.
    assert!(stderr.contains("counted in the attempts"), "{stderr}");

    let mut cmd = volley(dir.path());
    cmd.args(["run", "--print-config"]).args(flags);
    let printed = cmd.output().unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    for (key, value) in [
        ("hedge", "300ms"),
        ("hedge_budget", "20%"),
        ("breaker_failures", "50"),
        ("breaker_error_rate", "50%"),
        ("health_check", "off"),
    ] {
        let row = printed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key}: {printed}"));
        assert!(row.contains(value), "{row}");
    }
}

/// An endpoint table's own `rpm` would be counted in each process alone, so `--shared-limit`
/// refuses it (exit 2, before connecting to Redis); without one, the run goes on to Redis.
#[test]
fn a_shared_limit_refuses_an_endpoints_own_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("volley.toml");
    let table = |extra: &str| {
        format!(
            "[[profile.multi.endpoints]]\nurl = \"http://127.0.0.1:9/v1\"\n{extra}\n\
             [[profile.multi.endpoints]]\nurl = \"http://127.0.0.1:10/v1\"\n"
        )
    };
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    write_input(&input, 2);
    let run = || {
        output(
            volley(dir.path())
                .args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
                .args(["--config", config.to_str().unwrap(), "--profile", "multi"])
                .args(["--shared-limit", "redis://127.0.0.1:9"]),
        )
    };
    std::fs::write(&config, table("rpm = 500\n")).unwrap();
    let (status, stderr) = run();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("endpoint http://127.0.0.1:9/v1 sets its own rpm or tpm"),
        "{stderr}"
    );
    std::fs::write(&config, table("")).unwrap();
    let (status, stderr) = run();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Redis is not reachable"), "{stderr}");
}
