//! The settings of `volley run`, resolved from four sources.
//!
//! Precedence, highest first: command-line flags, environment variables, a profile of
//! `volley.toml`, built-in defaults. Each setting is resolved on its own, so a profile may set
//! the rate limits while a flag overrides only the concurrency.
//!
//! | setting | flag | environment | `volley.toml` | default |
//! |---|---|---|---|---|
//! | base URL | `--base-url` | `OPENAI_BASE_URL` | `base_url` | `https://api.openai.com/v1` |
//! | key variable | `--api-key-env` | | `api_key_env` | `OPENAI_API_KEY` |
//! | concurrency | `--concurrency` | `VOLLEY_CONCURRENCY` | `concurrency` | 256 |
//! | requests/min | `--rpm` | `VOLLEY_RPM` | `rpm` | unlimited |
//! | tokens/min | `--tpm` | `VOLLEY_TPM` | `tpm` | unlimited |
//! | retries | `--max-retries` | `VOLLEY_MAX_RETRIES` | `max_retries` | 3 |
//! | attempt timeout | `--timeout` | `VOLLEY_TIMEOUT` | `timeout` | 10m |
//! | cache | `--cache` | `VOLLEY_CACHE` | `cache` | off |
//! | shared limit (Redis URL) | `--shared-limit` | `VOLLEY_SHARED_LIMIT` | `shared_limit` | off |
//! | Redis key prefix | `--shared-prefix` | | `shared_prefix` | `volley` |
//! | lease | `--lease` | | `lease` | 1 |
//! | Redis failure mode | `--redis-failure` | | `redis_failure` | `fail-closed` |
//!
//! An rpm, tpm or timeout of 0 and a cache or shared limit of `off` turn the setting off, so a
//! flag can undo what a profile sets. The API key itself is only ever read from the
//! environment variable the settings name: a key in `volley.toml` is an error, and no flag
//! takes one.
//!
//! A Redis URL (`--shared-limit`, `--cache redis://...`) may carry a password
//! (`redis://:PASSWORD@host:6379`); it is never printed: every message and `--print-config`
//! show the URL with `***` in its place. `VOLLEY_SHARED_LIMIT` keeps it off the command line
//! (where other users of the machine can see it).
//!
//! `volley.toml` holds profiles; the one named by `--profile NAME` is `[profile.NAME]`, and
//! without `--profile` the `[default]` table (or `[profile.default]`) applies. A profile is
//! used alone, not merged with the default one. Unknown keys and tables are errors.
//!
//! ```toml
//! [default]
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
//!
//! [profile.fleet]
//! rpm = 10000
//! shared_limit = "redis://10.0.0.5:6379"
//! shared_prefix = "prod"
//! lease = 20
//! redis_failure = "fallback:8"
//! cache = "redis://10.0.0.5:6379"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The file read from the working directory when `--config` is not given.
pub(crate) const CONFIG_FILE: &str = "volley.toml";

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

/// The environment variables read, by setting.
pub(crate) const ENV_BASE_URL: &str = volley::BASE_URL_ENV;
pub(crate) const ENV_CONCURRENCY: &str = "VOLLEY_CONCURRENCY";
pub(crate) const ENV_RPM: &str = "VOLLEY_RPM";
pub(crate) const ENV_TPM: &str = "VOLLEY_TPM";
pub(crate) const ENV_MAX_RETRIES: &str = "VOLLEY_MAX_RETRIES";
pub(crate) const ENV_TIMEOUT: &str = "VOLLEY_TIMEOUT";
pub(crate) const ENV_CACHE: &str = "VOLLEY_CACHE";
pub(crate) const ENV_SHARED_LIMIT: &str = "VOLLEY_SHARED_LIMIT";

/// The keys a profile may set.
const PROFILE_KEYS: &str = "base_url, api_key_env, concurrency, rpm, tpm, max_retries, \
     timeout, cache, shared_limit, shared_prefix, lease, redis_failure";

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

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// What `--cache` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheSpec {
    /// No cache.
    Off,
    /// In memory: [`MEMORY_CACHE_BYTES`] for [`MEMORY_CACHE_TTL`].
    Memory,
    /// On disk in this directory, for [`DISK_CACHE_TTL`].
    Disk(PathBuf),
    /// In Redis, shared with every process using it, for [`REDIS_CACHE_TTL`].
    Redis(RedisUrl),
}

