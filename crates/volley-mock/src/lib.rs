//! An OpenAI-compatible mock server for Volley's tests and benchmarks.
//!
//! [`MockServer`] listens on a real TCP socket and answers the OpenAI API with deterministic
//! content, configurable latency, fault injection and server-side statistics, so clients can
//! be tested end to end and load-tested without a provider. It must never sit in a production
//! path.
//!
//! # Overview
//!
//! ```no_run
//! use std::time::Duration;
//! use volley_mock::{Latency, MockConfig, MockServer};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let server = MockServer::start(MockConfig {
//!     latency: Latency::Fixed(Duration::from_millis(200)),
//!     faults: "429=0.05".parse().unwrap(),
//!     ..MockConfig::default()
//! })
//! .await?;
//! let base_url = server.url(); // "http://127.0.0.1:PORT/v1"
//! // ... point a client at `base_url` ...
//! let stats = server.stats();
//! println!("{} requests, peak {} in flight", stats.requests_total, stats.peak_in_flight);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Endpoints
//!
//! Paths are accepted with and without the `/v1` prefix, and in Azure OpenAI's shapes:
//! `/openai/deployments/NAME/chat/completions?api-version=…` (without `api-version`, a `404`
//! as from Azure; with a version before `2024-09-01`, a chat request that has
//! `stream_options` is a `400`, "Unrecognized request argument supplied: stream_options", as
//! from Azure) and `/openai/v1/…`. [`MockConfig::require_api_key`] accepts the key as a
//! bearer token, in Azure's `api-key` header on `/openai/…` paths, or in Anthropic's
//! `x-api-key` on `/v1/messages` and `/v1/models`. Every OpenAI answer has an `x-request-id`, and usage has
//! its `prompt_tokens_details` and `completion_tokens_details` (zeros), as OpenAI's do.
//! [`MockServer::start_tls`] serves HTTPS with a
//! certificate the test made (see [`MockTls`]; optionally requiring client certificates); the
//! default is plain HTTP.
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | a `chat.completion`, or with `"stream": true` an SSE stream of `chat.completion.chunk`s: one per output token (the first with `delta.role`, the last with `finish_reason`), then a usage chunk (`choices: []`) when `stream_options.include_usage` is true, then `data: [DONE]` |
//! | `POST /v1/embeddings` | a `list` of unit vectors, one per input (a string, strings, token ids or token-id arrays); equal inputs get equal vectors; `dimensions` and `encoding_format: "base64"` (little-endian `f32`s) are honoured |
//! | `GET /v1/models` | a `list` of three models; asked with `anthropic-version`, Anthropic's list of two (`type`, `id`, `display_name`, `created_at`; `has_more`, `first_id`, `last_id`) |
//! | `GET /v1/models/{id}` | that model, or a `404` `model_not_found` (with `anthropic-version`: from Anthropic's list, or its `not_found_error`) |
//! | `POST /v1/completions` | a legacy `text_completion` (`prompt`, `max_tokens`, `n`): `n` choices for each prompt (a prompt array of strings or of token arrays is that many), indexed in prompt order |
//! | `POST /v1/responses` | a Responses API `response` with one output message (`input`, `max_output_tokens`: then `"status": "incomplete"`) |
//! | `POST /v1/moderations` | one unflagged result per input, with `category_applied_input_types` (`["text"]`) |
//! | `POST /v1/messages` | Anthropic's Messages API: a `message`, or with `"stream": true` its event stream (`message_start`, `content_block_start`, `ping`, `content_block_delta`s, `content_block_stop`, `message_delta` with usage, `message_stop`); `anthropic-version` is required, and every answer has a `request-id` |
//! | `GET /stats` | the [`Stats`] as JSON (never authenticated, faulted or counted) |
//! | `POST /stats/reset` | starts a new statistics window (and clears the journal); answers the last [`Stats`] of the old one |
//! | `GET /journal` | with [`MockConfig::journal`], the `x-client-request-id` of every API request in arrival order, as a JSON array of strings (see [`MockServer::journal`]); a `404` when the journal is off |
//!
//! Legacy completions, responses and moderations are answered whole: `"stream": true` there is
//! a `400`. Chat completions read only `model`, `messages`, `max_tokens` /
//! `max_completion_tokens`, `n`, `stream` and `stream_options.include_usage`
//! (`stream_options` without `"stream": true` is a `400`, as from OpenAI). Their content is `token0 token1 …`, as many
//! tokens as [`MockConfig::output_tokens`] says, capped by the request's maximum
//! (`finish_reason` is then `"length"`, else `"stop"`; a maximum of 0 is a `400`
//! `integer_below_min_value`, as from OpenAI). `n` (1 to 128) gives that many choices
//! with the same content (streamed, each chunk carries a delta for every choice), and
//! `completion_tokens` counts them all. `prompt_tokens` is the text of the message contents in
//! bytes divided by four, rounded up.
//!
//! Errors have OpenAI's shape, `{"error":{"message","type","param","code"}}`: `400` for
//! invalid JSON or a missing `model` / `messages` / `input`, `401` (`invalid_api_key`) when
//! [`MockConfig::require_api_key`] is set and the bearer token differs (without a code, and
//! OpenAI's "You didn't provide an API key", when there is none), `404`
//! (`unknown_url`), `405` with `Allow`, `413` above 32 MiB. Under `/v1/messages` every error
//! has Anthropic's shape instead, `{"type":"error","error":{"type","message"}}`
//! (`authentication_error`, `not_found_error`, `invalid_request_error`,
//! `request_too_large`, and `529` `overloaded_error` where the OpenAI routes answer over
//! capacity with `503`).
//!
//! ## Timing
//!
//! A non-streaming response is sent [`MockConfig::latency`] after the request body has been
//! read. A stream sends its head at once, its first chunk after [`MockConfig::ttft`] and each
//! further token chunk [`MockConfig::inter_token`] after the previous one. Each is a
//! [`Latency`] model drawn per request (per chunk for `inter_token`) from an RNG seeded by
//! [`MockConfig::seed`] and the request's arrival index, so a run is reproducible for a given
//! arrival order.
//!
//! ## Faults
//!
//! [`MockConfig::faults`] injects failures at random (see [`FaultKind`] for each), and two
//! request headers make a single request deterministic:
//!
//! - `x-mock-fault: 429|500|503|reset|stall|cut|malformed` ([`FAULT_HEADER`]) forces that fault;
//! - `x-mock-latency: <latency>` ([`LATENCY_HEADER`]), in the [`Latency`] grammar (e.g.
//!   `250ms`), replaces the latency and the time to first token of that request.
//!
//! An invalid value of either header gets a `400`. Faults and latency apply to every API route
//! (chat and legacy completions, responses, embeddings, moderations, models, messages), after
//! authentication.
//!
//! ## Rate limits
//!
//! With [`MockConfig::rate_limits`] the server enforces requests and tokens per minute as a
//! provider does: token buckets refilled continuously (by default holding one second's worth),
//! a `429` with OpenAI's `rate_limit_exceeded` body, `Retry-After` and `retry-after-ms` when a
//! request does not fit, and OpenAI's `x-ratelimit-limit-*`, `-remaining-*` and `-reset-*`
//! headers on every API response (on Azure OpenAI's paths, `/openai/…`, only the
//! `x-ratelimit-remaining-*` ones, as Azure sends them). See [`RateLimits`] for what a request
//! costs.
//!
//! ## Statistics
//!
//! [`MockServer::stats`] and `GET /stats` report requests, responses by status, faults, the
//! requests in flight (received, response not yet complete) and their peak, `429`s from the rate
//! limiter, and a timeline of 100 ms buckets (each with the requests in flight at its end and
//! their time-weighted mean over it). The request path only touches atomics, and reads the
//! clock when a request arrives and when its response ends.
//!
//! ## Protocols
//!
//! HTTP/1.1 and HTTP/2 with prior knowledge (h2c) share the port; HTTP/2 connections allow
//! 100 000 concurrent streams. Accepted sockets get `TCP_NODELAY`; the listen backlog is 4096.
//!
//! # Features
//!
//! None.

#![deny(missing_docs)]

mod azure;
mod body;
mod capacity;
mod config;
mod conn;
mod encoding;
mod error;
mod faults;
mod latency;
mod openai;
mod rate_limit;
mod server;
mod service;
mod shared;
mod stats;
mod tls;

pub use capacity::Capacity;
pub use config::{MAX_EMBEDDING_DIMS, MAX_OUTPUT_TOKENS, MockConfig, OutputTokens};
pub use error::ConfigError;
pub use faults::{FaultKind, Faults};
pub use latency::Latency;
pub use rate_limit::RateLimits;
pub use server::MockServer;
pub use stats::{
    FaultCounts, LatencySummary, Stats, TIMELINE_BUCKET, TIMELINE_CAPACITY, TimelineBucket,
};
pub use tls::MockTls;

/// The request header that forces a fault on one request: `x-mock-fault`, with a value of
/// `429`, `500`, `503`, `reset`, `stall`, `cut` or `malformed` (see [`FaultKind`]).
pub const FAULT_HEADER: &str = "x-mock-fault";

/// The request header that sets one request's latency (and time to first token):
/// `x-mock-latency`, with a value in the [`Latency`] grammar such as `250ms`.
pub const LATENCY_HEADER: &str = "x-mock-latency";
