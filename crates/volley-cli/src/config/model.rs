//! Every setting, declared once: its `volley.toml` key and `VOLLEY_*` variable (the field's
//! name), its flag and help (the `#[arg]` and doc comment), its type and its default.
//!
//! [`settings!`] turns one declaration into two structs: the resolved settings (plain values,
//! `#[serde(default)]` from the declared defaults), and the clap flags (`…Flags`), which
//! serialise only the flags the user gave, so they can be merged over the other layers.
//! Groups are flattened into the commands that take them: [`Connection`] into every command
//! that calls an API, [`Attempts`] into `chat` and `run`, [`RunLoad`] and [`RunOutput`] into
//! `run` alone.

use std::num::NonZeroU32;
use std::path::PathBuf;

use volley::core::duration::HumanDuration;

use super::UsageError;
use super::endpoints::{BaseUrls, EndpointSpecs};
use super::origin::usage_error;
use super::values::{
    AnthropicAuthSpec, ByteSize, CacheSpec, ConcurrencySpec, FailureSpec, FsyncMode,
    HealthCheckSpec, HedgeSpec, Limit, Prefix, ProviderSpec, RetryOn, Share, SharedLimitSpec, Show,
};

/// A group of settings: the keys it reads and how its values are shown.
pub(crate) trait Group: Default + serde::Serialize + serde::de::DeserializeOwned {
    /// The `volley.toml` keys of the group; each is also `VOLLEY_<KEY>` and `--<key>`.
    const KEYS: &'static [&'static str];

    /// Each key with its value as `--print-config` shows it (secrets hidden).
    fn shown(&self) -> Vec<(&'static str, String)>;
}

/// Whether a flag was left out, so the flags layer carries only what the user typed: `None`,
/// or `false` for a switch (a switch cannot turn off what another layer turns on).
pub(crate) trait Given {
    fn absent(&self) -> bool;
}

impl<T> Given for Option<T> {
    fn absent(&self) -> bool {
        self.is_none()
    }
}

impl<T> Given for Vec<T> {
    fn absent(&self) -> bool {
        self.is_empty()
    }
}

impl Given for bool {
    fn absent(&self) -> bool {
        !*self
    }
}

