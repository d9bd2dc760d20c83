//! `volley run`, run as a user would: the real binary as a child process, against an
//! in-process mock server (or its own `--mock`).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use volley_mock::{Latency, MockConfig, MockServer};

/// The longest any child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/batch.jsonl");

/// The binary with a clean environment: none of the variables it reads are inherited.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for name in [
        "OPENAI_API_KEY",
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
        "VOLLEY_ALLOW_PLAIN_HTTP",
        "VOLLEY_SHARED_PREFIX",
        "VOLLEY_LEASE",
        "VOLLEY_REDIS_FAILURE",
        "VOLLEY_API_KEY",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

fn chat_line(id: &str) -> String {
    serde_json::json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("say {id}")}], "max_tokens": 8},
    })
    .to_string()
}

fn write_chat_input(path: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (1..=n).map(|i| format!("id-{i:05}")).collect();
    let mut text = String::with_capacity(n * 160);
    for id in &ids {
        text.push_str(&chat_line(id));
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
        .map(|line| {
            serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "a complete output line is not JSON ({e}): {}",
                    String::from_utf8_lossy(line)
                )
            })
        })
        .collect()
}

fn custom_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["custom_id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for `child` up to [`CHILD_TIMEOUT`]; kills it and fails the test beyond.
fn wait(child: &mut Child) -> ExitStatus {
    volley_testkit::process::wait_bounded(child, CHILD_TIMEOUT)
}

/// Runs to completion with stdout and stderr captured, bounded in time.
fn output(cmd: &mut Command) -> (ExitStatus, String, String) {
    let done = volley_testkit::process::run_bounded(cmd, CHILD_TIMEOUT);
    (done.status, done.stdout, done.stderr)
}

/// Waits (bounded) until the run has written its first outcome, then sends it `signal`.
fn signal_once_output_appears(child: &mut Child, out: &Path, signal: &str) {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while std::fs::metadata(out).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no output");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_example_runs_against_the_embedded_mock() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (status, _, stderr) =
        output(volley(dir.path()).args(["run", EXAMPLE, "-o", path_str(&out), "--mock"]));
    assert_eq!(status.code(), Some(0), "{stderr}");
    let input_lines = std::fs::read_to_string(EXAMPLE).unwrap().lines().count();
    assert!(input_lines >= 150, "the example has {input_lines} lines");
    let recorded = records(&out);
    assert_eq!(recorded.len(), input_lines);
    let ids = custom_ids(&recorded);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), input_lines);
    for r in &recorded {
        assert_eq!(r["response"]["status_code"], 200, "{r}");
    }
    assert!(
        recorded
            .iter()
            .any(|r| r["response"]["body"]["object"] == "list"),
        "the embeddings lines got embeddings"
    );
    // The summary: outcomes, retries, tokens, wall time, mean in flight.
    for needle in ["succeeded", "retries", "tokens", "in flight"] {
        assert!(stderr.contains(needle), "summary lacks {needle}: {stderr}");
    }
    // No errors: the errors file, if created, is empty.
    let errors = dir.path().join("out.errors.jsonl");
    assert!(records(&errors).is_empty());

    // A second run finds everything done and sends nothing.
    let (status, _, stderr) =
        output(volley(dir.path()).args(["run", EXAMPLE, "-o", path_str(&out), "--mock"]));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(records(&out).len(), input_lines);
    assert!(
        stderr.contains(&format!("{input_lines} skipped")),
        "{stderr}"
    );
}

/// `kill -9` three times mid-run, then run until done: every `custom_id` exactly once, no
/// request whose outcome was on disk at a kill was sent again after it, and of the requests
/// the mock had answered before a kill, only those answered in its last moments were sent
/// again (their outcomes were on their way to the file).
#[test]
fn kill_9_and_resume_loses_nothing_and_resends_nothing_recorded() {
    kill_9_and_resume(false);
}

/// The same in input order: outcomes held back for order are paid for too, and are kept in
/// the holding file while they wait.
#[test]
fn kill_9_and_resume_in_ordered_mode_loses_nothing_held_back() {
    kill_9_and_resume(true);
}

