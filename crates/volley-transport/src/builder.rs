//! The transport's builder and its configuration.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use volley_core::cache_key::CredentialId;
use volley_core::{ApiKey, Error, ErrorKind};

use crate::backend::Backend;
use crate::connector::Counting;
use crate::inner::{Inner, joined_paths};
use crate::pool::H1Pool;
use crate::stats::Counters;
use crate::tls::{self, TlsRoots};
use crate::transport::Transport;

/// The base URL used when none is set: OpenAI's API, `/v1` included.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Configures and builds a [`Transport`]. Setters never fail; problems are reported by
/// [`Builder::build`].
#[must_use]
#[derive(Clone)]
pub struct Builder {
    config: Config,
}

#[derive(Clone)]
struct Config {
    base_url: String,
    api_key: Option<ApiKey>,
    user_agent: String,
    default_headers: HeaderMap,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tcp_nodelay: bool,
    tcp_keepalive: Option<Duration>,
    http2_prior_knowledge: bool,
    http2: bool,
    http2_initial_stream_window_size: Option<u32>,
    http2_initial_connection_window_size: Option<u32>,
    http2_adaptive_window: bool,
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
    http2_keep_alive_while_idle: bool,
    gzip: bool,
    brotli: bool,
    tls: TlsRoots,
    allow_plain_http: bool,
    max_error_body_bytes: usize,
    max_body_bytes: usize,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the key are left out: a default header may be a credential
        // (`api-key`, `x-api-key`).
        let c = &self.config;
        f.debug_struct("Builder")
            .field("api_key", &c.api_key.as_ref().map(|_| "***"))
            .field(
                "default_headers",
                &c.default_headers.keys().collect::<Vec<_>>(),
            )
            .field("http2", &c.http2)
            .field("http2_prior_knowledge", &c.http2_prior_knowledge)
            .field("pool_max_idle_per_host", &c.pool_max_idle_per_host)
            .field("pool_idle_timeout", &c.pool_idle_timeout)
            .field("connect_timeout", &c.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A builder with defaults (base URL [`DEFAULT_BASE_URL`], no key).
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults each setter documents.
    pub fn new() -> Builder {
        Builder {
            config: Config {
                base_url: DEFAULT_BASE_URL.to_owned(),
                api_key: None,
                user_agent: concat!("volley/", env!("CARGO_PKG_VERSION")).to_owned(),
                default_headers: HeaderMap::new(),
                pool_max_idle_per_host: usize::MAX,
                pool_idle_timeout: Some(Duration::from_secs(90)),
                connect_timeout: Some(Duration::from_secs(10)),
                tcp_nodelay: true,
                tcp_keepalive: Some(Duration::from_secs(60)),
                http2_prior_knowledge: false,
                http2: false,
                http2_initial_stream_window_size: None,
                http2_initial_connection_window_size: None,
                http2_adaptive_window: false,
                http2_keep_alive_interval: None,
                http2_keep_alive_timeout: Duration::from_secs(20),
                http2_keep_alive_while_idle: false,
                gzip: true,
                brotli: true,
                tls: TlsRoots {
                    webpki: cfg!(feature = "webpki-roots"),
                    native: false,
                    extra_der: Vec::new(),
                },
                allow_plain_http: false,
                max_error_body_bytes: 64 * 1024,
                max_body_bytes: 64 * 1024 * 1024,
            },
        }
    }

    /// The base URL every request path is appended to, `/v1` included as in the OpenAI
    /// convention: `https://api.openai.com/v1` + `/chat/completions`.
    ///
    /// Default: [`DEFAULT_BASE_URL`].
    pub fn base_url(mut self, url: impl Into<String>) -> Builder {
        self.config.base_url = url.into();
        self
    }

    /// The API key, sent as `Authorization: Bearer …` (marked sensitive, so hyper and `http`
    /// never print it). A request that sets its own `Authorization` header keeps it.
    ///
    /// Default: none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Builder {
        self.config.api_key = Some(key.into());
        self
    }

