//! The `Client` facade.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use volley_core::openai::{
    CHAT_COMPLETIONS_PATH, ChatCompletionRequest, ChatCompletionResponse, EMBEDDINGS_PATH,
    EmbeddingsRequest, EmbeddingsResponse, StreamOptions,
};

use tower::util::BoxCloneSyncService;
use tower::util::Either;
use tower::{Service, ServiceBuilder};
use volley_core::cache_key::CredentialId;
use volley_core::{
    ApiError, ApiKey, Dialect, Error, ErrorKind, Request, RequestId, Response, tokens,
};
use volley_middleware::cache::{CacheLayer, CacheStats, CacheStore, DiskStore, MemoryStore};
use volley_middleware::limit::{AdaptiveConcurrencyLimitLayer, ConcurrencyLimitLayer};
use volley_middleware::metrics::{MetricsLayer, Scope};
use volley_middleware::rate_limit::{Limits, LocalLimiter};
use volley_middleware::retry::{Policy, RetryLayer};
use volley_middleware::timeout::TimeoutLayer;
use volley_transport::{ConnectionStats, Provider, Transport};

use crate::ChatStream;
use crate::endpoints::Endpoint;
use crate::rate_limit::{RateLimitSetting, SlotLimiter};
use crate::stack::Stack;
use volley_middleware::balance::{Balance, BreakerConfig, EndpointStats, Hedging};

pub use volley_transport::{
    API_KEY_ENV, API_VERSION_ENV, AZURE_AD_TOKEN_ENV, AZURE_API_KEY_ENV, AZURE_ENDPOINT_ENV,
    BASE_URL_ENV,
};

/// A client for an OpenAI-compatible API. Cheap to clone; clones share one connection pool,
/// so create one and reuse it.
#[derive(Clone)]
pub struct Client {
    service: Stack,
    transport: Transport,
    stream_include_usage: bool,
    /// Set once the server refused `stream_options` (an Azure API version before
    /// 2024-09-01, an older OpenAI-compatible server): streams then go without it. Only with
    /// one endpoint: with several, one endpoint's refusal says nothing of the others.
    stream_options_refused: Arc<AtomicBool>,
    cache_stats: Option<CacheHandle>,
    /// Whether requests need a token estimate: only a tokens-per-minute limit reads it.
    estimate_tokens: bool,
    /// The rate limiters, those that learn limits apart; one `Arc` for both lists, as a
    /// client is cloned per request by `fan_out`.
    limiters: Arc<Limiters>,
    /// The concurrency limit's layer, to tell its limit.
    concurrency: Either<ConcurrencyLimitLayer, AdaptiveConcurrencyLimitLayer>,
    /// The balancer, with several endpoints: its per-endpoint counts.
    balance: Option<Balance<crate::stack::Endpoint>>,
    /// The transports of the endpoints after the first (empty with one endpoint), for
    /// connection statistics over all.
    others: Arc<[Transport]>,
    /// Every endpoint's key, scrubbed from provider text before it is shown.
    scrubber: crate::secrets::Scrubber,
    /// The deadline of a whole call ([`ClientBuilder::deadline`]).
    deadline: Option<Duration>,
    /// The dialect of the provider set ([`ClientBuilder::provider`]), for raw requests.
    dialect: Dialect,
    /// The caps of the streams' SSE decoder ([`ClientBuilder::sse_limits`]).
    sse_limits: volley_core::sse::Limits,
}

/// A client's rate limiters.
struct Limiters {
    /// Those that learn limits: requests need a token estimate once one has learned a token
    /// limit, and until its first answer (requests held by the slow start reserve under the
    /// limit that answer teaches).
    learning: Vec<crate::rate_limit::SlotLimiter>,
    /// All of them.
    all: Vec<crate::rate_limit::SlotLimiter>,
}