fn kill_9_and_resume(ordered: bool) {
    const LINES: usize = 3_000;
    const CONCURRENCY: usize = 64;
    const KILL_AFTER: usize = 600;
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            // 30 ms on average; varied in ordered mode, so that outcomes wait for order.
            latency: if ordered {
                "uniform:10ms..50ms".parse().unwrap()
            } else {
                Latency::Fixed(Duration::from_millis(30))
            },
            journal: true,
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let ids = write_chat_input(&input, LINES);
    let command = || {
        let mut cmd = volley(dir.path());
        cmd.args([
            "run",
            path_str(&input),
            "-o",
            path_str(&out),
            "--base-url",
            &server.url(),
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--quiet",
        ])
        .args(ordered.then_some("--ordered"))
        .env("OPENAI_API_KEY", "sk-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        cmd
    };

    // (journal position, ids recorded on disk, ids answered) at each kill.
    let mut kills: Vec<(usize, HashSet<String>, HashSet<String>)> = Vec::new();
    for _ in 0..3 {
        // Killed once the mock has answered KILL_AFTER more requests: a count, so the kill
        // falls mid-stream whatever the machine's speed, well after the first write (a
        // writer that holds outcomes back for a few hundred milliseconds loses hundreds).
        let answered_before = server.answered().len();
        let mut child = command().spawn().unwrap();
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the run ended ({status}) before it could be killed");
            }
            if server.answered().len() >= answered_before + KILL_AFTER {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no output within {CHILD_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What is on disk now is what a resume will read. A request of the dead child still
        // in a socket buffer may reach the journal after `position`; it cannot be for an id
        // recorded here (an outcome is written after a request's last attempt), so the
        // check below stays sound.
        let position = server.journal().len();
        let recorded: HashSet<String> = custom_ids(&records(&out)).into_iter().collect();
        let answered: HashSet<String> = server.answered().into_iter().collect();
        kills.push((position, recorded, answered));
    }

    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 5, "no clean finish in 5 runs");
        let mut child = command().spawn().unwrap();
        if wait(&mut child).success() {
            break;
        }
    }

    let final_ids = custom_ids(&records(&out));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &final_ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    assert_eq!(final_ids.len(), LINES);
    for id in &ids {
        assert!(counts.contains_key(id.as_str()), "{id} has no outcome");
    }

    let journal = server.journal();
    for (k, (position, recorded, answered)) in kills.iter().enumerate() {
        assert!(!recorded.is_empty(), "kill {k} happened after some output");
        let resent: Vec<&String> = journal[*position..]
            .iter()
            .filter(|id| recorded.contains(*id))
            .collect();
        assert!(
            resent.is_empty(),
            "after kill {k}, {} requests already recorded were sent again, e.g. {:?}",
            resent.len(),
            &resent[..resent.len().min(5)]
        );
        // Paid for twice: answered before the kill, sent again after it. Each outcome is
        // written as soon as it arrives, so only the answers of the last moments before the
        // kill can be missing from the file. The bound is a count scaled to the answer rate:
        // with CONCURRENCY requests in flight and 30 ms per answer, CONCURRENCY answers arrive
        // every 30 ms; twice that leaves room for a writer the loaded machine held back for
        // one more answer time. (An outcome held in a batch of 200 ms, as the writer once did,
        // loses about 400 per kill.)
        let answered_again: HashSet<&String> = journal[*position..]
            .iter()
            .filter(|id| answered.contains(*id))
            .collect();
        println!(
            "kill {k}: {} answered requests sent again",
            answered_again.len()
        );
        assert!(
            answered_again.len() <= 2 * CONCURRENCY,
            "after kill {k}, {} answered requests were sent again (bound {})",
            answered_again.len(),
            2 * CONCURRENCY
        );
    }
    // Every request carried its custom_id, and lines never recorded were sent again: the
    // journal holds each id at least once.
    let sent: HashSet<&String> = journal.iter().collect();
    assert!(ids.iter().all(|id| sent.contains(id)));
    drop(server);
    drop(rt);
}

#[test]
fn bad_lines_get_error_records_with_line_numbers_and_the_rest_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let out = dir.path().join("out.jsonl");
    let mut file = std::fs::File::create(&input).unwrap();
    let mut bad_lines = Vec::new();
    let mut good = 0;
    let mut line = 0;
    let mut push = |file: &mut std::fs::File, bytes: &[u8], is_bad: bool| {
        file.write_all(bytes).unwrap();
        file.write_all(b"\n").unwrap();
        line += 1;
        if is_bad {
            bad_lines.push(line);
        } else {
            good += 1;
        }
    };
    push(&mut file, chat_line("good-1").as_bytes(), false);
    push(&mut file, b"{not json", true);
    push(
        &mut file,
        br#"{"method":"POST","url":"/v1/chat/completions","body":{}}"#,
        true,
    );
    push(
        &mut file,
        br#"{"custom_id":7,"method":"POST","url":"/v1/chat/completions","body":{}}"#,
        true,
    );
    push(&mut file, chat_line("good-2").as_bytes(), false);
    push(&mut file, chat_line("good-1").as_bytes(), true); // duplicate custom_id
    push(
        &mut file,
        br#"{"custom_id":"x","method":"POST","url":"/v1/nowhere","body":{}}"#,
        true,
    );
    push(&mut file, b"{\"custom_id\":\"\xff\xfe\"}", true); // invalid UTF-8
    let mut long = chat_line("too-long").into_bytes();
    long.truncate(long.len() - 1);
    long.extend(std::iter::repeat_n(b' ', 11 * 1024 * 1024));
    long.push(b'}');
    push(&mut file, &long, true);
    push(&mut file, chat_line("good-3").as_bytes(), false);
    drop(file);

    let (status, _, stderr) =
        output(volley(dir.path()).args(["run", path_str(&input), "-o", path_str(&out), "--mock"]));
    assert_eq!(status.code(), Some(1), "{stderr}");
    let recorded = records(&out);
    assert_eq!(recorded.len(), line, "one outcome per line");
    let ok: Vec<_> = recorded
        .iter()
        .filter(|r| r["response"]["status_code"] == 200)
        .collect();
    assert_eq!(ok.len(), good);
    let mut error_lines: Vec<u64> = recorded
        .iter()
        .filter(|r| !r["error"].is_null())
        .map(|r| {
            let message = r["error"]["message"].as_str().unwrap_or_default();
            let n = r["line"]
                .as_u64()
                .unwrap_or_else(|| panic!("no line in {r}"));
            assert!(message.contains(&format!("line {n}")), "{r}");
            n
        })
        .collect();
    error_lines.sort_unstable();
    assert_eq!(
        error_lines,
        bad_lines.iter().map(|&n| n as u64).collect::<Vec<_>>()
    );
    // The errors file has them too.
    let errors = records(&dir.path().join("out.errors.jsonl"));
    assert_eq!(errors.len(), bad_lines.len());

    // --validate finds the same lines without sending anything.
    let (status, stdout, stderr) =
        output(volley(dir.path()).args(["run", path_str(&input), "--validate"]));
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{} invalid", bad_lines.len())),
        "{stdout}"
    );
    for n in &bad_lines {
        assert!(
            stdout.contains(&format!("line {n}")),
            "{stdout} lacks line {n}"
        );
    }
    let (status, stdout, stderr) = output(volley(dir.path()).args(["run", EXAMPLE, "--validate"]));
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("0 invalid"), "{stdout}");

    // A model's name with an escape sequence (OSC 52 sets the clipboard) or a line break is
    // printed escaped, on its one line.
    let hostile = dir.path().join("hostile.jsonl");
    let line = |id: &str, model: &str| {
        serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}})
        .to_string()
    };
    std::fs::write(
        &hostile,
        format!(
            "{}\n{}\n",
            line("a", "m"),
            line("b", "x\u{1b}]52;c;cHduZWQ=\u{7}\nnote: forged")
        ),
    )
    .unwrap();
    let (status, stdout, stderr) =
        output(volley(dir.path()).args(["run", path_str(&hostile), "--validate"]));
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 models"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("note: forged")),
        "{stdout:?}"
    );
}