    /// The `User-Agent` header.
    ///
    /// Default: `volley/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Builder {
        self.config.user_agent = user_agent.into();
        self
    }

    /// A header sent with every request unless the request sets it itself (an
    /// `OpenAI-Organization`, say).
    ///
    /// Default: none.
    pub fn default_header(mut self, name: HeaderName, value: HeaderValue) -> Builder {
        self.config.default_headers.insert(name, value);
        self
    }

    /// The most idle connections kept per host. Keep it at least at your concurrency, or
    /// connections are closed and opened again under load.
    ///
    /// Default: unlimited.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Builder {
        self.config.pool_max_idle_per_host = max;
        self
    }

    /// How long an idle connection stays in the pool. `None` keeps it forever.
    ///
    /// Default: 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Builder {
        self.config.pool_idle_timeout = timeout;
        self
    }

    /// The deadline for establishing a TCP connection. `None` waits for the operating system.
    ///
    /// Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Builder {
        self.config.connect_timeout = timeout;
        self
    }

    /// Whether to set `TCP_NODELAY` (no Nagle delay on small writes).
    ///
    /// Default: `true`.
    pub fn tcp_nodelay(mut self, enabled: bool) -> Builder {
        self.config.tcp_nodelay = enabled;
        self
    }

    /// The idle time before TCP keep-alive probes start. `None` turns keep-alive off.
    ///
    /// Default: 60 s.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Builder {
        self.config.tcp_keepalive = idle;
        self
    }

    /// Speak HTTP/2 only: over TLS by ALPN `h2`, and over plain `http://` with prior knowledge
    /// (h2c), for servers that want it.
    ///
    /// The same caveat as [`Builder::http2`] applies: one connection per host carries every
    /// request.
    ///
    /// Default: `false` (HTTP/1.1).
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Builder {
        self.config.http2_prior_knowledge = enabled;
        self
    }

    /// Offer HTTP/2 as well as HTTP/1.1 in TLS ALPN.
    ///
    /// Off by default on purpose: the pool keeps ONE HTTP/2 connection per host, and requests
    /// beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100–256 behind CDNs) wait
    /// in a queue inside that connection, so at high concurrency fewer requests are in flight
    /// than asked for. Over HTTP/1.1 each in-flight request has its own connection.
    ///
    /// Default: `false` (ALPN offers only `http/1.1`).
    pub fn http2(mut self, enabled: bool) -> Builder {
        self.config.http2 = enabled;
        self
    }

    /// The HTTP/2 initial stream window size, in bytes.
    ///
    /// Default: hyper's (64 KiB minus one byte, per the HTTP/2 spec).
    pub fn http2_initial_stream_window_size(mut self, size: Option<u32>) -> Builder {
        self.config.http2_initial_stream_window_size = size;
        self
    }

    /// The HTTP/2 initial connection window size, in bytes.
    ///
    /// Default: hyper's (64 KiB minus one byte).
    pub fn http2_initial_connection_window_size(mut self, size: Option<u32>) -> Builder {
        self.config.http2_initial_connection_window_size = size;
        self
    }

    /// Whether HTTP/2 windows adapt to the measured bandwidth-delay product (overrides the two
    /// window sizes).
    ///
    /// Default: `false`.
    pub fn http2_adaptive_window(mut self, enabled: bool) -> Builder {
        self.config.http2_adaptive_window = enabled;
        self
    }

    /// How often to send HTTP/2 PING frames to keep connections alive. `None` sends none.
    ///
    /// Default: `None`.
    pub fn http2_keep_alive_interval(mut self, interval: Option<Duration>) -> Builder {
        self.config.http2_keep_alive_interval = interval;
        self
    }

    /// How long to wait for a PING acknowledgement before closing the connection.
    ///
    /// Default: 20 s.
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Builder {
        self.config.http2_keep_alive_timeout = timeout;
        self
    }

    /// Whether to send PINGs on connections with no open stream.
    ///
    /// Default: `false`.
    pub fn http2_keep_alive_while_idle(mut self, enabled: bool) -> Builder {
        self.config.http2_keep_alive_while_idle = enabled;
        self
    }

    /// Whether to ask for and decode gzip-compressed responses.
    ///
    /// Default: `true`.
    pub fn gzip(mut self, enabled: bool) -> Builder {
        self.config.gzip = enabled;
        self
    }

    /// Whether to ask for and decode brotli-compressed responses.
    ///
    /// Default: `true`.
    pub fn brotli(mut self, enabled: bool) -> Builder {
        self.config.brotli = enabled;
        self
    }

    /// Whether to trust the Mozilla root certificates compiled in (feature `webpki-roots`).
    ///
    /// Default: `true` when the feature is on.
    pub fn tls_webpki_roots(mut self, enabled: bool) -> Builder {
        self.config.tls.webpki = enabled;
        self
    }

    /// Whether to trust the operating system's root certificates (feature `native-roots`).
    ///
    /// Default: `false`.
    pub fn tls_native_roots(mut self, enabled: bool) -> Builder {
        self.config.tls.native = enabled;
        self
    }

    /// Trusts one more root certificate, DER-encoded (a private CA, a test server).
    ///
    /// Default: none.
    pub fn tls_add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Builder {
        self.config.tls.extra_der.push(der.into());
        self
    }

    /// Allow plain `http://` to a host that is not loopback. Without it, [`Builder::build`]
    /// refuses such a base URL: the API key and prompts would cross the network in clear text.
    ///
    /// Default: `false` (plain HTTP only to `localhost`, `127.0.0.0/8` and `[::1]`).
    pub fn allow_plain_http(mut self, allowed: bool) -> Builder {
        self.config.allow_plain_http = allowed;
        self
    }

    /// The most bytes of an error response's body read to find the provider's error message.
    ///
    /// Default: 64 KiB.
    pub fn max_error_body_bytes(mut self, max: usize) -> Builder {
        self.config.max_error_body_bytes = max;
        self
    }

    /// The most bytes of a successful, non-streaming response body (after decompression).
    /// A larger body fails with `ErrorKind::BodyDecode` instead of exhausting memory; a small
    /// compressed body can expand enormously. Streams are bounded per event by the SSE
    /// decoder's limits instead.
    ///
    /// Default: 64 MiB.
    pub fn max_body_bytes(mut self, max: usize) -> Builder {
        self.config.max_body_bytes = max;
        self
    }

    /// Builds the transport: parses the base URL, builds the TLS configuration and the pool.
    ///
    /// Must be called inside a Tokio runtime only when requests are sent, not to build.
    ///
    /// # Errors
    /// `ErrorKind::Config` when the base URL is not an absolute `http`/`https` URL, when it is
    /// plain `http://` to a remote host without [`Builder::allow_plain_http`], when the API key
    /// or user agent cannot be sent as a header, or when no TLS roots are available.
    pub fn build(self) -> Result<Transport, Error> {
        let c = self.config;
        let base = parse_base_url(&c.base_url, c.allow_plain_http)?;

        let mut default_headers = c.default_headers;
        let user_agent = HeaderValue::try_from(c.user_agent).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "the user agent is not a valid HTTP header value",
            )
            .with_source(e)
        })?;
        default_headers.insert(USER_AGENT, user_agent);
        if let Some(key) = &c.api_key {
            default_headers.insert(AUTHORIZATION, bearer(key)?);
        }
        // Requests fit defaults without growing the map: content-type, accept-encoding, host.
        default_headers.reserve(4);

        let counters = Arc::new(Counters::default());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(c.tcp_nodelay);
        http.set_keepalive(c.tcp_keepalive);
        http.set_connect_timeout(c.connect_timeout);

        let connector = if base.scheme == Scheme::HTTPS {
            let tls_config = tls::client_config(&c.tls)?;
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config)
                .https_or_http();
            let counting = Counting::new(http, counters.clone());
            if c.http2_prior_knowledge {
                builder.enable_http2().wrap_connector(counting)
            } else if c.http2 {
                builder.enable_all_versions().wrap_connector(counting)
            } else {
                builder.enable_http1().wrap_connector(counting)
            }
        } else {
            // Plain text: no TLS configuration is built, so a transport to a local mock needs
            // no roots at all.
            hyper_rustls::HttpsConnector::from((
                Counting::new(http, counters.clone()),
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| {
                        Error::new(ErrorKind::Config, "TLS protocol versions").with_source(e)
                    })?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                ),
            ))
        };

        let client = if c.http2 || c.http2_prior_knowledge {
            let mut pool = Client::builder(TokioExecutor::new());
            pool.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_max_idle_per_host(c.pool_max_idle_per_host)
                .pool_idle_timeout(c.pool_idle_timeout)
                .http2_only(c.http2_prior_knowledge)
                .http2_initial_stream_window_size(c.http2_initial_stream_window_size)
                .http2_initial_connection_window_size(c.http2_initial_connection_window_size)
                .http2_adaptive_window(c.http2_adaptive_window)
                .http2_keep_alive_interval(c.http2_keep_alive_interval)
                .http2_keep_alive_timeout(c.http2_keep_alive_timeout)
                .http2_keep_alive_while_idle(c.http2_keep_alive_while_idle);
            Backend::Http2(Box::new(pool.build(connector)))
        } else {
            let origin = Uri::builder()
                .scheme(base.scheme.clone())
                .authority(base.authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, "the base URL").with_source(e))?;
            Backend::Http1(Arc::new(H1Pool::new(
                connector,
                origin,
                c.pool_max_idle_per_host,
                c.pool_idle_timeout,
            )))
        };
        let host = host_header(&base.scheme, &base.authority)?;

        let credential_headers: Vec<&[u8]> = CREDENTIAL_HEADERS
            .iter()
            .filter_map(|name| default_headers.get(*name))
            .map(HeaderValue::as_bytes)
            .collect();
        let credential =
            CredentialId::for_endpoint(&base.display, c.api_key.as_ref(), &credential_headers);
        Ok(Transport {
            inner: Arc::new(Inner {
                credential,
                client,
                host,
                joined: joined_paths(&base.path),
                base_path: base.path,
                display_base: base.display.into(),
                scheme: base.scheme,
                authority: base.authority,
                default_headers,
                gzip: c.gzip,
                brotli: c.brotli,
                counters,
                max_error_body_bytes: c.max_error_body_bytes,
                max_body_bytes: c.max_body_bytes,
                api_key: c.api_key,
            }),
        })
    }
}