#[derive(Clone)]
struct CacheHandle(CacheLayer);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`]. Setters never fail; [`ClientBuilder::build`] reports problems.
#[must_use]
#[derive(Clone)]
pub struct ClientBuilder {
    transport: volley_transport::Builder,
    stream_include_usage: bool,
    concurrency: usize,
    /// Whether `concurrency` is the ceiling of an adaptive limit rather than a fixed one.
    adaptive: bool,
    rate_limit: RateLimitSetting,
    retry: RetrySetting,
    timeouts: TimeoutLayer,
    cache: Option<CacheSetting>,
    /// Several endpoints (`endpoint(..)`); empty for the one base URL.
    endpoints: Vec<Endpoint>,
    /// Whether `base_url(..)` was called (an error together with `endpoint(..)`).
    base_url_given: bool,
    breaker: BreakerConfig,
    hedging: Option<Hedging>,
    deadline: Option<Duration>,
    /// The provider set with [`ClientBuilder::provider`]: its dialect is raw requests'.
    provider: Provider,
    sse_limits: volley_core::sse::Limits,
}

#[derive(Clone)]
enum RetrySetting {
    Retries(u32),
    Policy(Policy),
}

#[derive(Clone)]
enum CacheSetting {
    Memory { max_bytes: u64, ttl: Duration },
    Disk { dir: PathBuf, ttl: Duration },
    Store(Arc<dyn CacheStore>),
}

/// The default of [`ClientBuilder::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 256;
/// The largest [`ClientBuilder::concurrency`] (far above what any machine can keep open).
pub const MAX_CONCURRENCY: usize = 1 << 24;
/// The default of [`ClientBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The default of [`ClientBuilder::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default of [`ClientBuilder::stream_timeout`]: 30 minutes, longer than any generation
/// we know of, and short enough that a server dripping one byte before each idle deadline
/// cannot hold a slot for ever.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            transport: volley_transport::Builder::new(),
            stream_include_usage: true,
            concurrency: DEFAULT_CONCURRENCY,
            adaptive: false,
            rate_limit: RateLimitSetting::None,
            retry: RetrySetting::Policy(Policy::default()),
            timeouts: TimeoutLayer::new()
                .attempt(DEFAULT_TIMEOUT)
                .idle(DEFAULT_IDLE_TIMEOUT)
                .stream_total(DEFAULT_STREAM_TIMEOUT),
            cache: None,
            endpoints: Vec::new(),
            base_url_given: false,
            breaker: BreakerConfig::default(),
            hedging: None,
            deadline: None,
            provider: Provider::OpenAi,
            sse_limits: volley_core::sse::Limits::new(),
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("transport", &self.transport)
            .field("concurrency", &self.concurrency)
            .field(
                "rate_limit",
                &!matches!(self.rate_limit, RateLimitSetting::None),
            )
            .field("timeouts", &self.timeouts)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with the defaults its setters document.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from the environment: the key from `OPENAI_API_KEY` and the base
    /// URL from `OPENAI_BASE_URL` (OpenAI's when unset).
    ///
    /// # Errors
    /// As [`ClientBuilder::build`]: `Config` when `OPENAI_API_KEY` is unset and the base URL
    /// is OpenAI's own API, as the official SDK refuses to start (any other server, a local
    /// vLLM say, is called without a key).
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().from_env().build()
    }

    /// Sends a chat completion request and returns the whole reply.
    ///
    /// The request is sent as given; set `stream` to `false` or leave it unset.
    ///
    /// # Errors
    /// Any [`Error`]: `Status`/`RateLimited` for HTTP errors with the provider's message, and
    /// for an error object sent with a success status (a gateway's 200 with `{"error": ...}`,
    /// see [`Dialect::error_in_answer`](volley_core::Dialect::error_in_answer));
    /// `BodyDecode` when the reply is not a chat completion.
    pub async fn chat(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, Error> {
        let http = self.chat_request(request, "chat()")?;
        let response = self.send(http).await?;
        decode_reply(response, Dialect::OpenAi, &self.scrubber, true).await
    }

    /// The HTTP request of a non-streaming chat completion: serialised once, with its token
    /// estimate when a limit needs it. `caller` names the method in the error for
    /// `stream: true`.
    pub(crate) fn chat_request(
        &self,
        request: &ChatCompletionRequest,
        caller: &str,
    ) -> Result<Request, Error> {
        if request.stream == Some(true) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{caller} was given a request with stream: true; use chat_stream()"),
            ));
        }
        let estimate = self.estimate(|| tokens::estimate_request_cost(request));
        Ok(post_json(CHAT_COMPLETIONS_PATH, request)?.with_estimated_tokens(estimate))
    }

    /// Sends a chat completion request with `stream: true` and returns the chunks as they
    /// arrive. Usage is asked for (`stream_options.include_usage`) unless the request says
    /// otherwise, so the last chunk carries the token counts; a server that refuses
    /// `stream_options` gets streams without it (see [`ClientBuilder::stream_include_usage`]).
    ///
    /// # Errors
    /// Errors before the first chunk come from this call; errors after it come from the stream.
    /// With retries on, an error the server sends as the stream's first event (a 200, then
    /// `{"error": ...}`) is one of the former: an overload or a server error is retried as a
    /// broken stream is (counted toward the retries).
    pub async fn chat_stream(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatStream, Error> {
        request.stream = Some(true);
        // Usage the caller asked for is part of what the stream promises; usage this client
        // adds on its own is not: a server that ignores the option and ends without `[DONE]`
        // once every choice has finished has sent the whole answer (as OpenAI's SDKs take it).
        let caller_asked_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let ask_usage = self.stream_include_usage
            && request.stream_options.is_none()
            && !self.stream_options_refused.load(Ordering::Relaxed);
        if ask_usage {
            request.stream_options = Some(StreamOptions {
                include_usage: Some(true),
                ..StreamOptions::default()
            });
        }
        let choices = request.n.unwrap_or(1);
        let estimate = self.estimate(|| tokens::estimate_request_cost(&request));
        let http = post_json(CHAT_COMPLETIONS_PATH, &request)?.with_estimated_tokens(estimate);
        // The call's deadline covers both sends when the first is refused.
        let started = tokio::time::Instant::now();
        let response = match self.send(http).await {
            // Refused, not processed: sent again without the options this client added, and
            // without them from now on.
            Err(error) if ask_usage && refuses_stream_options(&error) => {
                // One endpoint (hedged or not): remembered. Several: that endpoint's refusal
                // says nothing of the others.
                if !self.others.is_empty() {
                    tracing::debug!("an endpoint refused stream_options; sending again without");
                } else if !self.stream_options_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the server refused stream_options; streams go on without usage \
                         (ClientBuilder::stream_include_usage(false) says so up front)"
                    );
                }
                request.stream_options = None;
                let http =
                    post_json(CHAT_COMPLETIONS_PATH, &request)?.with_estimated_tokens(estimate);
                match self.deadline {
                    Some(limit) => {
                        let id = http.id();
                        let left = limit.saturating_sub(started.elapsed());
                        tokio::time::timeout(left, self.send(http))
                            .await
                            .map_err(|_| deadline_passed(id, limit))??
                    }
                    None => self.send(http).await?,
                }
            }
            result => result?,
        };
        if !response.is_stream() {
            return Err(self.not_a_stream(response, Dialect::OpenAi).await);
        }
        Ok(ChatStream::new(
            response,
            self.sse_limits,
            caller_asked_usage,
            choices,
            self.scrubber.clone(),
        ))
    }

    /// Sends an embeddings request.
    ///
    /// # Errors
    /// As [`Client::chat`].
    pub async fn embeddings(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, Error> {
        let estimate = self.estimate(|| tokens::estimate_embeddings(request));
        let http = post_json(EMBEDDINGS_PATH, request)?.with_estimated_tokens(estimate);
        let response = self.send(http).await?;
        decode_reply(response, Dialect::OpenAi, &self.scrubber, true).await
    }

    /// Decodes a response of [`send`](Client::send) as `T` as the typed calls do: an error
    /// object sent with a success status (a gateway's 200 with `{"error": ...}`) is an error
    /// with the provider's message, keys taken out, not an empty `T`. For what the typed
    /// calls do not give: a header of the request's own, or the response's headers (the
    /// provider's `x-request-id`, its rate-limit headers) beside the typed answer. Error
    /// objects are recognised in the client's provider's dialect; either dialect's shape
    /// (`{"error": ..}`, `{"type": "error", ..}`) is one.
    ///
    /// ```no_run
    /// # async fn example(client: volley::Client) -> Result<(), volley::Error> {
    /// use volley::core::Request;
    /// use volley::openai::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
    ///
    /// let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hi")]);
    /// let request = Request::post_json("/chat/completions", &chat)?
    ///     .with_header(http::HeaderName::from_static("x-tenant"), http::HeaderValue::from_static("a"));
    /// let response = client.send(request).await?;
    /// let provider_id = response.headers().get("x-request-id").cloned();
    /// let answer: ChatCompletionResponse = client.decode(response).await?;
    /// println!("{provider_id:?}: {:?}", answer.text());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::chat`]: the error object of a success status, a stream that fails while
    /// read whole, or `BodyDecode` when the body is not a `T`.
    pub async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, Error> {
        // The request was the caller's: its own headers may hold secrets (a tenant's key) that
        // a quoted body could echo.
        decode_reply(response, self.dialect, &self.scrubber, false).await
    }

    /// Sends a raw request (any path under the base URL) through the whole stack.
    ///
    /// A client of [`Provider::Anthropic`] sends a request left in the default dialect
    /// ([`Request::with_dialect`]) as an Anthropic one (its usage, errors and
    /// `anthropic-ratelimit-*` headers read as Anthropic sends them), except one to chat
    /// completions, Anthropic's OpenAI-compatible endpoint.
    ///
    /// # Errors
    /// Any [`Error`] of the stack.
    ///
    /// The future owns what it needs (it does not borrow the client), so it can be spawned.
    ///
    /// A request to a token-billed endpoint (chat and legacy completions, responses,
    /// messages, embeddings) without a token estimate ([`Request::with_estimated_tokens`])
    /// gets its dialect's estimate of its body ([`Dialect::estimate_body`]; embeddings, the
    /// input alone) when a tokens-per-minute limit is set or learned, so that it pays before
    /// it is sent, as the typed calls do. Other requests (a file upload, a model list) pay
    /// nothing up front.
    pub fn send(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static + use<> {
        // An Anthropic client reads its raw requests as Anthropic's (their usage, errors and
        // `anthropic-ratelimit-*` headers), but for its OpenAI-compatible chat completions.
        let request = if self.dialect == Dialect::Anthropic
            && request.dialect() == Dialect::OpenAi
            && !request
                .path_and_query()
                .path()
                .ends_with("/chat/completions")
        {
            request.with_dialect(Dialect::Anthropic)
        } else {
            request
        };
        // Nothing is looked at unless a token limit counts (`estimate` calls the closure only
        // then): the common raw request pays one flag check.
        let estimate = if request.estimated_tokens() == 0 {
            self.estimate(|| match billed_by_tokens(&request) {
                Some(output) => {
                    let estimate = request.dialect().estimate_body(request.body());
                    if output {
                        estimate.total()
                    } else {
                        estimate.input
                    }
                }
                None => 0,
            })
        } else {
            0
        };
        let request = if estimate > 0 {
            request.with_estimated_tokens(estimate)
        } else {
            request
        };
        Deadline {
            id: request.id(),
            sending: Sending::Ready {
                service: self.service.clone(),
                request: Some(request),
            },
            limit: self.deadline,
            sleep: None,
        }
    }

    /// The token estimate of a request, computed only when a tokens-per-minute limit will
    /// read it (it scans the whole prompt).
    pub(crate) fn estimate(&self, estimate: impl FnOnce() -> u32) -> u32 {
        // Any endpoint's: a request may go to any of them.
        let learned = || {
            self.limiters
                .learning
                .iter()
                .any(crate::rate_limit::learned_tokens)
        };
        if self.estimate_tokens || learned() {
            estimate()
        } else {
            0
        }
    }

    /// The error for a complete answer to a request that asked for a stream (a server that
    /// ignored `stream: true`, or a gateway's 200 with a JSON error): an error object is the
    /// error it names, as the whole-answer calls read it; anything else a `BodyDecode` error
    /// naming the content type, with the provider's error object when the body holds one.
    pub(crate) async fn not_a_stream(&self, response: Response, dialect: Dialect) -> Error {
        let id = response.request_id();
        let error_reply = response.is_error_reply(dialect);
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let body = match response.bytes().await {
            Ok(body) => self.scrubber.scrub(body),
            Err(error) => return error,
        };
        if error_reply {
            return dialect.error_in_answer(&body, format_args!("request {id}"));
        }
        let message =
            format!("request {id}: asked for an event stream, got content type {content_type}");
        match ApiError::from_body(&body) {
            Some(api) => Error::new(ErrorKind::BodyDecode, message).with_api_error(api),
            // What a body that is no JSON says instead (a proxy's page, a server's text); a
            // whole answer (a server that ignored `stream`) is not quoted.
            None => match (!looks_like_json(&body))
                .then(|| Error::body_excerpt(&body))
                .flatten()
            {
                Some(text) => Error::new(ErrorKind::BodyDecode, format!("{message}: {text}")),
                None => Error::new(ErrorKind::BodyDecode, message),
            },
        }
    }

    /// Every endpoint's key scrubber.
    pub(crate) fn scrubber(&self) -> &crate::secrets::Scrubber {
        &self.scrubber
    }

    /// The caps of the streams' SSE decoder ([`ClientBuilder::sse_limits`]).
    pub(crate) fn sse_limits(&self) -> volley_core::sse::Limits {
        self.sse_limits
    }

    /// The concurrency limit in force: the fixed [`ClientBuilder::concurrency`], or where the
    /// adaptive limit of [`ClientBuilder::concurrency_auto`] stands now.
    pub fn concurrency_limit(&self) -> usize {
        match &self.concurrency {
            Either::Left(fixed) => fixed.max(),
            Either::Right(adaptive) => adaptive.limit(),
        }
    }

    /// Requests in flight now (holding a concurrency slot).
    pub fn in_flight(&self) -> usize {
        match &self.concurrency {
            Either::Left(fixed) => fixed.in_flight(),
            Either::Right(adaptive) => adaptive.in_flight(),
        }
    }

    /// The rate limits learned from the provider's `x-ratelimit-limit-*` headers so far, per
    /// minute: `(requests, tokens)`, each `None` until learned, or when it was given or turned
    /// off (see [`ClientBuilder::rpm`]). With several endpoints, the first learning one's.
    pub fn learned_rate_limits(&self) -> (Option<u64>, Option<u64>) {
        self.limiters
            .learning
            .first()
            .map_or((None, None), crate::rate_limit::learned_limits)
    }

    /// How long the longest pause a rate limit started still holds (the wait a 429, or a 529
    /// or overload error, asked for), or `None` when no pause is in force. For a progress
    /// display: the requests a pause holds are not sent until it ends. With limits learned
    /// per model (the default) a pause holds its model's requests only, and with several
    /// endpoints its endpoint's. The in-process limiter's only: a shared limiter's pause is
    /// kept in Redis, and is `None` here.
    pub fn rate_limit_pause(&self) -> Option<Duration> {
        self.limiters
            .all
            .iter()
            .filter_map(crate::rate_limit::paused_for)
            .max()
    }

    /// Each endpoint's counts and circuit-breaker state, when the client has two or more
    /// endpoints ([`ClientBuilder::endpoint`]) or hedges ([`ClientBuilder::hedge`]); empty
    /// otherwise.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.balance.as_ref().map_or_else(Vec::new, Balance::stats)
    }

    /// Hedged copies sent so far ([`ClientBuilder::hedge`]); 0 without hedging.
    pub fn hedges(&self) -> u64 {
        self.balance.as_ref().map_or(0, Balance::hedges)
    }

    /// Hits, misses and stores of the cache, when one is configured.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache_stats.as_ref().map(|c| c.0.stats())
    }

    /// Connection statistics of the shared pool (with several endpoints, summed over their
    /// pools).
    pub fn connection_stats(&self) -> ConnectionStats {
        let mut total = self.transport.stats();
        for other in self.others.iter() {
            let stats = other.stats();
            total.opened += stats.opened;
            total.closed += stats.closed;
            total.requests += stats.requests;
        }
        total
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// The identity of this client's credential (a hash of the base URL, the API key and
    /// credential-like headers; never the key itself): what the cache keys entries by
    /// (narrowed by the settings that shape an answer), and what a shared rate limiter should
    /// be keyed by. See [`ClientBuilder::credential_id`].
    pub fn credential_id(&self) -> CredentialId {
        self.transport.credential_id()
    }

    /// The whole stack as a boxed `tower::Service`, to wrap in layers of your own. The call's
    /// deadline ([`ClientBuilder::deadline`]) is `Client::send`'s, not the stack's: put a
    /// timeout of your own around this service for one. So are two things `send` does to a
    /// raw request before the stack sees it: its token estimate under a tokens-per-minute
    /// limit (give one with [`Request::with_estimated_tokens`], or it pays nothing up front)
    /// and, on an Anthropic client, its dialect (give it with [`Request::with_dialect`]).
    pub fn into_service(self) -> BoxCloneSyncService<Request, Response, Error> {
        BoxCloneSyncService::new(self.service)
    }

    /// The bare transport under the stack (no retry, limits, timeouts or cache), for building
    /// a custom stack with `volley_middleware`'s layers.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// `text` with every endpoint's API key (and the proxies' credentials) replaced by
    /// `***`: for provider text about to be shown that did not come through an error, such
    /// as an error object inside a 2xx answer.
    pub fn scrub_secrets(&self, text: bytes::Bytes) -> bytes::Bytes {
        self.scrubber.scrub(text)
    }
}