#[test]
fn flags_beat_environment_beat_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nconcurrency = 5\nrpm = 100\n\n[profile.slow]\nconcurrency = 2\ntimeout = \"20m\"\n",
    )
    .unwrap();
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = volley(dir.path());
        cmd.args(["run", "--print-config"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (status, stdout, stderr) = output(&mut cmd);
        assert!(status.success(), "{stderr}");
        stdout
    };
    let row = |text: &str, name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = print(&["--concurrency", "9"], &[("VOLLEY_CONCURRENCY", "7")]);
    assert_eq!(
        row(&text, "concurrency"),
        "concurrency 9 (flag --concurrency)"
    );
    assert_eq!(row(&text, "rpm"), "rpm 100 (volley.toml [default])");
    let text = print(&[], &[("VOLLEY_CONCURRENCY", "7")]);
    assert_eq!(
        row(&text, "concurrency"),
        "concurrency 7 ($VOLLEY_CONCURRENCY)"
    );
    let text = print(&[], &[]);
    assert_eq!(
        row(&text, "concurrency"),
        "concurrency 5 (volley.toml [default])"
    );
    let text = print(&["--profile", "slow"], &[]);
    assert_eq!(
        row(&text, "concurrency"),
        "concurrency 2 (volley.toml [profile.slow])"
    );
    assert_eq!(
        row(&text, "timeout"),
        "timeout 20m (volley.toml [profile.slow])"
    );
    // A profile is used alone: [default]'s rpm does not reach [profile.slow].
    // Not given: learned from the provider's headers.
    assert_eq!(row(&text, "rpm"), "rpm auto (default)");

    // The run itself says what it uses.
    let out = dir.path().join("out.jsonl");
    let (status, _, stderr) = output(
        volley(dir.path())
            .args(["run", EXAMPLE, "-o", path_str(&out), "--mock"])
            // 0 turns off the profile's rpm = 100, which would make this run take minutes.
            .args(["--concurrency", "9", "--rpm", "0"])
            .env("VOLLEY_CONCURRENCY", "7"),
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("concurrency 9, rpm off,"), "{stderr}");
    assert!(
        stderr.contains("of 9"),
        "the summary names the concurrency: {stderr}"
    );
}

#[test]
fn configuration_mistakes_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let run = |toml: Option<&str>, extra: &[&str], env: &[(&str, &str)]| {
        if let Some(toml) = toml {
            std::fs::write(dir.path().join("volley.toml"), toml).unwrap();
        }
        let mut cmd = volley(dir.path());
        cmd.args(["run", EXAMPLE, "-o", path_str(&out)]).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (status, _, stderr) = output(&mut cmd);
        (status.code(), stderr)
    };
    let (code, stderr) = run(
        Some("[default]\napi_key = \"sk-in-file-123\"\n"),
        &["--mock"],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("api_key_env"), "{stderr}");
    assert!(!stderr.contains("sk-in-file-123"), "{stderr}");
    let (code, stderr) = run(Some("[default]\nconcurency = 3\n"), &["--mock"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`concurency`"), "{stderr}");
    std::fs::remove_file(dir.path().join("volley.toml")).unwrap();
    let (code, stderr) = run(None, &[], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OPENAI_API_KEY") && stderr.contains("--mock"),
        "{stderr}"
    );
    let (code, stderr) = run(None, &["--mock"], &[("VOLLEY_RPM", "lots")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("VOLLEY_RPM"), "{stderr}");
    let (code, stderr) = run(None, &["--mock", "--profile", "prod"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("volley.toml"), "{stderr}");
    // clap's own usage errors.
    let (code, stderr) = run(None, &["--mock", "--concurrency", "0"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!out.exists(), "nothing was run");
}

/// The size limits are settings: an answer above --max-body-size is a body_decode failure
/// (and one below it a success), a line above --max-line-size a line_too_long record, for the
/// run and for --validate alike; a size that is not one is a usage error.
#[test]
fn size_limits_are_settings() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let long = serde_json::json!({
        "custom_id": "long",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(2000)}], "max_tokens": 8},
    })
    .to_string();
    std::fs::write(&input, format!("{}\n{long}\n", chat_line("short"))).unwrap();
    let run = |extra: &[&str], out: &str| {
        let (status, _, stderr) = output(
            volley(dir.path())
                .args(["run", path_str(&input), "-o", out, "--mock", "--quiet"])
                .args(extra),
        );
        (status, stderr, records(&dir.path().join(out)))
    };
    let code = |r: &Value| r["error"]["code"].as_str().map(str::to_owned);
    let (status, stderr, out) = run(&[], "all.jsonl");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(out.len(), 2);

    let (status, _, out) = run(&["--max-line-size", "1KiB"], "lines.jsonl");
    assert_eq!(status.code(), Some(1));
    let codes: Vec<_> = out.iter().map(code).collect();
    assert!(codes.contains(&None), "{out:?}");
    assert!(codes.contains(&Some("line_too_long".into())), "{out:?}");
    let (_, stdout, _) = output(volley(dir.path()).args([
        "run",
        path_str(&input),
        "--validate",
        "--max-line-size",
        "1KiB",
    ]));
    assert!(stdout.contains("1 valid, 1 invalid"), "{stdout}");

    let (status, _, out) = run(&["--max-body-size", "100B"], "bodies.jsonl");
    assert_eq!(status.code(), Some(1));
    assert!(
        out.iter()
            .all(|r| code(r).as_deref() == Some("body_decode")),
        "{out:?}"
    );

    let (status, stderr, _) = run(&["--max-buffered-size", "lots"], "bad.jsonl");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a size"), "{stderr}");
}

