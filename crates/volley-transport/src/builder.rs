//! The transport's builder and its configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use volley_core::cache_key::CredentialId;
// Default headers that identify who is calling: their values are part of the transport's
// `CredentialId`, so cached answers never cross accounts. The one list lives in core.
use volley_core::headers::CREDENTIAL_HEADERS;
use volley_core::{ApiKey, Error, ErrorKind};

use crate::anthropic::AnthropicAuth;
use crate::backend::Backend;
use crate::connector::{BoxTls, Counting};
use crate::inner::{Inner, joined_paths};
use crate::pool::H1Pool;
use crate::provider::{AzureShape, Provider, azure_base_url};
use crate::proxy::{self, Dial, ProxySettings, Route};
use crate::stats::Counters;
use crate::tls::{self, Identity, PemSource, TlsRoots};
use crate::transport::Transport;

/// The base URL used when none is set: OpenAI's API, `/v1` included.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The default of [`Builder::max_buffered_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 1 << 30;

/// The gap between TCP keep-alive probes once they start ([`Builder::tcp_keepalive`]).
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered TCP keep-alive probes that close a connection.
const TCP_KEEPALIVE_RETRIES: u32 = 3;

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
    /// Whether `base_url` was set (an Azure endpoint and a base URL exclude each other).
    base_url_set: bool,
    api_key: Option<ApiKey>,
    provider: Provider,
    /// Whether [`Builder::provider`] was called.
    provider_set: bool,
    /// Whether [`Builder::from_env`] was called: the provider's variables fill in what is
    /// not set, at [`Builder::build`].
    env: bool,
    api_version: Option<String>,
    azure_ad_token: Option<ApiKey>,
    azure_endpoint: Option<String>,
    azure_deployment: Option<String>,
    anthropic_auth: AnthropicAuth,
    anthropic_version: Option<String>,
    anthropic_beta: Option<String>,
    proxy: ProxySettings,
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
    max_buffered_bytes: usize,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the key are left out: a default header may be a credential
        // (`api-key`, `x-api-key`).
        let c = &self.config;
        f.debug_struct("Builder")
            .field("base_url", &volley_core::redact::redact_url(&c.base_url))
            .field("provider", &c.provider)
            .field("api_key", &c.api_key.as_ref().map(|_| "***"))
            .field("azure_ad_token", &c.azure_ad_token.as_ref().map(|_| "***"))
            .field("proxy", &c.proxy)
            .field("tls", &c.tls)
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
                base_url_set: false,
                api_key: None,
                provider: Provider::OpenAi,
                provider_set: false,
                env: false,
                api_version: None,
                azure_ad_token: None,
                azure_endpoint: None,
                azure_deployment: None,
                anthropic_auth: AnthropicAuth::Bearer,
                anthropic_version: None,
                anthropic_beta: None,
                proxy: ProxySettings::default(),
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
                http2_keep_alive_interval: Some(Duration::from_secs(30)),
                http2_keep_alive_timeout: Duration::from_secs(20),
                http2_keep_alive_while_idle: false,
                gzip: true,
                brotli: true,
                tls: TlsRoots {
                    webpki: cfg!(feature = "webpki-roots"),
                    native: false,
                    extra_der: Vec::new(),
                    extra_pem: Vec::new(),
                    env: true,
                    identity: None,
                },
                allow_plain_http: false,
                max_error_body_bytes: 64 * 1024,
                max_body_bytes: volley_core::DEFAULT_MAX_BODY_BYTES,
                max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            },
        }
    }

    /// The base URL every request path is appended to, `/v1` included as in the OpenAI
    /// convention: `https://api.openai.com/v1` + `/chat/completions`.
    ///
    /// Default: [`DEFAULT_BASE_URL`]; with [`Provider::Anthropic`],
    /// [`volley_core::anthropic::DEFAULT_BASE_URL`] (`https://api.anthropic.com/v1`).
    pub fn base_url(mut self, url: impl Into<String>) -> Builder {
        self.config.base_url = url.into();
        self.config.base_url_set = true;
        self
    }

    /// The API key, sent as `Authorization: Bearer …` (with [`Provider::Azure`], as
    /// `api-key: …`), marked sensitive so hyper and `http` never print it. A request that
    /// sets its own `Authorization` (or `api-key`) header keeps it.
    ///
    /// Default: none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Builder {
        self.config.api_key = Some(key.into());
        self
    }

    /// Fill in the credential and the base URL from the environment, as the provider's
    /// official SDK reads them, when [`Builder::build`] runs: whatever was set on this builder,
    /// before or after this call, wins, and the provider is the one set by then, so the key
    /// of one provider never goes to another. Unset or empty variables are skipped.
    ///
    /// | provider | credential | base URL | also |
    /// |---|---|---|---|
    /// | [`Provider::OpenAi`] | `OPENAI_API_KEY` | `OPENAI_BASE_URL` | |
    /// | [`Provider::Anthropic`] | `ANTHROPIC_API_KEY`, else `ANTHROPIC_AUTH_TOKEN` | `ANTHROPIC_BASE_URL` (without `/v1`, which is appended) | |
    /// | [`Provider::Azure`] | `AZURE_OPENAI_AD_TOKEN`, else `AZURE_OPENAI_API_KEY` | `AZURE_OPENAI_ENDPOINT` (the resource endpoint) | `OPENAI_API_VERSION` |
    ///
    /// Without a key, from the environment or set on the builder, [`Builder::build`] fails
    /// for OpenAI's and Anthropic's own APIs (`api.openai.com`, `api.anthropic.com`), as the
    /// official SDKs refuse to start; any other server (a local vLLM, a gateway that adds the
    /// key) is called without one.
    ///
    /// Default: off (nothing is read from the environment but the proxy and TLS variables).
    pub fn from_env(mut self) -> Builder {
        self.config.env = true;
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
    pub fn default_header(mut self, name: HeaderName, mut value: HeaderValue) -> Builder {
        // A credential (by its name) is never indexed by HTTP/2's header compression and
        // shows as `Sensitive` in `Debug`.
        if volley_core::headers::is_credential_header(&name) {
            value.set_sensitive(true);
        }
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

    /// How long an idle connection stays in the pool. `None` keeps it forever. A server that
    /// states its own in `Keep-Alive: timeout=N` lowers it to a second less than `N` over
    /// HTTP/1.1 (half of `N` below 2 s), so that a request is not written as the server
    /// closes the connection.
    ///
    /// Default: 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Builder {
        self.config.pool_idle_timeout = timeout;
        self
    }

    /// The deadline for establishing a TCP connection; a proxy's handshake and the TLS
    /// handshake each get as long again, from when the connection under them is ready (a
    /// server that accepts the connection and never answers the handshake fails the
    /// connection as a connect error, nothing sent). `None` waits for the operating system,
    /// and for the handshakes without a bound.
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

    /// The idle time before TCP keep-alive probes start. `None` turns keep-alive off. The
    /// probes then go every 15 s, and 3 unanswered close the connection, so a peer gone
    /// without a word (a NAT entry dropped, a load balancer's failover) is found in under two
    /// minutes rather than Linux's default of about eleven (75 s × 9). (On Windows the count
    /// of probes stays the system's, 10: three and a half minutes.)
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
    /// request. A server that speaks HTTP/1.1 only (uvicorn, vLLM's) answers in HTTP/1.1: the
    /// request fails with a connection error that says to turn this off.
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
    /// Default: hyper's, 2 MiB (above the spec's 64 KiB; a smaller value lowers it).
    pub fn http2_initial_stream_window_size(mut self, size: Option<u32>) -> Builder {
        self.config.http2_initial_stream_window_size = size;
        self
    }

    /// The HTTP/2 initial connection window size, in bytes. It is shared by every stream of
    /// the connection: streams whose answers are read late hold it, and may stall the others.
    ///
    /// Default: hyper's, 5 MiB.
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

    /// How often to send HTTP/2 PING frames while streams are open, to find a connection
    /// whose peer is gone: every request to the origin shares the one HTTP/2 connection, and
    /// a dead one would hang them all. `None` sends none.
    ///
    /// Default: 30 s (with HTTP/2 on; HTTP/1.1 sends no PING).
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
    /// A response's `Content-Encoding` is read as HTTP defines it: in any case, and `x-gzip`
    /// as gzip.
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

    /// Whether to trust the operating system's root certificates (feature `native-roots`):
    /// on Linux and the BSDs the certificates of the system's directories (`/etc/ssl/certs`,
    /// `/etc/pki/tls/certs`, ...), whatever `SSL_CERT_FILE` and `SSL_CERT_DIR` say (those are
    /// read as [`tls_ca_from_env`](Builder::tls_ca_from_env) says); on macOS and Windows the
    /// platform's store, which rustls-native-certs replaces with those variables when set.
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

    /// Trusts every certificate of a PEM bundle file (`-----BEGIN CERTIFICATE-----` blocks):
    /// a private CA, a corporate proxy's CA. Added to the other roots, not instead of them;
    /// call it again for more files. The file is read by [`Builder::build`], which fails
    /// naming it when it is missing or holds no certificate. Setting any CA this way (or with
    /// [`Builder::tls_ca_pem`], [`Builder::tls_add_root_certificate`]) makes the transport
    /// ignore `SSL_CERT_FILE` and `SSL_CERT_DIR`: an explicit setting wins over the
    /// environment.
    ///
    /// Default: none.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.config.tls.extra_pem.push(PemSource::File(path.into()));
        self
    }

    /// Trusts every certificate of a PEM bundle given as bytes; as [`Builder::tls_ca_file`].
    ///
    /// Default: none.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Builder {
        self.config.tls.extra_pem.push(PemSource::Bytes(pem.into()));
        self
    }

    /// Whether to trust the certificates of the files named by `SSL_CERT_FILE` (a PEM
    /// bundle) and `SSL_CERT_DIR` (directories of PEM files, `:`-separated), as OpenSSL,
    /// curl and Python's `httpx` read them, when no CA was set explicitly. They are added to
    /// the built-in roots (OpenSSL would use them instead), so a file holding only a private
    /// CA does not break public endpoints. The variables are read once per process; an
    /// unreadable `SSL_CERT_FILE` fails [`Builder::build`], naming the file.
    ///
    /// Default: `true`.
    pub fn tls_ca_from_env(mut self, enabled: bool) -> Builder {
        self.config.tls.env = enabled;
        self
    }

    /// A client certificate (PEM chain, leaf first) and its private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1), read from files by [`Builder::build`], for servers and gateways that
    /// require mutual TLS.
    ///
    /// Default: none (no client certificate is offered).
    pub fn tls_client_identity_files(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Builder {
        self.config.tls.identity = Some(Identity {
            cert: PemSource::File(cert_chain.into()),
            key: PemSource::File(private_key.into()),
        });
        self
    }

    /// A client certificate chain and private key given as PEM bytes; as
    /// [`Builder::tls_client_identity_files`]. The key never appears in `Debug` or errors.
    ///
    /// Default: none.
    pub fn tls_client_identity_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Builder {
        self.config.tls.identity = Some(Identity {
            cert: PemSource::Bytes(cert_chain.into()),
            key: PemSource::Bytes(private_key.into()),
        });
        self
    }

    /// Sends every request through this proxy: `http://[user:password@]host[:port]` (an
    /// HTTP proxy: `CONNECT` tunnels for `https://`, absolute-form requests for plain
    /// `http://`), or `socks5://` / `socks5h://` (the proxy resolves names). Read as curl
    /// reads `--proxy`: no scheme means `http://`, no port means 1080, the user and password
    /// are percent-decoded. It wins over `HTTPS_PROXY`, `http_proxy` and `ALL_PROXY`; an
    /// empty string means "no proxy" whatever the environment says. `NO_PROXY` (or
    /// [`Builder::no_proxy`]) still applies. The password is never shown: errors, logs and
    /// `Debug` print the URL as `http://***@host:port`. An unusable URL (an `https://` or
    /// SOCKS4 proxy, no host) fails [`Builder::build`].
    ///
    /// Default: none (the environment's, see [`Builder::proxy_env`]).
    pub fn proxy(mut self, url: impl Into<String>) -> Builder {
        self.config.proxy.proxy = Some(url.into());
        self
    }

    /// Hosts reached directly, not through the proxy, as curl's `--noproxy` and `NO_PROXY`:
    /// comma-separated domains (each with its subdomains), IP addresses and CIDR ranges, or
    /// `*` for all. Replaces the environment's `NO_PROXY`.
    ///
    /// Default: `NO_PROXY` / `no_proxy` from the environment.
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> Builder {
        self.config.proxy.no_proxy = Some(hosts.into());
        self
    }

    /// Whether to honour the proxy variables of the environment, as curl does:
    /// `https_proxy`/`HTTPS_PROXY` for `https://` servers, `http_proxy` for `http://` ones
    /// (lower case only, as curl: `HTTP_PROXY` can come from a CGI request's header),
    /// `all_proxy`/`ALL_PROXY`
    /// for both, `no_proxy`/`NO_PROXY` for exceptions. They are read once per process, at
    /// the first build; a value that is not a usable proxy URL (say `socks4://…`) fails
    /// [`Builder::build`] instead of connecting directly.
    ///
    /// Default: `true`.
    pub fn proxy_env(mut self, enabled: bool) -> Builder {
        self.config.proxy.ignore_env = !enabled;
        self
    }

    /// The provider's conventions: [`Provider::OpenAi`] sends the key as a bearer token;
    /// [`Provider::Azure`] sends it as `api-key`, adds `api-version` (see
    /// [`Builder::api_version`]) to every request, and routes requests to deployments as the
    /// official SDK's `AzureOpenAI` client does: under a base URL ending in `/openai` a chat,
    /// embeddings or completions request goes to `/deployments/{model}/…`, its body's
    /// `model` naming the deployment; under `…/openai/deployments/NAME` to that deployment;
    /// under the v1 API (`…/openai/v1`) unchanged.
    ///
    /// Default: [`Provider::OpenAi`].
    pub fn provider(mut self, provider: Provider) -> Builder {
        self.config.provider = provider;
        self.config.provider_set = true;
        self
    }

    /// This builder with `from`'s credential where it has none of its own: the key or Azure
    /// token, and the reading of the provider's variables ([`Builder::from_env`]); and with
    /// `from`'s provider unless its own was set. For a transport given to one endpoint
    /// of a client, which inherits the client's credential.
    pub fn inherit_credential(mut self, from: &Builder) -> Builder {
        let own = &mut self.config;
        // A credential header set by hand on this builder is its credential: the client's key
        // must neither replace it nor go beside it to this builder's host.
        if !own.has_credential() {
            own.api_key.clone_from(&from.config.api_key);
            own.azure_ad_token.clone_from(&from.config.azure_ad_token);
            own.env |= from.config.env;
        }
        if !own.provider_set {
            own.provider = from.config.provider;
        }
        self
    }

    /// The provider set so far ([`Builder::provider`]): whose conventions the transport
    /// will follow.
    pub fn provider_set(&self) -> Provider {
        self.config.provider
    }

    /// The Azure OpenAI API version, sent as the `api-version` query parameter of every
    /// request (`2024-10-21`, `2025-04-01-preview`). Needed by deployment URLs, optional for
    /// the v1 API; ignored by other providers.
    ///
    /// Default: none.
    pub fn api_version(mut self, version: impl Into<String>) -> Builder {
        self.config.api_version = Some(version.into());
        self
    }

    /// A Microsoft Entra ID (Azure AD) access token, sent as `Authorization: Bearer …` to
    /// Azure OpenAI instead of a key. Setting both a key and a token fails
    /// [`Builder::build`], as in the official SDK. Never shown in `Debug`, errors or logs.
    ///
    /// Default: none.
    pub fn azure_ad_token(mut self, token: impl Into<ApiKey>) -> Builder {
        self.config.azure_ad_token = Some(token.into());
        self
    }

    /// The Azure OpenAI resource endpoint (`https://RESOURCE.openai.azure.com`), from which
    /// the base URL is made as the official SDK makes it: `{endpoint}/openai`, or
    /// `{endpoint}/openai/deployments/{deployment}` with [`Builder::azure_deployment`].
    /// Setting it and [`Builder::base_url`] fails [`Builder::build`].
    ///
    /// Default: none.
    pub fn azure_endpoint(mut self, endpoint: impl Into<String>) -> Builder {
        self.config.azure_endpoint = Some(endpoint.into());
        self
    }

    /// The Azure OpenAI deployment every request goes to (with [`Builder::azure_endpoint`]).
    ///
    /// Default: none (the body's `model` names the deployment).
    pub fn azure_deployment(mut self, deployment: impl Into<String>) -> Builder {
        self.config.azure_deployment = Some(deployment.into());
        self
    }

    /// How the key is sent to Anthropic ([`Provider::Anthropic`]):
    /// [`AnthropicAuth::Bearer`] (`Authorization: Bearer KEY`, as the current official SDK)
    /// or [`AnthropicAuth::XApiKey`] (`x-api-key: KEY`, as older SDKs). Ignored by other
    /// providers.
    ///
    /// Default: [`AnthropicAuth::Bearer`].
    pub fn anthropic_auth(mut self, auth: AnthropicAuth) -> Builder {
        self.config.anthropic_auth = auth;
        self
    }

    /// The `anthropic-version` header sent to Anthropic. Ignored by other providers.
    ///
    /// Default: the auth's own ([`AnthropicAuth::default_version`]): `2026-10-21` with
    /// bearer auth, `2023-06-01` with `x-api-key`; a default header of that name wins over it.
    pub fn anthropic_version(mut self, version: impl Into<String>) -> Builder {
        self.config.anthropic_version = Some(version.into());
        self
    }

    /// The `anthropic-beta` header (comma-separated feature names) sent to Anthropic. Ignored
    /// by other providers.
    ///
    /// Default: none.
    pub fn anthropic_beta(mut self, features: impl Into<String>) -> Builder {
        self.config.anthropic_beta = Some(features.into());
        self
    }

    /// Allow plain `http://` to a host that is not loopback, or to a loopback one through a
    /// proxy that is not (`http_proxy` or `ALL_PROXY` without the host in `NO_PROXY`). Without
    /// it, [`Builder::build`] refuses such a base URL: the API key and prompts would cross the
    /// network in clear text.
    ///
    /// Default: `false` (plain HTTP only to `localhost`, `127.0.0.0/8` and `[::1]`, directly
    /// or through a proxy on this machine).
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
    /// decoder's limits, and reading a stream whole (`Body::collect`) stops at this limit too.
    ///
    /// Default: [`volley_core::DEFAULT_MAX_BODY_BYTES`] (64 MiB).
    pub fn max_body_bytes(mut self, max: usize) -> Builder {
        self.config.max_body_bytes = max;
        self
    }

    /// The most bytes of non-streaming response bodies all clones of the transport buffer at
    /// once (after decompression). Each body is read within
    /// [`max_body_bytes`](Builder::max_body_bytes); this bounds their sum, which at a
    /// concurrency of 256 could otherwise reach 16 GiB. A body that would take the total past
    /// it fails with `ErrorKind::BodyDecode` (a message naming this setting) and frees what it
    /// held; bytes count until the body is complete and handed to the caller.
    ///
    /// Default: [`DEFAULT_MAX_BUFFERED_BYTES`] (1 GiB).
    pub fn max_buffered_bytes(mut self, max: usize) -> Builder {
        self.config.max_buffered_bytes = max;
        self
    }

    /// Builds the transport: parses the base URL, builds the TLS configuration and the pool.
    ///
    /// Must be called inside a Tokio runtime only when requests are sent, not to build.
    ///
    /// # Errors
    /// `ErrorKind::Config` when the base URL is not an absolute `http`/`https` URL, when it is
    /// plain `http://` to a remote host, or to a loopback one through a proxy that is not on
    /// this machine, without [`Builder::allow_plain_http`], when the API key
    /// or user agent cannot be sent as a header, when no TLS roots are available, or with
    /// [`Builder::from_env`] when no key was found for OpenAI's or Anthropic's own API.
    pub fn build(self) -> Result<Transport, Error> {
        let mut c = self.config;
        if c.env {
            c.fill_from_env(|name| std::env::var(name).ok());
        }
        let has_credential = c.has_credential();
        let base_url = resolve_base_url(&c)?;
        let base = parse_base_url(&base_url, c.allow_plain_http)?;
        let azure = match c.provider {
            Provider::Azure => Some(AzureShape::of(&base.path, c.api_version.as_deref())?),
            Provider::OpenAi | Provider::Anthropic => None,
        };

        let mut default_headers = c.default_headers;
        let user_agent = HeaderValue::try_from(c.user_agent).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "the user agent is not a valid HTTP header value",
            )
            .with_source(e)
        })?;
        default_headers.insert(USER_AGENT, user_agent);
        match c.provider {
            Provider::OpenAi => {
                if c.azure_ad_token.is_some() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "an Azure AD token was set, but the provider is not azure",
                    ));
                }
                if let Some(key) = &c.api_key {
                    default_headers.insert(AUTHORIZATION, bearer(key)?);
                }
            }
            Provider::Azure => match (&c.api_key, &c.azure_ad_token) {
                (Some(_), Some(_)) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "both an Azure OpenAI key and an Entra ID (AD) token were set; give \
                         one of them",
                    ));
                }
                (Some(key), None) => {
                    default_headers
                        .insert(HeaderName::from_static("api-key"), credential(key, "")?);
                }
                (None, Some(token)) => {
                    default_headers.insert(AUTHORIZATION, bearer(token)?);
                }
                (None, None)
                    if !default_headers.contains_key(AUTHORIZATION)
                        && !default_headers.contains_key("api-key") =>
                {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "Azure OpenAI needs a key (AZURE_OPENAI_API_KEY) or a Microsoft Entra \
                         ID token (AZURE_OPENAI_AD_TOKEN)",
                    ));
                }
                (None, None) => {}
            },
            Provider::Anthropic => {
                if c.azure_ad_token.is_some() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "an Azure AD token was set, but the provider is anthropic",
                    ));
                }
                if let Some(key) = &c.api_key {
                    match c.anthropic_auth {
                        AnthropicAuth::Bearer => {
                            default_headers.insert(AUTHORIZATION, bearer(key)?);
                        }
                        AnthropicAuth::XApiKey => {
                            default_headers
                                .insert(HeaderName::from_static("x-api-key"), credential(key, "")?);
                        }
                    }
                }
                crate::anthropic::version_headers(
                    &mut default_headers,
                    c.anthropic_auth,
                    c.anthropic_version.as_deref(),
                    c.anthropic_beta.as_deref(),
                )?;
            }
        }
        // As the official SDKs: a client from the environment that found no key for OpenAI's
        // or Anthropic's own API fails now, not with a 401 on every request. Any other server
        // (a local vLLM, a gateway that adds the key) may take requests without one; a
        // credential header set by hand counts.
        if c.env
            && c.provider != Provider::Azure
            && !has_credential
            && is_official_api(base.authority.host())
        {
            let variables = match c.provider {
                Provider::Anthropic => "ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)",
                _ => "OPENAI_API_KEY",
            };
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no API key for {}: {variables} is not set; set it, or give the key to \
                     the builder (api_key)",
                    base.display
                ),
            ));
        }
        // Requests fit defaults without growing the map: content-type, accept-encoding, host.
        default_headers.reserve(4);

        let counters = Arc::new(Counters::default());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(c.tcp_nodelay);
        http.set_keepalive(c.tcp_keepalive);
        if c.tcp_keepalive.is_some() {
            http.set_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL));
            http.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        }
        http.set_connect_timeout(c.connect_timeout);
        let proxy = proxy::choose(&c.proxy, &base.scheme, &base.authority)?;
        let route = Arc::new(Route::new(proxy, &base.scheme, c.http2_prior_knowledge));
        if let Some(proxy) = route.proxy() {
            // Plain HTTP is allowed to a loopback origin because it stays on this machine;
            // through a proxy elsewhere the key and prompts would cross the network in clear
            // text (and the proxy would resolve `localhost` to itself).
            if base.scheme == Scheme::HTTP && !c.allow_plain_http && !proxy.is_loopback() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "refusing plain http:// to {origin} through the proxy {proxy} (from \
                         {source}), which is not on this machine: the API key and prompts \
                         would cross the network unencrypted. Add the host to NO_PROXY (or \
                         turn the proxy off for this client), use https://, or allow plain \
                         HTTP explicitly",
                        origin = base.display,
                        proxy = proxy.display(),
                        source = proxy.source(),
                    ),
                ));
            }
            tracing::debug!(proxy = proxy.display(), origin = %base.display, "through a proxy");
        }
        let forwarded = matches!(*route, Route::Forward(_));
        let dial = Dial::new(http, route.clone(), c.connect_timeout);

        let connector = BoxTls::new(
            if base.scheme == Scheme::HTTPS {
                let tls_config = tls::client_config(&c.tls)?;
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config)
                    .https_or_http();
                let counting = Counting::new(dial, counters.clone(), forwarded);
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
                    Counting::new(dial, counters.clone(), forwarded),
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
            },
            c.connect_timeout,
            base.scheme == Scheme::HTTPS,
        );

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

        // The listed credential headers in their order, then the others (a gateway's key, a
        // value marked sensitive) in name order: a client without any keeps its id.
        let mut others: Vec<(&HeaderName, &HeaderValue)> = default_headers
            .iter()
            .filter(|(name, value)| volley_core::headers::is_other_credential(name, value))
            .collect();
        others.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let credential_headers: Vec<&[u8]> = CREDENTIAL_HEADERS
            .iter()
            .filter_map(|name| default_headers.get(*name))
            .chain(others.into_iter().map(|(_, value)| value))
            .map(HeaderValue::as_bytes)
            .collect();
        let mut secrets = Vec::new();
        if let Some(key) = &c.api_key {
            crate::inner::secrets_of(key.expose().as_bytes(), &mut secrets);
        }
        for value in &credential_headers {
            crate::inner::secrets_of(value, &mut secrets);
        }
        // The proxy's credentials: a forward proxy's `Proxy-Authorization` goes with every
        // request, and a proxy or an origin may echo it in an error page.
        if let Some(proxy) = route.proxy() {
            proxy.secrets(&mut secrets);
        }
        // Settings that change the answer to the same request (the API version an answer is
        // shaped by, the beta features it may use): clients that differ in them must not
        // share cache entries, so they are part of the cache's id, as `name=value`; not of the
        // credential's, by which a shared rate limit is kept (one budget per key, whatever
        // the version).
        let answer_settings: Vec<Vec<u8>> = volley_core::cache_key::ANSWER_HEADERS
            .into_iter()
            .filter_map(|name| Some((name, default_headers.get(name)?.as_bytes())))
            .chain(
                c.api_version
                    .as_deref()
                    .map(|v| ("api-version", v.as_bytes())),
            )
            .map(|(name, value)| [name.as_bytes(), b"=", value].concat())
            .collect();
        let identity: Vec<&[u8]> = credential_headers
            .iter()
            .copied()
            .chain(answer_settings.iter().map(Vec::as_slice))
            .collect();
        let credential =
            CredentialId::for_endpoint(&base.display, c.api_key.as_ref(), &credential_headers);
        let cache_id = CredentialId::for_endpoint(&base.display, c.api_key.as_ref(), &identity);
        let mut inner = Inner {
            credential,
            cache_id,
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
            http2_only: c.http2_prior_knowledge,
            max_body_bytes: c.max_body_bytes,
            max_buffered_bytes: c.max_buffered_bytes,
            buffered: std::sync::atomic::AtomicUsize::new(0),
            secrets,
            azure,
            route,
            json_headers: HeaderMap::new(),
        };
        inner.json_headers = crate::send::json_headers(&inner);
        Ok(Transport {
            inner: Arc::new(inner),
        })
    }
}

