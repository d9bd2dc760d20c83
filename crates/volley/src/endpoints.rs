//! Several endpoints for one client: [`Endpoint`], and building the balanced part of the stack.

use tower::ServiceBuilder;
use tower::util::Either;
use volley_core::{ApiKey, Error, ErrorKind};
use volley_middleware::balance::{Balance, BreakerConfig, EndpointConfig, Hedging};
use volley_middleware::limit::{AdaptiveConcurrencyLimitLayer, ConcurrencyLimitLayer};
use volley_middleware::metrics::{MetricsLayer, Scope};
use volley_middleware::rate_limit::{Limits, LocalLimiter};
use volley_middleware::timeout::TimeoutLayer;
use volley_transport::{Provider, Transport};

use crate::rate_limit::{RateLimitSetting, SlotLimiter};
use crate::stack;

/// One endpoint of a client with several ([`ClientBuilder::endpoint`]): a base URL and,
/// where it differs from the client's, its credential, provider, limits and transport
/// settings, plus its weight and priority group for the balancer.
///
/// Settings left unset are the client builder's: the key, provider, TLS and proxy settings,
/// and the rate limit (each endpoint gets a limiter of its own with the client's limits, or
/// shares the client's ready-made limiter).
///
/// ```no_run
/// use volley::{Client, Endpoint};
///
/// # fn run() -> Result<(), volley::Error> {
/// let client = Client::builder()
///     .endpoint(Endpoint::new("http://10.0.0.1:8000/v1").weight(2))
///     .endpoint(Endpoint::new("http://10.0.0.2:8000/v1"))
///     .endpoint(
///         Endpoint::new("https://api.openai.com/v1")
///             .api_key_env("OPENAI_API_KEY")
///             .priority(1) // only while both replicas are down or saturated
///             .rpm(500),
///     )
///     .allow_plain_http(true)
///     .build()?;
/// # drop(client);
/// # Ok(())
/// # }
/// ```
///
/// [`ClientBuilder::endpoint`]: crate::ClientBuilder::endpoint
#[derive(Clone)]
#[must_use]
pub struct Endpoint {
    url: String,
    name: Option<String>,
    weight: u32,
    priority: u32,
    api_key: Option<ApiKey>,
    api_key_env: Option<String>,
    provider: Option<Provider>,
    rate_limit: Option<RateLimitSetting>,
    concurrency: Option<usize>,
    transport: Option<volley_transport::Builder>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &volley_core::redact::redact_url(&self.url))
            .field("weight", &self.weight)
            .field("priority", &self.priority)
            .field("api_key_env", &self.api_key_env)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint at `base_url` (`/v1` included), weight 1, priority 0, the client's
    /// other settings.
    pub fn new(base_url: impl Into<String>) -> Endpoint {
        Endpoint {
            url: base_url.into(),
            name: None,
            weight: 1,
            priority: 0,
            api_key: None,
            api_key_env: None,
            provider: None,
            rate_limit: None,
            concurrency: None,
            transport: None,
        }
    }

    /// Its name in logs, metrics and reports.
    ///
    /// Default: the URL's `host:port`.
    pub fn name(mut self, name: impl Into<String>) -> Endpoint {
        self.name = Some(name.into());
        self
    }

    /// Its share of traffic relative to the other endpoints of its priority group, all else
    /// equal (at least 1).
    ///
    /// Default: 1.
    pub fn weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight.max(1);
        self
    }

    /// Its fallback group: endpoints of a higher number receive traffic only while every
    /// endpoint of the lower numbers is open (circuit breaker) or saturated.
    ///
    /// Default: 0.
    pub fn priority(mut self, priority: u32) -> Endpoint {
        self.priority = priority;
        self
    }

    /// Its API key. Never shown.
    ///
    /// Default: the client's.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Endpoint {
        self.api_key = Some(key.into());
        self
    }

    /// The environment variable its API key is read from, by [`ClientBuilder::build`]
    /// (which fails, naming the variable, when it is unset or empty).
    ///
    /// Default: none (the client's key).
    ///
    /// [`ClientBuilder::build`]: crate::ClientBuilder::build
    pub fn api_key_env(mut self, variable: impl Into<String>) -> Endpoint {
        self.api_key_env = Some(variable.into());
        self
    }

    /// Its provider's conventions (auth header, Azure routing).
    ///
    /// Default: the client's.
    pub fn provider(mut self, provider: Provider) -> Endpoint {
        self.provider = Some(provider);
        self
    }

    /// Its requests per minute, as [`ClientBuilder::rpm`](crate::ClientBuilder::rpm); its
    /// tokens per minute stay the client's unless [`tpm`](Endpoint::tpm) sets them.
    ///
    /// Default: the client's rate limit, in a limiter of its own.
    pub fn rpm(mut self, requests_per_minute: u32) -> Endpoint {
        self.rate_limit = Some(self.rate_limit.unwrap_or_default().rpm(requests_per_minute));
        self
    }

    /// Its tokens per minute, as [`ClientBuilder::tpm`](crate::ClientBuilder::tpm); its
    /// requests per minute stay the client's unless [`rpm`](Endpoint::rpm) sets them.
    ///
    /// Default: the client's rate limit, in a limiter of its own.
    pub fn tpm(mut self, tokens_per_minute: u64) -> Endpoint {
        self.rate_limit = Some(self.rate_limit.unwrap_or_default().tpm(tokens_per_minute));
        self
    }

    /// Its whole rate limit, as [`ClientBuilder::rate_limits`](crate::ClientBuilder::rate_limits).
    ///
    /// Default: the client's rate limit, in a limiter of its own.
    pub fn rate_limits(mut self, limits: Limits) -> Endpoint {
        self.rate_limit = Some(self.rate_limit.unwrap_or_default().limits(limits));
        self
    }

    /// A ready-made limiter: endpoints given clones of one limiter share its budget (one
    /// credential at one provider behind two URLs, say).
    ///
    /// Default: the client's rate limit, in a limiter of its own.
    pub fn rate_limiter(mut self, limiter: LocalLimiter) -> Endpoint {
        let counts_tokens = limiter.limits().tokens_per_minute().is_some();
        self.rate_limit = Some(self.rate_limit.unwrap_or_default().limiter(
            SlotLimiter::from(limiter),
            counts_tokens,
            "Endpoint::rate_limiter(..)",
        ));
        self
    }

    /// The most requests in flight at this endpoint; the client's
    /// [`concurrency`](crate::ClientBuilder::concurrency) stays the ceiling over all.
    ///
    /// Default: none (only the ceiling).
    pub fn concurrency(mut self, max: usize) -> Endpoint {
        self.concurrency = Some(max);
        self
    }

    /// Its whole transport configuration (TLS, proxy, HTTP/2, headers); the URL, key and
    /// provider set on this endpoint still apply on top, and where neither it nor this
    /// endpoint sets a key or a provider, the client's apply.
    ///
    /// Default: the client's.
    pub fn transport(mut self, transport: volley_transport::Builder) -> Endpoint {
        self.transport = Some(transport);
        self
    }

    /// The URL given to [`Endpoint::new`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client's own base URL as an endpoint (a hedging client without endpoints).
    pub(crate) fn inherited() -> Endpoint {
        Endpoint::new(String::new())
    }

    /// This endpoint's transport builder: `client`'s unless its own, with its URL (the
    /// client's when [`inherited`](Endpoint::inherited)), key and provider.
    pub(crate) fn transport_builder(
        &self,
        client: &volley_transport::Builder,
    ) -> Result<volley_transport::Builder, Error> {
        // An endpoint's own transport keeps the client's key and provider where it sets none.
        let mut builder = match &self.transport {
            Some(own) => own.clone().inherit_credential(client),
            None => client.clone(),
        };
        if !self.url.is_empty() {
            builder = builder.base_url(self.url.clone());
        }
        if let Some(provider) = self.provider {
            builder = builder.provider(provider);
        }
        if let Some(variable) = &self.api_key_env {
            let key = std::env::var(variable)
                .ok()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!(
                            "endpoint {}: its API key variable {variable} is unset or empty",
                            self.label()
                        ),
                    )
                })?;
            builder = builder.api_key(key);
        }
        if let Some(key) = &self.api_key {
            builder = builder.api_key(key.clone());
        }
        Ok(builder)
    }

    /// The name, or `host:port` of the URL.
    fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if self.url.is_empty() {
            return "base URL".to_owned();
        }
        host_port(&self.url)
    }
}

