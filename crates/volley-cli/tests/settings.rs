//! One settings model for `chat`, `run` and `bench`, run as a user would: the real binary
//! against a volley-mock server on loopback, and `--print-config` for where each value comes
//! from.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use volley_mock::{MockConfig, MockServer};

const KEY: &str = "sk-settings-test-SECRET-77";

/// The binary in `dir`, with none of the variables it reads inherited.
fn volley(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    // Trust is recorded per test, never in the user's own configuration directory.
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("XDG_CONFIG_HOME", dir.join(".user-config"))
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("VOLLEY_") || name.starts_with("OPENAI_") || name == "NO_COLOR" {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// `volley config trust` in `dir`: its volley.toml may then route the key.
fn trust(dir: &Path) {
    let (code, stdout, stderr) = run(volley(dir).args(["config", "trust"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("trusted volley.toml"), "{stdout}");
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// The row of `key` in `--print-config` output, white space collapsed.
fn row(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `volley COMMAND --print-config ARGS` with `env`, which must succeed.
fn print_config(dir: &Path, command: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = volley(dir);
    cmd.args([command, "--print-config"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{command} {args:?} {env:?}: {stderr}");
    stdout
}

/// A base URL nothing listens on. Its port is kept bound for the rest of the test process (a
/// few per run), so no other test can take it.
fn dead_url() -> String {
    let refused = volley_testkit::ports::RefusedPort::new();
    let url = refused.url();
    std::mem::forget(refused);
    url
}

#[test]
fn base_url_precedence_is_the_same_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nbase_url = \"http://profile.example/v1\"\n",
    )
    .unwrap();
    trust(dir.path());
    let flag = ["--base-url", "http://flag.example/v1"];
    let volley_env = ("VOLLEY_BASE_URL", "http://volley-env.example/v1");
    let openai_env = ("OPENAI_BASE_URL", "http://openai-env.example/v1");
    for (command, default) in [
        ("chat", "https://api.openai.com/v1"),
        ("run", "https://api.openai.com/v1"),
        // The load tester aims at the local mock unless told otherwise.
        ("bench", "http://127.0.0.1:8080/v1"),
    ] {
        let text = print_config(dir.path(), command, &flag, &[volley_env, openai_env]);
        assert_eq!(
            row(&text, "base_url"),
            "base_url http://flag.example/v1 (flag --base-url)",
            "{command}"
        );
        let text = print_config(dir.path(), command, &[], &[volley_env, openai_env]);
        assert_eq!(
            row(&text, "base_url"),
            "base_url http://volley-env.example/v1 ($VOLLEY_BASE_URL)",
            "{command}"
        );
        // A globally exported OPENAI_BASE_URL does not override the profile.
        let text = print_config(dir.path(), command, &[], &[openai_env]);
        assert_eq!(
            row(&text, "base_url"),
            "base_url http://profile.example/v1 (volley.toml [default])",
            "{command}"
        );
        assert_eq!(row(&text, "profile"), "profile volley.toml [default]");
        let empty = tempfile::tempdir().unwrap();
        let text = print_config(empty.path(), command, &[], &[openai_env]);
        assert_eq!(
            row(&text, "base_url"),
            "base_url http://openai-env.example/v1 ($OPENAI_BASE_URL)",
            "{command}"
        );
        assert_eq!(row(&text, "profile"), "profile none");
        let text = print_config(empty.path(), command, &[], &[]);
        assert_eq!(
            row(&text, "base_url"),
            format!("base_url {default} (default)"),
            "{command}"
        );
    }
}

#[test]
fn every_shared_setting_layers_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[profile.x]\napi_key_env = \"PROFILE_KEY\"\nallow_plain_http = true\ntimeout = 20\n\
         max_retries = 7\nconcurrency = 3\n",
    )
    .unwrap();
    trust(dir.path());
    for command in ["chat", "run", "bench"] {
        let text = print_config(dir.path(), command, &["--profile", "x"], &[]);
        assert_eq!(
            row(&text, "api_key_env"),
            "api_key_env PROFILE_KEY (NOT SET) (volley.toml [profile.x])",
            "{command}"
        );
        assert_eq!(
            row(&text, "allow_plain_http"),
            "allow_plain_http true (volley.toml [profile.x])"
        );
        let text = print_config(
            dir.path(),
            command,
            &["--profile", "x", "--api-key-env", "FLAG_KEY"],
            &[("VOLLEY_API_KEY_ENV", "ENV_KEY"), ("FLAG_KEY", KEY)],
        );
        assert_eq!(
            row(&text, "api_key_env"),
            "api_key_env FLAG_KEY (set) (flag --api-key-env)"
        );
        assert!(!text.contains(KEY), "{text}");
        let text = print_config(
            dir.path(),
            command,
            &["--profile", "x"],
            &[("VOLLEY_API_KEY_ENV", "ENV_KEY")],
        );
        assert_eq!(
            row(&text, "api_key_env"),
            "api_key_env ENV_KEY (NOT SET) ($VOLLEY_API_KEY_ENV)"
        );
    }
    // Attempts: chat and run. Bench measures failures instead of retrying them.
    for command in ["chat", "run"] {
        let text = print_config(dir.path(), command, &["--profile", "x"], &[]);
        assert_eq!(
            row(&text, "timeout"),
            "timeout 20s (volley.toml [profile.x])"
        );
        assert_eq!(
            row(&text, "max_retries"),
            "max_retries 7 (volley.toml [profile.x])"
        );
        let text = print_config(
            dir.path(),
            command,
            &["--profile", "x", "--max-retries", "1"],
            &[("VOLLEY_TIMEOUT", "2m"), ("VOLLEY_MAX_RETRIES", "5")],
        );
        assert_eq!(row(&text, "timeout"), "timeout 2m ($VOLLEY_TIMEOUT)");
        assert_eq!(
            row(&text, "max_retries"),
            "max_retries 1 (flag --max-retries)"
        );
    }
    let bench = print_config(dir.path(), "bench", &["--profile", "x"], &[]);
    assert!(!bench.contains("max_retries"), "{bench}");
    // Load settings are per command: the profile's concurrency is run's alone.
    let chat = print_config(dir.path(), "chat", &["--profile", "x"], &[]);
    assert!(!chat.contains("concurrency") && !bench.contains("concurrency"));
    let text = print_config(dir.path(), "run", &["--profile", "x"], &[]);
    assert_eq!(
        row(&text, "concurrency"),
        "concurrency 3 (volley.toml [profile.x])"
    );
}

#[test]
fn durations_take_a_bare_number_as_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let text = print_config(dir.path(), "run", &["--timeout", "30"], &[]);
    assert_eq!(row(&text, "timeout"), "timeout 30s (flag --timeout)");
    let text = print_config(dir.path(), "chat", &["--timeout", "1.5"], &[]);
    assert_eq!(row(&text, "timeout"), "timeout 1500ms (flag --timeout)");
    let text = print_config(dir.path(), "run", &[], &[("VOLLEY_TIMEOUT", "90")]);
    assert_eq!(row(&text, "timeout"), "timeout 90s ($VOLLEY_TIMEOUT)");
    let text = print_config(dir.path(), "run", &["--timeout", "0"], &[]);
    assert_eq!(row(&text, "timeout"), "timeout off (flag --timeout)");
    for toml in ["timeout = 45", "timeout = \"45\"", "timeout = \"45s\""] {
        std::fs::write(
            dir.path().join("volley.toml"),
            format!("[default]\n{toml}\n"),
        )
        .unwrap();
        // Shorter than the default: taken from a trusted file only.
        trust(dir.path());
        let text = print_config(dir.path(), "chat", &[], &[]);
        assert_eq!(
            row(&text, "timeout"),
            "timeout 45s (volley.toml [default])",
            "{toml}"
        );
    }
    // A real call with a bare-number timeout and grace.
    let (code, _, stderr) =
        run(volley(dir.path()).args(["chat", "--mock", "--timeout", "30", "hi"]));
    assert_eq!(code, Some(0), "{stderr}");
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}"#,
    )
    .unwrap();
    let (code, _, stderr) = run(volley(dir.path())
        .args(["run", "in.jsonl", "-o", "out.jsonl", "--mock", "--quiet"])
        .args(["--timeout", "30", "--grace", "5"]));
    assert_eq!(code, Some(0), "{stderr}");
    // Mistakes name where they were made and show the grammar.
    for (args, env, needle) in [
        (&["--timeout", "soon"][..], None, "--timeout"),
        (&[][..], Some(("VOLLEY_TIMEOUT", "soon")), "VOLLEY_TIMEOUT"),
    ] {
        let mut cmd = volley(dir.path());
        cmd.args(["run", "--print-config"]).args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (code, _, stderr) = run(&mut cmd);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(stderr.contains("a bare number is seconds"), "{stderr}");
    }
}

#[test]
fn the_key_is_never_read_from_volley_variables_flags_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["chat", "run", "bench"] {
        // VOLLEY_API_KEY is refused, whatever the command, without echoing it.
        let (code, stdout, stderr) = run(volley(dir.path())
            .args([command, "--print-config"])
            .env("VOLLEY_API_KEY", KEY));
        assert_eq!(code, Some(2), "{command}: {stderr}");
        assert!(stderr.contains("VOLLEY_API_KEY"), "{stderr}");
        assert!(stderr.contains("--api-key-env"), "{stderr}");
        assert!(!stderr.contains(KEY) && !stdout.contains(KEY));

        // No flag takes the key.
        for flag in ["--api-key", "--key"] {
            let (code, _, stderr) =
                run(volley(dir.path()).args([command, "--print-config", flag, KEY]));
            assert_eq!(code, Some(2), "{command} {flag}: {stderr}");
            assert!(!stderr.contains(KEY), "{stderr}");
        }
    }
    // A key in volley.toml is refused by every command, even in a profile not in force.
    for toml in [
        "[default]\napi_key = \"KEY\"\n",
        "[profile.other]\nopenai_api_key = \"KEY\"\n",
    ] {
        std::fs::write(dir.path().join("volley.toml"), toml.replace("KEY", KEY)).unwrap();
        for command in ["chat", "run", "bench"] {
            let (code, stdout, stderr) = run(volley(dir.path()).args([command, "--print-config"]));
            assert_eq!(code, Some(2), "{command}: {stderr}");
            assert!(stderr.contains("api_key_env"), "{stderr}");
            assert!(!stderr.contains(KEY) && !stdout.contains(KEY));
        }
    }
}

