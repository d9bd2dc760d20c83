//! # volley
//!
//! Call LLM HTTP APIs (OpenAI-compatible first) at very high concurrency: every configured
//! slot busy, no request lost, the provider's limits respected, and a clear record of what
//! happened.
//!
//! This crate is the facade most users depend on. [`Client`] wraps the pooled transport of
//! [`volley_transport`] and offers typed calls ([`Client::chat`], [`Client::chat_stream`],
//! [`Client::embeddings`]) and a raw [`Client::send`]. Retry, rate limits, timeouts, metrics
//! and the cache are tower layers from `volley-middleware` (re-exported as [`middleware`]),
//! composed by [`ClientBuilder`] with defaults that suit a batch job; [`Client::into_service`]
//! hands the stack back for further wrapping. [`Client::fan_out`] runs many requests with
//! bounded concurrency, and [`blocking::Client`] does the same from synchronous code.
//!
//! The engines built on this facade live in their own crates, so a program that only calls an
//! API compiles neither: `volley-batch` (the batch engine behind `volley run`) and
//! `volley-bench` (the load tester behind `volley bench`).
//!
//! Create one `Client` and clone it wherever it is needed: clones share one connection pool.
//!
//! ```no_run
//! use volley::Client;
//! use volley::openai::{ChatCompletionRequest, ChatMessage};
//!
//! # async fn run() -> Result<(), volley::Error> {
//! let client = Client::from_env()?; // OPENAI_API_KEY, OPENAI_BASE_URL
//! let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello!")]);
//! let reply = client.chat(&request).await?;
//! println!("{}", reply.text().unwrap_or_default());
//! # Ok(())
//! # }
//! ```
//!
//! ## Several endpoints
//!
//! Replicas of a self-hosted model, two regions, or a fallback provider: give each URL as an
//! [`Endpoint`] ([`ClientBuilder::endpoint`]) instead of one `base_url`. Each request goes to
//! one endpoint, chosen by priority group, load (power of two choices over Peak-EWMA latency
//! × requests in flight) and weight; each endpoint has its own rate limit, transport and
//! credential under the one concurrency ceiling, and a circuit breaker ([`BreakerConfig`])
//! with an active health check while open; a retry goes to another endpoint.
//! [`Client::endpoint_stats`] reports each one. With one endpoint none of this is in the
//! stack.
//!
//! ## Shared limits and cache (feature `redis`)
//!
//! Many processes (or machines) that call one provider with one key share its limits. With
//! the `redis` feature they can share a rate limiter and a cache through one Redis: see
//! `ClientBuilder::shared_rate_limiter`, [`ClientBuilder::cache_store`] and the `redis`
//! module. Key the limiter with [`ClientBuilder::credential_id`], the id the cache uses.
//!
//! ## Features
//! - `webpki-roots` (default): trust the Mozilla root set compiled in.
//! - `native-roots`: allow trusting the operating system's root store.
//! - `tiktoken`: exact token counts (`volley::core::tokens::exact`).
//! - `redis`: a rate limiter and a cache shared through Redis (module `redis`).
#![deny(missing_docs)]

#[cfg(feature = "redis")]
mod any_limiter;
pub mod blocking;
mod chat_stream;
mod client;
mod endpoints;
mod fan_out;
mod messages;
mod rate_limit;
mod secrets;
mod stack;

pub use chat_stream::ChatStream;
pub use client::{
    API_KEY_ENV, API_VERSION_ENV, AZURE_AD_TOKEN_ENV, AZURE_API_KEY_ENV, AZURE_ENDPOINT_ENV,
    BASE_URL_ENV, Client, ClientBuilder, DEFAULT_CONCURRENCY, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_STREAM_TIMEOUT, DEFAULT_TIMEOUT, MAX_CONCURRENCY,
};
pub use endpoints::Endpoint;
pub use messages::MessageStream;
pub use volley_core::{
    ApiError, ApiKey, Body, BodyStream, Dialect, Error, ErrorKind, ErrorReport, Request, RequestId,
    Response, Timings, anthropic, openai, sse,
};
pub use volley_middleware::balance::{BreakerConfig, BreakerState, EndpointStats, Hedging};
pub use volley_transport::{ConnectionStats, Provider};

/// A rate limiter and a cache shared through Redis by many processes (feature `redis`).
///
/// [`RedisLimiter`](redis::RedisLimiter) goes to [`ClientBuilder::shared_rate_limiter`],
/// [`RedisStore`](redis::RedisStore) to [`ClientBuilder::cache_store`]; both take
/// [`RedisOptions`](redis::RedisOptions) (the URL, timeouts; a password in the URL never
/// appears in messages).
#[cfg(feature = "redis")]
pub mod redis {
    pub use volley_middleware::cache::RedisStore;
    pub use volley_middleware::rate_limit::{FailureMode, RedisLimiter, SharedLimits};
    pub use volley_middleware::redis::{RedisOptions, redacted};
}

/// The README's Rust examples, compiled as doc tests so they cannot rot (they use the
/// `redis` feature, which the workspace's test run turns on).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The layers below the facade, for custom stacks.
pub mod core {
    pub use volley_core::*;
}

/// The pooled HTTP transport, for custom stacks.
pub mod transport {
    pub use volley_transport::*;
}

/// The tower layers the client is built from, for custom stacks.
pub mod middleware {
    pub use volley_middleware::*;
}
