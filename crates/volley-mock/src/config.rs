//! The server's configuration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::{Capacity, ConfigError, Faults, Latency, RateLimits};

/// The most output tokens a response may have: the filler text is precomputed up to the
/// configured maximum, so this bounds the server's memory.
pub const MAX_OUTPUT_TOKENS: u32 = 100_000;

/// The most dimensions an embedding may have (configured or asked with `dimensions`).
pub const MAX_EMBEDDING_DIMS: usize = 65_536;

/// How the mock server behaves. Every field is public; start from [`MockConfig::default()`]:
///
/// ```
/// use std::time::Duration;
/// use volley_mock::{Latency, MockConfig};
///
/// let config = MockConfig {
///     latency: Latency::Fixed(Duration::from_millis(200)),
///     faults: "429=0.1".parse().unwrap(),
///     ..MockConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
///
/// `Debug` never shows [`require_api_key`](Self::require_api_key).
#[derive(Clone)]
pub struct MockConfig {
    /// Time before a non-streaming response is sent (after the request body is read).
    /// Default [`Latency::ZERO`].
    pub latency: Latency,
    /// Time from a stream's response head to its first chunk. Default `None`: the same as
    /// [`latency`](Self::latency).
    pub ttft: Option<Latency>,
    /// Time between two streamed token chunks, drawn per chunk. Default [`Latency::ZERO`].
    pub inter_token: Latency,
    /// How many tokens a completion has, capped by the request's `max_tokens` /
    /// `max_completion_tokens` (the `finish_reason` is then `"length"`). Default 16.
    pub output_tokens: OutputTokens,
    /// Probabilities of injected faults. Default [`Faults::NONE`].
    pub faults: Faults,
    /// The wait a `429` asks for, in `Retry-After` (whole seconds, rounded up) and
    /// `retry-after-ms`. Default 1 s.
    pub retry_after: Duration,
    /// The wait a `503` asks for, as for [`retry_after`](Self::retry_after); `None` sends no
    /// `Retry-After` with a `503`. Default `None`.
    pub unavailable_retry_after: Option<Duration>,
    /// How long a stalled request stays unanswered before its connection (HTTP/1) or stream
    /// (HTTP/2) is closed. Default 1 hour.
    pub stall_duration: Duration,
    /// The seed of the per-request RNG (faults, latencies, output lengths, ids): the same seed
    /// and arrival order give the same run. Default 42.
    pub seed: u64,
    /// Whether non-streaming JSON bodies are gzip-compressed for requests whose
    /// `Accept-Encoding` names `gzip`. Default `false`.
    pub gzip: bool,
    /// When set, API requests must carry `Authorization: Bearer <this key>` (or, as each
    /// provider takes it, `api-key` on Azure's `/openai/…` paths and `x-api-key` on
    /// Anthropic's `/v1/messages` and `/v1/models`) or get a `401` (`invalid_api_key`) that
    /// quotes the key the request presented, as OpenAI's does (so clients' key scrubbing is
    /// tested). When unset any `Authorization` (or none) is accepted. This key is never logged,
    /// echoed or shown by `Debug`. Default `None`.
    pub require_api_key: Option<String>,
    /// Dimensions of an embedding when the request does not ask for `dimensions`. Default 8.
    pub embedding_dims: usize,
    /// On [`MockServer::shutdown`](crate::MockServer::shutdown), how long in-flight responses
    /// may take to finish before their connections are dropped. Default 1 s.
    pub shutdown_grace: Duration,
    /// Requests and tokens per minute enforced like a provider: `429`s with `Retry-After` when
    /// exceeded, and `x-ratelimit-*` headers on every API response (see [`RateLimits`]).
    /// Default [`RateLimits::NONE`].
    pub rate_limits: RateLimits,
    /// How much load the server takes: a hard limit on requests in flight (`503` beyond it)
    /// and a latency knee (see [`Capacity`]). Default [`Capacity::UNLIMITED`].
    pub capacity: Capacity,
    /// Whether the server keeps a journal: the `x-client-request-id` header of every API
    /// request, in arrival order (an empty string for a request without one), read with
    /// [`MockServer::journal`](crate::MockServer::journal) or `GET /journal`, and of every
    /// successful answer once it is completely written, read with
    /// [`MockServer::answered`](crate::MockServer::answered); both are cleared with the
    /// statistics. For crash tests that must know what was sent when; it grows without
    /// bound, so leave it off for load tests. Default `false`.
    pub journal: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Latency::ZERO,
            ttft: None,
            inter_token: Latency::ZERO,
            output_tokens: OutputTokens::default(),
            faults: Faults::NONE,
            retry_after: Duration::from_secs(1),
            unavailable_retry_after: None,
            stall_duration: Duration::from_secs(3600),
            seed: 42,
            gzip: false,
            require_api_key: None,
            embedding_dims: 8,
            shutdown_grace: Duration::from_secs(1),
            rate_limits: RateLimits::NONE,
            capacity: Capacity::UNLIMITED,
            journal: false,
        }
    }
}