/// A Redis cache's secret, like the key, is read only from the variable `cache_secret_env`
/// names: `VOLLEY_CACHE_SECRET` and `cache_secret` in volley.toml are refused (not ignored in
/// silence), without echoing the value.
#[test]
fn a_cache_secret_is_never_read_from_volley_variables_or_the_file() {
    const SECRET: &str = "team-secret-0d1e";
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(volley(dir.path())
        .args(["run", "--print-config"])
        .env("VOLLEY_CACHE_SECRET", SECRET));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("VOLLEY_CACHE_SECRET") && stderr.contains("--cache-secret-env"));
    assert!(!stderr.contains(SECRET) && !stdout.contains(SECRET));

    std::fs::write(
        dir.path().join("volley.toml"),
        format!("[default]\ncache_secret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = run(volley(dir.path()).args(["run", "--print-config"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cache_secret_env"), "{stderr}");
    assert!(!stderr.contains(SECRET) && !stdout.contains(SECRET));

    // The variable's name is a setting like any other; an empty one turns a profile's off.
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\ncache_secret_env = \"TEAM_SECRET\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(volley(dir.path())
        .args(["run", "--print-config", "--config", "volley.toml"])
        .args(["--cache-secret-env", ""]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("cache_secret_env"), "{stdout}");
}