/// Whether `host` is OpenAI's or Anthropic's own API, which answers every request without a
/// key with a 401.
fn is_official_api(host: &str) -> bool {
    ["api.openai.com", "api.anthropic.com"]
        .iter()
        .any(|official| host.eq_ignore_ascii_case(official))
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

impl Config {
    /// Whether a credential is set: a key, an Azure token, or a credential header by hand
    /// (`Authorization`, `api-key`, `x-api-key`).
    fn has_credential(&self) -> bool {
        self.api_key.is_some()
            || self.azure_ad_token.is_some()
            || ["authorization", "api-key", "x-api-key"]
                .iter()
                .any(|name| self.default_headers.contains_key(*name))
    }

    /// Fills in what is not set from the variables `var` reads, as [`Builder::from_env`] says.
    fn fill_from_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        use crate::provider::{
            API_KEY_ENV, API_VERSION_ENV, AZURE_AD_TOKEN_ENV, AZURE_API_KEY_ENV,
            AZURE_ENDPOINT_ENV, BASE_URL_ENV,
        };
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let has_credential = self.has_credential();
        let url_set = self.base_url_set || self.azure_endpoint.is_some();
        match self.provider {
            Provider::OpenAi => {
                if !has_credential {
                    self.api_key = var(API_KEY_ENV).map(ApiKey::from);
                }
                if !url_set && let Some(url) = var(BASE_URL_ENV) {
                    self.base_url = url;
                    self.base_url_set = true;
                }
            }
            Provider::Anthropic => {
                let [key, token] = volley_core::anthropic::KEY_VARIABLES;
                if !has_credential {
                    self.api_key = var(key).or_else(|| var(token)).map(ApiKey::from);
                }
                if !url_set && let Some(url) = var(volley_core::anthropic::BASE_URL_VARIABLE) {
                    self.base_url = volley_core::anthropic::base_url_from_sdk(&url);
                    self.base_url_set = true;
                }
            }
            Provider::Azure => {
                if !has_credential {
                    if let Some(token) = var(AZURE_AD_TOKEN_ENV) {
                        self.azure_ad_token = Some(ApiKey::from(token));
                    } else {
                        self.api_key = var(AZURE_API_KEY_ENV).map(ApiKey::from);
                    }
                }
                if !url_set {
                    self.azure_endpoint = var(AZURE_ENDPOINT_ENV);
                }
                if self.api_version.is_none() {
                    self.api_version = var(API_VERSION_ENV);
                }
            }
        }
    }
}

