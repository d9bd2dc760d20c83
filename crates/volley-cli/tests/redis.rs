//! `volley run` with its limits shared through Redis: real `volley` processes, an in-test
//! mock server, and Redis (`REDIS_URL`, or a `redis-server` child the test starts, kills and
//! restarts).
//!
//! The tests that need Redis are ignored unless asked for (`-- --include-ignored`, as in CI);
//! asked for without `REDIS_URL`, they fail (volley-testkit's `redis` module).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use volley_mock::{Latency, MockConfig, MockServer, RateLimits, TimelineBucket};
use volley_testkit::redis::{RedisServer, unique_prefix};
use volley_testkit::require_redis;

/// The longest any test's processes may run before the test kills them and fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(40);
const KEY: &str = "sk-volley-cli-redis-test-0123456789";

/// The binary with a clean environment: none of the variables it reads are inherited, and
/// the key is set.
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
        "VOLLEY_CACHE_SECRET_ENV",
        "VOLLEY_SHARED_LIMIT",
        "VOLLEY_SHARED_PREFIX",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Writes `n` chat lines with ids `{tag}-00001`...; returns the ids.
fn write_input(path: &Path, tag: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (1..=n).map(|i| format!("{tag}-{i:05}")).collect();
    let mut text = String::new();
    for id in &ids {
        let line = serde_json::json!({
            "custom_id": id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("say {id}")}], "max_tokens": 8},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    ids
}

/// The records of a JSONL file, complete lines only (a torn last line is left out).
fn records(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

/// Every id has exactly one outcome in `out`, and it is a success.
fn assert_one_success_each(out: &Path, ids: &[String]) {
    let recorded = records(out);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &recorded {
        let id = r["custom_id"].as_str().unwrap().to_owned();
        *seen.entry(id).or_default() += 1;
        assert_eq!(r["response"]["status_code"], 200, "{r}");
    }
    for id in ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} has {:?} outcomes",
            seen.get(id)
        );
    }
    assert_eq!(recorded.len(), ids.len());
}

/// A child that is killed when the test ends, however it ends.
struct Process {
    child: Child,
    stderr: PathBuf,
}

impl Process {
    fn spawn(cmd: &mut Command, stderr: PathBuf) -> Process {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Process { child, stderr }
    }