#[test]
fn volley_toml_is_checked_whole_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    // run's own keys do not trouble chat or bench, which ignore them.
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nrpm = 60\ncache = \"memory\"\nconcurrency = 4\n",
    )
    .unwrap();
    for command in ["chat", "bench"] {
        print_config(dir.path(), command, &[], &[]);
    }
    for (toml, needles) in [
        (
            "[default]\nconcurency = 3\n",
            &["volley.toml [default]", "`concurency`", "concurrency"][..],
        ),
        (
            "[profile.a]\nmax_retries = \"many\"\n",
            &["volley.toml [profile.a]", "`max_retries`"],
        ),
        (
            "[default]\nrpm = 1\n[profile.b]\ntimeout = \"soon\"\n",
            &["[profile.b]", "`timeout`", "bare number"],
        ),
    ] {
        std::fs::write(dir.path().join("volley.toml"), toml).unwrap();
        for command in ["chat", "run", "bench"] {
            let (code, _, stderr) = run(volley(dir.path()).args([command, "--print-config"]));
            assert_eq!(code, Some(2), "{command} {toml:?}: {stderr}");
            for needle in needles {
                assert!(
                    stderr.contains(needle),
                    "{command} {toml:?}: {stderr} lacks {needle}"
                );
            }
        }
    }
}