/// Whether `request` goes to an endpoint billed by tokens, with a JSON body: `Some(true)`
/// when the answer is generated (its output budget counts too), `Some(false)` for embeddings
/// (input only), `None` for anything else.
fn billed_by_tokens(request: &Request) -> Option<bool> {
    if request.body().is_empty() || request.method() != http::Method::POST {
        return None;
    }
    let path = request.path();
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path.ends_with("/embeddings") {
        return Some(false);
    }
    [
        "/chat/completions",
        "/completions",
        "/responses",
        "/messages",
    ]
    .iter()
    .any(|end| path.ends_with(end))
    .then_some(true)
}

impl ClientBuilder {
    /// Takes the key and the base URL from the environment, for the provider set by
    /// [`build`](ClientBuilder::build) time, as its official SDK reads them:
    /// `OPENAI_API_KEY` and `OPENAI_BASE_URL` by default; `ANTHROPIC_API_KEY` (else
    /// `ANTHROPIC_AUTH_TOKEN`) and `ANTHROPIC_BASE_URL` with [`Provider::Anthropic`]; Azure's
    /// as [`azure_from_env`](ClientBuilder::azure_from_env) says. A key, base URL or endpoint
    /// set on this builder, before or after this call, wins; so the key of one provider
    /// never goes to another. Unset or empty variables are skipped; with no key found or set,
    /// [`build`](ClientBuilder::build) fails for OpenAI's and Anthropic's own APIs. See
    /// [`volley_transport::Builder::from_env`].
    pub fn from_env(mut self) -> ClientBuilder {
        self.transport = self.transport.from_env();
        self
    }

