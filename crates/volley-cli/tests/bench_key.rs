//! `volley bench` never writes the API key: not to stdout, stderr or any file of its report,
//! even when the server quotes it back in every error (volley-mock's `401` does, as OpenAI's
//! does).

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-volley-bench-key-leak-0123456789";

fn volley() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.env_remove("OPENAI_BASE_URL")
        .env("OPENAI_API_KEY", KEY)
        .env("RUST_LOG", "debug");
    cmd
}

/// Every file under `dir`, as text, with its name.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn bench_reports_never_hold_the_key() {
    let runtime = volley_testkit::process::server_runtime(1);
    // The server wants another key: every request is refused with a 401 quoting ours.
    let server = runtime
        .block_on(MockServer::start(MockConfig {
            require_api_key: Some("sk-the-right-key".to_owned()),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = volley()
        .args(["bench", "--base-url", &server.url()])
        .args([
            "--requests",
            "20",
            "--concurrency",
            "4",
            "--name",
            "key-leak",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "nothing succeeded: {stdout}{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    // The key reached the server (20 refusals quoting it), so it was there to leak.
    assert_eq!(results["summary"]["failed"], 20, "{results}");
    assert_eq!(results["errors"]["status_401"], 20, "{results}");
    let written = files(&report);
    assert!(written.len() >= 3, "{written:?}");
    for (name, text) in [("stdout".to_owned(), stdout), ("stderr".to_owned(), stderr)]
        .into_iter()
        .chain(written)
    {
        assert!(!text.contains(KEY), "the key is in {name}: {text}");
    }
    runtime.block_on(server.shutdown());
}
