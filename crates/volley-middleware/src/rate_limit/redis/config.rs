//! [`SharedLimits`] and [`FailureMode`]: what a [`RedisLimiter`](super::RedisLimiter) is built
//! from, and the checked configuration it runs with.

use std::fmt;
use std::time::Duration;

use volley_core::cache_key::CredentialId;
use volley_core::{Error, ErrorKind};

use super::super::Limits;
use crate::redis::RedisOptions;

/// The prefix of every key unless [`SharedLimits::prefix`] says otherwise.
const DEFAULT_PREFIX: &str = "volley";

/// The BLAKE3 key-derivation context of the credential part of a key: versioned, so a change
/// of the state layout never reads state written by an older one.
const KEY_CONTEXT: &str = "volley 2026-11 shared rate limit key v1";

/// How long the state outlives its last deadline in Redis: a quiet limiter's hash expires a
/// minute after its buckets are full again.
pub(super) const TTL_SLACK: Duration = Duration::from_secs(60);

/// How to build a [`RedisLimiter`](super::RedisLimiter): the server, the limits every process
/// shares, and how this process talks to them.
///
/// Setters never fail; [`RedisLimiter::connect`](super::RedisLimiter::connect) checks the
/// values. `Debug` never shows a password (the URL is redacted) or an API key (only the
/// credential's id, which is a hash).
#[derive(Clone)]
#[must_use]
pub struct SharedLimits {
    pub(super) redis: RedisOptions,
    pub(super) limits: Limits,
    pub(super) prefix: String,
    pub(super) credential: CredentialId,
    pub(super) lease: u32,
    pub(super) on_failure: FailureMode,
    pub(super) refused_for: Duration,
}

/// The default of [`SharedLimits::give_up_on_refusal_after`].
pub const DEFAULT_REFUSAL_GRACE: Duration = Duration::from_secs(30);

/// What a [`RedisLimiter`](super::RedisLimiter) does while Redis cannot be reached or does not
/// answer within the command timeout ([`RedisOptions::response_timeout`]).
///
/// The default is [`FailClosed`](FailureMode::FailClosed): it needs no knowledge of the
/// deployment and never sends faster than the shared limit, and the limit is the provider's
/// rule, not ours; an outage of the limiter shows up as waiting (and a warning every few
/// seconds), not as 429s or a ban. [`LocalFallback`](FailureMode::LocalFallback) keeps
/// traffic flowing at a guessed share, which is only as safe as the process count it is
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailureMode {
    /// Requests wait until Redis answers again (retrying with backoff), then go in order. No
    /// request fails because of the outage, and the shared limit is never exceeded. Requests
    /// that already had their send time keep it.
    #[default]
    FailClosed,
    /// Switch to an in-process limiter at `1 / processes` of each limit (and burst) until
    /// Redis answers again (probed every second), then switch back. `processes` is how many
    /// processes share the limits: too few overshoots the provider's limit during an outage,
    /// too many wastes it.
    LocalFallback {
        /// How many processes share the limits (at least 1).
        processes: u32,
    },
}

impl SharedLimits {
    /// `limits` shared by every process that uses the same Redis, prefix and credential.
    /// Every such process should configure the same limits.
    pub fn new(redis: RedisOptions, limits: Limits) -> SharedLimits {
        SharedLimits {
            redis,
            limits,
            prefix: DEFAULT_PREFIX.to_owned(),
            credential: CredentialId::anonymous(),
            lease: 1,
            on_failure: FailureMode::FailClosed,
            refused_for: DEFAULT_REFUSAL_GRACE,
        }
    }