/// The base URL: the one set, or the one an Azure endpoint makes (as the official SDK does).
fn resolve_base_url(c: &Config) -> Result<std::borrow::Cow<'_, str>, Error> {
    if c.provider == Provider::Anthropic && !c.base_url_set {
        return Ok(volley_core::anthropic::DEFAULT_BASE_URL.into());
    }
    let Some(endpoint) = &c.azure_endpoint else {
        return Ok(c.base_url.as_str().into());
    };
    if c.base_url_set {
        return Err(Error::new(
            ErrorKind::Config,
            "an Azure endpoint and a base URL were both set; give one of them",
        ));
    }
    Ok(azure_base_url(endpoint, c.azure_deployment.as_deref()).into())
}

/// The `Authorization` value for a key, marked sensitive so that `Debug` of headers hides it.
fn bearer(key: &ApiKey) -> Result<HeaderValue, Error> {
    credential(key, "Bearer ")
}

/// A credential header value (`prefix` + key), marked sensitive.
fn credential(key: &ApiKey, prefix: &str) -> Result<HeaderValue, Error> {
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
    let mut value = HeaderValue::try_from(format!("{prefix}{}", key.expose())).map_err(|_| {
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
    // Any `@`, not only one in the authority: a password may hold `/`, `?` or `#` unencoded
    // (`user:8443/x@host`), and then an HTTP parser takes what precedes them for the host and
    // port, where every redactor takes user information to end at the last `@`.
    if url.contains('@') {
        return Err(config(
            "the base URL must not contain '@': no credentials (user:password@) in it; use the \
             API key setting"
                .to_owned(),
        ));
    }
    if !url.contains("://") {
        return Err(config(
            "the base URL has no scheme: it must start with http:// or https:// (such as \
             http://localhost:8000/v1)"
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
    if scheme == Scheme::HTTP
        && !allow_plain_http
        && !volley_core::host::is_loopback(authority.host())
    {
        return Err(config(format!(
            "refusing plain http:// to {host}, which is not a loopback address: the API key and \
             prompts would cross the network unencrypted. Use https://, or allow plain HTTP \
             explicitly (allow_plain_http; in the volley CLI, --allow-plain-http)",
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
    fn a_base_url_without_a_scheme_says_so() {
        for url in ["localhost:8000/v1", "api.openai.com/v1", "127.0.0.1:8000"] {
            let err = parse_base_url(url, false).unwrap_err();
            assert!(err.to_string().contains("has no scheme"), "{url}: {err}");
        }
    }

    #[test]
    fn plain_http_to_remote_hosts_is_refused_unless_allowed() {
        let err = parse_base_url("http://api.example.com/v1", false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("api.example.com"), "{err}");
        assert!(parse_base_url("http://10.0.0.1/v1", false).is_err());
        assert!(parse_base_url("http://api.example.com/v1", true).is_ok());
    }

    /// Plain HTTP is allowed to a loopback origin because it stays on this machine: not
    /// through a proxy elsewhere, which would carry the key and prompts in clear text.
    #[tokio::test]
    async fn plain_http_to_loopback_through_a_remote_proxy_is_refused_unless_allowed() {
        // The environment's NO_PROXY would still apply to the proxy given: left out.
        let build = |proxy: &str, allow: bool| {
            Builder::new()
                .base_url("http://localhost:8000/v1")
                .api_key("sk-test")
                .proxy(proxy)
                .proxy_env(false)
                .allow_plain_http(allow)
                .build()
        };
        for proxy in ["http://u:SECRET@10.1.2.3:3128", "socks5h://proxy.corp:1080"] {
            let err = build(proxy, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let shown = err.to_string();
            assert!(shown.contains("through the proxy"), "{shown}");
            assert!(!format!("{shown} {err:?}").contains("SECRET"), "{shown}");
            assert!(build(proxy, true).is_ok(), "{proxy}, allowed");
        }
        // A proxy on this machine, or no proxy: nothing leaves it.
        assert!(build("http://127.0.0.1:3128", false).is_ok());
        assert!(build("", false).is_ok());
        // HTTPS through any proxy is encrypted end to end.
        let tls = Builder::new()
            .base_url("https://localhost:8443/v1")
            .api_key("sk-test")
            .proxy("http://10.1.2.3:3128")
            .proxy_env(false)
            .build();
        assert!(tls.is_ok());
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
            // A password with '/' or '?' unencoded: the HTTP parser would read `u:8443` as the
            // host and port, and the rest of the password as a path or a query.
            "https://u:8443/TOKEN@api.example/v1",
            "https://u:1234?TOKEN@api.example/v1",
            "https://u:1234#TOKEN@api.example/v1",
        ] {
            let err = parse_base_url(url, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!format!("{err} {err:?}").contains("TOKEN"), "{err}");
        }
        let err = parse_base_url("https://u:8443/TOKEN@api.example/v1", false).unwrap_err();
        assert!(err.to_string().contains("must not contain '@'"), "{err}");
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

    /// The environment `from_env` would see: these variables and no others.
    fn filled(builder: Builder, vars: &[(&str, &str)]) -> Config {
        let mut c = builder.from_env().config;
        c.fill_from_env(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        });
        c
    }

    fn key(c: &Config) -> Option<&str> {
        c.api_key.as_ref().map(ApiKey::expose)
    }

    /// Each provider reads its own SDK's variables, so an exported OpenAI key never goes to
    /// Anthropic or Azure; whatever the builder sets wins.
    #[test]
    fn from_env_reads_the_variables_of_the_provider_set() {
        let all = [
            ("OPENAI_API_KEY", "sk-openai"),
            ("OPENAI_BASE_URL", "https://gateway.example/v1"),
            ("ANTHROPIC_API_KEY", " "),
            ("ANTHROPIC_AUTH_TOKEN", "sk-ant-token"),
            ("ANTHROPIC_BASE_URL", "https://claude.example/"),
            ("AZURE_OPENAI_API_KEY", "azure-key"),
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
            ("OPENAI_API_VERSION", "2024-10-21"),
        ];
        let c = filled(Builder::new(), &all);
        assert_eq!(key(&c), Some("sk-openai"));
        assert_eq!(c.base_url, "https://gateway.example/v1");

        let c = filled(Builder::new().provider(Provider::Anthropic), &all);
        assert_eq!(key(&c), Some("sk-ant-token"), "an empty key is skipped");
        assert_eq!(resolve_base_url(&c).unwrap(), "https://claude.example/v1");
        let c = filled(Builder::new().provider(Provider::Anthropic), &all[..2]);
        assert_eq!(key(&c), None);
        assert_eq!(
            resolve_base_url(&c).unwrap(),
            volley_core::anthropic::DEFAULT_BASE_URL
        );

        let c = filled(Builder::new().provider(Provider::Azure), &all);
        assert_eq!(key(&c), Some("azure-key"));
        assert_eq!(
            c.azure_endpoint.as_deref(),
            Some("https://res.openai.azure.com")
        );
        assert_eq!(c.api_version.as_deref(), Some("2024-10-21"));
        let with_token = [("AZURE_OPENAI_AD_TOKEN", "entra"), all[5]];
        let c = filled(Builder::new().provider(Provider::Azure), &with_token);
        assert_eq!(
            (key(&c), c.azure_ad_token.as_ref().map(ApiKey::expose)),
            (None, Some("entra"))
        );

        // Set on the builder, before or after from_env: kept.
        let mine = Builder::new()
            .api_key("sk-mine")
            .base_url("http://127.0.0.1:9/v1")
            .provider(Provider::Anthropic);
        let c = filled(mine, &all);
        assert_eq!(key(&c), Some("sk-mine"));
        assert_eq!(c.base_url, "http://127.0.0.1:9/v1");
        let own =
            Builder::new().default_header(AUTHORIZATION, HeaderValue::from_static("Bearer own"));
        let c = filled(own, &all);
        assert_eq!(key(&c), None, "a credential header is a credential");
    }
}