    /// The base URL, `/v1` included (`https://api.openai.com/v1`).
    ///
    /// Default: `https://api.openai.com/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.base_url(url);
        self.base_url_given = true;
        self
    }

    /// Adds an endpoint: with two or more, each request goes to one of them, chosen by
    /// priority group, load (power of two choices over Peak-EWMA latency × requests in
    /// flight), weight and circuit-breaker state, and a retry goes to another endpoint when
    /// one is available (see [`Endpoint`] and `volley_middleware::balance`). One endpoint
    /// alone is the same as [`ClientBuilder::base_url`] plus its own settings: no balancer.
    /// Given together with [`ClientBuilder::base_url`], [`ClientBuilder::build`] fails
    /// (`OPENAI_BASE_URL` read by [`ClientBuilder::from_env`] is only a default and is
    /// replaced).
    ///
    /// Default: none (the one base URL).
    pub fn endpoint(mut self, endpoint: Endpoint) -> ClientBuilder {
        self.endpoints.push(endpoint);
        self
    }

    /// The circuit breakers' thresholds, one breaker per endpoint (with two or more
    /// endpoints, or with [`hedge`](ClientBuilder::hedge), whose one URL becomes an
    /// endpoint with its breaker; one endpoint without hedging has no breaker).
    ///
    /// Default: [`BreakerConfig::default`]: open after 5 failures in a row or ≥ 50 % over
    /// 10 s (at least 20 requests); cool-down 5 s ± 20 %, doubling up to 60 s, each ended by
    /// an active health check (`GET /models`); close after 2 successful probes.
    pub fn breaker(mut self, breaker: BreakerConfig) -> ClientBuilder {
        self.breaker = breaker;
        self
    }

    /// Hedged requests: a request with no response head after the delay (fixed, or a
    /// percentile learned from recent answers) is sent to another endpoint as well (to the
    /// same one when there is one), the first answer wins and the other attempt is
    /// cancelled; a budget caps the copies (5 % by default). **A hedged request
    /// may be billed twice** (cancelling the loser refunds nothing): use it on a client whose
    /// requests are safe to duplicate. See [`Hedging`].
    ///
    /// Default: none.
    pub fn hedge(mut self, hedging: Hedging) -> ClientBuilder {
        self.hedging = Some(hedging);
        self
    }

    /// The API key, sent as a bearer token. It never appears in `Debug`, errors or logs.
    ///
    /// Default: none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> ClientBuilder {
        self.transport = self.transport.api_key(key);
        self
    }

    /// The most requests in flight at once. Each holds a slot from sending until its body or
    /// stream is finished (or dropped: a stream kept unread holds its slot); requests waiting
    /// for a slot, for the rate limit or in retry backoff hold no connection.
    ///
    /// Default: [`DEFAULT_CONCURRENCY`] (256).
    pub fn concurrency(mut self, max: usize) -> ClientBuilder {
        self.concurrency = max;
        self.adaptive = false;
        self
    }

    /// An adaptive concurrency limit of at most `max` requests in flight, found while
    /// running: it starts at 16, doubles while answers come back without overload, is cut on
    /// 429, 503, 529, refused connections and timeouts, and settles where the median latency
    /// stops growing (a server's knee). See `volley_middleware::limit::adaptive`. Replaces
    /// [`ClientBuilder::concurrency`]; [`Client::concurrency_limit`] tells the limit in force.
    ///
    /// Default: a fixed [`DEFAULT_CONCURRENCY`] (256) instead.
    pub fn concurrency_auto(mut self, max: usize) -> ClientBuilder {
        self.concurrency = max;
        self.adaptive = true;
        self
    }

    /// Requests per minute. The burst is one second's worth (RPM/60) because providers
    /// enforce limits at sub-minute granularity; [`ClientBuilder::rate_limits`] sets more.
    /// Combines with [`ClientBuilder::tpm`]; given together with
    /// [`ClientBuilder::rate_limits`] or a ready-made limiter, [`ClientBuilder::build`] fails.
    /// `0` turns the request limit off, and stops learning it.
    ///
    /// Default: learned. With no limit given, the client reads the provider's
    /// `x-ratelimit-limit-requests` / `-tokens` (the window inferred from the `reset`
    /// headers) and paces at what it states; until the first answer it sends at most four
    /// requests (a slow start), and a 429 pauses every send until its `Retry-After`
    /// ([`Limits::auto`]).
    pub fn rpm(mut self, requests_per_minute: u32) -> ClientBuilder {
        self.rate_limit = self.rate_limit.rpm(requests_per_minute);
        self
    }

    /// Tokens per minute. Each request pays its estimated tokens (prompt estimate plus
    /// `max_completion_tokens`/`max_tokens`) before it is sent, settled with the real usage
    /// when the response reports it. Combines with [`ClientBuilder::rpm`]; given together with
    /// [`ClientBuilder::rate_limits`] or a ready-made limiter, [`ClientBuilder::build`] fails.
    /// `0` turns the token limit off, and stops learning it.
    ///
    /// Default: learned, as for [`ClientBuilder::rpm`].
    pub fn tpm(mut self, tokens_per_minute: u64) -> ClientBuilder {
        self.rate_limit = self.rate_limit.tpm(tokens_per_minute);
        self
    }

    /// Input tokens per minute (Anthropic's ITPM), apart from [`ClientBuilder::tpm`]: each
    /// request pays its prompt estimate before it is sent (its dialect reads the body once),
    /// settled with the input tokens the answer reports (cache reads do not count). Combines
    /// with [`ClientBuilder::rpm`], [`ClientBuilder::tpm`] and
    /// [`ClientBuilder::output_tpm`]; given together with [`ClientBuilder::rate_limits`] or a
    /// ready-made limiter, [`ClientBuilder::build`] fails. Not learned from headers.
    ///
    /// Default: none (`0`: none).
    pub fn input_tpm(mut self, input_tokens_per_minute: u64) -> ClientBuilder {
        self.rate_limit = self.rate_limit.split_tpm(false, input_tokens_per_minute);
        self
    }

    /// Output tokens per minute (Anthropic's OTPM): each request pays its output budget
    /// (`max_tokens`) before it is sent, settled with the output tokens the answer reports
    /// (in a stream, its last `message_delta`). Combines as [`ClientBuilder::input_tpm`] does.
    ///
    /// Default: none (`0`: none).
    pub fn output_tpm(mut self, output_tokens_per_minute: u64) -> ClientBuilder {
        self.rate_limit = self.rate_limit.split_tpm(true, output_tokens_per_minute);
        self
    }

    /// The full rate-limit configuration (bursts, headroom). It is the whole limit: given
    /// together with [`ClientBuilder::rpm`], [`ClientBuilder::tpm`] or a ready-made limiter,
    /// [`ClientBuilder::build`] fails rather than drop one of them.
    ///
    /// Default: none.
    pub fn rate_limits(mut self, limits: Limits) -> ClientBuilder {
        self.rate_limit = self.rate_limit.limits(limits);
        self
    }

    /// An existing in-process limiter: clients built with clones of one limiter share its
    /// budget (two clients for one API key, say). The limiter carries its own limits: given
    /// together with [`ClientBuilder::rpm`], [`ClientBuilder::tpm`] or
    /// [`ClientBuilder::rate_limits`], [`ClientBuilder::build`] fails.
    ///
    /// ```no_run
    /// use volley::Client;
    /// use volley::middleware::rate_limit::{Limits, LocalLimiter};
    ///
    /// # fn run() -> Result<(), volley::Error> {
    /// let limiter = LocalLimiter::new(Limits::per_minute().requests(500).tokens(200_000))?;
    /// let chat = Client::builder().rate_limiter(limiter.clone()).build()?;
    /// let batch = Client::builder().concurrency(64).rate_limiter(limiter).build()?;
    /// # drop((chat, batch));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Default: none (a limiter of its own when a limit is set).
    pub fn rate_limiter(mut self, limiter: LocalLimiter) -> ClientBuilder {
        let counts_tokens = limiter.limits().tokens_per_minute().is_some();
        self.rate_limit = self.rate_limit.limiter(
            SlotLimiter::from(limiter),
            counts_tokens,
            "rate_limiter(..)",
        );
        self
    }

    /// A rate limiter shared through Redis by every process (and machine) that uses it with
    /// the same prefix and credential: together they stay within one provider budget. The
    /// limiter carries its own limits: given together with [`ClientBuilder::rpm`],
    /// [`ClientBuilder::tpm`] or [`ClientBuilder::rate_limits`], [`ClientBuilder::build`]
    /// fails.
    ///
    /// Key the limiter to the credential the client sends with
    /// ([`ClientBuilder::credential_id`]), as the cache is: processes with one key share a
    /// budget, processes with different keys do not. What happens when Redis cannot be
    /// reached is the limiter's [`FailureMode`](crate::redis::FailureMode).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use volley::Client;
    /// use volley::middleware::rate_limit::Limits;
    /// use volley::redis::{FailureMode, RedisLimiter, RedisOptions, RedisStore, SharedLimits};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let redis = RedisOptions::new("rediss://:password@10.0.0.5:6380");
    /// let builder = Client::builder().from_env().concurrency(512);
    /// let limiter = RedisLimiter::connect(
    ///     SharedLimits::new(redis.clone(), Limits::per_minute().requests(10_000).tokens(2_000_000))
    ///         .prefix("prod")
    ///         .credential(&builder.credential_id()?)
    ///         .on_failure(FailureMode::LocalFallback { processes: 8 }),
    /// )
    /// .await?;
    /// let store = RedisStore::connect(redis, Duration::from_secs(86_400)).await?;
    /// let client = builder
    ///     .shared_rate_limiter(limiter)
    ///     .cache_store(store)
    ///     .build()?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Default: none (a limiter of its own when a limit is set).
    #[cfg(feature = "redis")]
    pub fn shared_rate_limiter(
        mut self,
        limiter: volley_middleware::rate_limit::RedisLimiter,
    ) -> ClientBuilder {
        let counts_tokens = limiter.limits().tokens_per_minute().is_some();
        self.rate_limit = self.rate_limit.limiter(
            crate::any_limiter::AnyLimiter::Redis(limiter),
            counts_tokens,
            "shared_rate_limiter(..)",
        );
        self
    }

    /// How many times a failed attempt is retried (0 turns retry off), with the default
    /// classification, backoff and budget of [`volley_middleware::retry::Policy`].
    ///
    /// Default: 3.
    pub fn retries(mut self, max_retries: u32) -> ClientBuilder {
        self.retry = RetrySetting::Retries(max_retries);
        self
    }

    /// The whole retry policy (`Policy::safe_only()` for callers who must never pay twice, a
    /// custom classifier, backoff, budget), replacing [`ClientBuilder::retries`].
    ///
    /// Default: `Policy::default()` with 3 retries.
    pub fn retry_policy(mut self, policy: Policy) -> ClientBuilder {
        self.retry = RetrySetting::Policy(policy);
        self
    }

    /// The deadline of one attempt: the whole response for plain requests, the head and first
    /// chunk for streams. `None` removes it.
    ///
    /// Default: [`DEFAULT_TIMEOUT`] (600 s, as the official Python client).
    pub fn timeout(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.timeouts = self.timeouts.attempt(limit);
        self
    }

    /// The deadline of a whole call, from its first poll: the wait for a slot and for the rate
    /// limits, every attempt and every backoff between them, up to the complete response
    /// (for a stream, up to its first chunk; [`stream_timeout`](ClientBuilder::stream_timeout)
    /// and [`idle_timeout`](ClientBuilder::idle_timeout) bound the rest). Past it the call
    /// fails with `ErrorKind::Timeout` and what it was waiting for is let go at once (its
    /// slot, its connection). Beside [`timeout`](ClientBuilder::timeout), which bounds each
    /// attempt, this bounds what the caller waits in all. A retry whose wait would end past
    /// the deadline is not made: the call fails at once with the error that asked for it (a
    /// 429 whose `Retry-After` is longer than the time left comes back rate-limited, with its
    /// wait, for the caller to reschedule); likewise a request the rate limiter would hold
    /// past the deadline (its sends paused by an earlier 429, or its limit used up for that
    /// long) fails unsent, rate-limited with the wait it would have had, at once or when it
    /// was to be sent (a limiter shared through Redis does not check this). The request
    /// metrics count a call its deadline ended as `cancelled`, as any call its caller gave up
    /// on, and one that failed early as above by its error (`rate_limited`). `None` removes
    /// it; zero is refused by [`build`](ClientBuilder::build). [`Client::into_service`] has
    /// none.
    ///
    /// Default: none (each attempt has [`timeout`](ClientBuilder::timeout); rate-limit
    /// retries stop after the retry policy's `give_up_after`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let client = volley::Client::builder()
    ///     .base_url("http://127.0.0.1:8080/v1")
    ///     .timeout(Duration::from_secs(60))
    ///     .deadline(Duration::from_secs(180))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    pub fn deadline(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.deadline = limit.into();
        self
    }

    /// The caps on one line and one event of a stream that [`Client::chat_stream`] and
    /// [`Client::messages_stream`] read: a larger one fails the stream with
    /// [`ErrorKind::BodyDecode`] naming the cap, so a server cannot make a stream buffer
    /// without bound. Raise them for streams that carry larger payloads in one event, such as
    /// base64 images above 16 MiB.
    ///
    /// Default: [`Limits::new()`](volley_core::sse::Limits::new), 16 MiB per line and per
    /// event.
    ///
    /// ```
    /// use volley::Client;
    /// use volley::core::sse::Limits;
    ///
    /// let client = Client::builder()
    ///     .sse_limits(Limits::new().max_line_bytes(64 << 20).max_event_bytes(64 << 20))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    pub fn sse_limits(mut self, limits: volley_core::sse::Limits) -> ClientBuilder {
        self.sse_limits = limits;
        self
    }

    /// The deadline for the first response byte (for streams, the first chunk).
    ///
    /// Default: none.
    pub fn first_byte_timeout(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.timeouts = self.timeouts.first_byte(limit);
        self
    }

    /// The longest silence between two chunks of a stream.
    ///
    /// Default: [`DEFAULT_IDLE_TIMEOUT`] (120 s).
    pub fn idle_timeout(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.timeouts = self.timeouts.idle(limit);
        self
    }

    /// The whole of a stream, from sending the request to its last chunk; `ErrorKind::Timeout`
    /// after it. Beside [`idle_timeout`](ClientBuilder::idle_timeout), which a server can keep
    /// resetting with one byte at a time, this bounds how long one stream holds its slot.
    /// `None` removes it.
    ///
    /// Default: [`DEFAULT_STREAM_TIMEOUT`] (30 min).
    pub fn stream_timeout(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.timeouts = self.timeouts.stream_total(limit);
        self
    }

    /// The most bytes of one non-streaming response body, and of a stream read whole
    /// (`Response::bytes`); a larger one fails with `ErrorKind::BodyDecode`.
    ///
    /// Default: 64 MiB ([`volley_core::DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, max: usize) -> ClientBuilder {
        self.transport = self.transport.max_body_bytes(max);
        self
    }

    /// The most bytes of response bodies the client buffers at once, over all requests in
    /// flight: the default concurrency times the body limit would be 16 GiB. See
    /// [`volley_transport::Builder::max_buffered_bytes`].
    ///
    /// Default: 1 GiB ([`volley_transport::DEFAULT_MAX_BUFFERED_BYTES`]).
    pub fn max_buffered_bytes(mut self, max: usize) -> ClientBuilder {
        self.transport = self.transport.max_buffered_bytes(max);
        self
    }

    /// Caches the answers to generations (a `POST` to chat or legacy completions, messages,
    /// responses, embeddings or moderations; a 200 whose body is JSON; not streams; see
    /// [`volley_middleware::cache`]) in memory, up to `max_bytes` for `ttl`.
    /// Entries are keyed by method, path, canonical JSON body and a hash of the API key.
    ///
    /// Default: no cache.
    pub fn cache_memory(mut self, max_bytes: u64, ttl: Duration) -> ClientBuilder {
        self.cache = Some(CacheSetting::Memory { max_bytes, ttl });
        self
    }

    /// Caches the answers to generations, as [`ClientBuilder::cache_memory`] does, on disk in
    /// `dir` (a redb database), for
    /// `ttl`; entries survive restarts. The database is opened by [`ClientBuilder::build`].
    ///
    /// Default: no cache.
    pub fn cache_disk(mut self, dir: impl Into<PathBuf>, ttl: Duration) -> ClientBuilder {
        self.cache = Some(CacheSetting::Disk {
            dir: dir.into(),
            ttl,
        });
        self
    }

    /// Caches the answers to generations, as [`ClientBuilder::cache_memory`] does, in
    /// `store`: any [`CacheStore`], such as a
    /// `RedisStore` (feature `redis`) shared by every process that uses the same Redis, or
    /// an `Arc` of a store shared with other clients. Entries are keyed by the request and
    /// this client's credential (see [`credential_id`](ClientBuilder::credential_id)) and the
    /// settings that shape an answer (Azure's `api-version`, Anthropic's version and beta
    /// features), so clients with different keys, endpoints or such settings never share
    /// entries, even in one store. Replaces
    /// [`ClientBuilder::cache_memory`] and [`ClientBuilder::cache_disk`].
    ///
    /// One in-memory cache shared by two clients (with a `RedisStore`, by two processes:
    /// see the crate docs):
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use volley::Client;
    /// use volley::middleware::cache::MemoryStore;
    ///
    /// # fn run() -> Result<(), volley::Error> {
    /// let store = Arc::new(MemoryStore::new(64 << 20, Duration::from_secs(3600)));
    /// let chat = Client::builder().from_env().cache_store(store.clone()).build()?;
    /// let batch = Client::builder().from_env().cache_store(store).build()?;
    /// # drop((chat, batch));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Default: no cache.
    pub fn cache_store(mut self, store: impl CacheStore + 'static) -> ClientBuilder {
        self.cache = Some(CacheSetting::Store(Arc::new(store)));
        self
    }

    /// The identity of the credential the client will send with (a hash of the base URL,
    /// the API key and credential-like default headers, never the key itself): the cache
    /// keys its entries by it (narrowed by the settings that shape an answer: API versions,
    /// beta features), and a shared rate limiter (`SharedLimits::credential`, feature
    /// `redis`) should be keyed by the same id, so that every process using one key at one
    /// endpoint draws from one budget and different keys never do.
    ///
    /// With [endpoints](ClientBuilder::endpoint), the id of all of them together
    /// ([`CredentialId::of_all`]): clients with different sets of endpoints or keys never share
    /// an id, and one endpoint's is that endpoint's own.
    ///
    /// Set the base URL or endpoints, key and headers first. This builds the transport
    /// configuration to compute the id (a few milliseconds; no connection is made): call it
    /// once.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`] for the transport settings.
    pub fn credential_id(&self) -> Result<CredentialId, Error> {
        if self.endpoints.is_empty() {
            return Ok(self.transport.clone().build()?.credential_id());
        }
        let ids = self
            .endpoints
            .iter()
            .map(|endpoint| {
                Ok(endpoint
                    .transport_builder(&self.transport)?
                    .build()?
                    .credential_id())
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(match ids.as_slice() {
            [one] => *one,
            _ => CredentialId::of_all(ids),
        })
    }

    /// A header sent with every request.
    ///
    /// Default: none.
    pub fn default_header(mut self, name: HeaderName, value: HeaderValue) -> ClientBuilder {
        self.transport = self.transport.default_header(name, value);
        self
    }

    /// The most idle connections kept per host; keep it at least at your concurrency.
    ///
    /// Default: unlimited.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> ClientBuilder {
        self.transport = self.transport.pool_max_idle_per_host(max);
        self
    }

    /// How long an idle connection stays open.
    ///
    /// Default: 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.transport = self.transport.pool_idle_timeout(timeout);
        self
    }

    /// The TCP connect deadline; a proxy's handshake and the TLS handshake each get as long
    /// again. See [`volley_transport::Builder::connect_timeout`].
    ///
    /// Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.transport = self.transport.connect_timeout(timeout);
        self
    }

    /// HTTP/2 only (ALPN over TLS, h2c prior knowledge over plain text), against a server
    /// that speaks nothing else.
    ///
    /// Mind the concurrency: every request to the origin shares one HTTP/2 connection, and
    /// those beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (100 at Google, 128 at
    /// nginx and AWS ALB, 256 at Cloudflare) wait inside it, their wait counted in their
    /// timeouts and times to first byte. Over HTTP/1.1 (the default) each request in flight
    /// has a connection of its own. See [`volley_transport::Builder::http2`].
    ///
    /// Default: `false`.
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> ClientBuilder {
        self.transport = self.transport.http2_prior_knowledge(enabled);
        self
    }

    /// Allow plain `http://` to a host that is not loopback, or to a loopback one through a
    /// proxy that is not ([`volley_transport::Builder::allow_plain_http`]).
    ///
    /// Default: `false`.
    pub fn allow_plain_http(mut self, allowed: bool) -> ClientBuilder {
        self.transport = self.transport.allow_plain_http(allowed);
        self
    }

    /// Sends every request through this proxy (`http://[user:password@]host[:port]`,
    /// `socks5://`, `socks5h://`), read as curl reads `--proxy`; wins over `HTTPS_PROXY`,
    /// `http_proxy` and `ALL_PROXY`, and `""` means no proxy. The password is never shown.
    /// See [`volley_transport::Builder::proxy`].
    ///
    /// Default: none (the environment's, see [`ClientBuilder::proxy_env`]).
    pub fn proxy(mut self, url: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.proxy(url);
        self
    }

    /// Hosts reached directly, not through the proxy, as curl's `NO_PROXY`: comma-separated
    /// domains (with their subdomains), IP addresses, CIDR ranges, or `*`. Replaces the
    /// environment's `NO_PROXY`.
    ///
    /// Default: `NO_PROXY` / `no_proxy` from the environment.
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.no_proxy(hosts);
        self
    }

    /// Whether to honour `HTTPS_PROXY`, `http_proxy` (lower case only, as curl), `ALL_PROXY`
    /// and `NO_PROXY` (and their lower-case forms) by curl's rules; read once per process. See
    /// [`volley_transport::Builder::proxy_env`].
    ///
    /// Default: `true`.
    pub fn proxy_env(mut self, enabled: bool) -> ClientBuilder {
        self.transport = self.transport.proxy_env(enabled);
        self
    }

    /// Trusts the certificates of a PEM bundle file (a private or corporate CA), added to
    /// the other roots; read by [`ClientBuilder::build`], which names the file when it is
    /// unusable. An explicit CA makes `SSL_CERT_FILE` / `SSL_CERT_DIR` ignored.
    ///
    /// Default: none.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> ClientBuilder {
        self.transport = self.transport.tls_ca_file(path);
        self
    }

    /// Trusts the certificates of a PEM bundle given as bytes; as
    /// [`ClientBuilder::tls_ca_file`].
    ///
    /// Default: none.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.transport = self.transport.tls_ca_pem(pem);
        self
    }

    /// Whether to trust the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name (added to the
    /// built-in roots) when no CA is set explicitly; read once per process.
    ///
    /// Default: `true`.
    pub fn tls_ca_from_env(mut self, enabled: bool) -> ClientBuilder {
        self.transport = self.transport.tls_ca_from_env(enabled);
        self
    }

    /// Whether to trust the operating system's root certificates too (feature
    /// `native-roots`; without it, [`ClientBuilder::build`] fails when this is on).
    ///
    /// Default: `false`.
    pub fn tls_native_roots(mut self, enabled: bool) -> ClientBuilder {
        self.transport = self.transport.tls_native_roots(enabled);
        self
    }

    /// A client certificate chain and its private key (PEM files), for servers and gateways
    /// that require mutual TLS; read by [`ClientBuilder::build`].
    ///
    /// Default: none.
    pub fn tls_client_identity_files(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> ClientBuilder {
        self.transport = self
            .transport
            .tls_client_identity_files(cert_chain, private_key);
        self
    }

    /// A client certificate chain and its private key given as PEM bytes; as
    /// [`ClientBuilder::tls_client_identity_files`].
    ///
    /// Default: none.
    pub fn tls_client_identity_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> ClientBuilder {
        self.transport = self
            .transport
            .tls_client_identity_pem(cert_chain, private_key);
        self
    }

    /// The provider's conventions: [`Provider::Azure`] sends the key as `api-key`, adds
    /// `api-version` to every request and routes to deployments as the official SDK's
    /// `AzureOpenAI` does. See [`volley_transport::Builder::provider`].
    ///
    /// Default: [`Provider::OpenAi`].
    pub fn provider(mut self, provider: Provider) -> ClientBuilder {
        self.transport = self.transport.provider(provider);
        self.provider = provider;
        self
    }

    /// How the key is sent to Anthropic: `Authorization: Bearer` (the current official SDK)
    /// or `x-api-key` (older SDKs). See [`volley_transport::Builder::anthropic_auth`].
    ///
    /// Default: [`AnthropicAuth::Bearer`](volley_transport::AnthropicAuth::Bearer).
    pub fn anthropic_auth(mut self, auth: volley_transport::AnthropicAuth) -> ClientBuilder {
        self.transport = self.transport.anthropic_auth(auth);
        self
    }

    /// The `anthropic-version` header. See [`volley_transport::Builder::anthropic_version`].
    ///
    /// Default: `2026-10-21` with bearer auth, `2023-06-01` with `x-api-key`.
    pub fn anthropic_version(mut self, version: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.anthropic_version(version);
        self
    }

    /// The `anthropic-beta` header (comma-separated features).
    ///
    /// Default: none.
    pub fn anthropic_beta(mut self, features: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.anthropic_beta(features);
        self
    }

    /// The Azure OpenAI `api-version` query parameter (`2024-10-21`); needed by deployment
    /// URLs, optional for the v1 API (`…/openai/v1`).
    ///
    /// Default: none.
    pub fn api_version(mut self, version: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.api_version(version);
        self
    }

    /// A Microsoft Entra ID (Azure AD) token, sent as a bearer token to Azure OpenAI instead
    /// of a key. Never shown.
    ///
    /// Default: none.
    pub fn azure_ad_token(mut self, token: impl Into<ApiKey>) -> ClientBuilder {
        self.transport = self.transport.azure_ad_token(token);
        self
    }

    /// The Azure OpenAI resource endpoint (`https://RESOURCE.openai.azure.com`); the base URL
    /// becomes `{endpoint}/openai` (requests routed by their `model`), or
    /// `{endpoint}/openai/deployments/{deployment}` with [`ClientBuilder::azure_deployment`].
    ///
    /// Default: none.
    pub fn azure_endpoint(mut self, endpoint: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.azure_endpoint(endpoint);
        self
    }

    /// The Azure OpenAI deployment every request goes to (with
    /// [`ClientBuilder::azure_endpoint`]).
    ///
    /// Default: none (the request's `model` names the deployment).
    pub fn azure_deployment(mut self, deployment: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.azure_deployment(deployment);
        self
    }

    /// Azure OpenAI from the environment, as the official SDK's `AzureOpenAI()` reads it:
    /// the provider set to Azure, `AZURE_OPENAI_ENDPOINT` as the endpoint,
    /// `AZURE_OPENAI_AD_TOKEN` as the token or else `AZURE_OPENAI_API_KEY` as the key, and
    /// `OPENAI_API_VERSION` as the API version, each read at [`build`](ClientBuilder::build)
    /// time where the builder does not set it. Unset or empty variables are skipped.
    pub fn azure_from_env(self) -> ClientBuilder {
        self.provider(Provider::Azure).from_env()
    }

    /// Whether [`Client::chat_stream`] asks for usage in the stream
    /// (`stream_options.include_usage`) when the request does not say. A server that refuses
    /// `stream_options` with a 400 (Azure OpenAI before API version 2024-09-01, older
    /// OpenAI-compatible servers) or a 422 (Mistral's API, servers that forbid unknown
    /// fields) naming it gets the request again without it, and a client of one
    /// endpoint stops asking (one of several endpoints gets each stream it refuses twice);
    /// turning this off saves those round trips.
    ///
    /// Default: `true`.
    pub fn stream_include_usage(mut self, enabled: bool) -> ClientBuilder {
        self.stream_include_usage = enabled;
        self
    }

    /// Replaces the whole transport configuration, for settings this builder does not repeat
    /// (TLS roots, HTTP/2 windows, compression, TCP options). Its provider is the client's:
    /// raw requests are read in its dialect.
    ///
    /// Default: [`volley_transport::Builder::new`].
    pub fn transport(mut self, transport: volley_transport::Builder) -> ClientBuilder {
        self.transport = transport;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// `ErrorKind::Config` for an invalid base URL, plain HTTP to a remote host, a key that
    /// cannot be sent as a header, missing TLS roots, or, with
    /// [`from_env`](ClientBuilder::from_env), no key for OpenAI's or Anthropic's own API.
    pub fn build(mut self) -> Result<Client, Error> {
        if self.deadline == Some(Duration::ZERO) {
            return Err(Error::new(
                ErrorKind::Config,
                "deadline(0) would fail every call: give a deadline above zero, or None for none",
            ));
        }
        if self.base_url_given && !self.endpoints.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "both base_url(..) and endpoint(..) were given: give every URL as an endpoint",
            ));
        }
        if self.hedging.is_some() && self.endpoints.is_empty() {
            // Hedging lives in the balancer: the client's own URL becomes its one endpoint,
            // and hedges go to it again.
            self.endpoints.push(crate::endpoints::Endpoint::inherited());
        }
        if self.endpoints.len() == 1 && self.hedging.is_none() {
            // One endpoint is today's single stack with that endpoint's settings.
            let endpoint = self.endpoints.pop().expect("the length was just checked");
            let (transport, rate_limit, own) =
                endpoint.into_single(&self.transport, &self.rate_limit)?;
            self.transport = transport;
            self.rate_limit = rate_limit;
            if let Some(own) = own {
                self.concurrency = self.concurrency.min(own);
            }
        }
        if self.endpoints.is_empty() {
            // One stack: raw requests are read in the dialect of the provider it calls, as an
            // endpoint (`Endpoint::provider`) or a whole transport (`transport(..)`) set it.
            self.provider = self.transport.provider_set();
        }
        if self.concurrency == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "concurrency must be at least 1",
            ));
        }
        if self.concurrency > MAX_CONCURRENCY {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "concurrency {} is above the largest allowed, {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            ));
        }
        let policy = match self.retry {
            RetrySetting::Policy(policy) => policy,
            RetrySetting::Retries(n) => Policy::builder().max_retries(n).build()?,
        };
        let concurrency = if self.adaptive {
            Either::Right(AdaptiveConcurrencyLimitLayer::new(self.concurrency))
        } else {
            Either::Left(ConcurrencyLimitLayer::new(self.concurrency))
        };
        let balanced = if self.endpoints.is_empty() {
            None
        } else {
            Some(crate::endpoints::build(
                std::mem::take(&mut self.endpoints),
                crate::endpoints::Inherited {
                    transport: &self.transport,
                    rate_limit: &self.rate_limit,
                    ceiling: &concurrency,
                    timeouts: &self.timeouts,
                    breaker: &self.breaker,
                    hedging: self.hedging,
                },
            )?)
        };
        let (transport, rate_limit, estimate_tokens, all) = match &balanced {
            Some(balanced) => (
                balanced.first.clone(),
                None,
                balanced.estimate_tokens,
                balanced.limiters.clone(),
            ),
            None => {
                let transport = self.transport.build()?;
                let (rate_limit, estimate_tokens) = self.rate_limit.into_layer()?;
                let all = rate_limit
                    .as_ref()
                    .map(|layer| layer.limiter().clone())
                    .into_iter()
                    .collect();
                (transport, rate_limit, estimate_tokens, all)
            }
        };
        let learning = all
            .iter()
            .filter(|l| volley_middleware::rate_limit::RateLimiter::learns(*l))
            .cloned()
            .collect();
        let limiters = Limiters { learning, all };
        let cache = match self.cache {
            None => None,
            Some(setting) => {
                // Base URL, key, credential-like headers and the settings that shape an answer
                // (API versions, beta features), hashed: entries never cross
                // endpoints or accounts. A balanced client answers from any of its endpoints,
                // so its namespace is all of theirs together, not its first endpoint's.
                let credential = match &balanced {
                    Some(balanced) if !balanced.others.is_empty() => {
                        volley_core::cache_key::CredentialId::of_all(
                            std::iter::once(&balanced.first)
                                .chain(balanced.others.iter())
                                .map(Transport::cache_id),
                        )
                    }
                    _ => transport.cache_id(),
                };
                Some(match setting {
                    CacheSetting::Memory { max_bytes, ttl } => {
                        CacheLayer::new(MemoryStore::new(max_bytes, ttl), credential)
                    }
                    CacheSetting::Disk { dir, ttl } => {
                        let store = DiskStore::open(&dir, ttl).map_err(|e| {
                            Error::new(
                                ErrorKind::Config,
                                format!("opening the disk cache in {}", dir.display()),
                            )
                            .with_source(e)
                        })?;
                        CacheLayer::new(store, credential)
                    }
                    CacheSetting::Store(store) => CacheLayer::new(store, credential),
                })
            }
        };
        // Metrics go through the `metrics` facade: without an installed recorder they cost
        // next to nothing. Install a recorder before building the client.
        let request_metrics = MetricsLayer::new()
            .scope(Scope::Request)
            .replays(cache.is_some());
        let attempt_metrics = MetricsLayer::new().scope(Scope::Attempt);
        let routed = match &balanced {
            None => Either::Left(
                ServiceBuilder::new()
                    .option_layer(rate_limit)
                    .layer(concurrency.clone())
                    .layer(attempt_metrics)
                    .layer(self.timeouts)
                    .service(transport.clone()),
            ),
            Some(balanced) => Either::Right(balanced.balance.clone()),
        };
        let others: Arc<[Transport]> = balanced
            .as_ref()
            .map_or_else(|| Arc::from([]), |b| b.others.clone());
        let scrubber = crate::secrets::Scrubber::new(&transport, &others);
        // Errors the retry layer builds from a stream's first bytes quote the provider: keys
        // are taken out first, as from every error body.
        let policy = {
            let scrubber = scrubber.clone();
            policy.scrubbing(move |text| scrubber.scrub(text))
        };
        // A request one endpoint's limiter holds back past its deadline goes to another.
        let policy = match &balanced {
            Some(balanced) if balanced.separate_limiters => policy.moving_held_requests(),
            _ => policy,
        };
        let service = ServiceBuilder::new()
            .layer(request_metrics)
            .option_layer(cache.clone())
            .layer(RetryLayer::new(policy))
            .service(routed);
        Ok(Client {
            service,
            transport,
            stream_include_usage: self.stream_include_usage,
            stream_options_refused: Arc::new(AtomicBool::new(false)),
            cache_stats: cache.map(CacheHandle),
            estimate_tokens,
            limiters: Arc::new(limiters),
            concurrency,
            scrubber,
            others,
            balance: balanced.map(|b| b.balance),
            deadline: self.deadline,
            dialect: self.provider.dialect(),
            sse_limits: self.sse_limits,
        })
    }
}

