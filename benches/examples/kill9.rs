//! How many answered requests `volley run` sends again after `kill -9` and after SIGTERM, as a
//! user would measure it: the real binary against an in-process mock whose journal records
//! each request's arrival and the moment its answer was completely written.
//!
//! ```text
//! cargo build --release -p volley-cli
//! cargo run --release -p volley-benches --example kill9 -- target/release/volley [--ordered] [--fsync always]
//! ```
//!
//! Defaults follow the issue: concurrency 512, 100 ms per answer (about 5 000 answers per
//! second), 60 000 lines, three kills 1.5 s into each run, then a run to the end; then a
//! SIGTERM 1.5 s in and a resume. For each stop it prints the answered requests that were sent
//! again: ids answered before the stop that arrive again after it. Bounded: every run is
//! killed after 120 s, and only 127.0.0.1 receives load. Extra arguments after the binary go
//! to `volley run` (`--ordered`, `--fsync always`).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use volley_mock::{Latency, MockConfig, MockServer};

const LINES: usize = 60_000;
const CONCURRENCY: &str = "512";
const LATENCY: Duration = Duration::from_millis(100);
const STOP_AFTER: Duration = Duration::from_millis(1_500);
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: kill9 <path to volley> [extra volley run flags]");
    let extra: Vec<String> = args.collect();
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            latency: Latency::Fixed(LATENCY),
            journal: true,
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_input(&input);
    let command = || {
        let mut cmd = Command::new(&bin);
        cmd.args([
            "run",
            path(&input),
            "-o",
            path(&out),
            "--base-url",
            &server.url(),
        ])
        .args(["--concurrency", CONCURRENCY, "--quiet"])
        .args(&extra)
        .env("OPENAI_API_KEY", "sk-bench")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        cmd
    };

    println!(
        "volley run {bin} {}: {LINES} lines, concurrency {CONCURRENCY}, {LATENCY:?} per answer",
        extra.join(" ")
    );
    let mut stops = Vec::new();
    for signal in ["KILL", "KILL", "KILL", "TERM"] {
        let mut child = command().spawn().unwrap();
        std::thread::sleep(STOP_AFTER);
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        let started = Instant::now();
        if signal == "KILL" {
            // At once: answers the mock completes after the kill count as answered before it
            // if the snapshot is late, which would only overstate what is sent again.
            child.kill().unwrap();
            child.wait().unwrap();
        } else {
            send(&child, signal);
            wait(&mut child);
        }
        let waited = started.elapsed();
        // A stop's snapshot: every id answered so far, and where arrivals after it begin.
        stops.push((signal, server.answered(), server.journal().len(), waited));
        // After SIGTERM, the resume below is the run that may send again.
    }
    let mut child = command().spawn().unwrap();
    assert!(wait(&mut child), "the last run did not finish cleanly");

    let journal = server.journal();
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    let mut total = 0;
    for (k, (signal, answered, from, waited)) in stops.iter().enumerate() {
        let until = stops.get(k + 1).map_or(journal.len(), |s| s.2);
        let answered: HashSet<&String> = answered.iter().collect();
        let resent = journal[*from..until]
            .iter()
            .filter(|id| answered.contains(id))
            .count();
        total += resent;
        println!(
            "stop {} (SIG{signal}, exit after {waited:.1?}): {} answered so far, {resent} of them sent again",
            k + 1,
            answered.len()
        );
    }
    println!(
        "in all: {} requests for {LINES} lines ({lines} recorded), {total} answered requests sent again",
        journal.len()
    );
    drop(server);
}

fn write_input(path: &Path) {
    let mut text = String::with_capacity(LINES * 170);
    for i in 0..LINES {
        text.push_str(&format!(
            r#"{{"custom_id":"id-{i:06}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"say {i}"}}],"max_tokens":8}}}}"#
        ));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn send(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits up to [`RUN_LIMIT`]; whether the run succeeded.
fn wait(child: &mut Child) -> bool {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a run took more than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
