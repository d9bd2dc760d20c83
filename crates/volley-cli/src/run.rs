//! `volley run`: a JSONL batch through the client, one outcome per line, resumable.
//!
//! This module only turns flags into settings, a client and batch options, then shows the
//! run; the engine is `volley_batch`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use volley::core::duration::HumanDuration;
use volley::middleware::retry::Policy;
use volley::redis::RedisStore;
use volley::{Client, ErrorKind};
use volley_batch::{BatchOptions, BatchRunner, Input, Outcome, Summary};
use volley_mock::{Faults, Latency, MockConfig, MockServer};

use crate::config::{
    self, Attempts, AttemptsFlags, Balancing, BalancingFlags, CacheSpec, Connection,
    ConnectionFlags, DISK_CACHE_TTL, Layers, MEMORY_CACHE_BYTES, MEMORY_CACHE_TTL, REDIS_CACHE_TTL,
    RunLoad, RunLoadFlags, RunOutput, RunOutputFlags, SharedLimitSpec, Show, SourceArgs,
    UsageError,
};
use crate::progress::{self, Mode, Printer, Reporter};

/// The exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;
/// The exit code of a run stopped by SIGTERM (128 + SIGTERM).
pub(crate) const EXIT_TERMINATED: u8 = 143;
/// The exit code of a run stopped by SIGHUP (128 + SIGHUP): its terminal closed, or its ssh
/// session dropped.
pub(crate) const EXIT_HANGUP: u8 = 129;
/// The exit code of usage and configuration mistakes (as clap's).
pub(crate) const EXIT_USAGE: u8 = 2;

/// How many invalid lines `--validate` lists.
const VALIDATE_SHOWN: usize = 20;

