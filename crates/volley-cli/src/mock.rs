//! `volley mock`: the OpenAI-compatible mock server, until Ctrl-C.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::Args;
use volley::core::duration::HumanDuration;
use volley_mock::{Faults, Latency, MockConfig, MockServer, OutputTokens, RateLimits};

/// Run the OpenAI-compatible mock server until Ctrl-C.
///
/// Serves POST /v1/chat/completions (plain and streaming), POST /v1/embeddings, GET /v1/models,
/// GET /stats and POST /stats/reset, over HTTP/1.1 and HTTP/2 (h2c) on one port.
///
/// Latency grammar: "0", "250ms", "1s", "fixed:1s", "uniform:100ms..2s",
/// "lognormal:500ms,0.6" (median, shape), "bimodal:100ms,2s,0.05" (fast, slow, share of slow
/// requests). Durations take ns, us, ms, s, m, h.
///
/// A request can force a fault with the header x-mock-fault: 429|500|503|reset|stall|cut|malformed
/// and its latency with x-mock-latency: 250ms.
#[derive(Debug, Args)]
pub(crate) struct MockArgs {
    /// The address to listen on. Keep it on loopback: the mock is for tests and benchmarks.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port to listen on (0 picks a free one and prints it).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    behaviour: MockBehaviour,
    /// Require this environment variable's value as the bearer key (401 otherwise).
    #[arg(long, value_name = "NAME")]
    require_api_key_env: Option<String>,
    /// Record the x-client-request-id of every API request in arrival order, served at
    /// GET /journal and cleared by POST /stats/reset (for crash tests; grows without bound).
    #[arg(long)]
    journal: bool,
}

/// How the mock answers: latency, streaming pace, faults, rate limits. Shared by `volley mock`
/// and `volley bench --mock`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MockBehaviour {
    /// Time before a non-streaming reply is sent.
    #[arg(long, default_value = "0")]
    latency: Latency,
    /// Time to a stream's first chunk [default: the --latency value].
    #[arg(long)]
    ttft: Option<Latency>,
    /// Time between streamed chunks.
    #[arg(long, default_value = "0")]
    inter_token: Latency,
    /// Output tokens per completion: "16" or a range "8..64" (capped by the request's
    /// max_tokens).
    #[arg(long, default_value = "16")]
    output_tokens: OutputTokens,
    /// Fault probabilities, e.g. "429=0.3,500=0.1,503=0.05,reset=0.01,stall=0.01,cut=0.02,malformed=0.01".
    #[arg(long, default_value = "")]
    faults: String,
    /// Enforce a provider-style requests-per-minute limit (429 with Retry-After and
    /// x-ratelimit-* headers beyond it; burst one second's worth).
    #[arg(long)]
    rpm: Option<u32>,
    /// Enforce a provider-style tokens-per-minute limit (prompt + completion tokens).
    #[arg(long)]
    tpm: Option<u64>,
    /// The server's capacity: "max=N" answers 503 beyond N requests in flight, "knee=K"
    /// stretches latency by in-flight/K beyond K (processor sharing), e.g. "max=64" or
    /// "knee=32".
    #[arg(long, default_value = "none")]
    capacity: volley_mock::Capacity,
    /// The wait a 429 asks for (Retry-After and retry-after-ms); a bare number is seconds.
    #[arg(long, default_value = "1s")]
    retry_after: HumanDuration,
    /// How long a stalled request stays unanswered before its connection is closed; a bare
    /// number is seconds.
    #[arg(long, default_value = "1h")]
    stall_duration: HumanDuration,
    /// Seed of the per-request random draws (faults, latencies): same seed, same run.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Gzip-compress JSON replies to requests that accept gzip.
    #[arg(long)]
    gzip: bool,
}

impl MockBehaviour {
    /// The mock's configuration, checked.
    pub(crate) fn config(&self) -> anyhow::Result<MockConfig> {
        let faults: Faults = if self.faults.trim().is_empty() {
            Faults::NONE
        } else {
            self.faults
                .parse()
                .map_err(|e| crate::config::UsageError(format!("--faults: {e}")))?
        };
        let config = MockConfig {
            latency: self.latency,
            ttft: self.ttft,
            inter_token: self.inter_token,
            output_tokens: self.output_tokens,
            faults,
            retry_after: self.retry_after.0,
            stall_duration: self.stall_duration.0,
            seed: self.seed,
            gzip: self.gzip,
            rate_limits: RateLimits {
                rpm: self.rpm,
                tpm: self.tpm,
                ..RateLimits::NONE
            },
            capacity: self.capacity,
            ..MockConfig::default()
        };
        config
            .validate()
            .map_err(|e| crate::config::UsageError(format!("invalid mock configuration: {e}")))?;
        Ok(config)
    }
}

pub(crate) async fn run(args: MockArgs) -> anyhow::Result<()> {
    if !args.host.is_loopback() {
        say!(
            "volley mock: listening on {}, which is not loopback; the mock is meant for tests",
            args.host
        );
    }
    let require_api_key = match &args.require_api_key_env {
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_owned()),
            _ => {
                return Err(crate::config::UsageError(format!(
                    "--require-api-key-env: the variable {name} is not set"
                ))
                .into());
            }
        },
        None => None,
    };
    let config = MockConfig {
        require_api_key,
        journal: args.journal,
        ..args.behaviour.config()?
    };
    let addr = SocketAddr::new(args.host, args.port);
    let server = MockServer::bind(addr, config)
        .await
        .with_context(|| format!("binding the mock server to {addr}"))?;
    say!(
        "volley mock: serving {} (stats at http://{}/stats); Ctrl-C to stop",
        server.url(),
        server.addr()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let stats = server.stats();
    server.shutdown().await;
    say!(
        "volley mock: {} requests, peak {} in flight",
        stats.requests_total,
        stats.peak_in_flight
    );
    Ok(())
}