/// The default errors file of a run whose output was then deleted holds that run's failures:
/// a new run beside it is refused (exit 2), creating nothing, rather than mixing them with its
/// own, however often it is tried. An output that exists, even empty, resumes; an errors file
/// named with --errors may be shared between runs.
#[test]
fn an_earlier_runs_errors_file_is_not_appended_to_by_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, 3);
    let errors = dir.path().join("out.errors.jsonl");
    let old = "{\"id\":\"batch_req_0\",\"custom_id\":\"old\",\"response\":null,\"error\":{\"code\":\"timeout\",\"message\":\"m\"}}\n";
    std::fs::write(&errors, old).unwrap();
    let run = |extra: &[&str]| {
        output(
            volley(dir.path())
                .args([
                    "run",
                    path_str(&input),
                    "-o",
                    "out.jsonl",
                    "--mock",
                    "--quiet",
                ])
                .args(extra),
        )
    };
    for _ in 0..2 {
        let (status, _, stderr) = run(&[]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("earlier run"), "{stderr}");
        assert!(!dir.path().join("out.jsonl").exists(), "nothing created");
        assert_eq!(std::fs::read_to_string(&errors).unwrap(), old);
    }
    let (status, _, stderr) = run(&["--errors", path_str(&errors)]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(records(&dir.path().join("out.jsonl")).len(), 3);
    std::fs::remove_file(dir.path().join("out.jsonl")).unwrap();
    std::fs::write(dir.path().join("out.jsonl"), b"").unwrap();
    let (status, _, stderr) = run(&[]);
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn help_lists_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, _) = output(volley(dir.path()).args(["run", "--help"]));
    assert!(status.success());
    for flag in [
        "--output",
        "-o",
        "--errors",
        "--base-url",
        "--concurrency",
        "--rpm",
        "--tpm",
        "--max-retries",
        "--timeout",
        "--cache",
        "--mock",
        "--quiet",
        "--ordered",
        "--validate",
        "--api-key-env",
        "--profile",
        "--config",
        "--metrics-addr",
        "--grace",
        "--mock-latency",
        "--mock-faults",
        "--retry-failed",
        "--reorder-window",
        "--max-body-size",
        "--max-buffered-size",
        "--max-line-size",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/responses",
        "/v1/moderations",
        "143",
        "INPUT",
        "Exit codes",
        ".errors.jsonl",
    ] {
        assert!(stdout.contains(flag), "run --help lacks {flag}:\n{stdout}");
    }
    let (_, stdout, _) = output(volley(dir.path()).args(["--help"]));
    assert!(stdout.contains("run"), "{stdout}");
}

#[test]
fn the_key_never_appears_in_outputs_or_stderr() {
    const KEY: &str = "sk-volley-test-SECRET-4242";
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            require_api_key: Some(KEY.to_owned()),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, 50);
    let files = |name: &str| {
        let out = dir.path().join(format!("{name}.jsonl"));
        let errors = dir.path().join(format!("{name}.errors.jsonl"));
        (out, errors)
    };

    // The right key, from a variable named by --api-key-env: everything succeeds.
    let (out, errors) = files("good");
    let (status, stdout, stderr) = output(
        volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out)])
            .args([
                "--base-url",
                &server.url(),
                "--api-key-env",
                "MY_VOLLEY_KEY",
            ])
            .env("MY_VOLLEY_KEY", KEY)
            .env("RUST_LOG", "trace"),
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(records(&out).len(), 50);
    for text in [stdout, stderr, std::fs::read_to_string(&out).unwrap()] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
    assert!(!errors.exists() || !std::fs::read_to_string(&errors).unwrap().contains(KEY));

    // A wrong key: every line fails with the provider's 401, and neither key shows.
    let (out, errors) = files("bad");
    let wrong = format!("{KEY}-wrong");
    let (status, stdout, stderr) = output(
        volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out)])
            .args(["--base-url", &server.url(), "--print-config"])
            .env("OPENAI_API_KEY", &wrong),
    );
    assert!(status.success());
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "{stdout}{stderr}"
    );
    let (status, stdout, stderr) = output(
        volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out)])
            .args(["--base-url", &server.url()])
            .env("OPENAI_API_KEY", &wrong)
            .env("RUST_LOG", "debug"),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rejected the credentials (HTTP 401)"),
        "{stderr}"
    );
    let recorded = records(&out);
    assert!(!recorded.is_empty() && recorded.len() <= 50);
    assert!(recorded.iter().all(|r| r["response"]["status_code"] == 401));
    for text in [
        stdout,
        stderr,
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&errors).unwrap(),
    ] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
    drop(server);
    drop(rt);
}