impl MockConfig {
    /// Checks every value: latency models well-formed, fault probabilities in `[0, 1]` summing
    /// to at most 1, output tokens at most [`MAX_OUTPUT_TOKENS`] with `min <= max`, embedding
    /// dimensions in `1..=`[`MAX_EMBEDDING_DIMS`], rate limits and bursts at least 1.
    /// [`MockServer::bind`] calls it.
    ///
    /// [`MockServer::bind`]: crate::MockServer::bind
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.latency.validate("latency")?;
        if let Some(ttft) = &self.ttft {
            ttft.validate("ttft")?;
        }
        self.inter_token.validate("inter_token")?;
        self.output_tokens.validate()?;
        self.faults.validate()?;
        self.rate_limits.validate()?;
        self.capacity.validate()?;
        if !(1..=MAX_EMBEDDING_DIMS).contains(&self.embedding_dims) {
            return Err(ConfigError::new(format!(
                "embedding_dims {} is not in 1..={MAX_EMBEDDING_DIMS}",
                self.embedding_dims
            )));
        }
        Ok(())
    }

    /// The time to first token in force: [`ttft`](Self::ttft), else [`latency`](Self::latency).
    pub(crate) fn effective_ttft(&self) -> Latency {
        self.ttft.unwrap_or(self.latency)
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("latency", &self.latency)
            .field("ttft", &self.ttft)
            .field("inter_token", &self.inter_token)
            .field("output_tokens", &self.output_tokens)
            .field("faults", &self.faults)
            .field("retry_after", &self.retry_after)
            .field("unavailable_retry_after", &self.unavailable_retry_after)
            .field("stall_duration", &self.stall_duration)
            .field("seed", &self.seed)
            .field("gzip", &self.gzip)
            .field(
                "require_api_key",
                &self.require_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("embedding_dims", &self.embedding_dims)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("rate_limits", &self.rate_limits)
            .field("capacity", &self.capacity)
            .field("journal", &self.journal)
            .finish()
    }
}

/// How many tokens a completion has.
///
/// # String form (`FromStr`, for the CLI)
///
/// `"16"` (a fixed count) or `"8..64"` (uniform between the two, both included).
///
/// ```
/// use volley_mock::OutputTokens;
/// assert_eq!("16".parse::<OutputTokens>().unwrap(), OutputTokens::Fixed(16));
/// assert_eq!("8..64".parse::<OutputTokens>().unwrap(), OutputTokens::Uniform { min: 8, max: 64 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputTokens {
    /// Always this many tokens.
    Fixed(u32),
    /// Uniformly between `min` and `max`, both included.
    Uniform {
        /// The fewest tokens.
        min: u32,
        /// The most tokens; must not be below `min`.
        max: u32,
    },
}