/// Whether `error` is a server's 400 or 422 refusing `stream_options`, which the client
/// added: the error's `param` names it; or, from a server that says where in the body each
/// problem is (FastAPI, pydantic: Mistral's 422 `extra_forbidden`, under `detail`), some `loc`
/// names it (only there: such an error copies the body it refused, `stream_options` and
/// all, into its `input`); or else the message names it (Azure's 400 "Unrecognized request
/// argument supplied: stream_options").
fn refuses_stream_options(error: &Error) -> bool {
    if !matches!(
        error.status(),
        Some(http::StatusCode::BAD_REQUEST | http::StatusCode::UNPROCESSABLE_ENTITY)
    ) {
        return false;
    }
    let api = error.api_error();
    if api.is_some_and(|api| api.param.as_deref() == Some("stream_options")) {
        return true;
    }
    let body = error
        .body()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok());
    let mut found = Vec::new();
    if let Some(body) = &body {
        locs(body, 0, &mut found);
    }
    if found.is_empty() {
        api.is_some_and(|api| api.message.contains("stream_options"))
    } else {
        found
            .iter()
            .any(|parts| parts.iter().any(|p| p == "stream_options"))
    }
}

/// Every `loc` (a list of path parts) in `value`, within a few levels, as error bodies nest
/// them (Mistral's in `message.detail`); an `input` (a copy of the refused body) is not
/// looked in.
fn locs<'v>(value: &'v serde_json::Value, depth: usize, out: &mut Vec<&'v [serde_json::Value]>) {
    use serde_json::Value;
    if depth > 6 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("loc", Value::Array(parts)) => out.push(parts),
                    ("input", _) => {}
                    _ => locs(item, depth + 1, out),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                locs(item, depth + 1, out);
            }
        }
        _ => {}
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Client::send`]: the stack's clone until it is ready and called, then
    /// only the call's future. The clone (and the request) are not kept beside the call's
    /// future, as an `async fn` would keep them: the future a caller holds for every request
    /// in flight is about a quarter smaller, and the clone's `Arc`s are let go at once.
    #[project = SendingProj]
    enum Sending {
        // `request` is taken when the call is made, in the same poll that leaves this state.
        Ready { service: Stack, request: Option<Request> },
        // Polled after it completed, the call's future panics, as an `async fn` would.
        Called { #[pin] future: <Stack as Service<Request>>::Future },
        // The stack refused the call: the error was returned, and the clone let go.
        Failed,
    }
}

impl Future for Sending {
    type Output = Result<Response, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                SendingProj::Ready { service, request } => {
                    if let Err(error) = std::task::ready!(service.poll_ready(cx)) {
                        // The clone goes now, with a permit an inner layer took.
                        self.set(Sending::Failed);
                        return std::task::Poll::Ready(Err(error));
                    }
                    let request = request
                        .take()
                        .expect("a Ready state holds its request until it is left");
                    let future = service.call(request);
                    self.set(Sending::Called { future });
                }
                SendingProj::Called { future } => return future.poll(cx),
                SendingProj::Failed => panic!("Client::send's future polled after it completed"),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Sending`] within the call's deadline ([`ClientBuilder::deadline`]). Without one it
    /// adds a check of `limit` to each poll that finds the call pending; with one, its timer is
    /// made (boxed, so that calls without a deadline do not carry one) on the first such poll.
    struct Deadline {
        #[pin]
        sending: Sending,
        id: RequestId,
        limit: Option<Duration>,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl Future for Deadline {
    type Output = Result<Response, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        // The request carries the deadline down, from its first poll, as the timer below
        // counts it: the retry layer makes no retry whose wait would end past it, and hands
        // on the error that asked for it (a 429 with a longer `Retry-After`) instead.
        if let Some(limit) = *this.limit
            && this.sleep.is_none()
            && let SendingProj::Ready {
                request: Some(request),
                ..
            } = this.sending.as_mut().project()
        {
            // Tokio's clock, as the timer's: the same under a paused clock in tests.
            let at = tokio::time::Instant::now().into_std() + limit;
            let earliest = request.deadline().map_or(at, |own| own.min(at));
            request.set_deadline(Some(earliest));
        }
        // A response that is ready wins over a deadline that passed at the same poll.
        if let std::task::Poll::Ready(result) = this.sending.as_mut().poll(cx) {
            return std::task::Poll::Ready(result);
        }
        let Some(limit) = *this.limit else {
            return std::task::Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        std::task::ready!(sleep.as_mut().poll(cx));
        // What the call held (a slot, a connection, a place in a queue) goes now, not when
        // the caller drops this future.
        this.sending.set(Sending::Failed);
        std::task::Poll::Ready(Err(deadline_passed(*this.id, limit)))
    }
}

/// The error of a call whose deadline ([`ClientBuilder::deadline`]) passed.
fn deadline_passed(id: RequestId, limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "request {id}: no response within the call's deadline of {limit:?}, retries included"
        ),
    )
}