#[test]
fn chat_bench_and_run_call_the_base_url_of_the_profile() {
    let rt = volley_testkit::process::server_runtime(1);
    let server = rt
        .block_on(MockServer::start(MockConfig {
            require_api_key: Some(KEY.to_owned()),
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        format!(
            "[profile.local]\nbase_url = \"{}\"\napi_key_env = \"LOCAL_KEY\"\ntimeout = 10\n",
            server.url()
        ),
    )
    .unwrap();
    trust(dir.path());
    let requests = || rt.block_on(async { server.stats() }).requests_total;
    // OPENAI_BASE_URL, exported for some other tool, points nowhere: the profile wins.
    let with_env = |cmd: &mut Command| {
        cmd.env("LOCAL_KEY", KEY).env("OPENAI_BASE_URL", dead_url());
    };

    let mut cmd = volley(dir.path());
    cmd.args(["chat", "--profile", "local", "hi"]);
    with_env(&mut cmd);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.trim().is_empty());
    assert_eq!(requests(), 1);

    let mut cmd = volley(dir.path());
    cmd.args([
        "bench",
        "--profile",
        "local",
        "-c",
        "2",
        "-n",
        "10",
        "--json",
        "--quiet",
    ]);
    with_env(&mut cmd);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["summary"]["ok"], 10, "{stdout}");
    // The load tester resets the mock's statistics before it starts.
    assert_eq!(requests(), 10);
    assert_eq!(results["server"]["requests"], 10, "{stdout}");

    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":[{{"role":"user","content":"hi"}}]}}}}"#
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut cmd = volley(dir.path());
    cmd.args([
        "run",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--quiet",
        "--profile",
        "local",
    ]);
    with_env(&mut cmd);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(requests(), 15);
    assert!(!stderr.contains(KEY));
    drop(server);
}

#[test]
fn help_names_bench_and_logs_are_plain_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(volley(dir.path()).arg("--help"));
    assert_eq!(code, Some(0));
    for command in ["chat", "run", "bench", "mock"] {
        assert!(stdout.contains(command), "--help lacks {command}: {stdout}");
    }
    let about = stdout.lines().next().unwrap_or_default();
    assert!(
        about.contains("bench"),
        "the about line lacks bench: {about}"
    );
    for command in ["chat", "run", "bench"] {
        let (code, stdout, _) = run(volley(dir.path()).args([command, "--help"]));
        assert_eq!(code, Some(0));
        for flag in [
            "--print-config",
            "--profile",
            "--config",
            "--base-url",
            "--api-key-env",
            "--allow-plain-http",
        ] {
            assert!(stdout.contains(flag), "{command} --help lacks {flag}");
        }
    }
    let (_, stdout, _) = run(volley(dir.path()).args(["run", "--help"]));
    assert!(stdout.contains("a bare number is seconds"), "{stdout}");
    assert!(stdout.contains("used alone"), "{stdout}");

    // Debug logging into a pipe carries no colour codes.
    let (code, _, stderr) = run(volley(dir.path())
        .args(["chat", "--mock", "hi"])
        .env("RUST_LOG", "debug"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

/// An untrusted volley.toml cannot choose which hosts bypass the user's proxy (a key in plain
/// text through a proxy the user avoids for that host), widen TLS trust to the system store,
/// or present a local key and certificate as the user's identity; trusted, it can.
#[test]
fn an_untrusted_volley_toml_cannot_choose_the_proxy_bypass_trust_or_identity() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nno_proxy = \"x.invalid\"\nnative_roots = true\n\
         client_cert = \"/home/u/.docker/cert.pem\"\nclient_key = \"/home/u/.docker/key.pem\"\n",
    )
    .unwrap();
    let mut cmd = volley(dir.path());
    cmd.args(["chat", "--print-config"]);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("ignoring client_cert, client_key, native_roots, no_proxy"),
        "{stderr}"
    );
    assert_eq!(
        row(&stdout, "no_proxy"),
        "no_proxy none (default)",
        "{stdout}"
    );
    assert!(
        row(&stdout, "native_roots").ends_with("(default)"),
        "{stdout}"
    );
    trust(dir.path());
    let text = print_config(dir.path(), "chat", &[], &[]);
    assert!(row(&text, "no_proxy").contains("x.invalid"), "{text}");
}