/// Declares a group of settings; see the module docs. Each field reads
/// `name: Type [FlagType] = default,` after its doc comment and `#[arg]`.
macro_rules! settings {
    (
        $(#[doc = $doc:expr])*
        $vis:vis struct $name:ident / $flags:ident ($heading:literal) {
            $(
                $(#[$attr:meta])*
                $field:ident : $ty:ty [$flag_ty:ty] = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        ///
        /// The fields' help is on the flags struct of the same group.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        $vis struct $name {
            $(pub(crate) $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl Group for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($field), Show::show(&self.$field)),)*]
            }
        }

        #[doc = concat!("The flags of [`", stringify!($name), "`]; only those given are serialised.")]
        #[derive(Debug, Clone, Default, clap::Args, serde::Serialize)]
        #[command(next_help_heading = $heading)]
        $vis struct $flags {
            $(
                $(#[$attr])*
                #[serde(skip_serializing_if = "Given::absent")]
                $field: $flag_ty,
            )*
        }
    };
}

settings! {
    /// How to reach the API: every command that calls one.
    pub(crate) struct Connection / ConnectionFlags ("Connection (every command; also VOLLEY_<NAME> and volley.toml)") {
        /// The API's base URL, /v1 included [default: https://api.openai.com/v1, or
        /// $OPENAI_BASE_URL; with --provider anthropic, https://api.anthropic.com/v1, or
        /// $ANTHROPIC_BASE_URL + /v1; for bench: http://127.0.0.1:8080/v1, the default of
        /// volley mock]. Repeat it for several endpoints of one provider and key (`chat`,
        /// `run` and `bench`): each request goes to one of them, by load and circuit-breaker
        /// state, and a retry to another; `volley.toml`'s `[[profile.NAME.endpoints]]` tables
        /// give each its own key, weight, priority and limits.
        #[arg(long, value_name = "URL")]
        base_url: BaseUrls [Vec<String>] = BaseUrls::default(),
        /// The environment variable holding the API key [default: OPENAI_API_KEY; with
        /// --provider anthropic, ANTHROPIC_API_KEY, then ANTHROPIC_AUTH_TOKEN]. The key itself
        /// is never read from a flag, a VOLLEY_* variable or volley.toml.
        #[arg(long, value_name = "NAME")]
        api_key_env: String [Option<String>] = volley::API_KEY_ENV.to_owned(),
        /// Allow plain http:// to a host that is not loopback (the key would travel
        /// unencrypted).
        #[arg(long)]
        allow_plain_http: bool [bool] = false,
        /// Whose conventions the API follows: "openai", "anthropic" (the Messages API: the
        /// key from ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN, see --anthropic-auth; `run`
        /// reads and writes the Message Batches format), or "azure" (Azure OpenAI: the key
        /// from AZURE_OPENAI_API_KEY sent as api-key, or a Microsoft Entra ID token from
        /// AZURE_OPENAI_AD_TOKEN; --api-version on every request; a base URL
        /// https://RESOURCE.openai.azure.com/openai/deployments/NAME or …/openai/v1, or
        /// --azure-endpoint) [default: openai].
        #[arg(long, value_name = "NAME")]
        provider: ProviderSpec [Option<String>] = ProviderSpec::default(),
        /// With --provider anthropic, how the key is sent: "bearer" (Authorization: Bearer,
        /// as the current official SDK sends it) or "x-api-key" (as older SDKs do) [default:
        /// bearer].
        #[arg(long, value_name = "STYLE")]
        anthropic_auth: AnthropicAuthSpec [Option<String>] = AnthropicAuthSpec::default(),
        /// With --provider anthropic, the anthropic-version header [default: 2026-10-21 with
        /// bearer auth, 2023-06-01 with x-api-key].
        #[arg(long, value_name = "VERSION")]
        anthropic_version: Option<String> [Option<String>] = None,
        /// With --provider anthropic, the anthropic-beta header: beta features,
        /// comma-separated [default: none].
        #[arg(long, value_name = "FEATURES")]
        anthropic_beta: Option<String> [Option<String>] = None,
        /// Azure OpenAI's API version, sent as the api-version query parameter, e.g.
        /// 2024-10-21 (deployment URLs need one, the v1 API does not) [default:
        /// $OPENAI_API_VERSION].
        #[arg(long, value_name = "VERSION")]
        api_version: Option<String> [Option<String>] = None,
        /// Azure OpenAI's resource endpoint, https://RESOURCE.openai.azure.com, used with
        /// --provider azure when no base URL is set: the base URL becomes ENDPOINT/openai,
        /// and each request goes to the deployment its "model" names [default:
        /// $AZURE_OPENAI_ENDPOINT].
        #[arg(long, value_name = "URL")]
        azure_endpoint: Option<String> [Option<String>] = None,
        /// The proxy for every request: http://[USER:PASSWORD@]HOST[:PORT] (https:// servers
        /// through a CONNECT tunnel, encrypted end to end), socks5:// or socks5h://; "" for
        /// none. The password is never printed [default: $HTTPS_PROXY, $http_proxy or
        /// $ALL_PROXY, by curl's rules].
        #[arg(long, value_name = "URL")]
        proxy: Option<String> [Option<String>] = None,
        /// Hosts reached directly rather than through the proxy: comma-separated names (each
        /// with its subdomains), IP addresses, CIDR ranges, or * alone for all [default:
        /// $NO_PROXY].
        #[arg(long, value_name = "HOSTS")]
        no_proxy: Option<String> [Option<String>] = None,
        /// A PEM file of CA certificates to trust as well as the default roots (a private
        /// or corporate CA); when given, $SSL_CERT_FILE and $SSL_CERT_DIR are not read
        /// [default: none; the files $SSL_CERT_FILE and $SSL_CERT_DIR name are trusted].
        #[arg(long, value_name = "PATH")]
        ca_cert: Option<PathBuf> [Option<PathBuf>] = None,
        /// Trust the operating system's root certificates as well.
        #[arg(long)]
        native_roots: bool [bool] = false,
        /// A client certificate (PEM, leaf first) for servers that require mutual TLS; with
        /// --client-key.
        #[arg(long, value_name = "PATH")]
        client_cert: Option<PathBuf> [Option<PathBuf>] = None,
        /// The private key (PEM) of --client-cert.
        #[arg(long, value_name = "PATH")]
        client_key: Option<PathBuf> [Option<PathBuf>] = None,
        /// The endpoints of `[[profile.NAME.endpoints]]` tables (volley.toml only; see
        /// `config::endpoints`).
        #[arg(skip)]
        endpoints: EndpointSpecs [Option<()>] = EndpointSpecs::default(),
    }
}

settings! {
    /// How each attempt of a call is bounded and retried: `chat` and `run`.
    pub(crate) struct Attempts / AttemptsFlags ("Attempts (also VOLLEY_<NAME> and volley.toml)") {
        /// The deadline of one attempt (for `chat --stream`, of the whole stream), e.g. 30s,
        /// 2m or 30 (a bare number is seconds); 0 for none [default: 10m].
        #[arg(long, value_name = "D")]
        timeout: HumanDuration [Option<HumanDuration>] = HumanDuration(volley::DEFAULT_TIMEOUT),
        /// How many times a failed attempt is retried (as --retry-on says), with backoff
        /// [default: 3].
        #[arg(long, value_name = "K")]
        max_retries: u32 [Option<u32>] = super::DEFAULT_MAX_RETRIES,
        /// How long 429s and 529s (rate signals, which do not count toward --max-retries) may
        /// keep one request retrying, e.g. 10m or 1h [default: 10m].
        #[arg(long, value_name = "D")]
        give_up_after: HumanDuration [Option<HumanDuration>] =
            HumanDuration(volley::middleware::retry::DEFAULT_GIVE_UP_AFTER),
        /// Which failed attempts are retried: "failures" (connection failures, timeouts, a
        /// broken stream, 429, 408, 409, every 5xx but 501, 505-508, 510 and 511; a timeout or a 5xx
        /// may come after the provider billed the work) or "unbilled" (only what cannot have
        /// been billed: 429, 529, a 503 with Retry-After, a 408 without an error object,
        /// Cloudflare's 521-523, 525, 526, failures before the request was sent); a
        /// provider's `x-should-retry: false` is always obeyed [default: failures].
        #[arg(long, value_name = "WHICH")]
        retry_on: RetryOn [Option<String>] = RetryOn::Failures,
    }
}

settings! {
    /// How requests are spread over several endpoints, and hedged: `chat`, `run` and `bench`.
    pub(crate) struct Balancing / BalancingFlags ("Several endpoints and hedging (also VOLLEY_<NAME> and volley.toml)") {
        /// Hedge slow requests: when an attempt has no response head after this delay (e.g.
        /// 2s), or after a percentile of the recent answers' times (e.g. p95), send the same
        /// request to another endpoint (the same one when there is one) and take the first
        /// answer. A hedged request MAY BE BILLED TWICE (cancelling the loser refunds
        /// nothing): use it only for requests that are safe to duplicate. pNN hedges about
        /// (100 − NN) % of requests: pick NN below 100 − the share of slow requests you expect
        /// [default: off].
        #[arg(long, value_name = "DELAY|pNN")]
        hedge: HedgeSpec [Option<String>] = HedgeSpec::Off,
        /// The most hedged copies, as a share of the requests (plus 10 to start with), e.g. 5%
        /// or 0.05 [default: 5%].
        #[arg(long, value_name = "SHARE")]
        hedge_budget: Share [Option<String>] = Share(0.05),
        /// An endpoint's circuit breaker opens after this many failures in a row
        /// (connection errors, timeouts, 5xx; not 4xx, and not 429) [default: 5].
        #[arg(long, value_name = "N")]
        breaker_failures: u32 [Option<u32>] = 5,
        /// … or when this share of its attempts over 10 s failed (with at least 20
        /// attempts), e.g. 50% [default: 50%].
        #[arg(long, value_name = "SHARE")]
        breaker_error_rate: Share [Option<String>] = Share(0.5),
        /// How long an open breaker waits (± 20 %, doubling up to 60 s while the endpoint stays
        /// down) before a health check, e.g. 5s [default: 5s].
        #[arg(long, value_name = "D")]
        breaker_cooldown: HumanDuration [Option<HumanDuration>] =
            HumanDuration(std::time::Duration::from_secs(5)),
        /// The active health check of an endpoint whose breaker is open: a GET of this path
        /// under its base URL, or "off" to let probe requests through after each cool-down
        /// instead [default: /models].
        #[arg(long, value_name = "PATH")]
        health_check: HealthCheckSpec [Option<String>] = HealthCheckSpec::default(),
    }
}

impl Balancing {
    /// `builder` with these breaker and hedging settings.
    pub(crate) fn apply(&self, builder: volley::ClientBuilder) -> volley::ClientBuilder {
        let breaker = volley::BreakerConfig::new()
            .consecutive_failures(self.breaker_failures)
            .error_rate(self.breaker_error_rate.0)
            .cool_down(self.breaker_cooldown.0)
            .health_check(self.health_check.0.clone());
        let builder = builder.breaker(breaker);
        match self.hedge.hedging(self.hedge_budget) {
            Some(hedging) => builder.hedge(hedging),
            None => builder,
        }
    }
}

settings! {
    /// The load of `volley run`: concurrency, rate limits, cache, and their sharing through
    /// Redis.
    pub(crate) struct RunLoad / RunLoadFlags ("Load (also VOLLEY_<NAME> and volley.toml)") {
        /// The most requests in flight at once: a number, or "auto" / "auto:MAX" for an
        /// adaptive limit that starts at 16, grows while answers come back without overload
        /// or queueing, backs off on 429/503/529/timeouts, and never exceeds MAX (256 for plain
        /// "auto"); in volley.toml, concurrency = "auto:512" [default: auto:256].
        #[arg(long, value_name = "C")]
        concurrency: ConcurrencySpec [Option<String>] = ConcurrencySpec::default(),
        /// Requests per minute; 0 for unlimited [default: learned from the provider's
        /// x-ratelimit-limit-requests header, after a slow start; 429s pause every request
        /// until their Retry-After].
        #[arg(long, value_name = "R")]
        rpm: Limit<u32> [Option<u32>] = Limit(None),
        /// Tokens per minute (estimated before sending, settled with the reported usage); 0
        /// for unlimited [default: learned from x-ratelimit-limit-tokens].
        #[arg(long, value_name = "T")]
        tpm: Limit<u64> [Option<u64>] = Limit(None),
        /// Input tokens per minute, apart from --tpm (Anthropic's ITPM): each request pays its
        /// prompt estimate, settled with the input tokens the answer reports (cache reads do
        /// not count); shared through Redis with --shared-limit; 0 for none [default: none;
        /// shown as auto].
        #[arg(long, value_name = "T")]
        input_tpm: Limit<u64> [Option<u64>] = Limit(None),
        /// Output tokens per minute (Anthropic's OTPM): each request pays its max_tokens,
        /// settled with the output tokens the answer reports; shared through Redis with
        /// --shared-limit; 0 for none [default: none; shown as auto].
        #[arg(long, value_name = "T")]
        output_tpm: Limit<u64> [Option<u64>] = Limit(None),
        /// Cache successful responses: "memory" (256 MiB, kept 24 h), "disk:PATH" (a database
        /// in directory PATH, kept 30 days, survives restarts), "redis://HOST[:PORT][/DB]"
        /// (shared by every process using that Redis, the same --shared-prefix and the same API
        /// key; kept 7 days) or "off" [default: off]. A line repeating an earlier one's
        /// request is another sample unless its temperature is 0 (or it asks for embeddings or
        /// moderations): it is sent and cached apart, and repeat N of a later run gets repeat
        /// N's stored answer.
        #[arg(long, value_name = "SPEC")]
        cache: CacheSpec [Option<String>] = CacheSpec::Off,
        /// With a Redis --cache: the environment variable holding a secret mixed into the MAC
        /// key of each entry, so that processes accept only entries written with the same
        /// secret. Set it when the API key is no secret (a local server's placeholder, such as
        /// EMPTY): entries are otherwise authenticated by the base URL and the API key, and
        /// with a key anybody can guess, anyone who can write to that Redis can plant answers.
        /// Processes with different secrets overwrite each other's entries: give them different
        /// --shared-prefix values. The secret itself is never read from a flag or volley.toml;
        /// "" turns a profile's off [default: none].
        #[arg(long, value_name = "NAME")]
        cache_secret_env: Option<String> [Option<String>] = None,
        /// Share the rate limits (--rpm, --tpm, --input-tpm, --output-tpm, and those learned
        /// from the provider's headers) with every volley process that uses this Redis, the
        /// same --shared-prefix and the same API key, e.g. redis://10.0.0.5:6379, or
        /// redis://:PASSWORD@HOST:PORT (the password is never printed; VOLLEY_SHARED_LIMIT
        /// keeps it off the command line); "off" turns a profile's off [default: off].
        #[arg(long, value_name = "URL")]
        shared_limit: SharedLimitSpec [Option<String>] = SharedLimitSpec::Off,
        /// The first part of every Redis key of the shared limit and a Redis cache: processes
        /// share only with those using the same prefix [default: volley].
        #[arg(long, value_name = "P")]
        shared_prefix: Prefix [Option<String>] = Prefix::default(),
        /// With --shared-limit: how many requests a process takes from Redis at a time (more:
        /// fewer round trips; fewer: a fairer split between processes) [default: 1, every
        /// decision made in Redis].
        #[arg(long, value_name = "N")]
        lease: NonZeroU32 [Option<NonZeroU32>] = NonZeroU32::MIN,
        /// With --shared-limit, when Redis stops answering during a run: "fail-closed" sends
        /// nothing until it is back; "fallback:N" goes on with a local limit of 1/N of the
        /// limits, N being the number of processes sharing them [default: fail-closed]. Either
        /// way Redis must answer when the run starts. Failing closed, a refusal no wait heals
        /// (a changed password, an ACL without the script's commands) that lasts 30 s stops
        /// the run.
        #[arg(long, value_name = "MODE")]
        redis_failure: FailureSpec [Option<String>] = FailureSpec::FailClosed,
        /// Allow plain redis:// (no TLS) to a Redis that is not on loopback, for
        /// --shared-limit and a Redis --cache: passwords, prompts and answers would cross the
        /// network unencrypted; prefer rediss:// [default: refused].
        #[arg(long)]
        allow_plain_redis: bool [bool] = false,
        /// For a rediss:// --shared-limit or --cache: a PEM file of the CA certificates to
        /// trust for Redis instead of the operating system's roots (a managed Redis with a
        /// private CA), as redis-cli --cacert [default: the operating system's roots].
        #[arg(long, value_name = "PATH")]
        redis_ca_cert: Option<PathBuf> [Option<PathBuf>] = None,
        /// The Redis of --shared-limit and a Redis --cache is a Redis Cluster: its URL is any
        /// node's (a seed; the others are found from it), and each key goes to the node that
        /// holds its slot. A managed cluster's configuration endpoint works as the URL
        /// [default: one server, or a primary behind a proxy].
        #[arg(long)]
        redis_cluster: bool [bool] = false,
        /// The most bytes of one response body: a larger answer is recorded as a body_decode
        /// failure. Raise it for answers that can pass it (embeddings of many inputs) [default:
        /// 64MiB].
        #[arg(long, value_name = "SIZE")]
        max_body_size: ByteSize [Option<String>] =
            ByteSize(volley::core::DEFAULT_MAX_BODY_BYTES as u64),
        /// The most bytes of response bodies held at once over all requests in flight: an
        /// answer read past it is recorded as a body_decode failure (it protects the memory
        /// from answers larger than expected). Raise it with large answers at a high
        /// concurrency; it is never below --max-body-size [default: 1GiB].
        #[arg(long, value_name = "SIZE")]
        max_buffered_size: ByteSize [Option<String>] =
            ByteSize(volley::transport::DEFAULT_MAX_BUFFERED_BYTES as u64),
        /// The longest input line: a longer one gets a line_too_long record and is not sent
        /// (requests with large images can pass the default) [default: 10MiB].
        #[arg(long, value_name = "SIZE")]
        max_line_size: ByteSize [Option<String>] =
            ByteSize(volley_batch::DEFAULT_MAX_LINE_BYTES as u64),
    }
}

settings! {
    /// How `volley run` keeps its outcomes.
    pub(crate) struct RunOutput / RunOutputFlags ("Output (also VOLLEY_<NAME> and volley.toml)") {
        /// When outcomes are fsynced: "interval" (every 200 ms, by a thread of its own; a
        /// power cut loses at most the last 200 ms) or "always" (after every write, before
        /// the next; slower on a slow disk). Either way each outcome is written to the file
        /// as soon as the writer gets it: killing the process loses only those still on their
        /// way to it in the last moments, which a resume sends again [default: interval].
        #[arg(long, value_name = "MODE", value_parser = ["always", "interval"])]
        fsync: FsyncMode [Option<String>] = FsyncMode::default(),
    }
}

/// Every group's keys and a check of a table against it: `volley.toml` is checked against all
/// of them, whichever command reads it.
pub(crate) const GROUPS: &[GroupInfo] = &[
    GroupInfo::of::<Connection>(),
    GroupInfo::of::<Attempts>(),
    GroupInfo::of::<RunLoad>(),
    GroupInfo::of::<RunOutput>(),
    GroupInfo::of::<Balancing>(),
];

/// A group, without its type.
pub(crate) struct GroupInfo {
    pub(crate) keys: &'static [&'static str],
    /// Extracts the group from a figment: the values of a table are checked with the same
    /// deserialisers as the settings in force.
    pub(crate) check: fn(&figment::Figment) -> Result<(), UsageError>,
}