/// A JSON `POST` to one of the fixed endpoints: the path is static, so it is neither copied
/// nor parsed per request.
fn post_json<T: serde::Serialize>(path: &'static str, body: &T) -> Result<Request, Error> {
    let body = serde_json::to_vec(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("serialising the JSON body for {path}"),
        )
        .with_source(e)
    })?;
    // The transport adds `Content-Type: application/json`.
    Ok(Request::new(http::Method::POST, PathAndQuery::from_static(path)).with_body(body))
}

/// A UTF-8 byte order mark, which a parser may ignore before JSON (RFC 8259, 8.1).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether `body` starts as a JSON object or array does (after a byte order mark and white
/// space).
fn looks_like_json(body: &[u8]) -> bool {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    matches!(body.trim_ascii_start().first(), Some(b'{' | b'['))
}

/// Decodes a successful reply as `T`, unless it is an error object sent with a success status
/// ([`Dialect::is_error_reply`]): read as `T`, whose fields all default, it would be an empty
/// answer. That is an error carrying the provider's message instead
/// ([`Dialect::error_in_answer`]: `RateLimited` for a rate-limit error, `Status` for most).
/// A body that is no JSON object fails naming its content type and, with `quote`, quoting it
/// ([`Error::body_excerpt`], scrubbed of the client's keys): not for a request the caller
/// made, whose own headers may hold secrets the scrubber does not know.
pub(crate) async fn decode_reply<T: serde::de::DeserializeOwned>(
    response: Response,
    dialect: Dialect,
    scrubber: &crate::secrets::Scrubber,
    quote: bool,
) -> Result<T, Error> {
    let id = response.request_id();
    // A complete body was looked at by the layers already; a stream is read whole first.
    let streamed = response.is_stream();
    let error_reply = !streamed && response.is_error_reply(dialect);
    // The head is kept for the message of a body that is no JSON; nothing is copied.
    let (head, body) = response.into_parts();
    let body = body.collect().await?;
    if error_reply || (streamed && dialect.is_error_reply(&body)) {
        let body = scrubber.scrub(body);
        return Err(dialect.error_in_answer(&body, format_args!("request {id}")));
    }
    // A byte order mark before the JSON is ignored (RFC 8259, 8.1), as the look for an error
    // object above ignores it.
    let json = body.strip_prefix(BOM).unwrap_or(&body);
    serde_json::from_slice(json).map_err(|e| {
        // The transport hands on a body in a coding it does not decode (deflate, zstd) as
        // sent, with its header: say so rather than only that it is no JSON.
        let still_encoded = head
            .headers
            .get(http::header::CONTENT_ENCODING)
            .filter(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
            .map(|coding| {
                format!(
                    ", still encoded as {:?}",
                    String::from_utf8_lossy(coding.as_bytes())
                )
            });
        if still_encoded.is_none() && !looks_like_json(json) {
            // No JSON object at all (a proxy's login page, a server's plain text): what it is
            // and says tells more than serde's "expected value at line 1 column 1".
            let content_type: String = head
                .headers
                .get(http::header::CONTENT_TYPE)
                .map_or("none".into(), |v| {
                    String::from_utf8_lossy(v.as_bytes()).chars().take(100).collect()
                });
            let what = if json.trim_ascii().is_empty() {
                "empty"
            } else {
                "no JSON object"
            };
            let excerpt = quote
                .then(|| Error::body_excerpt(&scrubber.scrub(body.clone())))
                .flatten()
                .map(|text| format!(": {text}"))
                .unwrap_or_default();
            return Error::new(
                ErrorKind::BodyDecode,
                format!(
                    "request {id}: the response body is {what} (content-type {content_type}){excerpt}"
                ),
            );
        }
        let encoded = still_encoded.as_deref().unwrap_or_default();
        scrubber.decode_error(
            format_args!("request {id}: decoding the JSON response body{encoded}"),
            &e,
        )
    })
}