/// Run a JSONL file of requests (OpenAI Batch API format) as fast as the limits allow.
///
/// Each input line is {"custom_id", "method", "url", "body"}, with url /v1/chat/completions,
/// /v1/embeddings, /v1/completions, /v1/responses, /v1/moderations, /v1/images/generations or
/// /v1/images/edits. OUTPUT (a regular file) gets one line per input line, in the Batch API
/// output format (a response, or an error saying why), failures included; they are also
/// written to the errors file (OpenAI's service writes them to its error file only, so a
/// script written for its output file must skip them here). Run the same command again
/// after a crash or Ctrl-C: lines that already have an outcome in OUTPUT are skipped, only the
/// rest are sent. With --retry-failed, lines whose recorded outcome is a failure are sent
/// again and their new outcome appended: the last record for a custom_id is its outcome.
///
/// With --provider anthropic the files are in Anthropic's Message Batches format: each line
/// {"custom_id", "params"} (params: a Messages request), each outcome {"custom_id", "result":
/// {"type": "succeeded", "message"} or {"type": "errored", "error"}}. A file of the other
/// format is refused at its first line.
///
/// A request rejected with HTTP 401 stops the run (the key is wrong, every line would fail):
/// fix the key and run the same command again with --retry-failed. So do 16 lines in a row
/// ending in 403 (a lone 403, or one flagging its input, fails its line only), and a 429 that
/// says the account's quota is used up (insufficient_quota): add credit, then the same. So do
/// 404s for the run's first 16 lines: check that the base URL ends in /v1, and the lines' url
/// and model.
///
/// Settings come from flags, then VOLLEY_<NAME> variables (VOLLEY_CONCURRENCY, VOLLEY_RPM,
/// VOLLEY_TIMEOUT, ...: every setting below), then the volley.toml profile (--profile NAME for
/// [profile.NAME], used alone, else [default]), then OPENAI_BASE_URL, then defaults;
/// --print-config shows each value and where it came from. Durations are a number with an
/// optional unit (ns, us, ms, s, m, h); a bare number is seconds. The API key is read only from
/// the environment (OPENAI_API_KEY, or the variable named by --api-key-env or api_key_env);
/// volley.toml and VOLLEY_API_KEY must not contain it. A server on this machine (localhost,
/// 127.x, ::1) is called without a key when none is set.
///
/// Many processes (on one machine or many) that use one API key can share its limits through
/// Redis: give each the same --shared-limit redis://HOST:PORT and the same limits (--rpm,
/// --tpm, --input-tpm, --output-tpm; those left out are learned from the provider's headers
/// and shared too), and together they stay within the limits. --cache redis://HOST:PORT
/// shares the cache the same way.
///
/// Exit codes: 0 every line succeeded; 1 some lines failed or were invalid (their error
/// records are in OUTPUT and the errors file), the credentials were rejected, or the run
/// could not go on (an I/O error reading the input or writing outcomes); 2 a usage or
/// configuration mistake found before anything was sent; 130 interrupted by Ctrl-C, 143 by
/// SIGTERM, 129 by SIGHUP (a closed terminal or a dropped ssh session: it stops as after
/// SIGTERM, unless SIGHUP is ignored, as under nohup); run the same command again to resume.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The input JSONL file, or - for stdin.
    #[arg(value_name = "INPUT", required_unless_present = "print_config")]
    input: Option<PathBuf>,
    /// The output JSONL file: appended to, and read on start to skip lines already done.
    #[arg(
        long,
        short,
        value_name = "OUTPUT",
        required_unless_present_any = ["validate", "print_config"]
    )]
    output: Option<PathBuf>,
    /// Where final errors also go [default: OUTPUT with .jsonl replaced by .errors.jsonl, or
    /// .errors.jsonl appended].
    #[arg(long, value_name = "ERRORS")]
    errors: Option<PathBuf>,
    /// Write outcomes in input order (a bounded reorder window holds early ones back; one slow
    /// request holds back all later outcomes, up to its timeout).
    #[arg(long)]
    ordered: bool,
    /// With --ordered: how many lines an outcome may be ahead of the oldest unfinished one
    /// before reading waits [default: 10000].
    #[arg(long, value_name = "N", requires = "ordered", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    reorder_window: Option<usize>,
    /// On resume, send again the lines whose recorded outcome is a failure (HTTP errors,
    /// timeouts, connection failures; not invalid lines) and append their new outcome.
    #[arg(long)]
    retry_failed: bool,
    /// Check the whole input without sending anything: report invalid lines, exit 0 when all
    /// are valid, 1 otherwise.
    #[arg(long)]
    validate: bool,
    /// Send to an in-process mock server instead of a real API (no key needed).
    #[arg(long, conflicts_with = "base_url")]
    mock: bool,
    /// With --mock: the mock's latency, e.g. "250ms" or "lognormal:500ms,0.6" (the grammar of
    /// volley mock --latency).
    #[arg(long, value_name = "LATENCY", requires = "mock")]
    mock_latency: Option<Latency>,
    /// With --mock: fault probabilities, e.g. "429=0.1,500=0.05,reset=0.01" (the grammar of
    /// volley mock --faults).
    #[arg(long, value_name = "FAULTS", requires = "mock")]
    mock_faults: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090 (a bare port binds
    /// 127.0.0.1; port 0 is refused).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics_addr: Option<SocketAddr>,
    /// After Ctrl-C, SIGTERM or SIGHUP, how long in-flight requests may take to finish before
    /// the run stops, e.g. 30s (a bare number is seconds) [default: the engine's]; under an
    /// orchestrator, set it below its own wait before SIGKILL (Kubernetes' is 30 s, docker
    /// stop's 10 s): requests cut off then may be billed again on resume. A second Ctrl-C
    /// ends it at once (the outcomes received are still written); a third quits.
    #[arg(long, value_name = "D")]
    grace: Option<HumanDuration>,
    /// No progress and no summary; errors and the resume hint are still printed.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    connection: ConnectionFlags,
    #[command(flatten)]
    attempts: AttemptsFlags,
    #[command(flatten)]
    load: RunLoadFlags,
    #[command(flatten)]
    output_settings: RunOutputFlags,
    #[command(flatten)]
    balancing: BalancingFlags,
    #[command(flatten)]
    sources: SourceArgs,
}

/// The settings of a run, and the layers they came from.
struct Settings {
    connection: Connection,
    attempts: Attempts,
    load: RunLoad,
    output: RunOutput,
    balancing: Balancing,
    layers: Layers,
}

impl Settings {
    /// The settings in force, from flags, environment, `volley.toml` and defaults.
    fn resolve(args: &RunArgs) -> Result<Settings, UsageError> {
        let layers = Layers::load(
            &args.sources,
            &[
                &args.connection,
                &args.attempts,
                &args.load,
                &args.output_settings,
                &args.balancing,
            ],
            Default::default(),
        )?;
        Ok(Settings {
            connection: layers.extract()?,
            attempts: layers.extract()?,
            load: layers.extract()?,
            output: layers.extract()?,
            balancing: layers.extract()?,
            layers,
        })
    }