impl FromStr for CacheSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(CacheSpec::Off),
            "memory" => Ok(CacheSpec::Memory),
            other if RedisUrl::looks_like(other) => Ok(CacheSpec::Redis(other.parse()?)),
            other => match other.strip_prefix("disk:") {
                Some(path) if !path.trim().is_empty() => Ok(CacheSpec::Disk(path.trim().into())),
                _ => Err(format!(
                    "invalid cache {:?}: expected memory, disk:PATH, redis://HOST[:PORT] or off",
                    shown(other)
                )),
            },
        }
    }
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheSpec::Off => f.write_str("off"),
            CacheSpec::Memory => f.write_str("memory"),
            CacheSpec::Disk(path) => write!(f, "disk:{}", path.display()),
            CacheSpec::Redis(url) => url.fmt(f),
        }
    }
}

/// A Redis URL: `redis://`, `rediss://` (TLS) or `redis+unix://`. `Display` and `Debug` hide
/// its password; [`RedisUrl::expose`] gives the whole URL, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl(String);

impl RedisUrl {
    const SCHEMES: [&'static str; 3] = ["redis://", "rediss://", "redis+unix://"];

    fn looks_like(s: &str) -> bool {
        Self::SCHEMES.iter().any(|scheme| s.starts_with(scheme))
    }

    /// The URL, password included: for connecting only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if !Self::looks_like(s) {
            return Err(format!(
                "invalid Redis URL {:?}: expected redis://[:PASSWORD@]HOST[:PORT][/DB], \
                 rediss://... (TLS) or redis+unix:///PATH",
                shown(s)
            ));
        }
        Ok(RedisUrl(s.to_owned()))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&volley::redis::redacted(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `s` as it may be shown in an error: a mistyped Redis URL without its password.
fn shown(s: &str) -> String {
    if s.contains("://") {
        volley::redis::redacted(s)
    } else if let Some(at) = s.rfind('@') {
        format!("***@{}", &s[at + 1..])
    } else {
        s.to_owned()
    }
}

/// What `--shared-limit` asks for: a Redis URL, or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedLimitSpec {
    Off,
    Redis(RedisUrl),
}

impl FromStr for SharedLimitSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(SharedLimitSpec::Off),
            other => Ok(SharedLimitSpec::Redis(other.parse()?)),
        }
    }
}

impl fmt::Display for SharedLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedLimitSpec::Off => f.write_str("off"),
            SharedLimitSpec::Redis(url) => url.fmt(f),
        }
    }
}

/// What `--redis-failure` asks for when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureSpec {
    /// Send nothing until Redis is back.
    FailClosed,
    /// Go on with a local limiter holding this share (1/N) of the limits.
    Fallback(u32),
}

impl FromStr for FailureSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "fail-closed" {
            return Ok(FailureSpec::FailClosed);
        }
        match s.strip_prefix("fallback:").map(|n| n.trim().parse::<u32>()) {
            Some(Ok(n)) if n >= 1 => Ok(FailureSpec::Fallback(n)),
            _ => Err(format!(
                "invalid Redis failure mode {s:?}: expected fail-closed or fallback:N (N, at \
                 least 1, the number of processes sharing the limit: each goes on alone with \
                 1/N of it)"
            )),
        }
    }
}

impl fmt::Display for FailureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureSpec::FailClosed => f.write_str("fail-closed"),
            FailureSpec::Fallback(n) => write!(f, "fallback:{n}"),
        }
    }
}

/// The settings one source gives; `None` leaves the setting to the next source.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Layer {
    pub(crate) base_url: Option<String>,
    pub(crate) api_key_env: Option<String>,
    pub(crate) concurrency: Option<usize>,
    /// `Some(0)` turns the limit off.
    pub(crate) rpm: Option<u32>,
    /// `Some(0)` turns the limit off.
    pub(crate) tpm: Option<u64>,
    pub(crate) max_retries: Option<u32>,
    /// `Some(ZERO)` turns the timeout off.
    pub(crate) timeout: Option<Duration>,
    pub(crate) cache: Option<CacheSpec>,
    pub(crate) shared_limit: Option<SharedLimitSpec>,
    pub(crate) shared_prefix: Option<String>,
    pub(crate) lease: Option<u32>,
    pub(crate) redis_failure: Option<FailureSpec>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Flag,
    Env(&'static str),
    Profile,
    Default,
}

