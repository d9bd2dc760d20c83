//! `volley bench`: flags to a [`BenchConfig`], a live progress line, the report.
//!
//! Everything measured and written is `volley_bench` library code; this module only parses
//! flags, starts the embedded mock for `--mock`, and prints.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use volley::core::ApiKey;
use volley::core::duration::parse_duration;
use volley_bench::{
    Arrivals, Bench, BenchConfig, Lengths, Load, Ramp, StackKind, WorkerRuntimes, report,
};
use volley_mock::MockServer;

use crate::config::{
    self, Balancing, BalancingFlags, Connection, ConnectionFlags, Layers, SourceArgs, UsageError,
};
use crate::mock::MockBehaviour;

/// Load-test an OpenAI-compatible endpoint and report what happened.
///
/// Closed loop (--concurrency C: C workers, each sends its next request when the previous one
/// finished), open loop (--rate R requests per second, Poisson or constant arrivals), or a ramp
/// (--ramp "1..1024 over 30s"). Stops after --requests N, --duration D, or whichever comes
/// first. Measures requests/s, in flight over time (client side, and server side when the
/// target is volley-mock), latency percentiles, time to first token and between tokens for
/// --stream, errors by kind, connections, client CPU time and peak RSS.
///
/// --report DIR writes results.json (stable schema), report.md and report.html (charts).
///
/// Against a real API the key comes from OPENAI_API_KEY (or the variable --api-key-env names);
/// none goes to the default target, which a base URL or --api-key-env must replace first.
/// Only point load at servers you run or are allowed to load. With --mock the mock runs in this process and its CPU time counts
/// as the client's: for CPU figures run `volley mock` as its own process (`cargo xtask bench`
/// does).
///
/// The connection settings (--base-url, --api-key-env, --allow-plain-http) come from flags,
/// then VOLLEY_<NAME> variables, then the volley.toml profile (--profile NAME), then
/// OPENAI_BASE_URL, then defaults (the base URL's is volley mock's, http://127.0.0.1:8080/v1);
/// --print-config shows each and where it came from. The load flags are this command's own.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct BenchArgs {
    /// Run against a mock server embedded in this process (the latency, fault and rate-limit
    /// flags below configure it, as for `volley mock`).
    #[arg(long, conflicts_with = "base_url")]
    mock: bool,

    /// Closed loop with this many concurrent requests [default: 64 when no other load is given].
    #[arg(long, short = 'c', conflicts_with_all = ["rate", "ramp"])]
    concurrency: Option<usize>,
    /// Open loop at this many requests per second.
    #[arg(long, conflicts_with = "ramp")]
    rate: Option<f64>,
    /// Arrivals of the open loop: poisson or constant.
    #[arg(long, default_value = "poisson", requires = "rate")]
    arrivals: Arrivals,
    /// Open loop: the most requests in flight; arrivals beyond it are dropped and counted.
    #[arg(long, default_value_t = volley_bench::DEFAULT_MAX_IN_FLIGHT, requires = "rate")]
    max_in_flight: usize,
    /// A closed loop whose concurrency grows linearly, e.g. "1..1024 over 30s", then holds.
    #[arg(long)]
    ramp: Option<Ramp>,
    /// Find the knee: closed loops at concurrencies about 19 % apart from 1 to MAX (--requests per
    /// slot each, default 20), then the lowest concurrency reaching 95 % of the best
    /// throughput and its median latency; with --report, knee.svg and knee.md charts them.
    #[arg(
        long,
        value_name = "MAX",
        conflicts_with_all = ["concurrency", "rate", "ramp", "duration"]
    )]
    find_knee: Option<usize>,

    /// Stop after this many requests (with --rate: arrivals, those dropped at
    /// --max-in-flight included).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Send this many requests first, at the run's concurrency (with --rate, a second's
    /// arrivals), and leave them out of the figures: the connections (TLS handshakes
    /// included) are open and a server's caches warm when the clock starts; at most 60 s is
    /// spent on them, and --find-knee gives each step at most one a slot [default: 0].
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u64,
    /// Stop starting requests after this long (e.g. 30s, 2m); those in flight are finished,
    /// for at most --grace more.
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// After --duration: how long requests in flight may still take before they are
    /// cancelled and counted as unfinished.
    #[arg(long, value_parser = duration, default_value = "30s", requires = "duration")]
    grace: Duration,
    /// The most one request may take (e.g. 30s), a stream whole included; a request past it
    /// fails as a timeout [default: 600s, a stream 30m].
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,

    /// Streaming requests: measures time to first token and between tokens.
    #[arg(long)]
    stream: bool,
    /// The model named in every request.
    #[arg(long, default_value = volley_bench::DEFAULT_MODEL)]
    model: String,
    /// Prompt lengths in tokens: "64", "16..512", "lognormal:256,64".
    #[arg(long, default_value = "64")]
    prompt_tokens: Lengths,
    /// max_tokens of each request (the output length asked for): "16", "8..256",
    /// "lognormal:200,50". With --mock, the mock sends at most --output-tokens.
    #[arg(long, default_value = "16")]
    max_tokens: Lengths,
    /// The field that asks for the output length: max_tokens, or max_completion_tokens
    /// (OpenAI's reasoning and newest models refuse max_tokens).
    #[arg(long, value_name = "FIELD", default_value = "max_tokens")]
    max_tokens_field: volley_bench::MaxTokensField,
    /// Streams without stream_options (for a server that refuses it); their output tokens
    /// are then counted by content chunk.
    #[arg(long)]
    no_stream_usage: bool,
    /// One more member of every request body, NAME=JSON (repeatable): temperature=0,
    /// ignore_eos=true (vLLM), 'stop=["\n"]'.
    #[arg(long, value_name = "NAME=JSON", value_parser = body_field)]
    body_field: Vec<(String, serde_json::Value)>,
    /// The client measured: full (the default middleware stack, without retries) or bare
    /// (the transport alone).
    #[arg(long, default_value = "full")]
    stack: StackKind,
    /// The client's concurrency limit adapts, as `volley run --concurrency auto:C` does, with
    /// the load's concurrency as its ceiling (the load offered stays the same); the summary
    /// and the report's in-flight chart show where the limit went.
    #[arg(long)]
    adaptive: bool,
    /// Threads of the load generator, each with a runtime of its own [default: the cores this
    /// process may use].
    #[arg(long)]
    threads: Option<usize>,

    /// Write results.json, report.md and report.html into this folder.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// A name for the run, shown in the report.
    #[arg(long, default_value = "bench")]
    name: String,
    /// No live progress line; only the summary.
    #[arg(long, short)]
    quiet: bool,
    /// Print results.json to standard output instead of the summary.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    mock_behaviour: MockBehaviour,

    #[command(flatten)]
    connection: ConnectionFlags,
    #[command(flatten)]
    balancing: BalancingFlags,
    #[command(flatten)]
    sources: SourceArgs,
}

