//! [`BenchConfig`]: what a run does, and the flag grammars of its parts ([`Load`], [`Ramp`],
//! [`Arrivals`], [`StackKind`]; durations with `volley::core::duration`), so the CLI only maps flags to fields.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use volley::core::{ApiKey, Dialect, Error, ErrorKind};

use super::lengths::Lengths;
use super::ramp::Ramp;
use volley::{ClientBuilder, MAX_CONCURRENCY};

/// The default of [`BenchConfig::base_url`]: where `volley mock` listens by default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080/v1";
/// The default of [`BenchConfig::model`].
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// The default of [`BenchConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// The default of [`BenchConfig::seed`].
pub const DEFAULT_SEED: u64 = 42;
/// The default of [`BenchConfig::grace`]: 30 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The client a bench measures unless [`BenchConfig::client`] says otherwise: the default
/// stack without retries, so failures are counted rather than hidden, and without rate
/// limits, given or learned (no slow start holding the first round back), so the load
/// offered is the load asked for. Start from it to add settings of your own (TLS, proxies).
pub fn default_client() -> ClientBuilder {
    volley::Client::builder().retries(0).rpm(0).tpm(0)
}
/// The highest open-loop arrival rate [`BenchConfig`] accepts, in requests per second.
const MAX_RATE: f64 = 10_000_000.0;