/// A resolved value and its source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

/// The settings in force for a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) base_url: Setting<String>,
    pub(crate) api_key_env: Setting<String>,
    pub(crate) concurrency: Setting<usize>,
    pub(crate) rpm: Setting<Option<u32>>,
    pub(crate) tpm: Setting<Option<u64>>,
    pub(crate) max_retries: Setting<u32>,
    pub(crate) timeout: Setting<Option<Duration>>,
    pub(crate) cache: Setting<CacheSpec>,
    pub(crate) shared_limit: Setting<SharedLimitSpec>,
    pub(crate) shared_prefix: Setting<String>,
    /// `None`: the limiter's default (1).
    pub(crate) lease: Setting<Option<u32>>,
    pub(crate) redis_failure: Setting<FailureSpec>,
    /// The profile in force, as `volley.toml [profile.prod]`, when one applied.
    pub(crate) profile: Option<String>,
}

/// A profile read from `volley.toml`: its settings and a label naming it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Profile {
    pub(crate) layer: Layer,
    /// `volley.toml [profile.prod]`; `None` when no profile applied.
    pub(crate) label: Option<String>,
}

impl Settings {
    /// Resolves each setting from the first source that gives it: `flags`, `env`, `profile`,
    /// then the default.
    pub(crate) fn resolve(flags: Layer, env: Layer, profile: Profile) -> Settings {
        let p = profile.layer;
        Settings {
            base_url: pick(
                flags.base_url,
                env.base_url.map(|v| (v, ENV_BASE_URL)),
                p.base_url,
                volley::transport::DEFAULT_BASE_URL.to_owned(),
            ),
            api_key_env: pick(
                flags.api_key_env,
                None,
                p.api_key_env,
                volley::API_KEY_ENV.to_owned(),
            ),
            concurrency: pick(
                flags.concurrency,
                env.concurrency.map(|v| (v, ENV_CONCURRENCY)),
                p.concurrency,
                volley::DEFAULT_CONCURRENCY,
            ),
            rpm: off_if_zero(pick(flags.rpm, env.rpm.map(|v| (v, ENV_RPM)), p.rpm, 0)),
            tpm: off_if_zero(pick(flags.tpm, env.tpm.map(|v| (v, ENV_TPM)), p.tpm, 0)),
            max_retries: pick(
                flags.max_retries,
                env.max_retries.map(|v| (v, ENV_MAX_RETRIES)),
                p.max_retries,
                DEFAULT_MAX_RETRIES,
            ),
            timeout: off_if_zero(pick(
                flags.timeout,
                env.timeout.map(|v| (v, ENV_TIMEOUT)),
                p.timeout,
                volley::DEFAULT_TIMEOUT,
            )),
            cache: pick(
                flags.cache,
                env.cache.map(|v| (v, ENV_CACHE)),
                p.cache,
                CacheSpec::Off,
            ),
            shared_limit: pick(
                flags.shared_limit,
                env.shared_limit.map(|v| (v, ENV_SHARED_LIMIT)),
                p.shared_limit,
                SharedLimitSpec::Off,
            ),
            shared_prefix: pick(
                flags.shared_prefix,
                None,
                p.shared_prefix,
                DEFAULT_SHARED_PREFIX.to_owned(),
            ),
            lease: pick(flags.lease.map(Some), None, p.lease.map(Some), None),
            redis_failure: pick(
                flags.redis_failure,
                None,
                p.redis_failure,
                FailureSpec::FailClosed,
            ),
            profile: profile.label,
        }
    }
}