/// The runtime the mock runs on (dropped after it), the mock, and a directory with chat lines
/// in `in.jsonl`, and where `out.jsonl` goes.
type MockAndInput = (
    tokio::runtime::Runtime,
    MockServer,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
);

/// A mock answering after 100 ms, and `lines` chat lines (see [`MockAndInput`]).
fn slow_mock_and_input(lines: usize) -> MockAndInput {
    mock_and_input(
        MockConfig {
            latency: Latency::Fixed(Duration::from_millis(100)),
            ..MockConfig::default()
        },
        lines,
    )
}

/// A mock of `config`, and `lines` chat lines (see [`MockAndInput`]).
fn mock_and_input(config: MockConfig, lines: usize) -> MockAndInput {
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt.block_on(MockServer::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_chat_input(&input, lines);
    (rt, server, dir, input, out)
}

#[test]
fn ctrl_c_stops_with_130_and_the_same_command_resumes() {
    const LINES: usize = 800;
    let (rt, server, dir, input, out) = slow_mock_and_input(LINES);
    let stderr_path = dir.path().join("stderr");
    let command = || {
        let mut cmd = volley(dir.path());
        cmd.args(["run", path_str(&input), "-o", path_str(&out)])
            .args([
                "--base-url",
                &server.url(),
                "--concurrency",
                "32",
                "--grace",
                "2s",
            ])
            .env("OPENAI_API_KEY", "sk-test")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        cmd
    };
    let mut child = command().spawn().unwrap();
    signal_once_output_appears(&mut child, &out, "INT");
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted:") && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    let partial = records(&out).len();
    assert!(partial > 0 && partial < LINES, "{partial}");

    let mut child = command().spawn().unwrap();
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let ids = custom_ids(&records(&out));
    assert_eq!(ids.len(), LINES);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), LINES);
    drop(server);
    drop(rt);
}