/// `--find-knee MAX`: the ladder, a table of its steps, the knee, and with `--report` the
/// chart (`knee.svg`) and a table (`knee.md`).
async fn find_knee(
    config: &BenchConfig,
    max: usize,
    per_slot: Option<u64>,
    report: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use volley_bench::knee;
    if max == 0 {
        return Err(UsageError("--find-knee must be at least 1".into()).into());
    }
    let steps = match knee::find_knee(config, &knee::ladder(max), per_slot.unwrap_or(20)).await {
        Ok(steps) => steps,
        // The server refused a step's first requests: not a mistake in the flags.
        Err(e) if e.kind() == volley::ErrorKind::Status => {
            say!(
                "volley bench: {e}; check the base URL (it ends in /v1, or the provider's API \
                 path), --model and --max-tokens against what the server takes"
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(UsageError(format!("{e}")).into()),
    };
    let mut table = String::from(
        "| concurrency | ok % | req/s measured | req/s steady | p50 ms |\n|---:|---:|---:|---:|---:|\n",
    );
    for s in &steps {
        table += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            s.concurrency,
            s.success_share * 100.0,
            s.requests_per_sec,
            s.steady_requests_per_sec(),
            s.p50_ms
        );
    }
    let found = knee::knee_of(&steps);
    let verdict = match &found {
        Some(k) => format!(
            "knee: {} in flight reach {:.1} req/s steady ({:.0} % of the best, {:.1}), p50 {:.1} ms",
            k.concurrency,
            k.requests_per_sec,
            k.requests_per_sec * 100.0 / k.max_requests_per_sec,
            k.max_requests_per_sec,
            k.p50_ms
        ),
        None => format!(
            "knee: none found: no step had {:.0} % of its requests succeed",
            knee::KNEE_SHARE * 100.0
        ),
    };
    print!("{table}\n{verdict}\n");
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let svg = knee::knee_svg(&steps, found.as_ref());
        std::fs::write(dir.join("knee.svg"), &svg).context("writing knee.svg")?;
        std::fs::write(
            dir.join("knee.md"),
            format!("# Knee\n\n{verdict}\n\n{table}\n![knee](knee.svg)\n"),
        )
        .context("writing knee.md")?;
    }
    Ok(if found.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Runs `volley bench` on `--threads` current-thread runtimes, one per thread (as oha does):
/// the lanes are spread over them, so a request stays on the thread it started on, and so
/// does its connection as a rule (the pool prefers a connection opened on the caller's
/// thread). Against a multi-threaded runtime this saved 2.5 % of the instructions per request
/// and about a tenth of the CPU at S1 on two cores (docs/benchmarks.md, fourth pass); keeping
/// connections on their threads saved about a sixth of the CPU at S2 (fifth pass). The first
/// runtime, on this thread, also runs the rest (the progress line, the report); an embedded
/// mock (`--mock`) gets a multi-threaded runtime of its own, as a separate server would have.
pub(crate) fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(UsageError("--threads must be at least 1".into()).into());
    }
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // This thread drives the first runtime; each other one has a thread of its own.
    let others =
        WorkerRuntimes::start(threads - 1).context("starting the load generator's threads")?;
    let mut workers = vec![main.handle().clone()];
    workers.extend(others.handles().iter().cloned());
    // The embedded mock is a server: it gets threads of its own, not one lane's.
    let mock = if args.mock {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("volley-mock")
                .enable_all()
                .build()
                .context("starting the embedded mock's runtime")?,
        )
    } else {
        None
    };
    let result = main.block_on(run(
        args,
        workers,
        mock.as_ref().map(|m| m.handle().clone()),
    ));
    drop(others);
    if let Some(mock) = mock {
        mock.shutdown_timeout(Duration::from_secs(1));
    }
    main.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(
    args: BenchArgs,
    workers: Vec<tokio::runtime::Handle>,
    mock_runtime: Option<tokio::runtime::Handle>,
) -> anyhow::Result<ExitCode> {
    // The load tester's default target is the local mock, not a paid API.
    let mut defaults = figment::value::Dict::new();
    defaults.insert(
        "base_url".to_owned(),
        volley_bench::DEFAULT_BASE_URL.to_owned().into(),
    );
    let layers = Layers::load(
        &args.sources,
        &[&args.connection, &args.balancing],
        defaults,
    )?;
    let connection: Connection = layers.extract()?;
    let balancing: Balancing = layers.extract()?;
    if args.sources.print_config {
        let mut rows = config::connection_rows(&layers, &connection, args.mock);
        rows.extend(layers.rows(&balancing));
        print!("{}", layers.render(&rows));
        return Ok(ExitCode::SUCCESS);
    }
    layers.check_destination(args.mock)?;
    let load = match (args.concurrency, args.rate, args.ramp) {
        (_, Some(rate), _) => Load::Open {
            rate,
            arrivals: args.arrivals,
        },
        (_, _, Some(ramp)) => Load::Ramp(ramp),
        (concurrency, None, None) => Load::Closed {
            concurrency: concurrency.unwrap_or(64),
        },
    };
    if args.find_knee.is_none() && args.requests.is_none() && args.duration.is_none() {
        return Err(
            UsageError("say when to stop: --requests N, --duration D, or both".into()).into(),
        );
    }

    let mock = match mock_runtime {
        Some(runtime) => {
            let config = args.mock_behaviour.config()?;
            Some(
                runtime
                    .spawn(MockServer::start(config))
                    .await
                    .context("starting the embedded mock server")?
                    .context("starting the embedded mock server")?,
            )
        }
        None => None,
    };
    // The key goes only to a real endpoint, never to the embedded mock; a local server may
    // need none (Azure OpenAI always needs one).
    let mut client = volley_bench::default_client().allow_plain_http(connection.allow_plain_http);
    if let Some(limit) = args.timeout {
        // A stream is bounded whole, not only to its first chunk.
        client = client.timeout(limit).stream_timeout(limit);
    }
    client = config::apply_network(client, &connection, mock.is_some())?;
    client = balancing.apply(client);
    // A repeated --base-url (or the profile's endpoint tables): the load is balanced over them.
    let endpoints = if mock.is_some() {
        Vec::new()
    } else {
        config::client_endpoints(&layers, &connection)?.unwrap_or_default()
    };
    // Against the default target (volley mock's port on loopback, where anything may listen)
    // a key goes only when asked for: the exported key is the user's real one. Azure, first,
    // always names its endpoint (and says so when it is missing).
    let default_target = ["base_url", "endpoints", "api_key_env"]
        .iter()
        .all(|key| layers.origin(key) == config::Origin::Default);
    let (base_url, api_key) = match &mock {
        Some(server) => (server.url(), None),
        None if connection.provider.0 == volley::Provider::Azure => {
            let endpoint = config::endpoint(&layers, &connection)?;
            match endpoint.credential {
                config::Credential::Key(key) => (endpoint.base_url, Some(ApiKey::new(key))),
                token => {
                    client = config::with_credential(client, token);
                    (endpoint.base_url, None)
                }
            }
        }
        None if default_target => {
            let target = connection.base_url.first().to_owned();
            // The key the provider's branch below would have read.
            let withheld = match connection.provider.0 {
                volley::Provider::Anthropic => config::endpoint(&layers, &connection)
                    .is_ok_and(|e| matches!(e.credential, config::Credential::Key(_))),
                _ => config::read_key(&connection.api_key_env).is_ok(),
            };
            if withheld {
                say!(
                    "volley bench: not sending the API key to the default target {target} \
                     (whatever listens on that port would get it); give --base-url, or \
                     --api-key-env, to send one"
                );
            }
            (target, None)
        }
        // ANTHROPIC_API_KEY, then ANTHROPIC_AUTH_TOKEN, as the SDK reads them; none is fine.
        None if connection.provider.0 == volley::Provider::Anthropic => (
            connection.base_url.first().to_owned(),
            config::endpoint(&layers, &connection)
                .ok()
                .and_then(|endpoint| match endpoint.credential {
                    config::Credential::Key(key) => Some(ApiKey::new(key)),
                    config::Credential::AzureAdToken(_) | config::Credential::None { .. } => None,
                }),
        ),
        None => (
            connection.base_url.first().to_owned(),
            config::read_key(&connection.api_key_env)
                .ok()
                .map(ApiKey::new),
        ),
    };

    let config = BenchConfig {
        name: args.name.clone(),
        base_url,
        endpoints,
        api_key,
        model: args.model.clone(),
        load,
        requests: args.requests,
        warmup: args.warmup,
        duration: args.duration,
        grace: args.grace,
        stream: args.stream,
        prompt_tokens: args.prompt_tokens,
        output_tokens: args.max_tokens,
        stack: args.stack,
        adaptive: args.adaptive,
        max_in_flight: args.max_in_flight,
        seed: args.mock_behaviour.seed,
        embedded_mock: mock.is_some(),
        // The default stack without retries, so failures are counted rather than hidden.
        client: Some(client),
        dialect: connection.provider.0.dialect(),
        workers,
        max_tokens_field: args.max_tokens_field,
        stream_usage: !args.no_stream_usage,
        body_fields: args.body_field.iter().cloned().collect(),
    };
    if let Some(max) = args.find_knee {
        return find_knee(&config, max, args.requests, args.report.as_deref()).await;
    }
    let bench = Bench::new(config).map_err(|e| UsageError(format!("{e}")))?;
    let live = bench.live();
    let stopper = bench.live();
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let progress = show_progress.then(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let secs = live.elapsed().as_secs_f64();
                let finished = live.finished();
                let rate = if secs > 0.0 {
                    finished as f64 / secs
                } else {
                    0.0
                };
                let _ = write!(
                    std::io::stderr(),
                    "\r{secs:7.1}s  sent {:>9}  done {:>9}  failed {:>7}  in flight {:>6}  {:>9.0} req/s ",
                    live.started(),
                    finished,
                    live.failed(),
                    live.in_flight(),
                    rate
                );
                let _ = std::io::stderr().flush();
            }
        })
    });

    // Ctrl-C stops starting requests; those in flight finish and the run is reported. A
    // second Ctrl-C cancels those in flight (counted as unfinished), still reports, and exits
    // 130 as `volley run` does; a third exits at once.
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cancelling = cancelled.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            say!(
                "\nvolley bench: interrupted; finishing the requests in flight (Ctrl-C again to \
                 cancel them)"
            );
            stopper.stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                say!("volley bench: cancelling the requests in flight; writing the results");
                cancelling.store(true, std::sync::atomic::Ordering::Relaxed);
                stopper.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    say!("volley bench: quit; nothing written");
                    std::process::exit(130);
                }
            }
        }
    });
    let results = bench.run().await;
    interrupt.abort();
    if let Some(progress) = progress {
        progress.abort();
        say!();
    }
    if let Some(server) = mock {
        server.shutdown().await;
    }
    let results = results.context("the benchmark failed")?;

    if let Some(dir) = &args.report {
        report::write_report(&results, dir)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).context("serialising the results")?
        );
    } else {
        print!("{}", report::render_text(&results));
        if let Some(dir) = &args.report {
            println!(
                "report: {} (results.json, report.md)",
                dir.join("report.html").display()
            );
        }
    }
    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    // Errors are data in a load test; a run where nothing succeeded is a failure to reach
    // the target, and one the target refused from the start says why.
    if let Some(why) = &results.stopped_early {
        say!(
            "volley bench: stopped: {why}; check the base URL (it ends in /v1, or the \
             provider's API path), --model and --max-tokens against what the server takes"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(if results.summary.ok == 0 && results.summary.requests > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--body-field NAME=JSON`.
fn body_field(text: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=JSON"))?;
    let value = serde_json::from_str(value).map_err(|e| {
        format!(
            "the value of {name:?} is not JSON ({e}); a string needs its quotes: {name}='\"...\"'"
        )
    })?;
    Ok((name.trim().to_owned(), value))
}