/// Reads the `VOLLEY_*` and `OPENAI_BASE_URL` variables through `lookup` (`std::env::var`
/// in the binary, a map in tests). Empty values count as unset.
///
/// # Errors
/// A value that does not parse, naming the variable.
pub(crate) fn env_layer(lookup: impl Fn(&str) -> Option<String>) -> Result<Layer, UsageError> {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let parsed = |name: &'static str| -> Result<Option<u64>, UsageError> {
        get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| usage(format!("{name}={v:?} is not a whole number")))
            })
            .transpose()
    };
    Ok(Layer {
        base_url: get(ENV_BASE_URL),
        api_key_env: None,
        concurrency: parsed(ENV_CONCURRENCY)?
            .map(|n| concurrency(n, ENV_CONCURRENCY))
            .transpose()?,
        rpm: parsed(ENV_RPM)?.map(|n| narrow(n, ENV_RPM)).transpose()?,
        tpm: parsed(ENV_TPM)?,
        max_retries: parsed(ENV_MAX_RETRIES)?
            .map(|n| narrow(n, ENV_MAX_RETRIES))
            .transpose()?,
        timeout: get(ENV_TIMEOUT)
            .map(|v| duration(&v, ENV_TIMEOUT))
            .transpose()?,
        cache: get(ENV_CACHE)
            .map(|v| v.parse().map_err(|e| usage(format!("{ENV_CACHE}: {e}"))))
            .transpose()?,
        shared_limit: get(ENV_SHARED_LIMIT)
            .map(|v| {
                v.parse()
                    .map_err(|e| usage(format!("{ENV_SHARED_LIMIT}: {e}")))
            })
            .transpose()?,
        ..Layer::default()
    })
}

/// Loads the profile in force: from `explicit` (`--config`, which must exist) or else
/// `./volley.toml` when present; `[profile.NAME]` when `name` is given, else the default
/// profile when the file has one.
///
/// # Errors
/// An unreadable or invalid file, a missing profile, `--profile` without a file, or an API
/// key in the file.
pub(crate) fn load_profile(
    explicit: Option<&Path>,
    name: Option<&str>,
) -> Result<Profile, UsageError> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let default = PathBuf::from(CONFIG_FILE);
            if default.is_file() {
                default
            } else if let Some(name) = name {
                return Err(usage(format!(
                    "--profile {name}: there is no {CONFIG_FILE} here; name one with --config PATH"
                )));
            } else {
                return Ok(Profile::default());
            }
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
    parse_profile(&text, name, &path.display().to_string())
}

/// Parses `volley.toml` text and returns the profile `name` (or the default one); `origin`
/// names the file in messages.
///
/// # Errors
/// As [`load_profile`].
pub(crate) fn parse_profile(
    text: &str,
    name: Option<&str>,
    origin: &str,
) -> Result<Profile, UsageError> {
    let mut file: toml::Table =
        toml::from_str(text).map_err(|e| usage(format!("{origin}: invalid TOML: {e}")))?;
    let default = file.remove("default");
    let profiles = match file.remove("profile") {
        None => toml::Table::new(),
        Some(toml::Value::Table(profiles)) => profiles,
        Some(_) => {
            return Err(usage(format!(
                "{origin}: `profile` must be tables such as [profile.prod]"
            )));
        }
    };
    if let Some(key) = file.keys().next() {
        return Err(if is_secret_key(key) {
            secret_error(origin, "the top level", key)
        } else {
            usage(format!(
                "{origin}: unknown key `{key}` at the top level; expected [default] or \
                 [profile.NAME] tables"
            ))
        });
    }
    // Every profile is checked, not only the one in force: a typo should not wait for the
    // day its profile is used, and a key anywhere in the file is a leak.
    let mut layers = Vec::with_capacity(profiles.len() + 1);
    if let Some(default) = default {
        layers.push(("default".to_owned(), "[default]".to_owned(), default));
    }
    for (profile, table) in profiles {
        let label = format!("[profile.{profile}]");
        layers.push((profile, label, table));
    }
    let mut chosen = None;
    let wanted = name.unwrap_or("default");
    for (profile, label, value) in layers {
        let toml::Value::Table(table) = value else {
            return Err(usage(format!("{origin}: {label} must be a table")));
        };
        let layer = parse_layer(&table, &format!("{origin} {label}"))?;
        if profile == wanted {
            if chosen.is_some() {
                return Err(usage(format!(
                    "{origin}: both [default] and [profile.default] are set; keep one"
                )));
            }
            chosen = Some(Profile {
                layer,
                label: Some(format!("{origin} {label}")),
            });
        }
    }
    match (chosen, name) {
        (Some(profile), _) => Ok(profile),
        (None, None) => Ok(Profile::default()),
        (None, Some(name)) => Err(usage(format!(
            "--profile {name}: {origin} has no [profile.{name}]"
        ))),
    }
}