impl OutputTokens {
    /// The largest count this setting can yield.
    pub(crate) fn max(&self) -> u32 {
        match *self {
            OutputTokens::Fixed(n) => n,
            OutputTokens::Uniform { min, max } => min.max(max),
        }
    }

    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        match *self {
            OutputTokens::Fixed(n) => n,
            OutputTokens::Uniform { min, max } if min >= max => min,
            OutputTokens::Uniform { min, max } => rng.random_range(min..=max),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let OutputTokens::Uniform { min, max } = *self
            && min > max
        {
            return Err(ConfigError::new(format!(
                "output_tokens: min {min} is above max {max}"
            )));
        }
        if self.max() > MAX_OUTPUT_TOKENS {
            return Err(ConfigError::new(format!(
                "output_tokens: {} is above the maximum {MAX_OUTPUT_TOKENS}",
                self.max()
            )));
        }
        Ok(())
    }
}

impl Default for OutputTokens {
    /// 16 tokens.
    fn default() -> Self {
        OutputTokens::Fixed(16)
    }
}

impl From<u32> for OutputTokens {
    fn from(n: u32) -> Self {
        OutputTokens::Fixed(n)
    }
}

impl FromStr for OutputTokens {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let count = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                ConfigError::new(format!(
                    "invalid output tokens {input:?}: {:?} is not a whole number; expected \
                     \"16\" or \"8..64\"",
                    s.trim()
                ))
            })
        };
        let tokens = match input.split_once("..") {
            Some((min, max)) => OutputTokens::Uniform {
                min: count(min)?,
                max: count(max)?,
            },
            None => OutputTokens::Fixed(count(input)?),
        };
        tokens
            .validate()
            .map_err(|e| ConfigError::new(format!("invalid output tokens {input:?}: {e}")))?;
        Ok(tokens)
    }
}

impl fmt::Display for OutputTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OutputTokens::Fixed(n) => write!(f, "{n}"),
            OutputTokens::Uniform { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

/// `Retry-After` in whole seconds (rounded up, as a client must not retry early) and
/// `retry-after-ms`.
pub(crate) fn retry_after_values(wait: Duration) -> (String, String) {
    let millis = wait.as_millis();
    let secs = wait.as_nanos().div_ceil(1_000_000_000);
    (secs.to_string(), millis.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tokens_parse() {
        assert_eq!(
            "16".parse::<OutputTokens>().unwrap(),
            OutputTokens::Fixed(16)
        );
        assert_eq!(
            " 8 .. 64 ".parse::<OutputTokens>().unwrap(),
            OutputTokens::Uniform { min: 8, max: 64 }
        );
        assert_eq!(
            "8..64".parse::<OutputTokens>().unwrap().to_string(),
            "8..64"
        );
        for (input, needle) in [
            ("lots", "not a whole number"),
            ("-1", "not a whole number"),
            ("64..8", "above max"),
            ("1000000", "above the maximum"),
        ] {
            let err = input.parse::<OutputTokens>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn debug_redacts_the_api_key() {
        let config = MockConfig {
            require_api_key: Some("sk-very-secret".into()),
            ..MockConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn validate_catches_out_of_range_values() {
        assert!(MockConfig::default().validate().is_ok());
        let bad = [
            MockConfig {
                embedding_dims: 0,
                ..MockConfig::default()
            },
            MockConfig {
                faults: Faults {
                    rate_limit: 0.9,
                    cut: 0.9,
                    ..Faults::NONE
                },
                ..MockConfig::default()
            },
            MockConfig {
                inter_token: Latency::LogNormal {
                    median: Duration::from_millis(1),
                    sigma: -1.0,
                },
                ..MockConfig::default()
            },
            MockConfig {
                output_tokens: OutputTokens::Uniform { min: 5, max: 1 },
                ..MockConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn retry_after_rounds_seconds_up() {
        assert_eq!(
            retry_after_values(Duration::from_secs(1)),
            ("1".into(), "1000".into())
        );
        assert_eq!(
            retry_after_values(Duration::from_millis(2500)),
            ("3".into(), "2500".into())
        );
        assert_eq!(retry_after_values(Duration::ZERO), ("0".into(), "0".into()));
    }
}