/// A second Ctrl-C ends the grace period at once, and the run still writes what it received
/// and prints its summary; half the requests stall, so the grace period alone would last the
/// whole 10 minutes.
#[test]
fn a_second_ctrl_c_stops_at_once_and_keeps_the_outcomes() {
    const LINES: usize = 400;
    let (rt, server, dir, input, out) = mock_and_input(
        MockConfig {
            latency: Latency::Fixed(Duration::from_millis(20)),
            faults: "stall=0.5".parse().unwrap(),
            ..MockConfig::default()
        },
        LINES,
    );
    let stderr_path = dir.path().join("stderr");
    let mut child = volley(dir.path())
        .args(["run", path_str(&input), "-o", path_str(&out)])
        .args(["--base-url", &server.url(), "--concurrency", "16"])
        .args(["--grace", "10m", "--max-retries", "0"])
        .env("OPENAI_API_KEY", "sk-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    signal_once_output_appears(&mut child, &out, "INT");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while !std::fs::read_to_string(&stderr_path)
        .unwrap()
        .contains("stopping;")
    {
        assert!(Instant::now() < deadline, "no notice of the first Ctrl-C");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping now"), "{stderr}");
    // The summary is printed, so the writer finished: the run did not just exit.
    assert!(stderr.contains("interrupted:"), "{stderr}");
    assert!(
        stderr.contains(
            "requests cancelled in flight: sent again on resume (those already sent may be \
             billed twice)"
        ),
        "{stderr}"
    );
    let written = records(&out);
    assert!(
        !written.is_empty() && written.len() < LINES,
        "{}",
        written.len()
    );
    assert!(
        written.iter().all(|r| r["response"]["status_code"] == 200),
        "a cancelled request left no record"
    );
    drop(server);
    drop(rt);
}

#[test]
fn stdin_input_and_ordered_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (status, _, stderr) = output(
        volley(dir.path())
            .args(["run", "-", "-o", path_str(&out), "--mock", "--ordered"])
            // Varied latencies finish requests out of order; the output must not be.
            .args(["--mock-latency", "uniform:1ms..40ms", "--concurrency", "32"])
            .stdin(std::fs::File::open(EXAMPLE).unwrap()),
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    let expected: Vec<String> = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(custom_ids(&records(&out)), expected);
}

#[test]
fn metrics_are_served_in_prometheus_format_during_a_run() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let mut child = volley(dir.path())
        .args(["run", EXAMPLE, "-o", path_str(&out), "--mock", "--quiet"])
        .args(["--mock-latency", "100ms", "--concurrency", "10"])
        .args(["--metrics-addr", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let scrape = || {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        if let Some(text) = scrape()
            && text.contains("volley_request_duration_seconds_bucket")
        {
            seen = Some(text);
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = seen.expect("metrics were served");
    // Histograms with buckets (not summaries) for both latencies.
    assert!(
        text.contains("volley_time_to_first_byte_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("le=\"0.25\""), "{text}");
    assert!(text.contains("volley_requests_total"), "{text}");
    // None is rendered as a summary (quantiles cannot be added up across processes).
    assert!(
        !text.contains(" summary") && !text.contains("quantile="),
        "{text}"
    );
    assert!(wait(&mut child).success());
}

#[test]
fn the_mock_journal_is_served_and_reset() {
    use std::io::{Read, Write};
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            journal: true,
            ..MockConfig::default()
        }))
        .unwrap();
    let addr = server.addr();
    let http = |request: String| {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    };
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for id in ["first", "second"] {
        let response = http(format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             X-Client-Request-Id: {id}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    assert_eq!(server.journal(), ["first", "second"]);
    let response = http("GET /journal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert!(response.ends_with(r#"["first","second"]"#), "{response}");
    http(
        "POST /stats/reset HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            .into(),
    );
    assert!(server.journal().is_empty());
    drop(server);
    drop(rt);
}

/// A provider answering 30% of requests with 429: with five retries and no retry budget,
/// essentially every line succeeds.
#[test]
fn transient_429s_do_not_become_failures() {
    const LINES: usize = 2_000;
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            faults: "429=0.3".parse().unwrap(),
            retry_after: Duration::from_millis(5),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_chat_input(&input, LINES);
    let (status, _, stderr) = output(
        volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out), "--quiet"])
            .args(["--base-url", &server.url(), "--max-retries", "5"])
            .env("OPENAI_API_KEY", "sk-test"),
    );
    let recorded = records(&out);
    assert_eq!(recorded.len(), LINES, "{stderr}");
    let failed = recorded
        .iter()
        .filter(|r| r["response"]["status_code"] != 200)
        .count();
    assert!(failed <= LINES / 100, "{failed} failed: {stderr}");
    assert!(status.code() == Some(0) || failed > 0, "{stderr}");
    assert!(server.stats().faults.total() > 300);
    drop(server);
    drop(rt);
}

/// `--retry-on unbilled` sends a line once when its answer is a 500 (the provider may have
/// done and billed the work); the default, `failures`, sends it again.
#[test]
fn retry_on_unbilled_does_not_send_a_500_again() {
    const LINES: usize = 5;
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            faults: "500=1".parse().unwrap(),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, LINES);
    let run = |name: &str, retry_on: &[&str]| {
        let out = dir.path().join(format!("{name}.jsonl"));
        let (_, stdout, stderr) = output(
            volley(dir.path())
                .args(["run", path_str(&input), "-o", path_str(&out)])
                .args(["--base-url", &server.url(), "--max-retries", "1"])
                .args(retry_on)
                .env("OPENAI_API_KEY", "sk-test"),
        );
        let recorded = records(&out);
        assert_eq!(recorded.len(), LINES, "{stderr}");
        assert!(
            recorded.iter().all(|r| r["response"]["status_code"] == 500),
            "{stderr}"
        );
        format!("{stdout}{stderr}")
    };
    let text = run("unbilled", &["--retry-on", "unbilled"]);
    assert!(text.contains("max retries 1 (on unbilled)"), "{text}");
    assert_eq!(
        server.stats().requests_total,
        LINES as u64,
        "each line once"
    );
    let text = run("failures", &[]);
    assert!(text.contains("max retries 1 (on failures)"), "{text}");
    assert_eq!(
        server.stats().requests_total,
        3 * LINES as u64,
        "each line twice more"
    );
    drop(server);
    drop(rt);
}

/// A wrong key stops the run early; the same command with the right key and --retry-failed
/// completes it.
#[test]
fn a_rejected_key_stops_early_and_retry_failed_completes() {
    const LINES: usize = 300;
    const KEY: &str = "sk-right-key";
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            require_api_key: Some(KEY.to_owned()),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let ids = write_chat_input(&input, LINES);
    let run = |key: &str, extra: &[&str]| {
        output(
            volley(dir.path())
                .args(["run", path_str(&input), "-o", path_str(&out)])
                .args(["--base-url", &server.url(), "--concurrency", "8"])
                .args(extra)
                .env("OPENAI_API_KEY", key),
        )
    };
    let (status, _, stderr) = run("sk-wrong", &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the provider rejected the credentials (HTTP 401)")
            && stderr.contains("--retry-failed"),
        "{stderr}"
    );
    let first = records(&out).len();
    assert!(first > 0 && first <= 40, "{first} records");

    let (status, _, stderr) = run(KEY, &["--retry-failed"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let recorded = records(&out);
    let mut last: HashMap<String, Value> = HashMap::new();
    for r in &recorded {
        last.insert(r["custom_id"].as_str().unwrap().to_owned(), r.clone());
    }
    assert_eq!(last.len(), LINES);
    assert!(
        ids.iter()
            .all(|id| last[id]["response"]["status_code"] == 200)
    );
    assert_eq!(
        recorded.len(),
        LINES + first,
        "each 401 line got one more record"
    );
    drop(server);
    drop(rt);
}

#[test]
fn outputs_that_cannot_be_resumed_from_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Standard output is a pipe here: it would block the resume scan.
    let mut child = volley(dir.path())
        .args(["run", EXAMPLE, "-o", "/dev/stdout", "--mock"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    for args in [["-o", "-"], ["-o", "out.jsonl"]] {
        let mut cmd = volley(dir.path());
        cmd.args(["run", EXAMPLE, "--mock"]).args(args);
        if args[1] == "out.jsonl" {
            cmd.args(["--errors", "-"]);
        }
        let (status, _, stderr) = output(&mut cmd);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("standard output"), "{stderr}");
    }
    assert!(!dir.path().join("-").exists());
}

/// SIGTERM stops gracefully: requests in flight finish and their outcomes are written, so
/// the resumed run sends nothing that was answered before.
#[test]
fn sigterm_stops_with_143_and_the_same_command_resumes() {
    stops_gracefully_on("TERM", 143);
}

/// SIGHUP (a closed terminal, a dropped ssh session) stops as SIGTERM does, instead of its
/// default action, which would exit at once and drop the requests in flight.
#[test]
fn sighup_stops_with_129_as_sigterm_does() {
    stops_gracefully_on("HUP", 129);
}

/// Under `nohup` (SIGHUP ignored, as the shell's `trap '' HUP` leaves it for the program it
/// execs) a SIGHUP changes nothing: the run goes on to its end, as before volley caught it.
#[test]
fn sighup_is_left_ignored_under_nohup() {
    const LINES: usize = 200;
    let (rt, server, dir, input, out) = mock_and_input(
        MockConfig {
            latency: Latency::Fixed(Duration::from_millis(50)),
            ..MockConfig::default()
        },
        LINES,
    );
    let script = format!(
        "trap '' HUP; exec \"$0\" run {} -o {} --base-url {} --concurrency 8 --quiet",
        path_str(&input),
        path_str(&out),
        server.url()
    );
    let mut child = Command::new("sh")
        .current_dir(dir.path())
        .args(["-c", &script, env!("CARGO_BIN_EXE_volley")])
        .env("OPENAI_API_KEY", "sk-test")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    signal_once_output_appears(&mut child, &out, "HUP");
    let status = wait(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(records(&out).len(), LINES);
    drop(server);
    drop(rt);
}

fn stops_gracefully_on(signal: &str, code: i32) {
    const LINES: usize = 400;
    let rt = volley_testkit::process::server_runtime(2);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            latency: Latency::Fixed(Duration::from_millis(100)),
            journal: true,
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    write_chat_input(&input, LINES);
    let command = || {
        let mut cmd = volley(dir.path());
        cmd.args(["run", path_str(&input), "-o", path_str(&out)])
            .args([
                "--base-url",
                &server.url(),
                "--concurrency",
                "16",
                "--quiet",
            ])
            .env("OPENAI_API_KEY", "sk-test");
        cmd
    };
    let mut child = command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    signal_once_output_appears(&mut child, &out, signal);
    let status = wait(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(stderr.contains("interrupted:"), "{stderr}");
    let partial = records(&out).len();
    assert!(partial > 0 && partial < LINES, "{partial}");
    let answered: HashSet<String> = server.answered().into_iter().collect();
    let position = server.journal().len();
    assert_eq!(answered.len(), partial, "every answer was recorded");

    let (status, _, stderr) = output(&mut command());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(records(&out).len(), LINES);
    let again: Vec<String> = server.journal()[position..]
        .iter()
        .filter(|id| answered.contains(*id))
        .cloned()
        .collect();
    assert!(again.is_empty(), "answered, then sent again: {again:?}");
    drop(server);
    drop(rt);
}

/// `volley ARGS` run by `sh` in `dir`, under a file-size limit of `blocks` (of at most 1 KiB)
/// when given, without the settings' variables of the environment. SIGXFSZ keeps its default
/// action (killing the process) there: volley catches it, so a write past the limit fails
/// with EFBIG, as on a full disk.
fn volley_in_sh(dir: &Path, args: &str, blocks: Option<u32>) -> Command {
    let limit = blocks.map_or_else(String::new, |n| format!("ulimit -f {n}; "));
    // `$0` is the binary.
    let script = format!("{limit}exec \"$0\" {args}");
    let mut sh = Command::new("sh");
    sh.current_dir(dir)
        .stdin(Stdio::null())
        .env("RUST_LOG", "off")
        .args(["-c", &script, env!("CARGO_BIN_EXE_volley")]);
    for name in [
        "VOLLEY_CONCURRENCY",
        "VOLLEY_MAX_RETRIES",
        "VOLLEY_CACHE",
        "VOLLEY_TIMEOUT",
        "VOLLEY_FSYNC",
    ] {
        sh.env_remove(name);
    }
    sh
}

/// A write error in the middle of the run (here the file size limit, as a full disk would)
/// stops the run at once, exit 1, naming the file; the file ends on a whole record, and the
/// same command completes the run once there is room.
#[test]
fn io_errors_during_the_run_exit_1_and_resume_completes() {
    const LINES: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, LINES);
    let run = format!("run {} -o out.jsonl --mock --quiet", path_str(&input));
    let (status, _, stderr) = output(&mut volley_in_sh(dir.path(), &run, Some(64)));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing outcomes to"), "{stderr}");
    assert!(stderr.contains("out.jsonl"), "names the file: {stderr}");
    let out = dir.path().join("out.jsonl");
    let bytes = std::fs::read(&out).unwrap();
    assert!(!bytes.is_empty(), "something was written before the limit");
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "the file ends on a whole record"
    );
    let partial = records(&out).len();
    assert!(partial > 0 && partial < LINES, "{partial}");

    let (status, _, stderr) = output(&mut volley_in_sh(dir.path(), &run, None));
    assert_eq!(status.code(), Some(0), "{stderr}");
    let ids = custom_ids(&records(&out));
    assert_eq!(ids.len(), LINES);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), LINES, "each once");
}

/// The errors file fails (it is past the file-size limit) while the output has room: the
/// records of that write still reach the output, the failure record among them, before the
/// run stops; they are answers paid for, and the output is the source of truth.
#[test]
fn an_errors_file_that_fails_does_not_cost_the_outputs_records() {
    const LINES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, LINES);
    // An errors file of earlier runs, already past the limit below (64 blocks of at most
    // 1 KiB): appending to it fails with EFBIG, writing the empty output does not. (The
    // output exists: beside none, an earlier run's default errors file is refused.)
    let old = "{\"id\":\"batch_req_0\",\"custom_id\":\"old\",\"response\":null,\"error\":{\"code\":\"timeout\",\"message\":\"m\"}}\n";
    std::fs::write(
        dir.path().join("out.errors.jsonl"),
        old.repeat(70 * 1024 / old.len()),
    )
    .unwrap();
    std::fs::write(dir.path().join("out.jsonl"), b"").unwrap();
    let run = format!(
        "run {} -o out.jsonl --mock --mock-faults 500=0.5 --max-retries 0 --quiet",
        path_str(&input)
    );
    let (status, _, stderr) = output(&mut volley_in_sh(dir.path(), &run, Some(64)));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("out.errors.jsonl"),
        "names the file: {stderr}"
    );
    let out = records(&dir.path().join("out.jsonl"));
    let failed = out
        .iter()
        .filter(|r| r["response"]["status_code"] == 500)
        .count();
    assert!(
        failed > 0,
        "the failure whose errors record could not be written is in the output: {out:?}"
    );
}