fn parse_layer(table: &toml::Table, place: &str) -> Result<Layer, UsageError> {
    let mut layer = Layer::default();
    for (key, value) in table {
        let string = || {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("{place}: `{key}` must be a string")))
        };
        let number = || {
            value
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| usage(format!("{place}: `{key}` must be a whole number >= 0")))
        };
        let what = format!("{place}: `{key}`");
        match key.as_str() {
            "base_url" => layer.base_url = Some(string()?),
            "api_key_env" => layer.api_key_env = Some(string()?),
            "concurrency" => layer.concurrency = Some(concurrency(number()?, &what)?),
            "rpm" => layer.rpm = Some(narrow(number()?, &what)?),
            "tpm" => layer.tpm = Some(number()?),
            "max_retries" => layer.max_retries = Some(narrow(number()?, &what)?),
            "timeout" => layer.timeout = Some(duration(&string()?, &what)?),
            "cache" => {
                layer.cache = Some(
                    string()?
                        .parse()
                        .map_err(|e| usage(format!("{what}: {e}")))?,
                );
            }
            "shared_limit" => {
                layer.shared_limit = Some(
                    string()?
                        .parse()
                        .map_err(|e| usage(format!("{what}: {e}")))?,
                );
            }
            "shared_prefix" => layer.shared_prefix = Some(prefix(&string()?, &what)?),
            "lease" => layer.lease = Some(lease(number()?, &what)?),
            "redis_failure" => {
                layer.redis_failure = Some(
                    string()?
                        .parse()
                        .map_err(|e| usage(format!("{what}: {e}")))?,
                );
            }
            key if is_secret_key(key) => return Err(secret_error(place, "this profile", key)),
            key => {
                return Err(usage(format!(
                    "{place}: unknown key `{key}`; known keys: {PROFILE_KEYS}"
                )));
            }
        }
    }
    Ok(layer)
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "key" || key.ends_with("api_key") || key.ends_with("apikey") || key == "token"
}

fn secret_error(place: &str, where_: &str, key: &str) -> UsageError {
    usage(format!(
        "{place}: `{key}` in {where_} is not allowed: API keys never go in a config file. Put \
         the key in an environment variable and name it with api_key_env = \"NAME\" (or \
         --api-key-env NAME)"
    ))
}

fn pick<T>(
    flag: Option<T>,
    env: Option<(T, &'static str)>,
    profile: Option<T>,
    default: T,
) -> Setting<T> {
    if let Some(value) = flag {
        Setting {
            value,
            source: Source::Flag,
        }
    } else if let Some((value, name)) = env {
        Setting {
            value,
            source: Source::Env(name),
        }
    } else if let Some(value) = profile {
        Setting {
            value,
            source: Source::Profile,
        }
    } else {
        Setting {
            value: default,
            source: Source::Default,
        }
    }
}

/// Zero means "off" for limits and timeouts.
fn off_if_zero<T: Default + PartialEq>(setting: Setting<T>) -> Setting<Option<T>> {
    Setting {
        value: (setting.value != T::default()).then_some(setting.value),
        source: setting.source,
    }
}

fn concurrency(n: u64, what: &str) -> Result<usize, UsageError> {
    if n == 0 {
        return Err(usage(format!("{what}: the concurrency must be at least 1")));
    }
    narrow(n, what)
}

fn narrow<T: TryFrom<u64>>(n: u64, what: &str) -> Result<T, UsageError> {
    T::try_from(n).map_err(|_| usage(format!("{what}: {n} is too large")))
}

/// A lease: at least 1.
pub(crate) fn lease(n: u64, what: &str) -> Result<u32, UsageError> {
    if n == 0 {
        return Err(usage(format!("{what}: the lease must be at least 1")));
    }
    narrow(n, what)
}

/// A Redis key prefix: not empty, no white space.
pub(crate) fn prefix(s: &str, what: &str) -> Result<String, UsageError> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(usage(format!(
            "{what}: the prefix must be a non-empty word without spaces, e.g. prod"
        )));
    }
    Ok(s.to_owned())
}

