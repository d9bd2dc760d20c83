//! The `volley` binary, run as a user would.

use std::process::Command;

fn volley() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "warn");
    cmd
}

/// The jemalloc options built into the binary (main.rs) are read: jemalloc reports them, and
/// would complain of one it does not know.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[test]
fn the_built_in_allocator_options_are_read() {
    let out = volley()
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("opt.tcache_nslots_small_min: 200"),
        "jemalloc's options: {report}"
    );
    assert!(!report.contains("Invalid conf"), "{report}");
}

#[test]
fn chat_mock_prints_a_reply() {
    let out = volley().args(["chat", "--mock", "hi"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.trim().len() > 10, "a reply was printed: {stdout:?}");
}

#[test]
fn chat_mock_stream_prints_the_same_reply() {
    let plain = volley().args(["chat", "--mock", "hi"]).output().unwrap();
    let streamed = volley()
        .args(["chat", "--mock", "--stream", "--usage", "hi"])
        .output()
        .unwrap();
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    assert_eq!(
        String::from_utf8(plain.stdout).unwrap(),
        String::from_utf8(streamed.stdout).unwrap()
    );
    let stderr = String::from_utf8(streamed.stderr).unwrap();
    assert!(stderr.contains("completion"), "usage on stderr: {stderr}");
}

#[test]
fn chat_without_a_key_says_how_to_fix_it() {
    let out = volley().args(["chat", "hi"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
    assert!(stderr.contains("--mock"), "{stderr}");
}

/// A server on this machine (vLLM, llama.cpp, Ollama) is called without a key when none is
/// set, and no `Authorization` header is sent; a remote one still needs a key (above).
#[test]
fn chat_to_a_local_server_needs_no_key() {
    use volley_testkit::raw;
    let runtime = volley_testkit::process::server_runtime(1);
    let port = runtime.block_on(raw::serve(|head| {
        if head.contains("authorization") {
            raw::json_response("401 Unauthorized", &[], r#"{"error":{"message":"a key"}}"#)
        } else {
            let body = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"local answer"},"finish_reason":"stop"}]}"#;
            raw::json_response("200 OK", &[], body)
        }
    }));
    for host in ["127.0.0.1", "localhost"] {
        let out = volley()
            .args([
                "chat",
                "--base-url",
                &format!("http://{host}:{port}/v1"),
                "hi",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{host}: {stderr}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.trim(), "local answer", "{host}: {stderr}");
    }
}

/// A 200 that holds no choice (a gateway that filtered the answer out) fails, streamed or
/// not: it printed an empty line and exited 0, as an empty answer would.
#[test]
fn chat_fails_on_a_reply_without_a_choice() {
    use volley_testkit::raw;
    let runtime = volley_testkit::process::server_runtime(1);
    let whole = runtime.block_on(raw::serve(|_| {
        let body = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
        raw::json_response("200 OK", &[], body)
    }));
    let streamed = runtime.block_on(raw::serve(|_| {
        let body = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }));
    for (port, stream) in [(whole, false), (streamed, true)] {
        let mut cmd = volley();
        cmd.args(["chat", "--max-retries", "0", "--base-url"])
            .arg(format!("http://127.0.0.1:{port}/v1"));
        if stream {
            cmd.arg("--stream");
        }
        let out = cmd.arg("hi").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stream {stream}: {stderr}");
        assert!(stderr.contains("the reply held no choice"), "{stderr}");
    }
}

/// `--timeout` bounds a streamed reply whole, not only to its first chunk: a server that
/// stalls after it fails the call within the timeout (here 1 s, the stall 60 s) instead of
/// holding it for the idle limit (120 s) or until the server goes on. The text that came
/// before is printed, on a line of its own.
#[test]
fn chat_stream_timeout_bounds_the_whole_stream() {
    use volley_testkit::raw;
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let first = format!(
        "{head}{}",
        chunk(r#"{"role":"assistant","content":"Hel"}"#, "null")
    );
    let rest = format!(
        "{}data: [DONE]\n\n",
        chunk(r#"{"content":"lo"}"#, r#""stop""#)
    );
    let runtime = volley_testkit::process::server_runtime(1);
    let port = runtime.block_on(raw::answer_once_in_parts(
        vec![first, rest],
        std::time::Duration::from_secs(60),
    ));
    let out = volley()
        .args([
            "chat",
            "--stream",
            "--timeout",
            "1s",
            "--max-retries",
            "0",
            "--base-url",
            &format!("http://127.0.0.1:{port}/v1"),
            "hi",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not finished within 1s"), "{stderr}");
    // What arrived is printed, ended by a new line so that the error has a line of its own.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hel\n");
}

#[test]
fn chat_refuses_plain_http_to_a_remote_host_without_sending_the_key() {
    let out = volley()
        .args(["chat", "--base-url", "http://192.0.2.1/v1", "hi"])
        .env("OPENAI_API_KEY", "sk-cli-secret-123")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("not a loopback"), "{stderr}");
    assert!(stderr.contains("--allow-plain-http"), "{stderr}");
    assert!(!stderr.contains("sk-cli-secret-123"), "{stderr}");
}

#[test]
fn chat_reports_connection_failures_clearly() {
    let refused = volley_testkit::ports::RefusedPort::new();
    let port = refused.port();
    let out = volley()
        .args([
            "chat",
            "--base-url",
            &format!("http://127.0.0.1:{port}/v1"),
            "hi",
        ])
        .env("OPENAI_API_KEY", "sk-cli-secret-456")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("connect"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(!stderr.contains("sk-cli-secret-456"), "{stderr}");
}

#[test]
fn every_command_has_complete_help() {
    for args in [
        vec!["--help"],
        vec!["chat", "--help"],
        vec!["mock", "--help"],
    ] {
        let out = volley().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let chat = volley().args(["chat", "--help"]).output().unwrap();
    let text = String::from_utf8(chat.stdout).unwrap();
    for flag in ["--model", "--stream", "--base-url", "--system", "--mock"] {
        assert!(text.contains(flag), "chat --help lacks {flag}");
    }
    let mock = volley().args(["mock", "--help"]).output().unwrap();
    let text = String::from_utf8(mock.stdout).unwrap();
    for flag in ["--port", "--latency", "--faults", "--seed", "--ttft"] {
        assert!(text.contains(flag), "mock --help lacks {flag}");
    }
}

#[test]
fn mock_serves_until_stopped() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = volley()
        .args(["mock", "--port", "0", "--latency", "10ms"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // "volley mock: serving http://127.0.0.1:PORT/v1 (stats at ...)"
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"requests_total\""), "{response}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Mistakes in flags exit 2, as clap's usage errors do, whichever command makes them: a fault
/// list that does not parse, a key variable that is not set, and a base URL beside `--mock`
/// (which would be ignored in silence).
#[test]
fn flag_mistakes_exit_2() {
    let cases: [&[&str]; 5] = [
        &["mock", "--faults", "bogus"],
        &[
            "mock",
            "--require-api-key-env",
            "VOLLEY_TEST_SURELY_UNSET_VARIABLE",
        ],
        &["bench", "--mock", "--faults", "bogus", "-n", "1"],
        &[
            "chat",
            "--mock",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "hi",
        ],
        &[
            "bench",
            "--mock",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "-n",
            "1",
        ],
    ];
    for args in cases {
        let out = volley()
            .args(args)
            .env_remove("VOLLEY_TEST_SURELY_UNSET_VARIABLE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    }
}