    /// Waits until `deadline`; kills the process and fails the test beyond.
    fn wait(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "volley run did not finish in time; its stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits for every run (a process, its output, its lines' ids) to exit 0 with one success a
/// line, and checks that the server answered each line once and never with a 429; returns
/// the server's statistics.
fn all_answered_without_429s(
    runs: &mut [(Process, PathBuf, Vec<String>)],
    deadline: Instant,
    server: &MockServer,
) -> volley_mock::Stats {
    for (process, out, ids) in runs.iter_mut() {
        let status = process.wait(deadline);
        assert_eq!(status.code(), Some(0), "{}", process.stderr());
        assert_one_success_each(out, ids);
    }
    let stats = server.stats();
    assert_eq!(
        stats.status_count(429),
        0,
        "{:?}",
        stats.responses_by_status
    );
    let lines: usize = runs.iter().map(|(_, _, ids)| ids.len()).sum();
    assert_eq!(stats.status_count(200), lines as u64);
    stats
}

/// The mock on a runtime of its own, answering after `latency` and limiting requests to 5 %
/// more than `rpm` a minute, so that "no 429" is about the sharing, not about clocks agreeing
/// to the millisecond; its burst is two seconds' worth: requests spaced correctly but bunched
/// up on the way by a pause on a loaded machine are not refused, unshared processes still
/// would be within a second. Keep the runtime as long as the server.
fn limited_mock(rpm: u32, latency: Duration) -> (tokio::runtime::Runtime, MockServer) {
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            latency: Latency::Fixed(latency),
            rate_limits: RateLimits {
                rpm: Some(rpm + rpm / 20),
                burst_requests: Some((rpm + rpm / 20) / 30),
                ..RateLimits::NONE
            },
            ..MockConfig::default()
        }))
        .unwrap();
    (rt, server)
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn four_processes_sharing_one_limit_get_no_429s() {
    let url = require_redis!();
    const RPM: u32 = 1_200;
    const PROCESSES: usize = 4;
    const LINES: usize = 60;
    let (rt, server) = limited_mock(RPM, Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("four");
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut runs = Vec::new();
    for p in 0..PROCESSES {
        let input = dir.path().join(format!("in-{p}.jsonl"));
        let out = dir.path().join(format!("out-{p}.jsonl"));
        let ids = write_input(&input, &format!("p{p}"), LINES);
        // Retries off: a 429 would be a failed line.
        let process = Process::spawn(
            volley(dir.path())
                .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
                .args(["--base-url", &server.url(), "--rpm", &RPM.to_string()])
                .args(["--max-retries", "0", "--concurrency", "16"])
                .args(["--shared-limit", &url, "--shared-prefix", &prefix]),
            dir.path().join(format!("stderr-{p}")),
        );
        runs.push((process, out, ids));
    }
    let stats = all_answered_without_429s(&mut runs, deadline, &server);
    // The four together never go above the limit past the first burst (5 % for the edges of
    // the timeline's buckets); how close to it they come is a benchmark's figure.
    let rate = steady_rate(&stats.timeline, 40);
    let limit = f64::from(RPM) / 60.0;
    println!("{rate:.2} requests/s against a limit of {limit}/s");
    assert!(
        rate <= 1.05 * limit,
        "{rate:.2} requests/s against a limit of {limit}/s"
    );
    rt.block_on(server.shutdown());
}

/// `--redis-cluster`: two processes, each given another node of a three-node Redis Cluster,
/// share one limit (no 429s, every line answered). Without the flag, the nodes that do not
/// hold the limit's slot refuse the run as a usage error that names the flag.
#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn runs_share_a_limit_through_a_redis_cluster() {
    let _url = require_redis!();
    const RPM: u32 = 600;
    const LINES: usize = 30;
    let cluster = volley_testkit::redis::RedisCluster::start(3);
    let seeds = cluster.urls();
    let (rt, server) = limited_mock(RPM, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("cluster");
    let deadline = Instant::now() + TEST_TIMEOUT;
    let run = |p: usize, seed: &str, cluster: bool| {
        let input = dir.path().join(format!("in-{p}.jsonl"));
        let out = dir.path().join(format!("out-{p}.jsonl"));
        let ids = write_input(&input, &format!("p{p}"), LINES);
        let mut command = volley(dir.path());
        command
            .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
            .args(["--base-url", &server.url(), "--rpm", &RPM.to_string()])
            .args(["--max-retries", "0", "--concurrency", "8"])
            .args(["--shared-limit", seed, "--shared-prefix", &prefix]);
        if cluster {
            command.arg("--redis-cluster");
        }
        let process = Process::spawn(&mut command, dir.path().join(format!("stderr-{p}")));
        (process, out, ids)
    };
    let mut runs = vec![run(0, &seeds[0], true), run(1, &seeds[2], true)];
    all_answered_without_429s(&mut runs, deadline, &server);

    // Without the flag: the limit's key lives on one node, and the other two say what to do.
    let mut refused = 0;
    for (n, seed) in seeds.iter().enumerate() {
        let (mut process, _, _) = run(10 + n, seed, false);
        let status = process.wait(deadline);
        let stderr = process.stderr();
        if status.code() == Some(2) {
            assert!(stderr.contains("--redis-cluster"), "{stderr}");
            refused += 1;
        } else {
            assert_eq!(status.code(), Some(0), "{stderr}");
        }
    }
    assert_eq!(refused, 2, "the nodes that do not hold the limit's slot");
    rt.block_on(server.shutdown());
}

/// Requests a second the server received from the end of the timeline bucket in which the
/// first `skip` had arrived to the start of the last bucket with an arrival: whole buckets
/// at both ends, so the count over the interval is exact.
fn steady_rate(timeline: &[TimelineBucket], skip: u64) -> f64 {
    let cumulative: Vec<u64> = timeline
        .iter()
        .scan(0, |sum, b| {
            *sum += b.started;
            Some(*sum)
        })
        .collect();
    let first = cumulative
        .iter()
        .position(|&c| c >= skip)
        .expect("more requests than the burst");
    let last = timeline
        .iter()
        .rposition(|b| b.started > 0)
        .expect("requests arrived");
    assert!(
        last > first + 10,
        "the steady part is too short: {timeline:?}"
    );
    let sent = cumulative[last - 1] - cumulative[first];
    let seconds = (timeline[last - 1].t_ms - timeline[first].t_ms) as f64 / 1000.0;
    sent as f64 / seconds
}

/// Kills Redis once the run is under way and restarts it on the same port `outage` later;
/// returns the outcomes recorded when Redis died and when it came back, and the run's
/// stderr. Asserts that the run completes with one success per line.
fn run_through_a_redis_outage(failure: &str, outage: Duration) -> (usize, usize, String) {
    const LINES: usize = 100;
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            latency: Latency::Fixed(Duration::from_millis(10)),
            ..MockConfig::default()
        }))
        .unwrap();
    let mut redis = RedisServer::start(None);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let ids = write_input(&input, "line", LINES);
    let deadline = Instant::now() + TEST_TIMEOUT;
    // 600 a minute: 10 a second, so the run lasts about 10 s without the outage. Requests
    // that have their send time when Redis dies keep it; with 4 slots, at most 4 have one.
    let mut process = Process::spawn(
        volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
            .args([
                "--base-url",
                &server.url(),
                "--rpm",
                "600",
                "--concurrency",
                "4",
            ])
            .args(["--shared-limit", &redis.url(), "--redis-failure", failure])
            .args(["--lease", "2"]),
        dir.path().join("stderr"),
    );
    while records(&out).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no progress: {}",
            process.stderr()
        );
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "finished early: {}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.kill();
    let at_kill = records(&out).len();
    std::thread::sleep(outage);
    let at_restart = records(&out).len();
    redis.restart();
    println!("{failure}: {at_kill} outcomes when Redis died, {at_restart} when it came back");
    let status = process.wait(deadline);
    let stderr = process.stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_one_success_each(&out, &ids);
    rt.block_on(server.shutdown());
    (at_kill, at_restart, stderr)
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn with_fail_closed_a_redis_outage_pauses_the_run_until_redis_is_back() {
    let _ = require_redis!();
    let (at_kill, at_restart, stderr) =
        run_through_a_redis_outage("fail-closed", Duration::from_secs(3));
    // What already had its send time (at most the 4 slots' requests, a lease of 2) may
    // finish, and outcomes are flushed up to 200 ms late (more on a loaded machine); nothing
    // new is sent while Redis is away. Without the pause the 3 s would have seen about 30.
    assert!(
        at_restart - at_kill <= 15,
        "{} outcomes while Redis was down: {stderr}",
        at_restart - at_kill
    );
}