fn duration(s: &str, what: &str) -> Result<Duration, UsageError> {
    volley_mock::parse_duration(s).map_err(|e| usage(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Layer {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env_layer(|name| map.get(name).cloned()).unwrap()
    }

    fn profile(text: &str, name: Option<&str>) -> Profile {
        parse_profile(text, name, "volley.toml").unwrap()
    }

    fn profile_err(text: &str, name: Option<&str>) -> String {
        parse_profile(text, name, "volley.toml")
            .unwrap_err()
            .to_string()
    }

    const FILE: &str = r#"
        [default]
        concurrency = 8
        rpm = 600

        [profile.prod]
        base_url = "https://prod.example/v1"
        api_key_env = "PROD_KEY"
        concurrency = 512
        rpm = 10000
        tpm = 2000000
        max_retries = 5
        timeout = "30s"
        cache = "disk:.volley-cache"
    "#;

    #[test]
    fn defaults_apply_when_no_source_sets_anything() {
        let s = Settings::resolve(Layer::default(), Layer::default(), Profile::default());
        assert_eq!(s.concurrency.value, volley::DEFAULT_CONCURRENCY);
        assert_eq!(s.concurrency.source, Source::Default);
        assert_eq!(s.api_key_env.value, "OPENAI_API_KEY");
        assert_eq!(s.base_url.value, volley::transport::DEFAULT_BASE_URL);
        assert_eq!(s.rpm.value, None);
        assert_eq!(s.tpm.value, None);
        assert_eq!(s.max_retries.value, DEFAULT_MAX_RETRIES);
        assert_eq!(s.timeout.value, Some(volley::DEFAULT_TIMEOUT));
        assert_eq!(s.cache.value, CacheSpec::Off);
        assert_eq!(s.profile, None);
    }

    #[test]
    fn flags_beat_environment_beat_profile_beat_defaults() {
        let flags = Layer {
            concurrency: Some(9),
            ..Layer::default()
        };
        let env = env(&[
            ("VOLLEY_CONCURRENCY", "7"),
            ("VOLLEY_RPM", "60"),
            ("OPENAI_BASE_URL", "http://env.example/v1"),
        ]);
        let s = Settings::resolve(flags, env, profile(FILE, Some("prod")));
        assert_eq!(s.concurrency.value, 9);
        assert_eq!(s.concurrency.source, Source::Flag);
        assert_eq!(s.rpm.value, Some(60));
        assert_eq!(s.rpm.source, Source::Env("VOLLEY_RPM"));
        assert_eq!(s.base_url.value, "http://env.example/v1");
        assert_eq!(s.tpm.value, Some(2_000_000));
        assert_eq!(s.tpm.source, Source::Profile);
        assert_eq!(s.max_retries.value, 5);
        assert_eq!(s.timeout.value, Some(Duration::from_secs(30)));
        assert_eq!(s.cache.value, CacheSpec::Disk(".volley-cache".into()));
        assert_eq!(s.api_key_env.value, "PROD_KEY");
        assert_eq!(s.profile.as_deref(), Some("volley.toml [profile.prod]"));
    }

    #[test]
    fn environment_beats_profile_for_every_variable() {
        let env = env(&[
            ("OPENAI_BASE_URL", "http://env/v1"),
            ("VOLLEY_CONCURRENCY", "3"),
            ("VOLLEY_RPM", "0"),
            ("VOLLEY_TPM", "5"),
            ("VOLLEY_MAX_RETRIES", "0"),
            ("VOLLEY_TIMEOUT", "2m"),
            ("VOLLEY_CACHE", "memory"),
        ]);
        let s = Settings::resolve(Layer::default(), env, profile(FILE, Some("prod")));
        assert_eq!(s.base_url.value, "http://env/v1");
        assert_eq!(s.concurrency.value, 3);
        // 0 turns the profile's limit off.
        assert_eq!(s.rpm.value, None);
        assert_eq!(s.rpm.source, Source::Env("VOLLEY_RPM"));
        assert_eq!(s.tpm.value, Some(5));
        assert_eq!(s.max_retries.value, 0);
        assert_eq!(s.timeout.value, Some(Duration::from_secs(120)));
        assert_eq!(s.cache.value, CacheSpec::Memory);
    }

    #[test]
    fn flags_can_turn_off_what_a_profile_turns_on() {
        let flags = Layer {
            rpm: Some(0),
            tpm: Some(0),
            timeout: Some(Duration::ZERO),
            cache: Some(CacheSpec::Off),
            ..Layer::default()
        };
        let s = Settings::resolve(flags, Layer::default(), profile(FILE, Some("prod")));
        assert_eq!(s.rpm.value, None);
        assert_eq!(s.tpm.value, None);
        assert_eq!(s.timeout.value, None);
        assert_eq!(s.cache.value, CacheSpec::Off);
        assert_eq!(s.cache.source, Source::Flag);
    }

    #[test]
    fn the_default_profile_applies_without_a_profile_flag() {
        let p = profile(FILE, None);
        assert_eq!(p.layer.concurrency, Some(8));
        assert_eq!(p.label.as_deref(), Some("volley.toml [default]"));
        let p = profile("[profile.default]\nconcurrency = 4\n", None);
        assert_eq!(p.layer.concurrency, Some(4));
        // No default profile: nothing applies.
        let p = profile("[profile.prod]\nconcurrency = 4\n", None);
        assert_eq!(p, Profile::default());
        assert_eq!(profile("", None), Profile::default());
        // A named profile is used alone, not merged with the default one.
        let p = profile(FILE, Some("prod"));
        assert_eq!(p.layer.concurrency, Some(512));
        let p = profile(
            "[default]\nrpm = 5\n[profile.x]\nconcurrency = 2\n",
            Some("x"),
        );
        assert_eq!(p.layer.rpm, None);
    }

    #[test]
    fn an_api_key_in_the_file_is_refused_without_echoing_it() {
        for text in [
            "[profile.prod]\napi_key = \"sk-file-secret\"\n",
            "[default]\nopenai_api_key = \"sk-file-secret\"\n",
            "api_key = \"sk-file-secret\"\n",
            // Refused even in a profile that is not in force.
            "[profile.other]\napi_key = \"sk-file-secret\"\n[profile.prod]\nrpm = 1\n",
        ] {
            let err = profile_err(text, Some("prod"));
            assert!(err.contains("api_key"), "{err}");
            assert!(err.contains("api_key_env"), "{err}");
            assert!(!err.contains("sk-file-secret"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        for (text, name, needles) in [
            (
                "[profile.prod]\nconcurency = 5\n",
                Some("prod"),
                &["`concurency`", "[profile.prod]", "concurrency"][..],
            ),
            ("[defaults]\nrpm = 1\n", None, &["`defaults`"]),
            (
                "[default]\nconcurrency = 0\n",
                None,
                &["concurrency", "at least 1"],
            ),
            ("[default]\nrpm = -1\n", None, &["`rpm`", "whole number"]),
            ("[default]\ntimeout = 30\n", None, &["`timeout`", "string"]),
            (
                "[default]\ntimeout = \"30\"\n",
                None,
                &["`timeout`", "unit"],
            ),
            (
                "[default]\ncache = \"redis\"\n",
                None,
                &["`cache`", "disk:PATH"],
            ),
            ("[default]\nrpm = \n", None, &["invalid TOML"]),
            (
                "[profile.prod]\nrpm = 1\n",
                Some("staging"),
                &["[profile.staging]"],
            ),
            (
                "[default]\nrpm = 1\n[profile.default]\nrpm = 2\n",
                None,
                &["keep one"],
            ),
        ] {
            let err = profile_err(text, name);
            for needle in needles {
                assert!(err.contains(needle), "{text:?}: {err} lacks {needle}");
            }
        }
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (name, value) in [
            ("VOLLEY_CONCURRENCY", "many"),
            ("VOLLEY_CONCURRENCY", "0"),
            ("VOLLEY_RPM", "-3"),
            ("VOLLEY_TIMEOUT", "soon"),
            ("VOLLEY_CACHE", "disk:"),
        ] {
            let err = env_layer(|n| (n == name).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
        // Empty counts as unset.
        assert_eq!(env(&[("VOLLEY_RPM", " ")]), Layer::default());
    }

    #[test]
    fn shared_settings_resolve_like_the_others() {
        let file = r#"
            [profile.fleet]
            rpm = 10000
            shared_limit = "redis://:hunter2@10.0.0.5:6379/1"
            shared_prefix = "prod"
            lease = 20
            redis_failure = "fallback:8"
            cache = "redis://:hunter2@10.0.0.5:6379"
        "#;
        let s = Settings::resolve(
            Layer::default(),
            Layer::default(),
            profile(file, Some("fleet")),
        );
        assert_eq!(
            s.shared_limit.value.to_string(),
            "redis://***@10.0.0.5:6379/1"
        );
        assert_eq!(s.shared_limit.source, Source::Profile);
        assert_eq!(s.shared_prefix.value, "prod");
        assert_eq!(s.lease.value, Some(20));
        assert_eq!(s.redis_failure.value, FailureSpec::Fallback(8));
        assert_eq!(s.cache.value.to_string(), "redis://***@10.0.0.5:6379");
        let SharedLimitSpec::Redis(url) = &s.shared_limit.value else {
            panic!("no shared limit")
        };
        assert_eq!(url.expose(), "redis://:hunter2@10.0.0.5:6379/1");
        assert!(!format!("{s:?}").contains("hunter2"));

        // The environment beats the profile; a flag beats both, and `off` turns it off.
        let env = env(&[("VOLLEY_SHARED_LIMIT", "redis://127.0.0.1:7000")]);
        let s = Settings::resolve(Layer::default(), env.clone(), profile(file, Some("fleet")));
        assert_eq!(s.shared_limit.value.to_string(), "redis://127.0.0.1:7000");
        assert_eq!(s.shared_limit.source, Source::Env("VOLLEY_SHARED_LIMIT"));
        let flags = Layer {
            shared_limit: Some(SharedLimitSpec::Off),
            lease: Some(3),
            redis_failure: Some(FailureSpec::FailClosed),
            ..Layer::default()
        };
        let s = Settings::resolve(flags, env, profile(file, Some("fleet")));
        assert_eq!(s.shared_limit.value, SharedLimitSpec::Off);
        assert_eq!(s.lease.value, Some(3));
        assert_eq!(s.redis_failure.value, FailureSpec::FailClosed);

        // Defaults.
        let s = Settings::resolve(Layer::default(), Layer::default(), Profile::default());
        assert_eq!(s.shared_limit.value, SharedLimitSpec::Off);
        assert_eq!(s.shared_prefix.value, DEFAULT_SHARED_PREFIX);
        assert_eq!(s.lease.value, None);
        assert_eq!(s.redis_failure.value, FailureSpec::FailClosed);
    }

    #[test]
    fn bad_shared_settings_are_named_without_the_password() {
        for (text, needles) in [
            ("[default]\nlease = 0\n", &["`lease`", "at least 1"][..]),
            (
                "[default]\nredis_failure = \"fallback:0\"\n",
                &["`redis_failure`", "fallback:N"],
            ),
            (
                "[default]\nredis_failure = \"open\"\n",
                &["`redis_failure`", "fail-closed"],
            ),
            (
                "[default]\nshared_limit = \"http://:hunter2@host:6379\"\n",
                &["`shared_limit`", "redis://"],
            ),
            (
                "[default]\ncache = \"redis:/:hunter2@host\"\n",
                &["`cache`", "redis://"],
            ),
            ("[default]\nshared_prefix = \"a b\"\n", &["`shared_prefix`"]),
        ] {
            let err = profile_err(text, None);
            for needle in needles {
                assert!(err.contains(needle), "{text:?}: {err} lacks {needle}");
            }
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err =
            env_layer(|n| (n == "VOLLEY_SHARED_LIMIT").then(|| "tcp://:hunter2@h:1".to_owned()))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("VOLLEY_SHARED_LIMIT") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn cache_specs_parse_and_print() {
        assert_eq!("memory".parse::<CacheSpec>(), Ok(CacheSpec::Memory));
        assert_eq!("off".parse::<CacheSpec>(), Ok(CacheSpec::Off));
        assert_eq!(
            "disk:/tmp/c".parse::<CacheSpec>(),
            Ok(CacheSpec::Disk("/tmp/c".into()))
        );
        assert_eq!(CacheSpec::Disk("a b".into()).to_string(), "disk:a b");
        assert!("disk:".parse::<CacheSpec>().is_err());
        let redis = "rediss://user:hunter2@cache.example:6380/2"
            .parse::<CacheSpec>()
            .unwrap();
        assert_eq!(redis.to_string(), "rediss://***@cache.example:6380/2");
        assert!(!format!("{redis:?}").contains("hunter2"));
        assert_eq!(
            "fallback:3".parse::<FailureSpec>(),
            Ok(FailureSpec::Fallback(3))
        );
        assert_eq!(FailureSpec::Fallback(3).to_string(), "fallback:3");
        assert!("memory:1".parse::<CacheSpec>().is_err());
    }
}