/// `host:port` of `url`, or the URL without its secrets when it has no host.
///
/// Read from the redacted URL: a user-info with a `/` in it (`https://user:pa/ss@host`) ends
/// the authority early for a URI parser, which would take part of the secret for the host.
fn host_port(url: &str) -> String {
    let redacted = volley_core::redact::redact_url(url);
    match redacted.parse::<http::Uri>() {
        Ok(uri) => match (uri.host(), uri.port_u16()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => redacted,
        },
        Err(_) => redacted,
    }
}

/// What the client keeps of a balanced stack besides the service.
pub(crate) struct Balanced {
    pub(crate) balance: Balance<stack::Endpoint>,
    /// The first endpoint's transport: the client's `transport()`, `base_url()` and credential.
    pub(crate) first: Transport,
    /// The other endpoints' transports.
    pub(crate) others: std::sync::Arc<[Transport]>,
    /// Whether any endpoint's limiter counts tokens.
    pub(crate) estimate_tokens: bool,
    /// Every endpoint's limiter, in order.
    pub(crate) limiters: Vec<SlotLimiter>,
    /// Whether the endpoints' rate limiters differ (not one ready-made limiter all inherit):
    /// a request one of them held back may go through another's at once.
    pub(crate) separate_limiters: bool,
}

