//! The settings of every command, each declared once ([`model`]), from five layers.
//!
//! Precedence, highest first: command-line flags, `VOLLEY_*` environment variables, the
//! profile of `volley.toml` in force, the ecosystem's own variables (`OPENAI_BASE_URL`), then
//! the defaults. Each setting is resolved on its own, so a profile may set the rate limits
//! while a flag overrides only the concurrency, and a globally exported `OPENAI_BASE_URL`
//! never overrides a profile's `base_url`. figment merges the layers and remembers where each
//! value came from, which `--print-config` shows. The provider in force decides which
//! ecosystem variables apply and some defaults: with `--provider anthropic` the base URL
//! defaults to `https://api.anthropic.com/v1` (or `$ANTHROPIC_BASE_URL`, read without `/v1` as
//! the SDK reads it, `/v1` appended), and the key comes from `ANTHROPIC_API_KEY`, then
//! `ANTHROPIC_AUTH_TOKEN`, unless `api_key_env` names another variable.
//!
//! A setting's `volley.toml` key is its name (`max_retries`), its variable `VOLLEY_` and the
//! name in capitals (`VOLLEY_MAX_RETRIES`), its flag the name with dashes (`--max-retries`).
//! The groups: [`Connection`] (`base_url`, `api_key_env`, `allow_plain_http`) for every
//! command that calls an API, [`Attempts`] (`timeout`, `max_retries`) for `chat` and `run`,
//! [`RunLoad`] (`concurrency`, `rpm`, `tpm`, `input_tpm`, `output_tpm`, `cache`,
//! `cache_secret_env`, `shared_limit`, `shared_prefix`, `lease`, `redis_failure`,
//! `allow_plain_redis`, `redis_ca_cert`, `redis_cluster`) and [`RunOutput`] (`fsync`) for `run`. `bench`'s load and its
//! embedded mock's flags are its own, and `bench`'s default `base_url` is the local mock's.
//!
//! Durations (`timeout`) use the one grammar of `volley::core::duration`: a number with an
//! optional unit (ns, us, ms, s, m, h); a bare number is seconds. An rpm, tpm or timeout of 0
//! and a cache or shared limit of `off` turn the setting off, so a flag can undo what a
//! profile sets.
//!
//! The API key itself is only ever read from the environment variable `api_key_env` names:
//! no flag takes it, and a key in `volley.toml` or in a `VOLLEY_*` variable (`VOLLEY_API_KEY`)
//! is an error. A Redis URL (`--shared-limit`, `--cache redis://...`) may carry a password;
//! it is never printed.
//!
//! `volley.toml` holds profiles; the one named by `--profile NAME` is `[profile.NAME]`, and
//! without `--profile` the `[default]` table (or `[profile.default]`) applies. A profile is
//! used alone, not merged over the default one, so what a profile says is all it sets.
//! Unknown keys and tables are errors in every profile, whichever command reads the file.
//! Paths in the file (`ca_cert`, `client_cert`, `client_key`, `redis_ca_cert`, a `disk:`
//! cache) are the file's: a relative one is taken from the directory the file is in (a link's
//! target's), wherever volley runs, and a leading `~` is the home directory, there and in
//! `--cache disk:~/...`.
//!
//! ```toml
//! [default]
//! base_url = "http://127.0.0.1:8080/v1"
//! concurrency = 64
//!
//! [profile.prod]
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "PROD_OPENAI_KEY"
//! concurrency = 512
//! rpm = 10000
//! tpm = 2000000
//! max_retries = 5
//! timeout = "30s"
//! cache = "disk:.volley-cache"
//! ```

mod endpoints;
mod file;
mod layers;
mod model;
mod network;
mod origin;
pub(crate) mod trust;
mod values;

use std::fmt;
use std::time::Duration;