    /// The first part of the Redis key, to keep applications or environments apart. Default
    /// `"volley"`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> SharedLimits {
        self.prefix = prefix.into();
        self
    }

    /// The API key the limits belong to, as its id: processes share a budget when they use the
    /// same credential. Only a hash of the id goes into the key. Default
    /// [`CredentialId::anonymous`].
    pub fn credential(mut self, id: &CredentialId) -> SharedLimits {
        self.credential = *id;
        self
    }

    /// How many permits one Redis round trip fetches: with more than 1, a process reserves
    /// the permits its next requests will need ahead of them and grants them without a round
    /// trip, returning those it does not use in time. At least 1. See the
    /// [module docs](super#leasing) for how large a lease may be before it costs fairness
    /// (a lease of `k` holds `k / rate` seconds of everyone's schedule). Default 1: no leasing
    /// (every decision is made in Redis, and concurrent requests still share round trips).
    pub fn lease(mut self, requests: u32) -> SharedLimits {
        self.lease = requests;
        self
    }

    /// What to do while Redis is unreachable or slow. Default [`FailureMode::FailClosed`].
    pub fn on_failure(mut self, mode: FailureMode) -> SharedLimits {
        self.on_failure = mode;
        self
    }

    /// Failing closed, how long Redis must keep refusing the limiter in a way waiting does
    /// not heal (a changed password, an ACL without the script's commands, a cluster node:
    /// [`crate::redis::is_permanent`]) before the requests waiting fail with
    /// `ErrorKind::Config`, and later ones at each round trip, instead of waiting for ever.
    /// A refusal that passes sooner (a server briefly at its `maxclients`, which the client
    /// library reports as a failed authentication) only makes them wait. Default
    /// [`DEFAULT_REFUSAL_GRACE`] (30 s).
    pub fn give_up_on_refusal_after(mut self, grace: Duration) -> SharedLimits {
        self.refused_for = grace;
        self
    }

    /// The Redis key this configuration uses: `<prefix>:ratelimit:{<credential hash>}`.
    pub(super) fn key(&self) -> String {
        let hash = blake3::derive_key(KEY_CONTEXT, self.credential.as_bytes());
        let mut key = String::with_capacity(self.prefix.len() + 46);
        key.push_str(&self.prefix);
        key.push_str(":ratelimit:{");
        for byte in &hash[..16] {
            key.push_str(&format!("{byte:02x}"));
        }
        key.push('}');
        key
    }

    /// Checks the values and resolves the defaults.
    pub(super) fn resolve(&self) -> Result<Config, Error> {
        let config_error =
            |why: String| Error::new(ErrorKind::Config, format!("shared rate limits: {why}"));
        let resolved = self.limits.resolve().map_err(config_error)?;
        if self.lease == 0 {
            return Err(config_error(
                "the lease must be at least 1 request".to_owned(),
            ));
        }
        if let FailureMode::LocalFallback { processes: 0 } = self.on_failure {
            return Err(config_error(
                "the local fallback needs at least 1 process".to_owned(),
            ));
        }
        let dim = |d: Option<(u64, u64)>| {
            d.map(|(limit, burst)| {
                Dim::new(
                    limit,
                    burst,
                    self.limits.headroom,
                    self.limits.jitter_margin,
                )
            })
        };
        Ok(Config {
            requests: dim(resolved.requests),
            tokens: dim(resolved.tokens),
            input: dim(resolved.input),
            output: dim(resolved.output),
            learn: self.limits.learned_dimensions(),
            key: self.key(),
            lease: self.lease,
            grace: self.limits.jitter_margin / 2,
            failure: self.on_failure,
            refused_for: self.refused_for,
            limits: self.limits.clone(),
            server: self.redis.redacted_url(),
            command_timeout: self.redis.command_timeout(),
        })
    }
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits")
            .field("redis", &self.redis)
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .field("credential", &self.credential)
            .field("lease", &self.lease)
            .field("on_failure", &self.on_failure)
            .field("refused_for", &self.refused_for)
            .finish()
    }
}

/// The checked configuration of a running limiter.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) requests: Option<Dim>,
    pub(super) tokens: Option<Dim>,
    /// Input and output tokens, limited apart (Anthropic's ITPM and OTPM).
    pub(super) input: Option<Dim>,
    pub(super) output: Option<Dim>,
    /// Which limits (requests, tokens, input tokens, output tokens) are learned from the
    /// provider's headers, and shared through Redis once learned.
    pub(super) learn: [bool; super::store::DIMS],
    pub(super) key: String,
    pub(super) lease: u32,
    /// How late a leased permit nobody has taken yet may still be used: half the jitter
    /// margin (see the module docs).
    pub(super) grace: Duration,
    pub(super) failure: FailureMode,
    /// See [`SharedLimits::give_up_on_refusal_after`].
    pub(super) refused_for: Duration,
    pub(super) limits: Limits,
    /// The server's redacted URL, for messages.
    pub(super) server: String,
    pub(super) command_timeout: Duration,
}

impl Config {
    /// The limits in the order of the script's buckets: requests, tokens, input tokens,
    /// output tokens.
    pub(super) fn dims(&self) -> [Option<Dim>; super::store::DIMS] {
        [self.requests, self.tokens, self.input, self.output]
    }

    /// Whether a limit is learned from the provider's headers.
    pub(super) fn learns(&self) -> bool {
        self.learn.contains(&true)
    }

    /// The limit in force for a learned per-minute `limit`, as the script computes it: a
    /// second's worth of burst, with this configuration's headroom and jitter margin.
    pub(super) fn learned_dim(&self, limit: u64) -> Dim {
        Dim::new(
            limit,
            (limit / 60).max(1),
            self.limits.headroom,
            self.limits.jitter_margin,
        )
    }