/// A write that fails while the run resumes, before any request (here ending the output's
/// last record, past the file-size limit, as a full disk would fail it), is the run's
/// failure, exit 1 as during the run: not a usage mistake (exit 2) a wrapper would not retry.
#[test]
fn an_io_error_while_resuming_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_chat_input(&input, 10);
    // Past the limit below (64 blocks of at most 1 KiB), its last record without its line
    // end: the resume writes one, which fails with EFBIG.
    let old = "{\"id\":\"batch_req_0\",\"custom_id\":\"old\",\"response\":{\"status_code\":200,\"request_id\":\"r\",\"body\":{}},\"error\":null}\n";
    let mut text = old.repeat(70 * 1024 / old.len());
    text.pop();
    std::fs::write(dir.path().join("out.jsonl"), text).unwrap();
    let run = format!("run {} -o out.jsonl --mock --quiet", path_str(&input));
    let (status, _, stderr) = output(&mut volley_in_sh(dir.path(), &run, Some(64)));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("out.jsonl"), "names the file: {stderr}");
}

#[test]
fn small_mistakes_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) =
        output(volley(dir.path()).args(["run", "missing.jsonl", "--validate"]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");

    let (status, _, stderr) = output(volley(dir.path()).args([
        "run",
        EXAMPLE,
        "-o",
        "o.jsonl",
        "--mock",
        "--metrics-addr",
        ":0",
    ]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("port 0"), "{stderr}");

    let blank = dir.path().join("blank.jsonl");
    std::fs::write(&blank, "\n  \n").unwrap();
    let (status, _, stderr) = output(volley(dir.path()).args([
        "run",
        path_str(&blank),
        "-o",
        "o.jsonl",
        "--mock",
        "--quiet",
    ]));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("no requests"),
        "{stderr}"
    );
}

/// With stderr a pipe nobody reads any more (`volley run 2>&1 | tee log`, then Ctrl-C, which
/// stops `tee` too), every message fails to be written: the run still starts, stops at
/// Ctrl-C letting its requests finish (exit 130), and the same command completes the rest.
#[test]
fn a_closed_stderr_neither_stops_nor_breaks_a_run() {
    const LINES: usize = 400;
    let (rt, server, dir, input, out) = slow_mock_and_input(LINES);
    let spawn = || {
        let mut child = volley(dir.path())
            .args(["run", path_str(&input), "-o", path_str(&out)])
            .args(["--base-url", &server.url(), "--concurrency", "16"])
            .env("OPENAI_API_KEY", "sk-test")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away: every write to stderr fails (EPIPE; Rust ignores SIGPIPE).
        drop(child.stderr.take());
        child
    };
    let mut child = spawn();
    signal_once_output_appears(&mut child, &out, "INT");
    assert_eq!(wait(&mut child).code(), Some(130));
    let partial = records(&out).len();
    assert!(partial > 0 && partial < LINES, "{partial}");

    let mut child = spawn();
    assert_eq!(wait(&mut child).code(), Some(0));
    let ids = custom_ids(&records(&out));
    assert_eq!(ids.len(), LINES);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), LINES);
    assert_eq!(
        server.stats().requests_total,
        LINES as u64,
        "none sent twice"
    );
    drop(server);
    drop(rt);
}

/// An output (or errors file) in a directory that does not exist is a usage error that says
/// so, before anything is sent.
#[test]
fn an_output_in_a_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) =
        output(volley(dir.path()).args(["run", EXAMPLE, "-o", "missing/out.jsonl", "--mock"]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the directory missing does not exist; create it first"),
        "{stderr}"
    );
    let (status, _, stderr) = output(volley(dir.path()).args([
        "run",
        EXAMPLE,
        "-o",
        "out.jsonl",
        "--errors",
        "gone/errors.jsonl",
        "--mock",
    ]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--errors gone/errors.jsonl"), "{stderr}");
    assert!(!dir.path().join("out.jsonl").exists());
}