/// The parts of the client builder every endpoint inherits.
pub(crate) struct Inherited<'a> {
    pub(crate) transport: &'a volley_transport::Builder,
    pub(crate) rate_limit: &'a RateLimitSetting,
    pub(crate) ceiling: &'a Either<ConcurrencyLimitLayer, AdaptiveConcurrencyLimitLayer>,
    pub(crate) timeouts: &'a TimeoutLayer,
    pub(crate) breaker: &'a BreakerConfig,
    pub(crate) hedging: Option<Hedging>,
}

/// Builds each endpoint's stack and the balancer over them.
///
/// # Errors
/// `ErrorKind::Config` for an endpoint whose transport or rate limit is invalid, naming it.
pub(crate) fn build(endpoints: Vec<Endpoint>, inherited: Inherited<'_>) -> Result<Balanced, Error> {
    let mut services = Vec::with_capacity(endpoints.len());
    let mut first = None;
    let mut others = Vec::new();
    let mut estimate_tokens = false;
    let mut limiters = Vec::new();
    // Endpoints with a limiter of their own (one built for each from limits, or given to the
    // endpoint), and whether any inherits the client's ready-made limiter (one for all).
    let mut own_limiters = 0_usize;
    let mut inherit_one = false;
    for endpoint in endpoints {
        let label = endpoint.label();
        let context = |e: Error| {
            Error::new(ErrorKind::Config, format!("endpoint {label}: {e}")).with_source(e)
        };
        let transport = endpoint
            .transport_builder(inherited.transport)?
            .build()
            .map_err(context)?;
        // The client's own URL is named once it is known.
        let label = if endpoint.url.is_empty() && endpoint.name.is_none() {
            host_port(transport.base_url())
        } else {
            label
        };
        let context = |e: Error| {
            Error::new(ErrorKind::Config, format!("endpoint {label}: {e}")).with_source(e)
        };
        let setting = match endpoint.rate_limit.clone() {
            Some(own) => own.over(inherited.rate_limit),
            None => inherited.rate_limit.clone(),
        };
        if endpoint.rate_limit.is_none()
            && matches!(inherited.rate_limit, RateLimitSetting::Limiter { .. })
        {
            inherit_one = true;
        } else {
            own_limiters += 1;
        }
        let (rate_limit, counts_tokens) = setting.into_layer().map_err(context)?;
        estimate_tokens |= counts_tokens;
        limiters.extend(rate_limit.as_ref().map(|layer| layer.limiter().clone()));
        if endpoint.concurrency == Some(0) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("endpoint {label}: concurrency must be at least 1"),
            ));
        }
        if let Some(n) = endpoint
            .concurrency
            .filter(|&n| n > crate::client::MAX_CONCURRENCY)
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "endpoint {label}: concurrency {n} is above the largest allowed, {}",
                    crate::client::MAX_CONCURRENCY
                ),
            ));
        }
        let service: stack::Endpoint = ServiceBuilder::new()
            .option_layer(rate_limit)
            .option_layer(endpoint.concurrency.map(ConcurrencyLimitLayer::new))
            .layer(inherited.ceiling.clone())
            .layer(MetricsLayer::new().scope(Scope::Attempt))
            .layer(*inherited.timeouts)
            .service(transport.clone());
        if first.is_none() {
            first = Some(transport);
        } else {
            others.push(transport);
        }
        let config = EndpointConfig::new(label)
            .weight(endpoint.weight)
            .priority(endpoint.priority)
            .max_in_flight(endpoint.concurrency);
        services.push((config, service));
    }
    let first = first.ok_or_else(|| Error::new(ErrorKind::Config, "no endpoint given"))?;
    Ok(Balanced {
        balance: Balance::with_hedging(services, inherited.breaker.clone(), inherited.hedging),
        first,
        others: others.into(),
        estimate_tokens,
        limiters,
        separate_limiters: own_limiters + usize::from(inherit_one) > 1,
    })
}