    /// The attempt timeout; 0 turns it off.
    fn timeout(&self) -> Option<Duration> {
        Some(self.attempts.timeout.0).filter(|t| !t.is_zero())
    }

    /// The settings and their sources, one per line, for `--print-config`.
    fn describe(&self, mock: bool) -> String {
        let mut rows = config::connection_rows(&self.layers, &self.connection, mock);
        rows.extend(self.layers.rows(&self.attempts));
        rows.extend(self.layers.rows(&self.load));
        rows.extend(self.layers.rows(&self.output));
        rows.extend(self.layers.rows(&self.balancing));
        self.layers.render(&rows)
    }
}

/// Runs `volley run`.
///
/// # Errors
/// [`UsageError`] for mistakes in flags, environment or configuration (exit code 2); others
/// when the run cannot go on (exit code 1).
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.sources.print_config {
        print!("{}", Settings::resolve(&args)?.describe(args.mock));
        return Ok(ExitCode::SUCCESS);
    }
    let input_path = args
        .input
        .clone()
        .expect("clap requires INPUT unless --print-config");
    let input = Input::from_arg(&input_path);
    // Validation sends nothing, so it needs no settings (and works with a broken volley.toml).
    if let Input::Path(path) = &input
        && let Err(e) = std::fs::metadata(path)
    {
        return Err(UsageError(format!("cannot read the input {}: {e}", path.display())).into());
    }
    if args.validate {
        // The provider decides the format and the settings the longest line; a broken
        // volley.toml falls back to OpenAI's format and the default.
        let (format, max_line_bytes) = Settings::resolve(&args)
            .map(|s| (batch_format(&s.connection), s.load.max_line_size.get()))
            .unwrap_or((
                volley_batch::Format::default(),
                BatchOptions::default().max_line_bytes,
            ));
        return validate(input, format, max_line_bytes).await;
    }
    let settings = Settings::resolve(&args)?;
    settings.layers.check_destination(args.mock)?;
    let output = args
        .output
        .clone()
        .expect("clap requires --output unless --validate or --print-config");
    let errors = args
        .errors
        .clone()
        .unwrap_or_else(|| default_errors_path(&output));
    check_paths(&input_path, &output, &errors)?;
    if args.errors.is_none() {
        refuse_stale_errors(&output, &errors)?;
    }

    // The mock lives until the end of this function, so the run can reach it.
    let mock = if args.mock {
        Some(start_mock(&args).await?)
    } else {
        None
    };
    // The mock needs no key, and a real one must not be sent to it.
    let (base_url, key) = match &mock {
        Some(server) => (server.url(), None),
        None => {
            let endpoint = config::endpoint(&settings.layers, &settings.connection)?;
            if let Some(note) = endpoint.keyless_note()
                && !args.quiet
            {
                say!("volley run: {note}");
            }
            (endpoint.base_url, Some(endpoint.credential))
        }
    };

    // The client's metrics layers take their handles when it is built: install first.
    if let Some(addr) = args.metrics_addr {
        install_metrics(addr)?;
    }
    let concurrency = settings.load.concurrency.get();
    crate::limits::raise_open_file_limit(Some(concurrency as u64 + 64));
    let client = build_client(&settings, base_url.clone(), key, mock.is_some()).await?;

    let mut options = BatchOptions {
        output: output.clone(),
        errors: Some(errors.clone()),
        ordered: args.ordered,
        retry_failed: args.retry_failed,
        concurrency,
        fsync: settings.output.fsync.0,
        format: batch_format(&settings.connection),
        max_line_bytes: settings.load.max_line_size.get(),
        ..BatchOptions::default()
    };
    if let Some(window) = args.reorder_window {
        options.reorder_window = window;
    }
    if let Some(grace) = args.grace {
        options.grace = grace.0;
    }
    let grace = options.grace;
    // The adaptive limit in force, for the progress line.
    let limit: Option<crate::progress::LimitSource> =
        settings.load.concurrency.is_auto().then(|| {
            let client = client.clone();
            Box::new(move || client.concurrency_limit()) as crate::progress::LimitSource
        });
    // A 429's pause, while it holds, for the progress line.
    let pause: crate::progress::PauseSource = {
        let client = client.clone();
        Box::new(move || client.rate_limit_pause())
    };
    // Per-endpoint counts for the summary, with several endpoints.
    let endpoints = client.clone();
    let runner = BatchRunner::new(client, input, options);

    let mode = Mode::detect(args.quiet);
    if mode != Mode::Quiet {
        say!(
            "volley run: {} -> {} (errors: {}); {}",
            input_path.display(),
            output.display(),
            errors.display(),
            one_line(&settings, &base_url),
        );
    }
    let progress = runner.progress();
    let reporter = Reporter::start(progress.clone(), mode, limit, pause);
    let signal = Arc::new(AtomicU8::new(0));
    let (shutdown, abort) = on_signals(reporter.printer(), grace, args.quiet, signal.clone());
    let result = runner.run_with_abort(shutdown, abort).await;
    reporter.finish().await;
    if let Some(server) = mock {
        server.shutdown().await;
    }
    let summary = result.map_err(|e| {
        // Before the run started, a bad file or option is the user's to fix (exit 2); after,
        // a failure to read or write is the run's (exit 1), whatever its kind.
        let before_start = !progress.started();
        match e.kind() {
            ErrorKind::Config | ErrorKind::InvalidInput if before_start && !storage_failed(&e) => {
                anyhow::Error::new(UsageError(format!("{e}")))
            }
            _ => anyhow::Error::new(e).context("the run stopped"),
        }
    })?;
    let interrupted_code = match signal.load(Ordering::Relaxed) {
        0 => EXIT_INTERRUPTED,
        code => code,
    };
    if summary.lines == 0 && !summary.interrupted {
        say!(
            "volley run: warning: the input {} has no requests (it is empty or all blank)",
            input_path.display()
        );
    }
    let code = report(
        &summary,
        concurrency,
        &output,
        &errors,
        args.quiet,
        interrupted_code,
    );
    if !args.quiet {
        for line in config::endpoint_lines(&endpoints.endpoint_stats()) {
            say!("{line}");
        }
        let hedges = endpoints.hedges();
        if hedges > 0 {
            say!(
                "  hedged copies sent: {hedges} (each may have been billed; counted in the \
                 attempts and retries above)"
            );
        }
    }
    Ok(code)
}