    /// Whether input and output tokens are limited apart (given), so requests need those
    /// estimates.
    pub(super) fn splits_tokens(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    /// The error for a cost above a whole minute's budget, which no wait can satisfy: the same
    /// words as the in-process limiter's.
    pub(super) fn too_large(
        &self,
        id: volley_core::RequestId,
        cost: super::super::Cost,
    ) -> Option<Error> {
        let limit = |d: Option<Dim>| d.map(|d| d.limit);
        super::super::local::too_large_for(
            id,
            cost,
            [
                limit(self.requests),
                limit(self.tokens),
                limit(self.input),
                limit(self.output),
            ],
        )
    }

    /// The limits of the local fallback for `processes` processes: each limit and burst
    /// divided by the count (rounded down, at least 1), so the processes together stay within
    /// the shared limits.
    pub(super) fn fallback_limits(&self, processes: u32) -> Limits {
        let share = |n: Option<u64>| n.map(|n| (n / u64::from(processes)).max(1));
        let mut limits = self.limits.clone();
        limits.requests = share(self.requests.map(|d| d.limit));
        limits.tokens = share(self.tokens.map(|d| d.limit));
        limits.burst_requests = share(self.requests.map(|d| d.burst));
        limits.burst_tokens = share(self.tokens.map(|d| d.burst));
        // Their bursts are a second's worth of the share, as of any such limit.
        limits.input_tokens = share(self.input.map(|d| d.limit));
        limits.output_tokens = share(self.output.map(|d| d.limit));
        limits
    }
}

/// One limit in the script's units: microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Dim {
    /// Units per minute.
    pub(super) limit: u64,
    /// The bucket's capacity in units.
    pub(super) burst: u64,
    /// Microseconds one unit costs: a minute over the limit, stretched by the headroom.
    pub(super) interval_us: f64,
    /// How far the TAT may run ahead of now before a request waits: the burst at the nominal
    /// interval, less the jitter margin (as the in-process GCRA computes it).
    pub(super) tolerance_us: u64,
}

impl Dim {
    fn new(limit: u64, burst: u64, headroom: f64, jitter: Duration) -> Dim {
        let nominal = 60e6 / limit as f64;
        let jitter = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        Dim {
            limit,
            burst,
            interval_us: nominal / (1.0 - headroom),
            tolerance_us: ((burst as f64 * nominal) as u64).saturating_sub(jitter),
        }
    }

    /// Microseconds `cost` units take to refill, rounded up, as the script computes it.
    pub(super) fn span(&self, cost: u64) -> u64 {
        // `as` saturates: an absurd cost becomes "never", not a wrap-around.
        (cost as f64 * self.interval_us).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_core::ApiKey;

    fn shared(limits: Limits) -> SharedLimits {
        SharedLimits::new(RedisOptions::new("redis://:hunter2@127.0.0.1:1"), limits)
    }

    #[test]
    fn keys_are_namespaced_hashed_and_tagged() {
        let limits = Limits::per_minute().requests(60);
        let anonymous = shared(limits.clone()).key();
        assert!(anonymous.starts_with("volley:ratelimit:{"), "{anonymous}");
        assert!(anonymous.ends_with('}'));
        assert_eq!(anonymous.len(), "volley:ratelimit:{}".len() + 32);
        let id = CredentialId::from_api_key(&ApiKey::new("sk-live-123"));
        let keyed = shared(limits.clone())
            .credential(&id)
            .prefix("staging")
            .key();
        assert!(keyed.starts_with("staging:ratelimit:{"));
        assert!(!keyed.contains("sk-live"));
        assert_ne!(keyed[8..], anonymous[7..]);
    }

    #[test]
    fn debug_shows_no_secret() {
        let id = CredentialId::from_api_key(&ApiKey::new("sk-live-123"));
        let text = format!(
            "{:?}",
            shared(Limits::per_minute().requests(60)).credential(&id)
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("sk-live"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }

    #[test]
    fn bad_values_fail_to_resolve() {
        let ok = Limits::per_minute().requests(60);
        assert!(shared(ok.clone()).resolve().is_ok());
        for bad in [
            shared(Limits::per_minute().requests(0)),
            shared(ok.clone()).lease(0),
            shared(ok).on_failure(FailureMode::LocalFallback { processes: 0 }),
        ] {
            assert_eq!(bad.resolve().unwrap_err().kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn the_fallback_takes_a_share_of_each_limit_and_burst() {
        let limits = Limits::per_minute()
            .requests(1_200)
            .tokens(100_000)
            .burst_tokens(10_000);
        let config = shared(limits).resolve().unwrap();
        let local = config.fallback_limits(4);
        assert_eq!(local.requests, Some(300));
        assert_eq!(local.burst_requests, Some(5));
        assert_eq!(local.tokens, Some(25_000));
        assert_eq!(local.burst_tokens, Some(2_500));
        // Never below 1.
        let local = config.fallback_limits(10_000);
        assert_eq!((local.requests, local.burst_requests), (Some(1), Some(1)));
    }

    #[test]
    fn dimensions_match_the_in_process_gcra() {
        // 1 200 a minute: 50 ms apart, burst 20 (one second) less the 25 ms margin.
        let config = shared(Limits::per_minute().requests(1_200).headroom(0.0))
            .resolve()
            .unwrap();
        let dim = config.requests.unwrap();
        assert_eq!(dim.interval_us, 50_000.0);
        assert_eq!(dim.tolerance_us, 975_000);
        assert_eq!(dim.span(3), 150_000);
        assert!(config.tokens.is_none());
        assert_eq!(config.grace, Duration::from_micros(12_500));
    }
}