impl Endpoint {
    /// The settings of a client whose only endpoint is this one: its transport builder, its
    /// rate limit and its own concurrency cap.
    pub(crate) fn into_single(
        self,
        client: &volley_transport::Builder,
        rate_limit: &RateLimitSetting,
    ) -> Result<(volley_transport::Builder, RateLimitSetting, Option<usize>), Error> {
        let transport = self.transport_builder(client)?;
        let rate_limit = match self.rate_limit {
            Some(own) => own.over(rate_limit),
            None => rate_limit.clone(),
        };
        Ok((transport, rate_limit, self.concurrency))
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;
    use crate::openai::{ChatCompletionRequest, ChatMessage};
    use crate::{Client, Endpoint};
    use volley_mock::{MockConfig, MockServer, RateLimits};

    /// A request may go to any endpoint, so a token limit learned by any of them (here the
    /// second's) asks for token estimates, not only the first's.
    #[tokio::test]
    async fn a_token_limit_learned_by_any_endpoint_asks_for_estimates() {
        let plain = MockServer::start(MockConfig::default()).await.unwrap();
        let limited = MockServer::start(MockConfig {
            rate_limits: RateLimits {
                tpm: Some(10_000_000),
                ..RateLimits::NONE
            },
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let client = Client::builder()
            .endpoint(Endpoint::new(plain.url()).name("plain"))
            .endpoint(Endpoint::new(limited.url()).name("limited"))
            .build()
            .unwrap();
        let chat = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")]);
        for _ in 0..40 {
            client.chat(&chat).await.unwrap();
        }
        assert!(plain.stats().requests_total > 0 && limited.stats().requests_total > 0);
        assert_eq!(client.learned_rate_limits(), (None, None), "the first's");
        assert_eq!(client.estimate(|| 7), 7, "the second learned a token limit");
    }

    #[test]
    fn an_endpoints_label_never_holds_its_credentials() {
        assert_eq!(host_port("https://api.example:8443/v1"), "api.example:8443");
        assert_eq!(host_port("https://api.example/v1"), "api.example");
        for url in [
            "https://u:8443/TOKEN@api.example/v1",
            "https://ghp_abc/def@gw/v1",
            "https://user:secret@api.example/v1",
        ] {
            let label = host_port(url);
            for secret in ["8443", "TOKEN", "ghp_abc", "def", "user", "secret"] {
                assert!(!label.contains(secret), "{url} -> {label}");
            }
        }
    }
}