/// `out.jsonl` → `out.errors.jsonl`; any other name gets `.errors.jsonl` appended.
pub(crate) fn default_errors_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.errors.jsonl"))
}

fn check_paths(input: &Path, output: &Path, errors: &Path) -> Result<(), UsageError> {
    for (path, flag) in [(output, "-o"), (errors, "--errors")] {
        if path.as_os_str() == "-" {
            return Err(UsageError(format!(
                "{flag} -: outcomes cannot go to standard output (the file is read back to \
                 resume); give a file path"
            )));
        }
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(UsageError(format!(
                "{flag} {}: not a regular file (a pipe, a terminal or a device cannot be read \
                 back to resume); give a file path",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(UsageError(format!(
                "{flag} {}: the directory {} does not exist; create it first",
                path.display(),
                dir.display()
            )));
        }
    }
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(input), std::fs::canonicalize(output))
        && a == b
    {
        return Err(UsageError(format!(
            "the output {} is the input file; choose another -o",
            output.display()
        )));
    }
    Ok(())
}

/// Refuses to start beside the default errors file of an earlier run whose output is gone (a
/// run writes its output before anything else, so an errors file with a record and no output
/// was left by a run whose output was deleted or moved): its failures would read as this
/// run's. An errors file given with `--errors` may be shared between runs and is appended to.
fn refuse_stale_errors(output: &Path, errors: &Path) -> Result<(), UsageError> {
    if output.exists() || !has_a_record(errors) {
        return Ok(());
    }
    Err(UsageError(format!(
        "{} holds failures of an earlier run whose output {} is gone: put that output back to \
         resume the run, or delete {} to start afresh",
        errors.display(),
        output.display(),
        errors.display()
    )))
}

/// Whether `e` came of the machine's storage failing (a disk or quota full, a file too large,
/// an I/O error) rather than of a file or option the user gave: the run's failure (exit 1),
/// as the same error after the start is, not a usage mistake (exit 2), even while resuming.
fn storage_failed(e: &volley::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull, WriteZero};
            #[cfg(unix)]
            if io.raw_os_error() == Some(libc::EIO) {
                return true;
            }
            return matches!(
                io.kind(),
                StorageFull | FileTooLarge | QuotaExceeded | WriteZero
            );
        }
        source = cause.source();
    }
    false
}

