//! Reaching endpoints as a user would, with the real binary: through a forward proxy
//! (tinyproxy, started by the test) to a TLS server whose CA the test made, trusted with
//! `--ca-cert` or `SSL_CERT_FILE`; an unknown CA refused; Azure OpenAI's conventions against
//! volley-mock; and no secret in `--print-config`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::require_tinyproxy;
use volley_testkit::tls::TestPki;

const KEY: &str = "sk-network-test-SECRET-31";
const PROXY_PASSWORD: &str = "proxy-pw-SECRET-57";

/// The binary in `dir`, with none of the variables it reads inherited.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("VOLLEY_")
            || upper.starts_with("OPENAI_")
            || upper.starts_with("AZURE_")
            || upper.starts_with("SSL_CERT_")
            || upper.ends_with("_PROXY")
        {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// Runs `cmd` off the runtime's threads; the exit code, stdout and stderr.
async fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

async fn tls_mock(pki: &TestPki, config: MockConfig) -> MockServer {
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .unwrap();
    MockServer::start_tls(config, tls).await.unwrap()
}

fn connects(proxy: &volley_testkit::proxy::Tinyproxy, server: &MockServer) -> usize {
    let want = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.addr().port());
    proxy.requests().iter().filter(|l| **l == want).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_through_a_proxy_to_a_private_ca_by_flags_and_by_environment() {
    let proxy = require_tinyproxy!(Some(("volley", PROXY_PASSWORD)));
    let pki = TestPki::new("cli-chat");
    let server = tls_mock(&pki, MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();

    // Flags: --proxy and --ca-cert.
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY).args([
        "chat",
        "--base-url",
        &server.url(),
        "--proxy",
        &proxy.url(),
        "--ca-cert",
        pki.ca_file().to_str().unwrap(),
        "Say hello",
    ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.is_empty());
    assert_eq!(connects(&proxy, &server), 1);

    // The ecosystem's variables: HTTPS_PROXY and SSL_CERT_FILE.
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY)
        .env("HTTPS_PROXY", proxy.url())
        .env("SSL_CERT_FILE", pki.ca_file())
        .args(["chat", "--base-url", &server.url(), "Say hello"]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(connects(&proxy, &server), 2);

    // --no-proxy reaches the server directly.
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY)
        .env("HTTPS_PROXY", proxy.url())
        .env("SSL_CERT_FILE", pki.ca_file())
        .args([
            "chat",
            "--base-url",
            &server.url(),
            "--no-proxy",
            "127.0.0.1",
            "hi",
        ]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(connects(&proxy, &server), 2);
    assert_eq!(server.stats().requests_total, 3);

    // A wrong proxy password: a proxy error without the password.
    let wrong = format!(
        "http://volley:wrong-{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port()
    );
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY).args([
        "chat",
        "--base-url",
        &server.url(),
        "--proxy",
        &wrong,
        "--ca-cert",
        pki.ca_file().to_str().unwrap(),
        "--max-retries",
        "0",
        "hi",
    ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(&format!("the proxy http://***@127.0.0.1:{}", proxy.port())),
        "{stderr}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains(PROXY_PASSWORD),
        "{stderr}"
    );
    assert_eq!(server.stats().requests_total, 3);
}

/// `--native-roots` adds the system's store (its certificate directories) whatever
/// SSL_CERT_FILE and SSL_CERT_DIR say: with `--ca-cert` those are not read at all, however
/// broken; rustls-native-certs would have read them *instead of* the system's store (and
/// failed on a missing file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_roots_are_the_systems_whatever_ssl_cert_file_says() {
    let pki = TestPki::new("cli-native");
    let server = tls_mock(&pki, MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    for (file, cert_dir) in [
        ("/nonexistent/volley-ca.pem", "/nonexistent/volley-certs"),
        ("", ""),
    ] {
        let mut cmd = volley(dir.path());
        cmd.env("OPENAI_API_KEY", KEY)
            .env("SSL_CERT_FILE", file)
            .env("SSL_CERT_DIR", cert_dir)
            .args([
                "chat",
                "--base-url",
                &server.url(),
                "--native-roots",
                "--ca-cert",
                pki.ca_file().to_str().unwrap(),
                "hi",
            ]);
        let (code, stdout, stderr) = run(cmd).await;
        assert_eq!(code, Some(0), "SSL_CERT_FILE={file:?}: {stderr}");
        assert!(!stdout.is_empty());
    }
    assert_eq!(server.stats().requests_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused_with_the_host_and_the_fix() {
    let pki = TestPki::new("cli-unknown");
    let server = tls_mock(&pki, MockConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY).args([
        "chat",
        "--base-url",
        &server.url(),
        "--max-retries",
        "0",
        "hi",
    ]);
    let (code, _, stderr) = run(cmd).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("TLS handshake with 127.0.0.1 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    assert_eq!(server.stats().requests_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_lines_run_through_the_proxy_at_concurrency_256() {
    let proxy = require_tinyproxy!(Some(("volley", PROXY_PASSWORD)));
    let pki = TestPki::new("cli-run");
    let server = tls_mock(
        &pki,
        MockConfig {
            latency: "20ms".parse().unwrap(),
            ..MockConfig::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(&format!(
            r#"{{"custom_id":"line-{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"line {i}"}}]}}}}"#
        ));
        lines.push('\n');
    }
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut cmd = volley(dir.path());
    cmd.env("OPENAI_API_KEY", KEY)
        .env("VOLLEY_PROXY", proxy.url())
        .env("SSL_CERT_FILE", pki.ca_file())
        .args([
            "run",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--base-url",
            &server.url(),
            "--concurrency",
            "256",
        ]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    let outcomes = std::fs::read_to_string(&out).unwrap();
    assert_eq!(outcomes.lines().count(), 2000);
    let ok = outcomes
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["response"]["status_code"] == 200
        })
        .count();
    assert_eq!(ok, 2000, "{}", outcomes.lines().next().unwrap_or_default());
    assert_eq!(server.stats().requests_total, 2000);
    let tunnels = connects(&proxy, &server);
    assert!((1..=256).contains(&tunnels), "{tunnels} tunnels");
    assert!(!stderr.contains(PROXY_PASSWORD), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_by_endpoint_key_and_version() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let origin = format!("http://{}", server.addr());
    let dir = tempfile::tempdir().unwrap();
    // As the SDK reads them: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION;
    // the model names the deployment.
    let mut cmd = volley(dir.path());
    cmd.env("AZURE_OPENAI_ENDPOINT", &origin)
        .env("AZURE_OPENAI_API_KEY", KEY)
        .env("OPENAI_API_VERSION", "2024-10-21")
        .args([
            "chat",
            "--provider",
            "azure",
            "--model",
            "gpt-4o-mini",
            "hi",
        ]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");

    // Azure's batch format: "url": "/chat/completions", the model naming the deployment.
    let input = dir.path().join("azure.jsonl");
    let mut lines = String::new();
    for i in 0..20 {
        lines.push_str(&format!(
            r#"{{"custom_id":"az-{i}","method":"POST","url":"/chat/completions","body":{{"model":"prod-4o","messages":[{{"role":"user","content":"{i}"}}]}}}}"#
        ));
        lines.push('\n');
    }
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("azure-out.jsonl");
    let mut cmd = volley(dir.path());
    cmd.env("AZURE_OPENAI_API_KEY", KEY).args([
        "run",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--provider",
        "azure",
        "--azure-endpoint",
        &origin,
        "--api-version",
        "2024-10-21",
    ]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 20);
    assert_eq!(server.stats().requests_total, 21);

    // A wrong key is refused without being shown.
    let mut cmd = volley(dir.path());
    cmd.env("AZURE_OPENAI_API_KEY", "azure-wrong-SECRET-99")
        .env("AZURE_OPENAI_ENDPOINT", &origin)
        .args([
            "chat",
            "--provider",
            "azure",
            "--api-version",
            "2024-10-21",
            "hi",
        ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("azure-wrong-SECRET-99"));

    // Deployment URLs without a version are refused before anything is sent.
    let mut cmd = volley(dir.path());
    cmd.env("AZURE_OPENAI_API_KEY", KEY).args([
        "chat",
        "--provider",
        "azure",
        "--base-url",
        &format!("{origin}/openai/deployments/d"),
        "hi",
    ]);
    let (code, _, stderr) = run(cmd).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("OPENAI_API_VERSION"), "{stderr}");
    assert_eq!(server.stats().requests_total, 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_config_shows_where_network_settings_come_from_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let row = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The library's own reading of HTTPS_PROXY, shown without the password.
    let mut cmd = volley(dir.path());
    cmd.env(
        "HTTPS_PROXY",
        format!("http://u:{PROXY_PASSWORD}@proxy.corp:3128"),
    )
    .env("SSL_CERT_FILE", "/etc/corp/ca.pem")
    .args(["run", "--print-config"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        row(&stdout, "proxy"),
        "proxy $HTTPS_PROXY=http://***@proxy.corp:3128 (ecosystem, read by the library)"
    );
    assert!(row(&stdout, "ca_cert").contains("$SSL_CERT_FILE=/etc/corp/ca.pem"));
    // A proxy written without a scheme (curl reads it as http://) keeps its password too,
    // from the environment and from a flag.
    let mut cmd = volley(dir.path());
    cmd.env("HTTPS_PROXY", format!("u:{PROXY_PASSWORD}@proxy.corp:3128"))
        .args(["run", "--print-config"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        row(&stdout, "proxy"),
        "proxy $HTTPS_PROXY=***@proxy.corp:3128 (ecosystem, read by the library)"
    );
    let mut cmd = volley(dir.path());
    cmd.args([
        "run",
        "--print-config",
        "--proxy",
        &format!("u:{PROXY_PASSWORD}@proxy.corp:3128"),
    ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        row(&stdout, "proxy"),
        "proxy ***@proxy.corp:3128 (flag --proxy)"
    );
    assert!(!stdout.contains(PROXY_PASSWORD), "{stdout}");
    // Volley's own setting wins over the ecosystem's.
    let mut cmd = volley(dir.path());
    cmd.env(
        "HTTPS_PROXY",
        format!("http://u:{PROXY_PASSWORD}@proxy.corp:3128"),
    )
    .env(
        "VOLLEY_PROXY",
        format!("http://v:{PROXY_PASSWORD}@mine:8080"),
    )
    .env("OPENAI_API_VERSION", "2024-10-21")
    .args([
        "chat",
        "--print-config",
        "--provider",
        "azure",
        "--ca-cert",
        "ca.pem",
    ]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        row(&stdout, "proxy"),
        "proxy http://***@mine:8080 ($VOLLEY_PROXY)"
    );
    assert_eq!(row(&stdout, "provider"), "provider azure (flag --provider)");
    assert_eq!(
        row(&stdout, "api_version"),
        "api_version 2024-10-21 ($OPENAI_API_VERSION)"
    );
    assert_eq!(row(&stdout, "ca_cert"), "ca_cert ca.pem (flag --ca-cert)");
    assert!(!stdout.contains(PROXY_PASSWORD), "{stdout}");

    // A volley.toml nobody trusted (one cloned with a repository) cannot route the traffic
    // through its proxy, nor make a CA of its own trusted.
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nproxy = \"http://evil.example:3128\"\nca_cert = \"evil.pem\"\n\
         azure_endpoint = \"https://evil.example\"\nconcurrency = 7\n",
    )
    .unwrap();
    let mut cmd = volley(dir.path());
    cmd.env("XDG_CONFIG_HOME", dir.path())
        .args(["run", "--print-config"]);
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(row(&stdout, "proxy"), "proxy none (default)");
    assert_eq!(row(&stdout, "ca_cert"), "ca_cert none (default)");
    assert_eq!(
        row(&stdout, "azure_endpoint"),
        "azure_endpoint none (default)"
    );
    assert!(row(&stdout, "concurrency").contains('7'), "{stdout}");
}
