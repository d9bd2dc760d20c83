//! Limits: the process's open-file limit, and the rate limit shared with other processes
//! through Redis.

use volley::ErrorKind;
use volley::core::cache_key::CredentialId;
use volley::middleware::rate_limit::Limits;
use volley::redis::{FailureMode, RedisLimiter, RedisOptions, SharedLimits};

use crate::config::{FailureSpec, RedisUrl, RunLoad, UsageError};

/// Raises the open-file soft limit to the hard limit: 1 024 slots need more than 1 024 file
/// descriptors. When `needed` is given and the hard limit is lower, says so in one line.
pub(crate) fn raise_open_file_limit(needed: Option<u64>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            if let Some(needed) = needed
                && limit < needed
            {
                say!(
                    "volley: the open-file limit is {limit}, below the {needed} this run needs; \
                     raise the hard limit (ulimit -Hn) or lower the concurrency"
                );
            }
        }
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
}

/// Connects the rate limiter shared through Redis (`--shared-limit`): the run's `--rpm`,
/// `--tpm`, `--input-tpm` and `--output-tpm`, shared by every process with the same Redis,
/// prefix and credential. A request or token limit not given is learned from the provider's
/// headers, and the learned limit is shared the same way.
///
/// # Errors
/// A [`UsageError`] when every limit is off (0) or the URL is invalid; otherwise when Redis
/// cannot be reached.
pub(crate) async fn shared_limiter(
    url: &RedisUrl,
    settings: &RunLoad,
    credential: &CredentialId,
) -> anyhow::Result<RedisLimiter> {
    let limits = rate_limits(settings).ok_or_else(|| {
        UsageError(
            "--shared-limit shares the rate limits, and every one is off (0): give --rpm, \
             --tpm, --input-tpm or --output-tpm a limit, leave --rpm or --tpm out to learn it, \
             or turn the shared limit off"
                .to_owned(),
        )
    })?;
    let failure = match settings.redis_failure {
        FailureSpec::FailClosed => FailureMode::FailClosed,
        FailureSpec::Fallback(processes) => FailureMode::LocalFallback { processes },
    };
    let redis = redis_options(url, settings, "--shared-limit")?;
    let options = SharedLimits::new(redis, limits)
        .prefix(settings.shared_prefix.as_str().to_owned())
        .credential(credential)
        .on_failure(failure)
        .lease(settings.lease.get());
    RedisLimiter::connect(options)
        .await
        .map_err(|e| redis_error(e, "--shared-limit"))
}

/// How to reach the Redis at `url` (for `flag`): plain text allowed or not, the CA of
/// `--redis-ca-cert`, a cluster or not.
///
/// # Errors
/// A [`UsageError`] when the CA file cannot be read.
pub(crate) fn redis_options(
    url: &RedisUrl,
    settings: &RunLoad,
    flag: &str,
) -> Result<RedisOptions, UsageError> {
    let mut options = RedisOptions::new(url.expose())
        .allow_plain_redis(settings.allow_plain_redis)
        .cluster(settings.redis_cluster);
    if let Some(path) = &settings.redis_ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            UsageError(format!(
                "{flag}: reading --redis-ca-cert {}: {e}",
                path.display()
            ))
        })?;
        options = options.tls_ca_pem(pem);
    }
    Ok(options)
}

/// The run's rate limits, as the local limiter would enforce them: given ones (0 is none),
/// and the request and token limits learned when not given. `None` when nothing is limited
/// or learned.
pub(crate) fn rate_limits(settings: &RunLoad) -> Option<Limits> {
    Limits::from_settings(
        settings.rpm.get(),
        settings.tpm.get(),
        settings.input_tpm.get(),
        settings.output_tpm.get(),
    )
}

/// A Redis error at start-up: a URL that does not parse is a usage error (exit 2), anything
/// else (unreachable, wrong password) a failure to run (exit 1). Neither names the password.
pub(crate) fn redis_error(error: volley::Error, flag: &str) -> anyhow::Error {
    match error.kind() {
        ErrorKind::Config => anyhow::Error::new(UsageError(format!("{flag}: {error}"))),
        _ => anyhow::Error::new(error).context(format!("{flag}: Redis is not reachable")),
    }
}
