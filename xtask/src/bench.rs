//! `cargo xtask bench`: criterion micro-benchmarks and the end-to-end scenarios S1–S6, judged
//! against their targets, with a report.
//!
//! Each end-to-end scenario starts `volley mock` as its own process (so its CPU is not the
//! client's), runs `volley bench` against it, and reads the run's `results.json`. On a machine
//! with two or more cores the mock is pinned to core 0 and the client to core 1 with `taskset`,
//! the setup the reference figures were measured in. Targets missed are reported as missed;
//! the exit status is non-zero only when a run fails (or with `--strict`, when a target is
//! missed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use volley_bench::report;
use volley_bench::results::{BenchResults, TargetCheck};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--baseline DIR|results.json] [--out DIR]
                         [--only S1,S2,...] [--no-criterion] [--strict] [--target URL]

  --quick         a small version of every scenario (under two minutes after the build)
  --baseline P    compare with a previous run: its output folder or one results.json
  --out DIR       where the reports go [default: target/bench/latest]
  --only LIST     run only these scenarios (S1..S6)
  --no-criterion  skip the criterion micro-benchmarks (S5 is then not measured)
  --strict        exit non-zero when a target is missed
  --target URL    run S1-S3 (chat completions only) against this server instead of volley
                  mock, e.g. http://127.0.0.1:8081/v1 (loopback only; its latency is its own);
                  in flight is the client's where the server has no /stats, and oha runs
                  against it too";

/// Options of one `cargo xtask bench`.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    baseline: Option<PathBuf>,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
    criterion: bool,
    strict: bool,
    /// `--target`: another server's base URL (loopback), instead of volley mock.
    target: Option<String>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        criterion: true,
        ..Options::default()
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--strict" => options.strict = true,
            "--no-criterion" => options.criterion = false,
            "--baseline" => options.baseline = Some(value("--baseline")?.into()),
            "--out" => options.out = Some(value("--out")?.into()),
            "--target" => options.target = Some(loopback_target(&value("--target")?)?),
            "--only" => {
                options.only = Some(
                    value("--only")?
                        .split(',')
                        .map(|s| s.trim().to_ascii_uppercase())
                        .filter(|s| !s.is_empty())
                        .collect(),
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(options))
}

/// The scenarios a run against another server (`--target`) can have: they need only chat
/// completions, not the mock's streaming, latency or statistics.
const TARGET_SCENARIOS: [&str; 3] = ["S1", "S2", "S3"];