#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn with_fallback_a_redis_outage_does_not_stop_the_run() {
    let _ = require_redis!();
    let (at_kill, at_restart, stderr) =
        run_through_a_redis_outage("fallback:1", Duration::from_secs(3));
    // Alone with the whole limit (1 process): about 10 a second go on while Redis is away
    // (measured: 40 to 43 in the 3 s, the burst included).
    assert!(
        at_restart - at_kill >= 10,
        "only {} outcomes while Redis was down: {stderr}",
        at_restart - at_kill
    );
}

/// A Redis cache with `--cache-secret-env` and a placeholder API key anyone could guess (a
/// local server's `EMPTY`): a second run with the same secret is answered from Redis, a run
/// with another secret or none is not (its entries do not authenticate), and the secret is
/// never shown.
#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn a_redis_cache_with_a_placeholder_key_is_shared_only_with_the_same_secret() {
    const SECRET: &str = "team-secret-4f1c9a";
    let url = require_redis!();
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let ids = write_input(&input, "s", 5);
    let prefix = unique_prefix("cache-secret");
    let run = |secret: Option<&str>, out: &str| {
        let mut cmd = volley(dir.path());
        cmd.env("OPENAI_API_KEY", "EMPTY")
            .args(["run", path_str(&input), "-o", out])
            .args(["--base-url", &server.url(), "--cache", &url])
            .args(["--shared-prefix", &prefix]);
        if let Some(secret) = secret {
            cmd.env("TEAM_CACHE_SECRET", secret)
                .args(["--cache-secret-env", "TEAM_CACHE_SECRET"]);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
        assert_one_success_each(&dir.path().join(out), &ids);
        rt.block_on(async { server.stats() }).requests_total
    };
    assert_eq!(run(Some(SECRET), "first.jsonl"), 5);
    assert_eq!(run(Some(SECRET), "same.jsonl"), 5, "answered from Redis");
    assert_eq!(run(Some("another"), "other.jsonl"), 10, "another secret");
    assert_eq!(run(None, "none.jsonl"), 15, "no secret");

    // The variable must be set; `--print-config` shows its name, never its value.
    let output = volley(dir.path())
        .args(["run", path_str(&input), "-o", "unset.jsonl"])
        .args(["--base-url", &server.url(), "--cache", &url])
        .args(["--cache-secret-env", "UNSET_CACHE_SECRET"])
        .env_remove("UNSET_CACHE_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("UNSET_CACHE_SECRET"), "{stderr}");
    assert_eq!(rt.block_on(async { server.stats() }).requests_total, 15);
    let output = volley(dir.path())
        .args(["run", "--print-config", "--cache", &url])
        .env("VOLLEY_CACHE_SECRET_ENV", "TEAM_CACHE_SECRET")
        .env("TEAM_CACHE_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    assert!(
        stdout.contains("TEAM_CACHE_SECRET") && stdout.contains("$VOLLEY_CACHE_SECRET_ENV"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET), "{stdout}");
    rt.block_on(server.shutdown());
}

#[test]
fn print_config_shows_the_shared_settings_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nrpm = 600\nshared_prefix = \"prod\"\nlease = 4\nredis_failure = \"fallback:3\"\n",
    )
    .unwrap();
    let output = volley(dir.path())
        .args(["run", "--print-config"])
        .args(["--shared-limit", "redis://:hunter2@127.0.0.1:6379/2"])
        .args(["--cache", "redis://user:hunter2@127.0.0.1:6379"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let row = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("shared_limit"),
        "shared_limit redis://***@127.0.0.1:6379/2 (flag --shared-limit)"
    );
    assert_eq!(
        row("cache"),
        "cache redis://***@127.0.0.1:6379 (flag --cache)"
    );
    assert_eq!(
        row("shared_prefix"),
        "shared_prefix prod (volley.toml [default])"
    );
    assert_eq!(row("lease"), "lease 4 (volley.toml [default])");
    assert_eq!(
        row("redis_failure"),
        "redis_failure fallback:3 (volley.toml [default])"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));

    // The environment variable works too, and bad values are refused without the password.
    let output = volley(dir.path())
        .args(["run", "--print-config"])
        .env("VOLLEY_SHARED_LIMIT", "redis://:hunter2@127.0.0.1:7000")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("redis://***@127.0.0.1:7000") && stdout.contains("$VOLLEY_SHARED_LIMIT"),
        "{stdout}"
    );
    for (flag, value) in [
        ("--shared-limit", "http://:hunter2@127.0.0.1:6379"),
        ("--cache", "redis:/:hunter2@127.0.0.1"),
    ] {
        let output = volley(dir.path())
            .args(["run", "--print-config", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// A `rediss://` Redis whose certificate a private CA signed, for the shared limit and the
/// cache: refused under the operating system's roots, used with `--redis-ca-cert`.
#[ignore = "needs Redis: REDIS_URL"]
#[test]
fn rediss_with_a_private_ca_takes_redis_ca_cert() {
    let _ = require_redis!();
    let pki = volley_testkit::tls::TestPki::new("cli-redis");
    let redis = RedisServer::start_tls(&pki);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let ids = write_input(&input, "t", 3);
    let prefix = unique_prefix("rediss");
    let run = |extra: &[&str], out: &str| {
        let done = volley_testkit::process::run_bounded(
            volley(dir.path())
                .args(["run", path_str(&input), "-o", out, "--mock", "--rpm", "600"])
                .args(["--shared-limit", &redis.url(), "--cache", &redis.url()])
                .args(["--shared-prefix", &prefix])
                .args(extra),
            TEST_TIMEOUT,
        );
        (done.status.code(), done.stderr)
    };
    let (code, stderr) = run(&[], "untrusted.jsonl");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Redis is not reachable"), "{stderr}");
    let (code, stderr) = run(&["--redis-ca-cert", "missing.pem"], "missing.jsonl");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("reading --redis-ca-cert missing.pem"),
        "{stderr}"
    );
    let ca = pki.ca_file();
    let (code, stderr) = run(&["--redis-ca-cert", path_str(&ca)], "out.jsonl");
    assert_eq!(code, Some(0), "{stderr}");
    assert_one_success_each(&dir.path().join("out.jsonl"), &ids);
}

#[test]
fn an_unreachable_redis_fails_the_run_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_input(&input, "x", 3);
    // Nothing listens on port 1.
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut process = Process::spawn(
        volley(dir.path())
            .args([
                "run",
                path_str(&input),
                "-o",
                "out.jsonl",
                "--mock",
                "--rpm",
                "60",
            ])
            .args(["--shared-limit", "redis://:hunter2@127.0.0.1:1"]),
        dir.path().join("stderr"),
    );
    let status = process.wait(deadline);
    let stderr = process.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("redis://***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(records(&dir.path().join("out.jsonl")).is_empty());
}

/// With `VOLLEY_REQUIRE_REDIS=1`, the ignored tests above must have been asked for.
#[test]
fn redis_tests_run_when_required() {
    // The binary always has Redis: volley-cli turns on volley's `redis` feature.
    volley_testkit::redis::assert_required_tests_run("volley-cli", true);
}