/// Whether the file at `path` holds a whole line (a record, not just a torn one). Reads at
/// most the first MiB; a line longer than that counts as a record.
fn has_a_record(path: &Path) -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    match file.take(1 << 20).read_to_end(&mut head) {
        Ok(n) => head.contains(&b'\n') || n == 1 << 20,
        Err(_) => false,
    }
}

async fn start_mock(args: &RunArgs) -> anyhow::Result<MockServer> {
    let faults = match args.mock_faults.as_deref().map(str::trim) {
        None | Some("") => Faults::NONE,
        Some(spec) => spec
            .parse()
            .map_err(|e| UsageError(format!("--mock-faults: {e}")))?,
    };
    let config = MockConfig {
        latency: args.mock_latency.unwrap_or(Latency::ZERO),
        faults,
        ..MockConfig::default()
    };
    config
        .validate()
        .map_err(|e| UsageError(format!("invalid mock configuration: {e}")))?;
    MockServer::start(config)
        .await
        .context("starting the in-process mock server")
}

/// The client of a run. Connects to Redis first when the limits or the cache are shared.
async fn build_client(
    settings: &Settings,
    base_url: String,
    key: Option<config::Credential>,
    mock: bool,
) -> anyhow::Result<Client> {
    let load = &settings.load;
    let concurrency = load.concurrency.get();
    let mut builder = config::apply_endpoints(
        Client::builder(),
        &settings.layers,
        &settings.connection,
        base_url,
        mock,
    )?
    .allow_plain_http(settings.connection.allow_plain_http)
    // Keep a connection per slot: reconnecting costs more than an idle socket.
    .pool_max_idle_per_host(concurrency)
    .retry_policy(retry_policy(&settings.attempts)?)
    .timeout(settings.timeout())
    .max_body_bytes(load.max_body_size.get())
    // A body may always be as large as one body may be.
    .max_buffered_bytes(load.max_buffered_size.get().max(load.max_body_size.get()));
    builder = if load.concurrency.is_auto() {
        builder.concurrency_auto(concurrency)
    } else {
        builder.concurrency(concurrency)
    };
    if let Some(key) = key {
        builder = config::with_credential(builder, key);
    }
    builder = config::apply_network(builder, &settings.connection, mock)?;
    builder = settings.balancing.apply(builder);
    let config_error = |e: volley::Error| match e.kind() {
        ErrorKind::Config => anyhow::Error::new(UsageError(format!("{e}"))),
        _ => anyhow::Error::new(e),
    };
    match &load.shared_limit {
        SharedLimitSpec::Redis(url) => {
            if !mock
                && let Some(endpoint) =
                    config::endpoint_with_own_limit(&settings.layers, &settings.connection)
            {
                return Err(anyhow::Error::new(UsageError(format!(
                    "endpoint {endpoint} sets its own rpm or tpm, which would be counted in \
                     this process only: with --shared-limit give the limits for the whole \
                     client (--rpm, --tpm), or leave them out to learn them"
                ))));
            }
            // Keyed like the cache: processes with one key at one endpoint share one budget;
            // with several endpoints, by all of them together.
            let credential = builder.credential_id().map_err(config_error)?;
            let limiter = crate::limits::shared_limiter(url, load, &credential).await?;
            builder = builder.shared_rate_limiter(limiter);
        }
        SharedLimitSpec::Off => {
            if let Some(rpm) = load.rpm.get() {
                builder = builder.rpm(rpm);
            }
            if let Some(tpm) = load.tpm.get() {
                builder = builder.tpm(tpm);
            }
            if let Some(n) = load.input_tpm.get() {
                builder = builder.input_tpm(n);
            }
            if let Some(n) = load.output_tpm.get() {
                builder = builder.output_tpm(n);
            }
        }
    }
    builder = match &load.cache {
        CacheSpec::Off => builder,
        CacheSpec::Memory => builder.cache_memory(MEMORY_CACHE_BYTES, MEMORY_CACHE_TTL),
        CacheSpec::Disk(dir) => builder.cache_disk(dir, DISK_CACHE_TTL),
        CacheSpec::Redis(url) => {
            let redis = crate::limits::redis_options(url, load, "--cache")?;
            let secret = cache_secret(load.cache_secret_env.as_deref())?;
            let store = RedisStore::connect(redis, REDIS_CACHE_TTL)
                .await
                .map_err(|e| crate::limits::redis_error(e, "--cache"))?
                .prefix(load.shared_prefix.as_str().to_owned())
                .secret(secret.unwrap_or_default());
            builder.cache_store(store)
        }
    };
    builder.build().map_err(config_error)
}