/// The `Host` header for an origin: the host, and the port when it is not the scheme's
/// default (what hyper-util's pool sends).
fn host_header(scheme: &Scheme, authority: &Authority) -> Result<HeaderValue, Error> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::try_from(host).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            "the base URL's host is not a valid header value",
        )
        .with_source(e)
    })
}

/// Default headers that identify who is calling: their values are part of the transport's
/// [`CredentialId`], so cached answers never cross accounts.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "api-key",
    "x-api-key",
    "openai-organization",
    "openai-project",
];

/// The `Authorization` value for a key, marked sensitive so that `Debug` of headers hides it.
fn bearer(key: &ApiKey) -> Result<HeaderValue, Error> {
    if key.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "the API key is empty; set it, or leave it out for servers without authentication",
        ));
    }
    if !key.expose().bytes().all(|b| b.is_ascii_graphic()) {
        // A pasted zero-width space or ellipsis would otherwise earn an unexplained 401.
        return Err(Error::new(
            ErrorKind::Config,
            "the API key contains characters other than visible ASCII (a space, a control \
             character or a non-ASCII character pasted with it?)",
        ));
    }
    let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
        // The source error is dropped on purpose: it could echo the key.
        Error::new(
            ErrorKind::Config,
            "the API key contains characters that cannot be sent in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug)]
pub(crate) struct BaseUrl {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The path prefix without a trailing slash (`/v1`), empty for none.
    pub(crate) path: String,
    /// `scheme://authority/path`, for error messages.
    pub(crate) display: String,
}

pub(crate) fn parse_base_url(url: &str, allow_plain_http: bool) -> Result<BaseUrl, Error> {
    // The URL is never repeated in an error: it may carry a credential (user:password@, or a
    // key in the query string). Only scheme, host and port are named.
    let config = |msg: String| Error::new(ErrorKind::Config, msg);
    let authority_part = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    if authority_part.contains('@') {
        return Err(config(
            "the base URL must not carry credentials (user:password@); use the API key setting"
                .to_owned(),
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| config("the base URL is not a valid URL".to_owned()).with_source(e))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| config("the base URL has no scheme (http:// or https://)".to_owned()))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| config("the base URL has no host".to_owned()))?;
    let origin = format!("{scheme}://{authority}");
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(config(format!(
            "base URL {origin}: only http and https are supported"
        )));
    }
    if uri.query().is_some() {
        return Err(config(format!(
            "base URL {origin}...: a query string is not supported in the base URL"
        )));
    }
    if scheme == Scheme::HTTP && !allow_plain_http && !is_loopback(authority.host()) {
        return Err(config(format!(
            "refusing plain http:// to {host}, which is not a loopback address: the API key and \
             prompts would cross the network unencrypted. Use https://, or allow plain HTTP \
             explicitly",
            host = authority.host()
        )));
    }
    let path = uri.path().trim_end_matches('/').to_owned();
    let display = format!("{origin}{path}");
    Ok(BaseUrl {
        scheme,
        authority,
        path,
        display,
    })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = parse_base_url("https://api.openai.com/v1/", false).unwrap();
        assert_eq!(b.path, "/v1");
        assert_eq!(b.display, "https://api.openai.com/v1");
        let b = parse_base_url("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(b.path, "");
        assert!(parse_base_url("http://localhost:1/v1", false).is_ok());
        assert!(parse_base_url("http://[::1]:1/v1", false).is_ok());
        assert!(parse_base_url("http://127.8.9.10/v1", false).is_ok());
    }

    #[test]
    fn plain_http_to_remote_hosts_is_refused_unless_allowed() {
        let err = parse_base_url("http://api.example.com/v1", false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("api.example.com"), "{err}");
        assert!(parse_base_url("http://10.0.0.1/v1", false).is_err());
        assert!(parse_base_url("http://api.example.com/v1", true).is_ok());
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for url in [
            "api.openai.com/v1",
            "ftp://x/v1",
            "https://u:p@x/v1",
            "https://x/v1?a=b",
            "",
        ] {
            let err = parse_base_url(url, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.to_string().contains(":p@"), "{err}");
        }
        // Credentials in a URL are never echoed, whatever else is wrong with it.
        for url in [
            "ftp://u:TOKEN@x/v1",
            "https://x/v1?api-key=TOKEN",
            "not a url TOKEN",
        ] {
            let err = parse_base_url(url, false).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("TOKEN"), "{err}");
        }
    }

    #[test]
    fn keys_that_are_not_header_safe_are_refused_without_echo() {
        for bad in [
            "sk-abc\u{7}def",
            "sk-abc\u{200b}def",
            "sk-abc def",
            "sk-abc…",
        ] {
            let err = bearer(&ApiKey::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(!format!("{err} {err:?}").contains("sk-abc"));
        }
        assert_eq!(
            bearer(&ApiKey::new("  ")).unwrap_err().kind(),
            ErrorKind::Config
        );
        let v = bearer(&ApiKey::new("sk-abc")).unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("sk-abc"));
    }
}