pub(crate) use endpoints::{
    apply as apply_endpoints, client_endpoints, summary_lines as endpoint_lines,
    with_own_limit as endpoint_with_own_limit,
};
pub(crate) use file::CONFIG_FILE;
pub(crate) use layers::{Layers, Row, SourceArgs};
pub(crate) use model::{
    Attempts, AttemptsFlags, Balancing, BalancingFlags, Connection, ConnectionFlags, RunLoad,
    RunLoadFlags, RunOutput, RunOutputFlags,
};
pub(crate) use network::{Credential, apply as apply_network, endpoint, with_credential};
pub(crate) use origin::Origin;
pub(crate) use values::{CacheSpec, FailureSpec, RedisUrl, SharedLimitSpec, Show};

/// The prefix of the variables that set settings.
pub(crate) const ENV_PREFIX: &str = "VOLLEY_";

/// The size of the `--cache memory` cache.
pub(crate) const MEMORY_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// How long `--cache memory` keeps a response.
pub(crate) const MEMORY_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long `--cache disk:PATH` keeps a response.
pub(crate) const DISK_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long `--cache redis://...` keeps a response (Redis holds it in memory).
pub(crate) const REDIS_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default of `shared_prefix`.
pub(crate) const DEFAULT_SHARED_PREFIX: &str = "volley";
/// The default of `max_retries` (the library's default).
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;

/// A mistake in the command line, the environment or `volley.toml`: the process exits with
/// code 2, as clap does for usage errors.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The rows of the connection settings, as every command prints them: whether the key's
/// variable is set (never its value), and the mock in place of the base URL with `--mock`.
pub(crate) fn connection_rows(layers: &Layers, connection: &Connection, mock: bool) -> Vec<Row> {
    let mut rows = layers.rows(connection);
    for row in &mut rows {
        match row.key {
            "base_url" if mock => {
                row.value = "the in-process mock".to_owned();
                row.origin = "--mock".to_owned();
            }
            "api_key_env" => {
                // With --provider anthropic and no variable named, the SDK's second one too.
                let [_, token] = volley::anthropic::KEY_VARIABLES;
                let token_set = connection.provider.0 == volley::Provider::Anthropic
                    && layers.origin("api_key_env") == origin::Origin::Default
                    && read_key(token).is_ok();
                let state = if mock {
                    "not used with --mock"
                } else if read_key(&connection.api_key_env).is_ok() {
                    "set"
                } else if token_set {
                    "not set; ANTHROPIC_AUTH_TOKEN is"
                } else {
                    "NOT SET"
                };
                row.value = format!("{} ({state})", row.value);
            }
            "proxy" | "no_proxy" | "ca_cert" if mock => {
                row.value = "not used with --mock".to_owned();
            }
            // Left to the library, which reads the ecosystem's variables by curl's and
            // OpenSSL's rules: say which are set (URLs without their passwords).
            "proxy" | "no_proxy" | "ca_cert"
                if layers.origin(row.key) == origin::Origin::Default =>
            {
                let names: &[&str] = match row.key {
                    "proxy" => &[
                        "https_proxy",
                        "HTTPS_PROXY",
                        "http_proxy",
                        "all_proxy",
                        "ALL_PROXY",
                    ],
                    "no_proxy" => &["no_proxy", "NO_PROXY"],
                    _ => &["SSL_CERT_FILE", "SSL_CERT_DIR"],
                };
                let set: Vec<String> = names
                    .iter()
                    .filter_map(|name| {
                        let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
                        Some(format!("${name}={}", value.show()))
                    })
                    .collect();
                if !set.is_empty() {
                    row.value = set.join(" ");
                    row.origin = "ecosystem, read by the library".to_owned();
                }
            }
            _ => {}
        }
    }
    rows
}

/// The API key, from the variable `api_key_env` names.
///
/// # Errors
/// A [`UsageError`] saying how to set it, when the variable is unset or empty.
pub(crate) fn read_key(variable: &str) -> Result<String, UsageError> {
    std::env::var(variable)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "no API key: set {variable} (or name another variable with --api-key-env), or \
                 use --mock"
            ))
        })
}