/// What a benchmark run does. Start from [`BenchConfig::default()`] and set what differs;
/// [`Bench::new`](super::Bench::new) checks it.
///
/// At least one stop condition is required: [`requests`](Self::requests),
/// [`duration`](Self::duration), or both (the run stops at whichever comes first).
///
/// The run uses the caller's tokio runtime, whose worker threads are the load generator's,
/// unless [`workers`](Self::workers) names runtimes of their own.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A name for the run, written to the results (a scenario id such as `S1`).
    /// Default `"bench"`.
    pub name: String,
    /// The base URL, `/v1` included. Default [`DEFAULT_BASE_URL`]. Not used when
    /// [`endpoints`](Self::endpoints) are given.
    pub base_url: String,
    /// Several endpoints to balance the load over (weights, priorities, keys of their own),
    /// instead of [`base_url`](Self::base_url): the results then report each endpoint and its
    /// share of the attempts over time. Default none.
    pub endpoints: Vec<volley::Endpoint>,
    /// The API key, sent as a bearer token. Default none.
    pub api_key: Option<ApiKey>,
    /// The model named in every request. Default [`DEFAULT_MODEL`].
    pub model: String,
    /// How load is offered. Default `Load::Closed { concurrency: 64 }`.
    pub load: Load,
    /// Stop after this many requests: sent ones in a closed loop or ramp, arrivals (dropped
    /// ones included) in an open loop. Default none.
    pub requests: Option<u64>,
    /// Requests sent before the measured run, at its concurrency (an open loop: a second's
    /// arrivals; at most this many at once), their figures discarded: the connections they
    /// open (TCP, TLS handshakes) are the run's warm pool, and a server's caches and a
    /// model's first slow answers are behind the clock. The server's statistics, the
    /// connection counts and each endpoint's counts and mean latency start after them. A
    /// refusal (a 4xx other than 429) or
    /// [`Live::cancel`](crate::Live::cancel) ends them; at most [`WARMUP_LIMIT`] is spent on
    /// them. `find_knee` gives each step at most one a slot. Default 0.
    pub warmup: u64,
    /// Stop starting requests after this long; those in flight then are finished and counted,
    /// for at most [`grace`](Self::grace) more. Default none.
    pub duration: Option<Duration>,
    /// With a [`duration`](Self::duration): how long the requests in flight at its end may
    /// still take. Those still running after it are cancelled (their connections closed) and
    /// counted in [`Summary::unfinished`](crate::results::Summary::unfinished), so a server that holds
    /// requests for minutes, or never answers, does not hold the run. Default
    /// [`DEFAULT_GRACE`] (k6's `gracefulStop`).
    pub grace: Duration,
    /// Streaming requests (`stream: true` with `stream_options.include_usage`), measuring time
    /// to first token and between tokens. Default `false`.
    pub stream: bool,
    /// Prompt lengths in tokens (4 bytes of text per token, as the mock counts).
    /// Default `Lengths::Fixed(64)`.
    pub prompt_tokens: Lengths,
    /// `max_tokens` of each request. A server may send fewer (the mock sends at most its own
    /// `output_tokens`). Default `Lengths::Fixed(16)`.
    pub output_tokens: Lengths,
    /// The client stack measured. Default [`StackKind::Full`].
    pub stack: StackKind,
    /// The client's concurrency limit adapts ([`ClientBuilder::concurrency_auto`]) with the
    /// load's peak as its ceiling, instead of being fixed at it: the results then hold the
    /// limit over time ([`BenchResults::concurrency_limit`](crate::results::BenchResults)).
    /// Default `false`.
    pub adaptive: bool,
    /// Open loop: the most requests in flight. Arrivals beyond it are not sent, and counted
    /// as `dropped` in the results. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// The seed of arrival times and lengths: the same seed gives the same schedule.
    /// Default [`DEFAULT_SEED`].
    pub seed: u64,
    /// The client to measure, for settings this config does not repeat (TLS roots, HTTP/2,
    /// rate limits, timeouts). The run sets its base URL, API key (when
    /// [`api_key`](Self::api_key) is set) and concurrency (the load's largest, so the client's
    /// own limit never queues the load). Default `None`: [`default_client`].
    pub client: Option<ClientBuilder>,
    /// Whether the target is a mock embedded in this process (`volley bench --mock`); only
    /// recorded in the results. Default `false`.
    pub embedded_mock: bool,
    /// The API spoken: OpenAI's chat completions, or Anthropic's Messages (`/messages`,
    /// streams timed to the first `content_block_delta`). Set the client's provider to match
    /// ([`ClientBuilder::provider`], for the auth headers). Default [`Dialect::OpenAi`].
    pub dialect: Dialect,
    /// The field of each body that asks for the output length: `max_tokens` (every server,
    /// and Anthropic's only) or `max_completion_tokens` (OpenAI's reasoning and newest models
    /// refuse `max_tokens`). Default [`MaxTokensField::MaxTokens`].
    pub max_tokens_field: MaxTokensField,
    /// OpenAI-dialect streams ask for the usage chunk (`stream_options.include_usage`); a
    /// server that refuses `stream_options` needs `false`, and its streams' output tokens are
    /// then counted by content chunk. Default `true`.
    pub stream_usage: bool,
    /// More members of every body (`temperature`, vLLM's `ignore_eos`, ...); they may not name
    /// a member the bench writes itself (`model`, `messages`, `stream`, `stream_options`, the
    /// output length's field). Default none.
    pub body_fields: serde_json::Map<String, serde_json::Value>,
    /// Runtimes to run the requests on, spread evenly over them. Give one current-thread
    /// runtime per core ([`WorkerRuntimes`](crate::WorkerRuntimes)) and a request and its
    /// timers stay on one thread, with no work stealing; so does its connection as a rule (it
    /// was opened, and its task spawned, on the thread of the lane that opened it, and the
    /// pool gives a thread back its own idle connections first). `volley bench` does this
    /// (`--threads`). Each runtime must keep running (its thread in `block_on`) until the run
    /// ends. Default none: the caller's runtime.
    pub workers: Vec<tokio::runtime::Handle>,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            name: "bench".to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            endpoints: Vec::new(),
            api_key: None,
            model: DEFAULT_MODEL.to_owned(),
            load: Load::Closed { concurrency: 64 },
            requests: None,
            warmup: 0,
            duration: None,
            grace: DEFAULT_GRACE,
            stream: false,
            prompt_tokens: Lengths::Fixed(64),
            output_tokens: Lengths::Fixed(16),
            stack: StackKind::Full,
            adaptive: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            seed: DEFAULT_SEED,
            client: None,
            embedded_mock: false,
            dialect: Dialect::OpenAi,
            workers: Vec::new(),
            max_tokens_field: MaxTokensField::MaxTokens,
            stream_usage: true,
            body_fields: serde_json::Map::new(),
        }
    }
}

/// The longest the warm-up ([`BenchConfig::warmup`]) may take: its requests still running
/// then are cancelled, and the measured run starts.
pub const WARMUP_LIMIT: Duration = Duration::from_secs(60);

/// Which field of a request asks for its output length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MaxTokensField {
    /// `max_tokens`.
    #[default]
    MaxTokens,
    /// `max_completion_tokens` (OpenAI's newer models).
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The field's name.
    pub fn name(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

impl FromStr for MaxTokensField {
    type Err = Error;

    fn from_str(s: &str) -> Result<MaxTokensField, Error> {
        match s.trim() {
            "max_tokens" => Ok(MaxTokensField::MaxTokens),
            "max_completion_tokens" => Ok(MaxTokensField::MaxCompletionTokens),
            other => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "unknown output length field {other:?}: expected max_tokens or \
                     max_completion_tokens"
                ),
            )),
        }
    }
}