/// Trust covers the files a volley.toml names: a CA swapped under a trusted file left as it is
/// (a `git pull` that changes only `certs/ca.pem`) makes it untrusted again.
#[test]
fn a_ca_swapped_under_a_trusted_volley_toml_untrusts_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let ca = dir.path().join("certs").join("ca.pem");
    std::fs::write(&ca, "the CA the user checked").unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nno_proxy = \"x.invalid\"\nca_cert = \"certs/ca.pem\"\n",
    )
    .unwrap();
    trust(dir.path());
    let text = print_config(dir.path(), "chat", &[], &[]);
    assert!(row(&text, "no_proxy").contains("x.invalid"), "{text}");
    std::fs::write(&ca, "a CA of someone else's").unwrap();
    let mut cmd = volley(dir.path());
    cmd.args(["chat", "--print-config"]);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("ignoring ca_cert, no_proxy"), "{stderr}");
    assert_eq!(
        row(&stdout, "no_proxy"),
        "no_proxy none (default)",
        "{stdout}"
    );
    // Trusted again as it is now.
    trust(dir.path());
    let text = print_config(dir.path(), "chat", &[], &[]);
    assert!(row(&text, "no_proxy").contains("x.invalid"), "{text}");
}

/// The files a volley.toml names are looked at only once it has a trust record, and then
/// only regular files are read: an untrusted file naming a pipe or `/dev/zero` never makes
/// volley block or read without end, nor does trusting one.
#[cfg(unix)]
#[test]
fn named_files_that_are_no_regular_files_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nno_proxy = \"x.invalid\"\nca_cert = \"ca.pem\"\n\n\
         [profile.zero]\nredis_ca_cert = \"/dev/zero\"\n",
    )
    .unwrap();
    let bounded = |cmd: &mut Command| {
        volley_testkit::process::run_bounded(cmd, std::time::Duration::from_secs(60))
    };
    let untrusted = bounded(volley(dir.path()).args(["chat", "--print-config"]));
    assert!(untrusted.status.success(), "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.contains("ignoring ca_cert, no_proxy"),
        "{}",
        untrusted.stderr
    );
    let trusted = bounded(volley(dir.path()).args(["config", "trust"]));
    assert!(trusted.status.success(), "{}", trusted.stderr);
    let after = bounded(volley(dir.path()).args(["chat", "--print-config"]));
    assert!(after.status.success(), "{}", after.stderr);
    assert!(
        row(&after.stdout, "no_proxy").contains("x.invalid"),
        "{}",
        after.stdout
    );
}