/// The secret of a Redis cache, from the variable `--cache-secret-env` names, if any (an
/// empty name is none, so that a flag can turn a profile's off). Surrounding white space is
/// not part of it (a secret read from a file often ends with a line break).
fn cache_secret(variable: Option<&str>) -> anyhow::Result<Option<String>> {
    secret_from(variable, |name| std::env::var(name))
}

fn secret_from(
    variable: Option<&str>,
    read: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> anyhow::Result<Option<String>> {
    let Some(variable) = variable.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match read(variable) {
        Ok(secret) if !secret.trim().is_empty() => Ok(Some(secret.trim().to_owned())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(anyhow::Error::new(UsageError(
            format!("--cache-secret-env names {variable}, which is not set or empty"),
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(anyhow::Error::new(UsageError(format!(
            "--cache-secret-env names {variable}, whose value is not valid UTF-8"
        )))),
    }
}

/// The default backoff without the retry budget. The budget protects a provider from a
/// retry storm, which the rate limits and the concurrency limit already prevent here; with
/// it, a burst of 429s would turn into permanent failures of lines that one more wait
/// would have saved.
fn retry_policy(attempts: &config::Attempts) -> anyhow::Result<Policy> {
    Policy::builder()
        .max_retries(attempts.max_retries)
        .give_up_after(attempts.give_up_after.0)
        .classifier(attempts.retry_on.classifier())
        .budget_enabled(false)
        .build()
        .map_err(|e| anyhow::Error::new(UsageError(format!("{e}"))))
}

/// Installs the Prometheus recorder with its HTTP listener on `addr`.
fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use volley::middleware::metrics::{REQUEST_DURATION_SECONDS, TIME_TO_FIRST_BYTE_SECONDS};

    // Without buckets the exporter renders histograms as summaries, which cannot be
    // aggregated across processes.
    const DURATION_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        600.0,
    ];
    const FIRST_BYTE_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    if !addr.ip().is_loopback() {
        say!("volley run: serving metrics on {addr}, which is not loopback");
    }
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Every other histogram (the rate limiter's waits) too.
        .set_buckets(DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(TIME_TO_FIRST_BYTE_SECONDS.to_owned()),
            FIRST_BYTE_BUCKETS,
        )?
        .install()
        .with_context(|| format!("serving metrics on {addr}"))?;
    volley::middleware::metrics::describe();
    Ok(())
}

/// `9090` → `127.0.0.1:9090`; `localhost:9090`, `127.0.0.1:9090`, `[::1]:9090` as given.
/// Port 0 is refused: the scraper could not know which port was picked.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(s.trim())?;
    if addr.port() == 0 {
        return Err(format!(
            "{s:?}: port 0 is not allowed; give the port to serve metrics on, e.g. 9090"
        ));
    }
    Ok(addr)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.strip_prefix(':').unwrap_or(s).parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse()
        .map_err(|_| format!("invalid address {s:?}: expected e.g. 127.0.0.1:9090 or 9090"))
}

/// The run's two stops, as futures for [`BatchRunner::run_with_abort`]. The first Ctrl-C,
/// SIGTERM or SIGHUP stops taking new lines and lets in-flight requests finish for the grace
/// period, storing the exit code of the signal (130, 143 or 129) in `code`. The second cancels what is in
/// flight at once; the outcomes already received are still written and the summary printed.
/// A third exits at once (outcomes not yet written are sent again on resume).
fn on_signals(
    printer: Printer,
    grace: Duration,
    quiet: bool,
    code: Arc<AtomicU8>,
) -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (count_tx, count) = tokio::sync::watch::channel(0u32);
    // Listening from now on, before the run starts: the default action (exit at once) never
    // applies to the first signal.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        for n in 1u32.. {
            let signal = signals.next().await;
            match n {
                1 => {
                    code.store(signal, Ordering::Relaxed);
                    if !quiet {
                        printer.println(&format!(
                            "volley run: stopping; in-flight requests have {} to finish \
                             (Ctrl-C again to stop them now)",
                            progress::clock(grace)
                        ));
                    }
                }
                2 => {
                    if !quiet {
                        printer.println(
                            "volley run: stopping now; writing the outcomes received (Ctrl-C \
                             again to quit at once)",
                        );
                    }
                }
                _ => {
                    say!("volley run: stopped; run the same command again to resume");
                    std::process::exit(signal.into());
                }
            }
            count_tx.send_replace(n);
        }
    });
    let nth = move |n: u32| {
        let mut count = count.clone();
        async move {
            // The sender lives as long as the runtime: an error means shutting down anyway,
            // which is not a signal.
            if count.wait_for(|&seen| seen >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    (nth(1), nth(2))
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP, received from when this is made on (SIGHUP's default
/// action, exiting at once, would drop the requests in flight and the answers not yet
/// written when a terminal closes): a signal that arrives
/// while the last one is being handled is kept for the next wait (several arriving at once
/// count as one, as tokio delivers them).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
                // Left alone when ignored: under `nohup` a closed terminal must not stop the
                // run, and a handler would replace the ignoring.
                hangup: if ignored(libc::SIGHUP) {
                    None
                } else {
                    signal(SignalKind::hangup()).ok()
                },
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next signal and returns the exit code for it; never completes when
    /// signals cannot be handled.
    #[cfg(unix)]
    async fn next(&mut self) -> u8 {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            let received = match signal {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !received {
                std::future::pending::<()>().await;
            }
        }
        let Signals {
            interrupt,
            terminate,
            hangup,
        } = self;
        tokio::select! {
            () = recv(interrupt) => EXIT_INTERRUPTED,
            () = recv(terminate) => EXIT_TERMINATED,
            () = recv(hangup) => EXIT_HANGUP,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> u8 {
        match tokio::signal::ctrl_c().await {
            Ok(()) => EXIT_INTERRUPTED,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Whether `signal` is ignored (inherited so across `exec`: `nohup`, the shell's
/// `trap '' HUP`).
#[cfg(unix)]
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: with a null new action `sigaction` only writes the current one into `old`, a
    // zeroed `sigaction` (a valid value of that plain C struct) owned here.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Prints the summary and picks the exit code.
fn report(
    summary: &Summary,
    concurrency: usize,
    output: &Path,
    errors: &Path,
    quiet: bool,
    interrupted_code: u8,
) -> ExitCode {
    if !quiet {
        say!("{}", progress::summary_text(summary, concurrency));
    }
    if let Some(why) = &summary.credentials_rejected {
        // `why` is `HTTP 401: <the provider's message>`.
        let (status, message) = why.split_once(": ").unwrap_or((why, ""));
        say!(
            "volley run: the provider rejected the credentials ({status}): {message}; fix the \
             key and run the same command again with --retry-failed"
        );
        return ExitCode::FAILURE;
    }
    if let Some(why) = &summary.quota_exhausted {
        let (status, message) = why.split_once(": ").unwrap_or((why, ""));
        say!(
            "volley run: the provider says the account's quota is used up ({status}): \
             {message}; add credit and run the same command again with --retry-failed"
        );
        return ExitCode::FAILURE;
    }
    if let Some(why) = &summary.nothing_found {
        let (status, message) = why.split_once(": ").unwrap_or((why, ""));
        say!(
            "volley run: the first requests all came back not found ({status}): {message}; check \
             that the base URL ends in /v1 (or the provider's API path) and the lines' url and \
             model, then run the same command again with --retry-failed"
        );
        return ExitCode::FAILURE;
    }
    if let Some(why) = &summary.cannot_send {
        say!(
            "volley run: requests cannot be sent: {why}; fix the settings and run the same \
             command again with --retry-failed"
        );
        return ExitCode::FAILURE;
    }
    if summary.interrupted {
        let recorded = summary.skipped + summary.succeeded + summary.failed + summary.invalid;
        say!("interrupted: {recorded} outcomes recorded; run the same command again to resume");
        if summary.cancelled > 0 {
            say!(
                "  {} requests cancelled in flight: sent again on resume (those already sent \
                 may be billed twice)",
                summary.cancelled
            );
        }
        return ExitCode::from(interrupted_code);
    }
    if summary.all_succeeded() {
        return ExitCode::SUCCESS;
    }
    let mut problems = format!(
        "{} failed and {} invalid lines",
        summary.failed, summary.invalid
    );
    if summary.skipped_failed > 0 {
        problems.push_str(&format!(
            ", and {} lines that had failed in an earlier run (--retry-failed sends those \
             that are not invalid again)",
            summary.skipped_failed
        ));
    }
    say!(
        "volley run: {problems}; their error records are in {} and {}",
        output.display(),
        errors.display()
    );
    ExitCode::FAILURE
}

/// The batch file format of the provider in force: Anthropic's Message Batches with
/// `--provider anthropic`, the OpenAI Batch format otherwise.
fn batch_format(connection: &config::Connection) -> volley_batch::Format {
    volley_batch::Format::of_dialect(connection.provider.0.dialect())
}

async fn validate(
    input: Input,
    format: volley_batch::Format,
    max_line_bytes: usize,
) -> anyhow::Result<ExitCode> {
    let report = volley_batch::validate_format(input, max_line_bytes, format)
        .await
        .context("validating the input")?;
    println!(
        "{} lines: {} valid, {} invalid",
        report.lines, report.valid, report.invalid_count
    );
    for record in report.invalid.iter().take(VALIDATE_SHOWN) {
        match &record.outcome {
            // The file's text (a model's name, an id) may hold control characters.
            Outcome::Invalid { code, message } => {
                println!("  {}", one_line_safe(&format!("{message} [{code}]")));
            }
            // The report lists invalid lines only; say something sane if that changes.
            _ => println!("  line {}: invalid", record.line),
        }
    }
    let shown = report.invalid.len().min(VALIDATE_SHOWN) as u64;
    if report.invalid_count > shown {
        println!("  ... and {} more", report.invalid_count - shown);
    }
    // Volley runs such files as they are; the provider's own batch service would not.
    for note in report.portability_notes(format) {
        println!("note: {}", one_line_safe(&note));
    }
    Ok(if report.invalid_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `text` for one line of a report: control characters escaped, line breaks and tabs too, so
/// that the file's text (a model's name) cannot print a line of its own (a fake `0 invalid`).
fn one_line_safe(text: &str) -> String {
    crate::terminal_safe(text)
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

/// The settings as one line, for the start of a run.
fn one_line(settings: &Settings, base_url: &str) -> String {
    let load = &settings.load;
    let shared = match &load.shared_limit {
        SharedLimitSpec::Off => String::new(),
        SharedLimitSpec::Redis(url) => format!(
            " (shared through {url}, prefix {}, {})",
            load.shared_prefix, load.redis_failure
        ),
    };
    format!(
        "concurrency {}, rpm {}, tpm {}{shared}, max retries {} (on {}), timeout {}, cache {}; {}",
        load.concurrency,
        load.rpm.show(),
        load.tpm.show(),
        settings.attempts.max_retries,
        settings.attempts.retry_on,
        settings.attempts.timeout.show(),
        load.cache,
        base_url.to_owned().show(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_secret_is_trimmed_and_an_empty_name_is_none() {
        let read = |name: &str| match name {
            "FROM_FILE" => Ok(" s3cret\n".to_owned()),
            "BLANK" => Ok(" \n".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        };
        assert_eq!(secret_from(None, read).unwrap(), None);
        assert_eq!(secret_from(Some(" "), read).unwrap(), None);
        assert_eq!(
            secret_from(Some("FROM_FILE"), read).unwrap().as_deref(),
            Some("s3cret")
        );
        for name in ["BLANK", "UNSET"] {
            let error = secret_from(Some(name), read).unwrap_err().to_string();
            assert!(error.contains(name) && error.contains("not set"), "{error}");
        }
    }

    #[test]
    fn errors_file_defaults_next_to_the_output() {
        assert_eq!(
            default_errors_path(Path::new("/tmp/out.jsonl")),
            Path::new("/tmp/out.errors.jsonl")
        );
        assert_eq!(
            default_errors_path(Path::new("results")),
            Path::new("results.errors.jsonl")
        );
        assert_eq!(
            default_errors_path(Path::new("a/b.json")),
            Path::new("a/b.json.errors.jsonl")
        );
    }

    #[test]
    fn metrics_addresses() {
        assert_eq!(
            parse_metrics_addr("9090").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            parse_metrics_addr("localhost:9091").unwrap(),
            "127.0.0.1:9091".parse().unwrap()
        );
        assert_eq!(
            parse_metrics_addr("[::1]:9092").unwrap(),
            "[::1]:9092".parse().unwrap()
        );
        assert!(parse_metrics_addr("nowhere").is_err());
        for zero in ["0", ":0", "127.0.0.1:0", "localhost:0"] {
            let err = parse_metrics_addr(zero).unwrap_err();
            assert!(err.contains("port 0"), "{zero}: {err}");
        }
    }
}
