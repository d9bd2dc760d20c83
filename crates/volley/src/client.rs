//! The `Client` facade.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use volley_core::openai::{
    CHAT_COMPLETIONS_PATH, ChatCompletionRequest, ChatCompletionResponse, EMBEDDINGS_PATH,
    EmbeddingsRequest, EmbeddingsResponse, StreamOptions,
};
use volley_core::{ApiError, ApiKey, Error, ErrorKind, Request, Response, tokens};
use volley_transport::{ConnectionStats, Transport};

use crate::ChatStream;

/// The environment variable read for the API key by [`Client::from_env`].
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The environment variable read for the base URL by [`Client::from_env`].
pub const BASE_URL_ENV: &str = "OPENAI_BASE_URL";

/// A client for an OpenAI-compatible API. Cheap to clone; clones share one connection pool,
/// so create one and reuse it.
#[derive(Clone, Debug)]
pub struct Client {
    transport: Transport,
    stream_include_usage: bool,
}

/// Configures a [`Client`]. Setters never fail; [`ClientBuilder::build`] reports problems.
#[must_use]
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    transport: volley_transport::Builder,
    stream_include_usage: bool,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            transport: volley_transport::Builder::new(),
            stream_include_usage: true,
        }
    }
}

impl Client {
    /// A builder with the defaults its setters document.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from the environment: the key from `OPENAI_API_KEY` (none when
    /// unset) and the base URL from `OPENAI_BASE_URL` (OpenAI's when unset).
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().from_env().build()
    }

    /// Sends a chat completion request and returns the whole reply.
    ///
    /// The request is sent as given; set `stream` to `false` or leave it unset.
    ///
    /// # Errors
    /// Any [`Error`]: `Status`/`RateLimited` for HTTP errors with the provider's message,
    /// `BodyDecode` when the reply is not a chat completion.
    pub async fn chat(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, Error> {
        if request.stream == Some(true) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "chat() was given a request with stream: true; use chat_stream()",
            ));
        }
        let estimate = tokens::estimate_request_cost(request);
        let http = post_json(CHAT_COMPLETIONS_PATH, request)?.with_estimated_tokens(estimate);
        self.transport.send(http).await?.json().await
    }

    /// Sends a chat completion request with `stream: true` and returns the chunks as they
    /// arrive. Usage is asked for (`stream_options.include_usage`) unless the request says
    /// otherwise, so the last chunk carries the token counts.
    ///
    /// # Errors
    /// Errors before the first chunk come from this call; errors after it come from the stream.
    pub async fn chat_stream(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatStream, Error> {
        request.stream = Some(true);
        if self.stream_include_usage && request.stream_options.is_none() {
            request.stream_options = Some(StreamOptions {
                include_usage: Some(true),
                ..StreamOptions::default()
            });
        }
        let expect_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let estimate = tokens::estimate_request_cost(&request);
        let http = post_json(CHAT_COMPLETIONS_PATH, &request)?.with_estimated_tokens(estimate);
        let response = self.transport.send(http).await?;
        if !response.is_stream() {
            // A server that ignored `stream: true`, or a gateway's 200 with a JSON error.
            let id = response.request_id();
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let body = response.bytes().await?;
            let mut error = Error::new(
                ErrorKind::BodyDecode,
                format!("request {id}: asked for an event stream, got content type {content_type}"),
            );
            if let Some(api) = ApiError::from_body(&body) {
                error = error.with_api_error(api);
            }
            return Err(error);
        }
        Ok(ChatStream::new(response, expect_usage))
    }

    /// Sends an embeddings request.
    ///
    /// # Errors
    /// As [`Client::chat`].
    pub async fn embeddings(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, Error> {
        let estimate = tokens::estimate_embeddings(request);
        let http = post_json(EMBEDDINGS_PATH, request)?.with_estimated_tokens(estimate);
        self.transport.send(http).await?.json().await
    }

    /// Sends a raw request (any path under the base URL).
    ///
    /// # Errors
    /// Any [`Error`] of the transport.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        self.transport.send(request).await
    }

    /// Connection statistics of the shared pool.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.transport.stats()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// The `tower::Service` underneath, for composing a custom stack.
    pub fn into_service(self) -> Transport {
        self.transport
    }
}

impl ClientBuilder {
    /// Reads `OPENAI_API_KEY` and `OPENAI_BASE_URL` when they are set and not empty.
    pub fn from_env(mut self) -> ClientBuilder {
        if let Some(key) = std::env::var(API_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
        {
            self = self.api_key(key);
        }
        if let Some(url) = std::env::var(BASE_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            self = self.base_url(url.trim());
        }
        self
    }

    /// The base URL, `/v1` included (`https://api.openai.com/v1`).
    ///
    /// Default: `https://api.openai.com/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> ClientBuilder {
        self.transport = self.transport.base_url(url);
        self
    }

    /// The API key, sent as a bearer token. It never appears in `Debug`, errors or logs.
    ///
    /// Default: none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> ClientBuilder {
        self.transport = self.transport.api_key(key);
        self
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

    /// The TCP connect deadline.
    ///
    /// Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.transport = self.transport.connect_timeout(timeout);
        self
    }

    /// HTTP/2 only (ALPN over TLS, h2c prior knowledge over plain text).
    ///
    /// Default: `false`.
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> ClientBuilder {
        self.transport = self.transport.http2_prior_knowledge(enabled);
        self
    }

    /// Allow plain `http://` to a host that is not loopback.
    ///
    /// Default: `false`.
    pub fn allow_plain_http(mut self, allowed: bool) -> ClientBuilder {
        self.transport = self.transport.allow_plain_http(allowed);
        self
    }

    /// Whether [`Client::chat_stream`] asks for usage in the stream
    /// (`stream_options.include_usage`) when the request does not say. Turn it off for
    /// servers that reject `stream_options`.
    ///
    /// Default: `true`.
    pub fn stream_include_usage(mut self, enabled: bool) -> ClientBuilder {
        self.stream_include_usage = enabled;
        self
    }

    /// Replaces the whole transport configuration, for settings this builder does not repeat
    /// (TLS roots, HTTP/2 windows, compression, TCP options).
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
    /// cannot be sent as a header, or missing TLS roots.
    pub fn build(self) -> Result<Client, Error> {
        Ok(Client {
            transport: self.transport.build()?,
            stream_include_usage: self.stream_include_usage,
        })
    }
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
    Ok(
        Request::new(http::Method::POST, PathAndQuery::from_static(path))
            .with_body(body)
            .with_header(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            ),
    )
}