/// A volley.toml that came with a cloned repository points the key at its author's server:
/// nothing goes there until the user trusts the file, and a changed file is untrusted again.
#[test]
fn an_untrusted_volley_toml_cannot_send_the_key_elsewhere() {
    let rt = volley_testkit::process::server_runtime(1);
    let attacker = rt
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[default]\nbase_url = \"{}\"\napi_key_env = \"STOLEN_SECRET\"\nmax_retries = 0\n\
         timeout = 5\n",
        attacker.url()
    );
    std::fs::write(dir.path().join("volley.toml"), &toml).unwrap();
    let requests = || rt.block_on(async { attacker.stats() }).requests_total;
    let chat = |dir: &Path| {
        let mut cmd = volley(dir);
        // OPENAI_BASE_URL points nowhere: where the request would go without the file.
        cmd.args(["chat", "hi"])
            .env("STOLEN_SECRET", "aws-secret-77")
            .env("OPENAI_API_KEY", KEY)
            .env("OPENAI_BASE_URL", dead_url());
        run(&mut cmd)
    };

    // Refused before anything is sent: neither to the file's server nor, in its place, to
    // the default destination with the exported key.
    let (code, _, stderr) = chat(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(requests(), 0, "the untrusted file's server was called");
    assert!(
        stderr.contains("ignoring api_key_env, base_url"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert!(stderr.contains("volley config trust"), "{stderr}");
    // A destination given on the command line is the user's: it is used (here it is dead).
    let mut cmd = volley(dir.path());
    cmd.args(["chat", "hi", "--base-url", &dead_url()])
        .env("OPENAI_API_KEY", KEY)
        .env("STOLEN_SECRET", "aws-secret-77");
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(requests(), 0);
    // Endpoints (which no flag sets) are replaced by a --base-url too; a provider left out
    // needs --provider.
    let tables = tempfile::tempdir().unwrap();
    std::fs::write(
        tables.path().join("volley.toml"),
        format!(
            "[[default.endpoints]]\nurl = \"{0}\"\n\n[[default.endpoints]]\nurl = \"{0}\"\n",
            attacker.url()
        ),
    )
    .unwrap();
    let mut cmd = volley(tables.path());
    cmd.args(["chat", "hi", "--base-url", &dead_url()])
        .env("OPENAI_API_KEY", KEY);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("nothing was sent"), "{stderr}");
    std::fs::write(
        tables.path().join("volley.toml"),
        "[default]\nprovider = \"anthropic\"\n",
    )
    .unwrap();
    let mut cmd = volley(tables.path());
    cmd.args(["chat", "hi", "--base-url", &dead_url()])
        .env("OPENAI_API_KEY", KEY);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("sets provider") && stderr.contains("--provider"),
        "{stderr}"
    );
    assert_eq!(requests(), 0);
    // Settings that send nothing still apply.
    let text = print_config(dir.path(), "chat", &[], &[]);
    assert_eq!(
        row(&text, "max_retries"),
        "max_retries 0 (volley.toml [default])"
    );
    // Hedging sends each request twice (billed twice): an untrusted file cannot turn it on.
    let hedged = tempfile::tempdir().unwrap();
    std::fs::write(
        hedged.path().join("volley.toml"),
        "[default]\nhedge = \"1ms\"\nhedge_budget = \"100%\"\nmax_retries = 0\n",
    )
    .unwrap();
    let text = print_config(hedged.path(), "run", &[], &[]);
    assert_eq!(row(&text, "hedge"), "hedge off (default)", "{text}");
    assert!(row(&text, "hedge_budget").ends_with("(default)"), "{text}");
    assert_eq!(
        row(&text, "max_retries"),
        "max_retries 0 (volley.toml [default])"
    );
    trust(hedged.path());
    let text = print_config(hedged.path(), "run", &[], &[]);
    assert_eq!(
        row(&text, "hedge"),
        "hedge 1ms (volley.toml [default])",
        "{text}"
    );
    // More retries or a shorter timeout may pay for a request several times, and a disk
    // cache the repository ships would answer in the provider's place: untrusted, ignored.
    // Fewer retries, a longer timeout and a memory cache apply.
    let billing = tempfile::tempdir().unwrap();
    std::fs::write(
        billing.path().join("volley.toml"),
        "[default]\nmax_retries = 4000000000\ntimeout = \"200ms\"\ncache = \"disk:.c\"\n",
    )
    .unwrap();
    let text = print_config(billing.path(), "run", &[], &[]);
    assert!(row(&text, "max_retries").ends_with("(default)"), "{text}");
    assert!(row(&text, "timeout").ends_with("(default)"), "{text}");
    assert!(row(&text, "cache").ends_with("(default)"), "{text}");
    std::fs::write(
        billing.path().join("volley.toml"),
        "[default]\nmax_retries = 1\ntimeout = \"1h\"\ncache = \"memory\"\n",
    )
    .unwrap();
    let text = print_config(billing.path(), "run", &[], &[]);
    assert_eq!(
        row(&text, "max_retries"),
        "max_retries 1 (volley.toml [default])"
    );
    assert_eq!(row(&text, "timeout"), "timeout 1h (volley.toml [default])");
    assert_eq!(row(&text, "cache"), "cache memory (volley.toml [default])");

    // Trusted: used.
    trust(dir.path());
    let (code, _, stderr) = chat(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(requests(), 1);

    // Changed after trusting: untrusted again.
    std::fs::write(dir.path().join("volley.toml"), format!("{toml}# edited\n")).unwrap();
    let (code, _, stderr) = chat(dir.path());
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(requests(), 1);
    assert!(stderr.contains("ignoring"), "{stderr}");

    // Named with --config: the user chose it.
    let mut cmd = volley(dir.path());
    cmd.args(["chat", "--config", "volley.toml", "hi"])
        .env("STOLEN_SECRET", KEY);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(requests(), 2);
    rt.block_on(attacker.shutdown());
}

/// Plain `redis://` to a Redis that is not on loopback is refused before any connection, for
/// the shared limit and the cache alike, unless `--allow-plain-redis` says otherwise (then the
/// run goes on to connect, and fails here only because `.invalid` never resolves). An
/// untrusted `volley.toml` cannot allow it.
#[test]
fn plain_redis_to_a_remote_host_needs_allow_plain_redis() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[]}}\n",
    )
    .unwrap();
    let input = input.to_str().unwrap();
    let out = dir.path().join("out.jsonl");
    let out = out.to_str().unwrap();
    for flags in [
        &[
            "--shared-limit",
            "redis://:hunter2@redis.invalid:6379",
            "--rpm",
            "60",
        ][..],
        &["--cache", "redis://:hunter2@redis.invalid:6379"][..],
    ] {
        let (code, _, stderr) = run(volley(dir.path())
            .args(["run", input, "-o", out, "--mock"])
            .args(flags));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("refusing plain redis://"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        let (code, _, stderr) = run(volley(dir.path())
            .args(["run", input, "-o", out, "--mock", "--allow-plain-redis"])
            .args(flags));
        assert_ne!(code, Some(0), "{stderr}");
        assert!(!stderr.contains("refusing plain redis://"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // A volley.toml found in the working directory, not trusted, cannot allow it.
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nallow_plain_redis = true\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        run(volley(dir.path()).args(["run", input, "-o", out, "--print-config"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        row(&stdout, "allow_plain_redis"),
        "allow_plain_redis false (default)"
    );
}

/// A `volley.toml` nobody named may carry terminal escape sequences in its keys and values
/// (TOML allows `\u001b`): what volley prints of them, in errors or `--print-config`, has
/// them escaped, so a file cannot rewrite what the user reads on the terminal.
#[test]
fn escape_sequences_from_a_file_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\n\"\\u001b]0;pwned\\u0007\" = 1\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(volley(dir.path()).args(["run", "--print-config"]));
    assert_eq!(code, Some(2), "an unknown key: {stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains('\u{1b}'),
        "{stderr:?}"
    );
    assert!(stderr.contains("\\u{1b}]0;pwned"), "{stderr:?}");

    std::fs::write(
        dir.path().join("volley.toml"),
        "[default]\nanthropic_beta = \"a\\u001b[2Kb\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(volley(dir.path()).args(["run", "--print-config"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(stdout.contains("a\\u{1b}[2Kb"), "{stdout:?}");
}

/// A `VOLLEY_*` variable that names no setting is ignored with a word, naming the setting it
/// is closest to; the test suite's own `VOLLEY_REQUIRE_*` are not settings and pass quietly.
#[test]
fn a_mistyped_volley_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = volley(dir.path());
    cmd.args(["run", "--print-config"])
        .env("VOLLEY_CONCURENCY", "5")
        .env("VOLLEY_WHATEVER_THIS_IS", "1")
        .env("VOLLEY_REQUIRE_SOMETHING", "1");
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "ignoring VOLLEY_CONCURENCY: no setting has that name (did you mean \
             VOLLEY_CONCURRENCY?)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("ignoring VOLLEY_WHATEVER_THIS_IS: no setting has that name\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("REQUIRE_SOMETHING"), "{stderr}");
    assert!(
        row(&stdout, "concurrency").ends_with("(default)"),
        "{stdout}"
    );
}
