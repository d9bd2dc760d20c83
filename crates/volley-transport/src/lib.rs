//! # volley-transport
//!
//! The one pooled HTTP client of a Volley process: hyper 1, rustls (ring) for TLS, HTTP/1.1
//! and HTTP/2 (ALPN, or h2c with prior knowledge), gzip and brotli response decoding, bearer
//! authentication, and connection statistics. It implements
//! `tower::Service<volley_core::Request>`, so retry, limits and caching are layered on top by
//! `volley-middleware`; this crate does none of them.
//!
//! Build one [`Transport`] per process and clone it: clones share the pool, the TLS
//! configuration and the counters. A transport per request throws away connections and TLS
//! sessions and is the most common reason clients keep far fewer requests in flight than
//! they were asked to.
//!
//! ```no_run
//! use volley_core::Request;
//! use volley_transport::Transport;
//!
//! # async fn run() -> Result<(), volley_core::Error> {
//! let transport = Transport::builder()
//!     .base_url("https://api.openai.com/v1")
//!     .api_key(std::env::var("OPENAI_API_KEY").unwrap_or_default())
//!     .build()?;
//! let response = transport.send(Request::get("/models")?).await?;
//! let models: serde_json::Value = response.json().await?;
//! println!("{models}");
//! # Ok(())
//! # }
//! ```
//!
//! ## Responses
//! A 2xx or 3xx answer is a [`volley_core::Response`]. Its body is read to the end before the
//! future completes, except for `text/event-stream` answers, which arrive as a stream of
//! chunks. A 4xx or 5xx answer is an [`volley_core::Error`] of kind `Status` (or
//! `RateLimited` for 429) carrying the status, the headers, the parsed provider error and
//! any `Retry-After`.
//!
//! ## Connections
//! HTTP/1.1 (the default) goes through Volley's own pool over hyper's per-connection API: one
//! list of idle connections for the one origin a transport talks to (the most recently used
//! first, those driven by the caller's thread before others'), a connection back
//! in the list as soon as its body ends (or is dropped after its last event), idle ones
//! closed past [`Builder::pool_idle_timeout`] or beyond [`Builder::pool_max_idle_per_host`],
//! and a request that a reused connection closed under before it was written sent again on
//! another. Compared with hyper-util's generic pool it costs 13–16 % less client CPU per
//! request and opens no extra connection when a stream ends (docs/benchmarks.md). HTTP/2
//! ([`Builder::http2`], [`Builder::http2_prior_knowledge`]) uses hyper-util's pool, which
//! multiplexes streams over one connection per host.
//!
//! ## Proxies
//! `HTTPS_PROXY`, `http_proxy` (lower case only, as curl), `ALL_PROXY` and `NO_PROXY` (and
//! their lower-case forms) are honoured by default with curl's rules, read once per process; [`Builder::proxy`],
//! [`Builder::no_proxy`] and [`Builder::proxy_env`] override them. `https://` servers are
//! reached through an HTTP `CONNECT` tunnel with TLS end to end (HTTP/2 works inside it),
//! plain `http://` ones in absolute form; `socks5://` and `socks5h://` proxies work too (RFC
//! 1928, offering "no authentication" and, when the URL has them, RFC 1929's user name and
//! password: the proxy chooses, as with curl). A
//! proxy's password is never shown: errors name the proxy as `http://***@host:port`, and a
//! proxy's refusal (407) is an error of kind `Status` that says so.
//!
//! ## TLS trust
//! The Mozilla roots (feature `webpki-roots`), plus the files `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name when set, or instead of those the CAs given with
//! [`Builder::tls_ca_file`] / [`Builder::tls_ca_pem`]; the operating system's store with
//! [`Builder::tls_native_roots`]; a client certificate for mutual TLS with
//! [`Builder::tls_client_identity_files`]. Verification is always on: a certificate from an
//! unknown CA fails with an error of kind `Tls` naming the host and how to trust its CA.
//!
//! ## Providers
//! [`Provider::Azure`] speaks Azure OpenAI as the official SDK does: the key as `api-key` (or
//! an Entra ID token, [`Builder::azure_ad_token`]), `api-version` on every request
//! ([`Builder::api_version`]), deployment URLs or the v1 API, and an endpoint
//! ([`Builder::azure_endpoint`]) under which each request goes to the deployment its `model`
//! names.
//!
//! ## Features
//! - `webpki-roots` (default): trust the Mozilla root set compiled into the binary.
//! - `native-roots`: allow trusting the operating system's roots
//!   ([`Builder::tls_native_roots`]).
#![deny(missing_docs)]

// The request path, top down: `transport` (the public client), `inner` (the state its
// clones share), `send`
// (one request: URI, headers, the call, the answer), `backend` (which pool), `pool` (own
// HTTP/1.1 pool) or `h2` (hyper-util's, for HTTP/2), `connector` and `tls` (opening
// connections), `body` (streamed bodies), `error` (hyper's and rustls's errors as Volley's).
mod anthropic;
mod backend;
mod body;
mod builder;
mod connector;
mod error;
mod h2;
mod inner;
mod pool;
mod provider;
mod proxy;
mod send;
mod stats;
mod thread_id;
mod tls;
mod transport;

pub use anthropic::AnthropicAuth;
pub use builder::{Builder, DEFAULT_BASE_URL, DEFAULT_MAX_BUFFERED_BYTES};
pub use provider::{
    API_KEY_ENV, API_VERSION_ENV, AZURE_AD_TOKEN_ENV, AZURE_API_KEY_ENV, AZURE_ENDPOINT_ENV,
    BASE_URL_ENV, Provider, azure_base_url,
};
pub use stats::ConnectionStats;
pub use transport::{ResponseFuture, Transport};