impl fmt::Display for MaxTokensField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl BenchConfig {
    /// The body of these settings' requests at their shortest prompt and output lengths:
    /// every request's when both lengths are fixed (the default). Another load tester posting
    /// it sends what `volley bench` sends (`cargo xtask bench` gives it to oha).
    ///
    /// # Errors
    /// As [`Bench::new`](crate::Bench): lengths whose prebuilt bodies would be too large.
    pub fn first_body(&self) -> Result<bytes::Bytes, Error> {
        let bodies = super::body::Bodies::build(
            &self.model,
            self.stream,
            self.dialect,
            &self.prompt_tokens,
            &self.output_tokens,
            &self.body_shape()?,
        )?;
        Ok(bodies.body(self.prompt_tokens.bounds().0, self.output_tokens.bounds().0))
    }

    /// What every body holds besides its model, prompt and output length.
    ///
    /// # Errors
    /// `Config` for [`body_fields`](Self::body_fields) that name a member the bench writes,
    /// or `max_completion_tokens` with Anthropic's dialect.
    pub(crate) fn body_shape(&self) -> Result<super::body::BodyShape, Error> {
        if self.dialect == Dialect::Anthropic && self.max_tokens_field != MaxTokensField::MaxTokens
        {
            return Err(Error::new(
                ErrorKind::Config,
                "Anthropic's Messages API asks for the output length with max_tokens only",
            ));
        }
        let mut extra = String::new();
        for (name, value) in &self.body_fields {
            let own = [
                "model",
                "messages",
                "stream",
                "stream_options",
                "max_tokens",
            ];
            if own.contains(&name.as_str()) || name == self.max_tokens_field.name() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "the body field {name:?} is written by the bench itself: set it with its \
                         own option"
                    ),
                ));
            }
            // Serialising a string and a `Value` cannot fail.
            extra.push_str(&serde_json::to_string(name).unwrap_or_default());
            extra.push(':');
            extra.push_str(&serde_json::to_string(value).unwrap_or_default());
            extra.push(',');
        }
        Ok(super::body::BodyShape {
            max_tokens_field: self.max_tokens_field.name(),
            stream_usage: self.stream_usage,
            extra,
        })
    }

    /// Checks the configuration: a stop condition, a load that can run, valid lengths.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.body_shape()?;
        let config = |message: String| Err(Error::new(ErrorKind::Config, message));
        match (self.requests, self.duration) {
            (None, None) => {
                return config(
                    "a benchmark needs a stop condition: a number of requests, a duration, \
                     or both"
                        .to_owned(),
                );
            }
            (Some(0), _) => return config("requests must be at least 1".to_owned()),
            (_, Some(d)) if d.is_zero() => {
                return config("the duration must be longer than zero".to_owned());
            }
            _ => {}
        }
        if self.model.trim().is_empty() {
            return config("the model name is empty".to_owned());
        }
        match self.load {
            Load::Closed { concurrency } if !(1..=MAX_CONCURRENCY).contains(&concurrency) => {
                return config(format!(
                    "concurrency {concurrency} is not in 1..={MAX_CONCURRENCY}"
                ));
            }
            Load::Open { rate, .. } if !(rate.is_finite() && rate > 0.0) => {
                return config(format!(
                    "the arrival rate must be a positive number of requests per second, not \
                     {rate}"
                ));
            }
            Load::Open { rate, .. } if rate > MAX_RATE => {
                return config(format!(
                    "the arrival rate {rate} is above the most a run can pace, {MAX_RATE} \
                     requests per second"
                ));
            }
            Load::Open { .. } if !(1..=MAX_CONCURRENCY).contains(&self.max_in_flight) => {
                return config(format!(
                    "max_in_flight {} is not in 1..={MAX_CONCURRENCY}",
                    self.max_in_flight
                ));
            }
            Load::Ramp(ramp) => ramp.validate()?,
            _ => {}
        }
        self.prompt_tokens.validate("prompt tokens")?;
        self.output_tokens.validate("output tokens")?;
        Ok(())
    }

    /// The most requests the load can have in flight at once.
    pub(crate) fn peak_concurrency(&self) -> usize {
        match self.load {
            Load::Closed { concurrency } => concurrency,
            Load::Open { .. } => self.max_in_flight,
            Load::Ramp(ramp) => ramp.from.max(ramp.to),
        }
    }
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// A closed loop: `concurrency` workers, each sending its next request as soon as the
    /// previous one is finished (its whole body or stream read).
    Closed {
        /// The number of workers (requests in flight).
        concurrency: usize,
    },
    /// An open loop: requests arrive at `rate` per second whatever the server does, each sent
    /// at its arrival time (up to [`BenchConfig::max_in_flight`] in flight).
    Open {
        /// Arrivals per second, above 0 and at most 10 000 000.
        rate: f64,
        /// How arrival times are spread.
        arrivals: Arrivals,
    },
    /// A closed loop whose concurrency grows linearly, then holds.
    Ramp(Ramp),
}

impl Load {
    /// `closed`, `open` or `ramp`, as written in the results.
    pub fn mode(&self) -> &'static str {
        match self {
            Load::Closed { .. } => "closed",
            Load::Open { .. } => "open",
            Load::Ramp(_) => "ramp",
        }
    }
}