impl GroupInfo {
    const fn of<G: Group>() -> GroupInfo {
        GroupInfo {
            keys: G::KEYS,
            check: check::<G>,
        }
    }
}

fn check<G: Group>(figment: &figment::Figment) -> Result<(), UsageError> {
    figment.extract_lossy::<G>().map(drop).map_err(usage_error)
}

/// Whether `key` is a setting of some group.
pub(crate) fn is_known(key: &str) -> bool {
    GROUPS.iter().any(|g| g.keys.contains(&key))
}

/// Every key, for messages.
pub(crate) fn all_keys() -> Vec<&'static str> {
    GROUPS.iter().flat_map(|g| g.keys.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        connection: ConnectionFlags,
        #[command(flatten)]
        attempts: AttemptsFlags,
        #[command(flatten)]
        load: RunLoadFlags,
        #[command(flatten)]
        output: RunOutputFlags,
        #[command(flatten)]
        balancing: BalancingFlags,
    }

    fn round_trips<G: Group + PartialEq + std::fmt::Debug>() {
        let figment =
            figment::Figment::from(figment::providers::Serialized::defaults(G::default()));
        assert_eq!(figment.extract_lossy::<G>().unwrap(), G::default());
    }

    fn serialised(value: &impl serde::Serialize) -> figment::value::Dict {
        figment::value::Value::serialize(value)
            .unwrap()
            .into_dict()
            .unwrap()
    }

    #[test]
    fn only_the_flags_given_are_serialised() {
        let probe = Probe::parse_from(["probe"]);
        assert!(serialised(&probe.connection).is_empty());
        assert!(serialised(&probe.attempts).is_empty());
        assert!(serialised(&probe.load).is_empty());
        let probe = Probe::parse_from([
            "probe",
            "--allow-plain-http",
            "--timeout",
            "30",
            "--rpm",
            "0",
        ]);
        let connection = serialised(&probe.connection);
        assert_eq!(connection.keys().collect::<Vec<_>>(), ["allow_plain_http"]);
        assert_eq!(serialised(&probe.attempts).len(), 1);
        // 0 is given (it turns a profile's limit off), so it is serialised.
        assert_eq!(serialised(&probe.load).len(), 1);
    }

    #[test]
    fn every_key_is_a_flag_and_the_defaults_extract_as_themselves() {
        let command = Probe::command();
        // `endpoints` is a list of tables: volley.toml only (a repeated --base-url is its
        // flag form).
        for key in all_keys().into_iter().filter(|k| *k != "endpoints") {
            assert!(
                command.get_arguments().any(|a| a.get_id() == key),
                "{key} has no flag"
            );
        }
        let mut keys = all_keys();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all_keys().len(), "a key is in two groups");
        // The defaults survive a trip through the layers.
        round_trips::<Connection>();
        round_trips::<Attempts>();
        round_trips::<RunLoad>();
        round_trips::<Balancing>();
        assert_eq!(Attempts::default().timeout.0, volley::DEFAULT_TIMEOUT);
        assert_eq!(Connection::default().api_key_env, "OPENAI_API_KEY");
    }
}