/// `url` without a trailing `/`, when it is plain HTTP to a loopback address: load goes only
/// to 127.0.0.1 (or `localhost`, `[::1]`).
fn loopback_target(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("--target {url:?}: expected http://127.0.0.1:PORT/v1 (plain HTTP on loopback)")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        bail!(
            "--target {url:?}: load goes only to a loopback address (127.0.0.1, localhost, [::1])"
        );
    }
    Ok(url.to_owned())
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse_args(args)? else {
        return Ok(());
    };
    let root = crate::ci::workspace_root();
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/bench/latest"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let server = options.target.as_deref();
    let wanted = |id: &str| {
        let chosen = options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == id));
        chosen && (server.is_none() || TARGET_SCENARIOS.contains(&id))
    };
    if let Some(url) = server {
        println!("against {url}: S1-S3 only (S4-S6 need volley mock's streaming and timing)");
    }

    step("building volley (release)");
    cargo(&root, &["build", "--release", "-p", "volley-cli"])?;
    // Where cargo builds: CARGO_TARGET_DIR when set, else the workspace's target/.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let volley = target.join("release/volley");
    let pinning = Pinning::detect();
    println!("{}", pinning.describe());

    let mut scenarios: Vec<Scenario> = Vec::new();

    if options.criterion {
        step("criterion micro-benchmarks (SSE decoding, JSON, each layer's overhead)");
        let mut bench_args = vec!["bench", "-p", "volley-benches", "--benches", "--"];
        if options.quick {
            bench_args.extend(["--warm-up-time", "0.3", "--measurement-time", "1"]);
        }
        cargo(&root, &bench_args)?;
    }
    // Only what this run measured: an earlier run's estimates must not judge S5.
    let micro = if options.criterion {
        criterion::read(&target.join("criterion"))
    } else {
        BTreeMap::new()
    };

    for spec in specs(options.quick) {
        if !wanted(spec.id) {
            continue;
        }
        step(&format!("{} — {}", spec.id, spec.title));
        let mut runs = Vec::new();
        for (label, extra) in &spec.runs {
            let dir = out.join(if spec.runs.len() == 1 {
                spec.id.to_owned()
            } else {
                format!("{}-{label}", spec.id)
            });
            let results = run_scenario(&volley, &pinning, &spec, extra, &dir, server)?;
            runs.push((dir, results));
        }
        scenarios.push(Scenario { spec, runs });
    }

    // Judge, write each run's report with its targets, and print the table.
    let mut table = Vec::new();
    for scenario in &mut scenarios {
        let checks = (scenario.spec.judge)(&scenario.runs, &scenario.spec);
        for (dir, results) in &mut scenario.runs {
            results.targets = checks.clone();
            report::write_report(results, dir)
                .with_context(|| format!("writing the report in {}", dir.display()))?;
        }
        for check in checks {
            table.push((scenario.spec.id, check));
        }
    }
    if wanted("S5") {
        table.extend(criterion::judge_sse(&micro).into_iter().map(|c| ("S5", c)));
    }

    let oha = oha::compare(&volley, &pinning, &scenarios, options.quick, server);

    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "# Volley benchmarks{}\n",
        if options.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(summary, "{}\n", pinning.describe());
    let _ = writeln!(
        summary,
        "| id | figure | value | target | |\n|---|---|---|---|---|"
    );
    for (id, check) in &table {
        let _ = writeln!(
            summary,
            "| {id} | {} | {} {} | {} | {} |",
            check.figure,
            format_value(check.value),
            check.unit,
            check.target,
            if check.met { "met" } else { "MISSED" }
        );
    }
    if !micro.is_empty() {
        let _ = writeln!(
            summary,
            "\n## Criterion micro-benchmarks (median)\n\n| benchmark | time | throughput |\n|---|---|---|"
        );
        for (name, m) in &micro {
            let _ = writeln!(
                summary,
                "| {name} | {} | {} |",
                format_ns(m.median_ns),
                m.throughput().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(summary, "\n## oha\n\n{oha}");
    if let Some(baseline) = &options.baseline {
        let _ = writeln!(summary, "\n## Compared with {}\n", baseline.display());
        for scenario in &scenarios {
            for (dir, results) in &scenario.runs {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                match load_baseline(baseline, name) {
                    Ok(Some(base)) => {
                        let _ =
                            writeln!(summary, "### {name}\n\n{}", report::compare(results, &base));
                    }
                    Ok(None) => {
                        let _ = writeln!(summary, "### {name}\n\nnot in the baseline\n");
                    }
                    Err(e) => {
                        let _ = writeln!(summary, "### {name}\n\nbaseline unreadable: {e:#}\n");
                    }
                }
            }
        }
    }
    let summary_path = out.join("summary.md");
    std::fs::write(&summary_path, &summary)
        .with_context(|| format!("writing {}", summary_path.display()))?;

    println!("\n{summary}");
    println!(
        "reports: {} (each scenario's report.html, results.json)",
        out.display()
    );
    let missed = table.iter().filter(|(_, c)| !c.met).count();
    if missed > 0 {
        println!("{missed} target(s) missed");
        if options.strict {
            bail!("{missed} target(s) missed (--strict)");
        }
    }
    Ok(())
}

/// The runs of one scenario: each run's report folder and results.
type Runs = [(PathBuf, BenchResults)];

/// One end-to-end scenario: the mock's flags, the bench's flags, and how it is judged.
struct Spec {
    id: &'static str,
    title: &'static str,
    mock: Vec<String>,
    /// One or more runs: (label, the bench's flags).
    runs: Vec<(&'static str, Vec<String>)>,
    judge: fn(&Runs, &Spec) -> Vec<TargetCheck>,
    /// The ideal wall time, for S1.
    ideal: Duration,
    /// Concurrency, for the in-flight targets.
    concurrency: u64,
    /// Expected content chunks per stream, for S4.
    chunks_per_stream: u64,
    /// The mock's fixed time to first token, for S4.
    mock_ttft: Duration,
}

struct Scenario {
    spec: Spec,
    runs: Vec<(PathBuf, BenchResults)>,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn specs(quick: bool) -> Vec<Spec> {
    let pick = |full: u64, small: u64| if quick { small } else { full }.to_string();
    let s1_requests = if quick { 4_096 } else { 20_480 };
    let s4_tokens: u64 = if quick { 50 } else { 200 };
    vec![
        Spec {
            id: "S1",
            title: "the classic: latency 1 s, concurrency 1024",
            mock: args(&["--latency", "1s"]),
            runs: vec![(
                "",
                [
                    args(&["--concurrency", "1024", "--requests"]),
                    vec![s1_requests.to_string()],
                ]
                .concat(),
            )],
            judge: judge_s1,
            ideal: Duration::from_secs(s1_requests / 1024),
            concurrency: 1024,
            chunks_per_stream: 0,
            mock_ttft: Duration::ZERO,
        },
        Spec {
            id: "S2",
            title: "overhead: latency 0, concurrency 64",
            mock: args(&["--latency", "0"]),
            runs: vec![(
                "",
                [
                    args(&["--concurrency", "64", "--requests"]),
                    vec![pick(200_000, 20_000)],
                ]
                .concat(),
            )],
            judge: judge_s2,
            ideal: Duration::ZERO,
            concurrency: 64,
            chunks_per_stream: 0,
            mock_ttft: Duration::ZERO,
        },
        Spec {
            id: "S3",
            title: "scale: latency 1 s, concurrency 10 000",
            mock: args(&["--latency", "1s"]),
            runs: vec![(
                "",
                [
                    args(&["--concurrency", "10000", "--requests"]),
                    vec![pick(100_000, 20_000)],
                ]
                .concat(),
            )],
            judge: judge_s3,
            ideal: Duration::ZERO,
            concurrency: 10_000,
            chunks_per_stream: 0,
            mock_ttft: Duration::ZERO,
        },
        Spec {
            id: "S4",
            title: "streaming: 1 000 concurrent streams, 10 ms between chunks",
            mock: [
                args(&["--ttft", "10ms", "--inter-token", "10ms", "--output-tokens"]),
                vec![s4_tokens.to_string()],
            ]
            .concat(),
            runs: vec![(
                "",
                [
                    args(&["--stream", "--concurrency", "1000", "--requests"]),
                    vec![
                        pick(3_000, 1_000),
                        "--max-tokens".into(),
                        s4_tokens.to_string(),
                    ],
                ]
                .concat(),
            )],
            judge: judge_s4,
            ideal: Duration::ZERO,
            concurrency: 1000,
            chunks_per_stream: s4_tokens,
            mock_ttft: Duration::from_millis(10),
        },
        Spec {
            id: "S6",
            title: "full default middleware stack vs bare transport, latency 0",
            mock: args(&["--latency", "0"]),
            runs: vec![
                (
                    "bare",
                    [
                        args(&["--stack", "bare", "--concurrency", "64", "--requests"]),
                        vec![pick(100_000, 20_000)],
                    ]
                    .concat(),
                ),
                (
                    "full",
                    [
                        args(&["--stack", "full", "--concurrency", "64", "--requests"]),
                        vec![pick(100_000, 20_000)],
                    ]
                    .concat(),
                ),
            ],
            judge: judge_s6,
            ideal: Duration::ZERO,
            concurrency: 64,
            chunks_per_stream: 0,
            mock_ttft: Duration::ZERO,
        },
    ]
}

fn check(figure: &str, value: f64, unit: &str, target: String, met: bool) -> TargetCheck {
    TargetCheck {
        figure: figure.to_owned(),
        value,
        unit: unit.to_owned(),
        target,
        met,
    }
}

fn server_mean(results: &BenchResults) -> Option<f64> {
    results.server.as_ref().map(|s| s.mean_in_flight)
}

/// The in-flight figure judged: the server's, or the client's when the server has no
/// `/stats` (another server than volley mock).
fn in_flight(results: &BenchResults) -> (&'static str, f64) {
    match server_mean(results) {
        Some(mean) => ("server mean in flight (steady middle 80 %)", mean),
        None => (
            "client mean in flight (steady middle 80 %; the server has no /stats)",
            results.summary.mean_in_flight,
        ),
    }
}

fn judge_s1(runs: &Runs, spec: &Spec) -> Vec<TargetCheck> {
    let r = &runs[0].1;
    let ideal = spec.ideal.as_secs_f64();
    let wall = r.summary.wall_ms / 1000.0;
    let (figure, mean) = in_flight(r);
    vec![
        check(figure, mean, "", "≥ 1022".into(), mean >= 1022.0),
        check(
            "wall time",
            wall,
            "s",
            format!("≤ {:.2} (1.02 × {ideal:.0} s)", 1.02 * ideal),
            wall <= 1.02 * ideal,
        ),
        check(
            "client CPU per request",
            r.summary.cpu_us_per_request,
            "µs",
            "≤ 20".into(),
            r.summary.cpu_us_per_request <= 20.0,
        ),
        check(
            "errors",
            r.summary.failed as f64,
            "",
            "0".into(),
            r.summary.failed == 0,
        ),
    ]
}

fn judge_s2(runs: &Runs, _: &Spec) -> Vec<TargetCheck> {
    let r = &runs[0].1;
    vec![
        check(
            "client CPU per request (user + sys)",
            r.summary.cpu_us_per_request,
            "µs",
            "≤ 10 (oha: 14.3)".into(),
            r.summary.cpu_us_per_request <= 10.0,
        ),
        check(
            "requests per second",
            r.summary.requests_per_sec,
            "req/s",
            "reported".into(),
            true,
        ),
        check(
            "errors",
            r.summary.failed as f64,
            "",
            "0".into(),
            r.summary.failed == 0,
        ),
    ]
}

fn judge_s3(runs: &Runs, spec: &Spec) -> Vec<TargetCheck> {
    let r = &runs[0].1;
    let want = 0.99 * spec.concurrency as f64;
    let (figure, mean) = in_flight(r);
    let rss_mb = r.resources.peak_rss_bytes as f64 / 1e6;
    vec![
        check(
            figure,
            mean,
            "",
            format!("≥ {want:.0} (99 %)"),
            mean >= want,
        ),
        check(
            "client peak RSS",
            rss_mb,
            "MB",
            "≤ 200".into(),
            rss_mb <= 200.0,
        ),
        check(
            "errors",
            r.summary.failed as f64,
            "",
            "0".into(),
            r.summary.failed == 0,
        ),
    ]
}

fn judge_s4(runs: &Runs, spec: &Spec) -> Vec<TargetCheck> {
    let r = &runs[0].1;
    // The mock's own TTFT (request read to first chunk sent), as it measured it; the
    // configured one when it did not say.
    let (mock_ttft, source) = match r.server.as_ref().and_then(|s| s.ttft) {
        Some(server) => (server.p99, "the mock's measured p99"),
        None => (
            spec.mock_ttft.as_secs_f64() * 1000.0,
            "the mock's configured",
        ),
    };
    let p99 = r.ttft.map_or(f64::NAN, |t| t.p99);
    let expected = r.summary.ok * spec.chunks_per_stream;
    vec![
        check(
            "client TTFT p99",
            p99,
            "ms",
            format!("≤ {:.1} ({source} {mock_ttft:.1} ms + 5)", mock_ttft + 5.0),
            p99 <= mock_ttft + 5.0,
        ),
        check(
            "content chunks received",
            r.summary.chunks as f64,
            "",
            format!("= {expected} (no chunk dropped)"),
            r.summary.chunks == expected && r.summary.failed == 0,
        ),
        check(
            "client CPU per chunk",
            r.summary.cpu_us_per_chunk,
            "µs",
            "≤ 10".into(),
            r.summary.cpu_us_per_chunk <= 10.0,
        ),
    ]
}

fn judge_s6(runs: &Runs, _: &Spec) -> Vec<TargetCheck> {
    let bare = runs[0].1.summary.cpu_us_per_request;
    let full = runs[1].1.summary.cpu_us_per_request;
    let extra = (full / bare - 1.0) * 100.0;
    vec![
        check(
            "bare transport CPU per request",
            bare,
            "µs",
            "—".into(),
            true,
        ),
        check("full stack CPU per request", full, "µs", "—".into(), true),
        check(
            "full stack over bare",
            extra,
            "%",
            "≤ 10".into(),
            extra <= 10.0,
        ),
    ]
}

/// CPU pinning: the mock on core 0, the client on core 1, when there are two cores and
/// `taskset` exists.
struct Pinning {
    taskset: bool,
}

impl Pinning {
    fn detect() -> Pinning {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Both cores must be in this process's CPU set (a container may allow others only).
        let runs_on = |core: &str| {
            Command::new("taskset")
                .args(["-c", core, "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let taskset = cores >= 2 && runs_on("0") && runs_on("1");
        Pinning { taskset }
    }

    fn describe(&self) -> &'static str {
        if self.taskset {
            "pinning: mock on core 0, client on core 1 (taskset)"
        } else {
            "pinning: none (fewer than two usable cores 0 and 1, or no taskset); mock and client share the CPU"
        }
    }

    fn command(&self, core: u32, program: &Path) -> Command {
        if self.taskset {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

/// A `volley mock` child process, killed on drop.
struct Mock {
    child: Child,
    origin: String,
}

impl Mock {
    fn start(volley: &Path, pinning: &Pinning, flags: &[String]) -> anyhow::Result<Mock> {
        let mut child = pinning
            .command(0, volley)
            .arg("mock")
            .args(["--port", "0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting volley mock")?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("volley mock's stderr was not captured");
        };
        // Read its stderr on a thread: the line saying where it listens, then drain the rest so
        // it never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // "volley mock: serving http://127.0.0.1:PORT/v1 (stats at ...); ..."
                if let Some(rest) = line.split("serving ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches("/v1").to_owned());
                }
            }
        });
        let origin = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(origin) => origin,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("volley mock did not say where it listens within 20 s ({e})");
            }
        };
        Ok(Mock { child, origin })
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_scenario(
    volley: &Path,
    pinning: &Pinning,
    spec: &Spec,
    bench_flags: &[String],
    dir: &Path,
    target: Option<&str>,
) -> anyhow::Result<BenchResults> {
    let (mock, base_url) = match target {
        Some(url) => (None, url.to_owned()),
        None => {
            let mock = Mock::start(volley, pinning, &spec.mock)?;
            let url = format!("{}/v1", mock.origin);
            (Some(mock), url)
        }
    };
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(spec.id)
        .to_owned();
    let started = Instant::now();
    let status = pinning
        .command(1, volley)
        .arg("bench")
        .args(["--base-url", &base_url])
        .args(bench_flags)
        .args(["--name", &name, "--quiet", "--report"])
        .arg(dir)
        // Hard bound: no scenario may run away.
        .args(["--duration", "300s"])
        .stdin(Stdio::null())
        .status()
        .context("running volley bench")?;
    drop(mock);
    if !status.success() {
        bail!("volley bench for {name} failed ({status})");
    }
    let path = dir.join("results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let results: BenchResults =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    println!(
        "{name}: {} requests in {:.1} s ({:.0} req/s), {:.1} µs CPU/request, {} failed (run took {:.1} s)",
        results.summary.requests,
        results.summary.wall_ms / 1000.0,
        results.summary.requests_per_sec,
        results.summary.cpu_us_per_request,
        results.summary.failed,
        started.elapsed().as_secs_f64()
    );
    Ok(results)
}

fn load_baseline(baseline: &Path, name: &str) -> anyhow::Result<Option<BenchResults>> {
    let path = if baseline.is_dir() {
        baseline.join(name).join("results.json")
    } else {
        baseline.to_path_buf()
    };
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let results: BenchResults =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if !baseline.is_dir() && results.name != name {
        return Ok(None);
    }
    Ok(Some(results))
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Criterion's saved estimates (`target/criterion/<group>/<bench>/new/`).
mod criterion {
    use super::*;

    /// One benchmark's median and throughput.
    pub(super) struct Micro {
        pub(super) median_ns: f64,
        /// Bytes or elements per iteration.
        pub(super) per_iter: Option<(f64, bool)>,
    }

    impl Micro {
        pub(super) fn throughput(&self) -> Option<String> {
            let (amount, bytes) = self.per_iter?;
            let per_sec = amount / (self.median_ns / 1e9);
            Some(if bytes {
                format!("{:.2} GB/s", per_sec / 1e9)
            } else {
                format!("{:.2} M elements/s", per_sec / 1e6)
            })
        }
    }

    pub(super) fn read(dir: &Path) -> BTreeMap<String, Micro> {
        let mut out = BTreeMap::new();
        let Ok(groups) = std::fs::read_dir(dir) else {
            return out;
        };
        for group in groups.flatten() {
            let Ok(benches) = std::fs::read_dir(group.path()) else {
                continue;
            };
            for bench in benches.flatten() {
                let new = bench.path().join("new");
                let Some(median_ns) = read_json(&new.join("estimates.json"))
                    .and_then(|v| v["median"]["point_estimate"].as_f64())
                else {
                    continue;
                };
                let per_iter = read_json(&new.join("benchmark.json")).and_then(|v| {
                    let t = &v["throughput"];
                    t["Bytes"]
                        .as_f64()
                        .or_else(|| t["BytesDecimal"].as_f64())
                        .map(|b| (b, true))
                        .or_else(|| t["Elements"].as_f64().map(|e| (e, false)))
                });
                let name = format!(
                    "{}/{}",
                    group.file_name().to_string_lossy(),
                    bench.file_name().to_string_lossy()
                );
                out.insert(
                    name,
                    Micro {
                        median_ns,
                        per_iter,
                    },
                );
            }
        }
        out
    }

    fn read_json(path: &Path) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// S5: the full SSE decoder (size caps on) on chat-completion chunk streams, ≥ 3 GB/s.
    pub(super) fn judge_sse(micro: &BTreeMap<String, Micro>) -> Vec<TargetCheck> {
        let mut checks = Vec::new();
        for (name, m) in micro.iter().filter(|(n, _)| n.starts_with("sse_")) {
            let Some((bytes, true)) = m.per_iter else {
                continue;
            };
            let gbps = bytes / m.median_ns;
            checks.push(check(
                &format!("SSE decoding {name}"),
                gbps,
                "GB/s",
                "≥ 3".into(),
                gbps >= 3.0,
            ));
        }
        if checks.is_empty() {
            checks.push(check(
                "SSE decoding",
                f64::NAN,
                "GB/s",
                "≥ 3 (not measured: run without --no-criterion)".into(),
                false,
            ));
        }
        checks
    }
}

/// oha on S1 and S2 against the same mock, when it is installed.
mod oha {
    use super::*;

    pub(super) fn compare(
        volley: &Path,
        pinning: &Pinning,
        scenarios: &[Scenario],
        quick: bool,
        target: Option<&str>,
    ) -> String {
        let installed = Command::new("oha")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            println!("oha: not installed (cargo install oha); no Volley/oha ratios");
            return "not installed (`cargo install oha`); no Volley/oha ratios.".into();
        }
        let mut out = String::from(
            "oha's CPU is its whole process (start-up, connecting, the report), Volley's the \
             measured window; both against the same server process.\n\n| scenario | oha CPU µs/request | Volley CPU µs/request | Volley/oha CPU | oha server in flight | Volley server in flight |\n|---|---|---|---|---|---|\n",
        );
        for scenario in scenarios
            .iter()
            .filter(|s| s.spec.id == "S1" || s.spec.id == "S2")
        {
            let requests = if scenario.spec.id == "S1" {
                if quick { 4_096 } else { 20_480 }
            } else if quick {
                20_000
            } else {
                200_000
            };
            let volley_results = &scenario.runs[0].1;
            match run_oha(volley, pinning, &scenario.spec, requests, target) {
                Ok((cpu_us, in_flight)) => {
                    let _ = writeln!(
                        out,
                        "| {} | {:.1} | {:.1} | {:.2} | {} | {} |",
                        scenario.spec.id,
                        cpu_us,
                        volley_results.summary.cpu_us_per_request,
                        volley_results.summary.cpu_us_per_request / cpu_us,
                        in_flight.map_or("n/a".into(), |v| format!("{v:.1}")),
                        server_mean(volley_results).map_or("n/a".into(), |v| format!("{v:.1}")),
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "| {} | failed: {e:#} | | | | |", scenario.spec.id);
                }
            }
        }
        out
    }

    /// Runs oha under `bash -c '…; times'` to read its CPU time; returns (µs per request,
    /// the server's steady mean in flight).
    fn run_oha(
        volley: &Path,
        pinning: &Pinning,
        spec: &Spec,
        requests: u64,
        target: Option<&str>,
    ) -> anyhow::Result<(f64, Option<f64>)> {
        let (mock, base) = match target {
            Some(url) => (None, url.to_owned()),
            None => {
                let mock = Mock::start(volley, pinning, &spec.mock)?;
                let base = format!("{}/v1", mock.origin);
                (Some(mock), base)
            }
        };
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;
        let url = format!("{base}/chat/completions");
        let pin = if pinning.taskset { "taskset -c 1 " } else { "" };
        // LC_ALL=C: `times` prints its seconds with the locale's decimal separator.
        let script = format!(
            "export LC_ALL=C; {pin}oha --no-tui -n {requests} -c {} -m POST -H 'content-type: application/json' -d '{body}' '{url}' >/dev/null && times",
            spec.concurrency
        );
        // Another server may have no statistics: then no server-side figure.
        let origin = mock.as_ref().map(|m| m.origin.clone());
        if let Some(origin) = &origin {
            http(origin, "POST", "/stats/reset")?;
        }
        let output = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .context("running oha")?;
        if !output.status.success() {
            bail!("oha failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let in_flight = match &origin {
            Some(origin) => steady_mean(&http(origin, "GET", "/stats")?),
            None => None,
        };
        drop(mock);
        // `times` prints two lines: the shell's user/sys, then its children's.
        let text = String::from_utf8_lossy(&output.stdout);
        let children = text.lines().last().unwrap_or_default();
        let cpu: f64 = children
            .split_whitespace()
            .map(parse_times)
            .sum::<anyhow::Result<f64>>()?;
        Ok((cpu * 1e6 / requests as f64, in_flight))
    }

    /// `0m1.234s` → 1.234.
    pub(super) fn parse_times(s: &str) -> anyhow::Result<f64> {
        let (m, rest) = s.split_once('m').context("times output")?;
        let secs = rest.trim_end_matches('s');
        Ok(m.parse::<f64>()? * 60.0 + secs.parse::<f64>()?)
    }

    /// The mean of the server's in-flight timeline over its busy span's middle 80 %.
    fn steady_mean(stats: &serde_json::Value) -> Option<f64> {
        let points: Vec<f64> = stats["timeline"]
            .as_array()?
            .iter()
            .filter_map(|b| b["in_flight"].as_f64())
            .collect();
        let first = points.iter().position(|&v| v > 0.0)?;
        let last = points.iter().rposition(|&v| v > 0.0)?;
        let busy = &points[first..=last];
        let cut = busy.len() / 10;
        let middle = &busy[cut..busy.len() - cut];
        (!middle.is_empty()).then(|| middle.iter().sum::<f64>() / middle.len() as f64)
    }
}

/// A minimal HTTP/1.1 request to the mock (no client library in xtask).
fn http(origin: &str, method: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let host = origin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bash_times() {
        assert!((oha::parse_times("0m1.250s").unwrap() - 1.25).abs() < 1e-9);
        assert!((oha::parse_times("2m0.500s").unwrap() - 120.5).abs() < 1e-9);
        assert!(oha::parse_times("1.5").is_err());
    }

    #[test]
    fn options() {
        let o = parse_args(&["--quick".into(), "--only".into(), "s1,S2".into()])
            .unwrap()
            .unwrap();
        assert!(o.quick && o.criterion);
        assert_eq!(o.only.unwrap(), vec!["S1", "S2"]);
        assert!(parse_args(&["--bogus".into()]).is_err());
        assert!(parse_args(&["--baseline".into()]).is_err());
    }

    #[test]
    fn a_target_is_plain_http_on_loopback() {
        let o = parse_args(&["--target".into(), "http://127.0.0.1:8081/v1/".into()])
            .unwrap()
            .unwrap();
        assert_eq!(o.target.as_deref(), Some("http://127.0.0.1:8081/v1"));
        for ok in [
            "http://localhost:80/v1",
            "http://[::1]:8081/v1",
            "http://127.0.0.1/v1",
        ] {
            assert!(loopback_target(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.5:8081/v1",
            "http://127.0.0.1.example.com/v1",
            "https://127.0.0.1:8443/v1",
            "http://api.openai.com/v1",
        ] {
            assert!(loopback_target(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn without_server_stats_the_clients_in_flight_is_judged() {
        let mut r = BenchResults::default();
        r.summary.mean_in_flight = 1023.0;
        let (figure, mean) = in_flight(&r);
        assert!(figure.starts_with("client"), "{figure}");
        assert_eq!(mean, 1023.0);
        r.server = Some(volley_bench::results::ServerSide {
            mean_in_flight: 1021.0,
            ..Default::default()
        });
        assert_eq!(
            in_flight(&r),
            ("server mean in flight (steady middle 80 %)", 1021.0)
        );
    }

    #[test]
    fn s6_judges_the_ratio() {
        let mut bare = BenchResults::default();
        bare.summary.cpu_us_per_request = 10.0;
        let mut full = BenchResults::default();
        full.summary.cpu_us_per_request = 10.5;
        let runs = vec![(PathBuf::new(), bare), (PathBuf::new(), full)];
        let spec = &specs(true)[4];
        let checks = judge_s6(&runs, spec);
        assert!(checks[2].met, "{:?}", checks[2]);
        assert!((checks[2].value - 5.0).abs() < 1e-9);
    }
}