impl From<Ramp> for Load {
    fn from(ramp: Ramp) -> Load {
        Load::Ramp(ramp)
    }
}

/// How open-loop arrivals are spread in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Exponentially distributed gaps (a Poisson process): bursts and lulls, as independent
    /// users make. The default.
    #[default]
    Poisson,
    /// Exactly `1 / rate` apart.
    Constant,
}

impl Arrivals {
    /// `poisson` or `constant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arrivals::Poisson => "poisson",
            Arrivals::Constant => "constant",
        }
    }
}

impl fmt::Display for Arrivals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arrivals {
    type Err = Error;

    /// `poisson` or `constant` (any case).
    fn from_str(s: &str) -> Result<Arrivals, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "poisson" => Ok(Arrivals::Poisson),
            "constant" => Ok(Arrivals::Constant),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("invalid arrivals {s:?}: expected poisson or constant"),
            )),
        }
    }
}

/// Which client stack sends the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackKind {
    /// The whole default [`Client`](volley::Client) stack (metrics, retry, limits, timeouts).
    /// The default.
    #[default]
    Full,
    /// The bare [`Transport`](volley::transport::Transport), no layers: the difference to
    /// `Full` is the middleware's cost.
    Bare,
}

impl StackKind {
    /// `full` or `bare`.
    pub fn as_str(self) -> &'static str {
        match self {
            StackKind::Full => "full",
            StackKind::Bare => "bare",
        }
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StackKind {
    type Err = Error;

    /// `full` or `bare` (any case).
    fn from_str(s: &str) -> Result<StackKind, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(StackKind::Full),
            "bare" => Ok(StackKind::Bare),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("invalid stack {s:?}: expected full or bare"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_body_is_the_one_the_bench_sends() {
        let plain = BenchConfig::default().first_body().unwrap();
        let plain: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(plain["model"], DEFAULT_MODEL);
        assert_eq!(plain["max_tokens"], 16);
        assert!(plain.get("stream").is_none());
        let prompt = plain["messages"][0]["content"].as_str().unwrap();
        assert_eq!(prompt.len(), 64 * 4, "64 tokens of 4 bytes");
        let streamed = BenchConfig {
            stream: true,
            output_tokens: Lengths::Fixed(200),
            prompt_tokens: Lengths::Uniform { min: 8, max: 100 },
            ..BenchConfig::default()
        }
        .first_body()
        .unwrap();
        let streamed: serde_json::Value = serde_json::from_slice(&streamed).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
        assert_eq!(streamed["max_tokens"], 200);
        let prompt = streamed["messages"][0]["content"].as_str().unwrap();
        assert_eq!(prompt.len(), 8 * 4, "the shortest prompt");
    }

    #[test]
    fn stop_conditions_and_loads_are_checked() {
        let err = BenchConfig::default().validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("stop condition"), "{err}");
        let with = |f: fn(&mut BenchConfig)| {
            let mut c = BenchConfig {
                requests: Some(10),
                ..BenchConfig::default()
            };
            f(&mut c);
            c.validate()
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|c| c.requests = Some(0)).is_err());
        assert!(with(|c| c.duration = Some(Duration::ZERO)).is_err());
        assert!(with(|c| c.load = Load::Closed { concurrency: 0 }).is_err());
        assert!(with(|c| c.model = " ".into()).is_err());
        assert!(with(|c| c.output_tokens = Lengths::Uniform { min: 9, max: 3 }).is_err());
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 10_000_001.0, 1e300] {
            let mut c = BenchConfig {
                requests: Some(10),
                load: Load::Open {
                    rate,
                    arrivals: Arrivals::Poisson,
                },
                ..BenchConfig::default()
            };
            assert!(c.validate().is_err(), "{rate}");
            c.load = Load::Open {
                rate: 10.0,
                arrivals: Arrivals::Poisson,
            };
            assert!(c.validate().is_ok());
            c.load = Load::Open {
                rate: MAX_RATE,
                arrivals: Arrivals::Poisson,
            };
            assert!(c.validate().is_ok());
            c.max_in_flight = 0;
            assert!(c.validate().is_err());
        }
    }

    #[test]
    fn small_grammars() {
        assert_eq!("Poisson".parse::<Arrivals>().unwrap(), Arrivals::Poisson);
        assert_eq!("constant".parse::<Arrivals>().unwrap(), Arrivals::Constant);
        assert!("uniform".parse::<Arrivals>().is_err());
        assert_eq!("BARE".parse::<StackKind>().unwrap(), StackKind::Bare);
        assert_eq!(StackKind::Full.to_string(), "full");
        assert!("naked".parse::<StackKind>().is_err());
    }
}
