//! HTTP and SOCKS5 proxies: which proxy (if any) a transport's one origin goes through, by
//! curl's rules, and the connector that dials through it.
//!
//! - **Choice.** An explicit proxy ([`Builder::proxy`](crate::Builder::proxy)) wins over the
//!   environment. Otherwise, as curl: `https_proxy`/`HTTPS_PROXY` for `https://` targets,
//!   `http_proxy` for `http://` targets (lower case only: curl never reads `HTTP_PROXY`, which
//!   a CGI request's `Proxy:` header can set, the "httpoxy" hole), and `all_proxy`/`ALL_PROXY`
//!   for both when the scheme's own variable is unset; the lower-case name wins when both are
//!   set, an empty value counts as unset. `no_proxy`/`NO_PROXY` (or
//!   [`Builder::no_proxy`](crate::Builder::no_proxy)) lists hosts reached directly, by curl's
//!   rules: `*` as the whole list matches every host (a `*` among other entries matches
//!   none), an entry matches its domain and subdomains (a leading dot, and one trailing dot of
//!   entry or host, are ignored), IP addresses and CIDR ranges match addresses; the matching
//!   itself is hyper-util's. The environment is read once per process.
//! - **Proxy URLs** as curl reads them: `[scheme://][user[:password]@]host[:port]`; no scheme
//!   means `http://`, no port means 1080; the user and password are percent-decoded, and a
//!   password may hold `@`, `/`, `?` or `#` unencoded. An unusable proxy URL is an error at
//!   build time, never a silent direct connection.
//! - **Dialing.** An `https://` target goes through an HTTP `CONNECT` tunnel, with TLS end to
//!   end inside it; a plain `http://` target is sent to the proxy in absolute form (with
//!   `Proxy-Authorization`), except with HTTP/2 prior knowledge, which tunnels too (a forward
//!   proxy does not speak h2c). `socks5://` resolves the target's name here, `socks5h://` lets
//!   the proxy resolve it.
//! - **Secrets.** The proxy is only ever shown through
//!   [`volley_core::redact::redact_url`]; its `Proxy-Authorization` value is marked sensitive.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::TryFutureExt as _;
use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower_service::Service;
use volley_core::redact::redact_url;
use volley_core::{BoxError, Error, ErrorKind};

/// The proxy settings of a builder.
#[derive(Clone, Default)]
pub(crate) struct ProxySettings {
    /// [`Builder::proxy`](crate::Builder::proxy): `Some("")` means "no proxy".
    pub(crate) proxy: Option<String>,
    /// [`Builder::no_proxy`](crate::Builder::no_proxy).
    pub(crate) no_proxy: Option<String>,
    /// [`Builder::proxy_env`](crate::Builder::proxy_env) turned off.
    pub(crate) ignore_env: bool,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("proxy", &self.proxy.as_deref().map(redact_url))
            .field("no_proxy", &self.no_proxy)
            .field("env", &!self.ignore_env)
            .finish()
    }
}

/// A parsed proxy URL.
#[derive(Clone)]
pub(crate) struct ProxyUrl {
    kind: ProxyKind,
    /// `scheme://host:port/`: what the TCP connector dials.
    uri: Uri,
    /// The URL as shown: `scheme://***@host:port` (see `redact_url`).
    display: Arc<str>,
    /// The decoded user name and password, as bytes: percent-encoding may give any byte, and
    /// curl sends them as they are.
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// `Basic base64(user:password)`, marked sensitive.
    basic: Option<HeaderValue>,
    /// Where the URL came from, for messages: `HTTPS_PROXY`, or the proxy setting.
    source: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProxyKind {
    Http,
    /// `socks5h://` when the proxy resolves the target's name.
    Socks5 {
        remote_dns: bool,
    },
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("url", &self.display)
            .field("from", &self.source)
            .finish_non_exhaustive()
    }
}

impl ProxyUrl {
    /// Parses a proxy URL the way curl reads one. `source` names where it came from.
    pub(crate) fn parse(raw: &str, source: &'static str) -> Result<ProxyUrl, Error> {
        let raw = raw.trim();
        let shown = redact_url(raw);
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Config,
                format!("{source}: the proxy URL {shown} {why}"),
            )
        };
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), raw),
        };
        let kind = match scheme.as_str() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5 { remote_dns: false },
            "socks5h" => ProxyKind::Socks5 { remote_dns: true },
            "https" => {
                return Err(bad(
                    "asks for TLS to the proxy (https://), which Volley does not support; use \
                     http:// (requests to https:// servers are still encrypted end to end)",
                ));
            }
            "socks4" | "socks4a" => {
                return Err(bad(
                    "is SOCKS4, which Volley does not support; use socks5://",
                ));
            }
            _ => return Err(bad("has a scheme other than http, socks5 or socks5h")),
        };
        // The user information ends at the last `@`, so an unencoded `@`, `/`, `?` or `#` in
        // a password stays in the password.
        let (userinfo, location) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let authority = location.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        let authority: http::uri::Authority = authority
            .parse()
            .map_err(|_| bad("does not have a valid host and port"))?;
        let explicit_port = authority
            .as_str()
            .rsplit_once(':')
            .map(|(_, port)| port)
            .filter(|port| !port.contains(']'));
        let port = match explicit_port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("does not have a valid port"))?,
            None => 1080,
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(format!("{}:{port}", authority.host()))
            .path_and_query("/")
            .build()
            .map_err(|_| bad("does not have a valid host and port"))?;
        let credentials = userinfo.map(|info| {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            (percent_decode(user), percent_decode(password))
        });
        // RFC 1929 gives each one length byte; the bytes go as they are, as curl sends them.
        if let (ProxyKind::Socks5 { .. }, Some((user, password))) = (kind, &credentials)
            && (user.len() > 255 || password.len() > 255)
        {
            return Err(bad(
                "has a user name or password a SOCKS5 proxy cannot take: each must be at most \
                 255 bytes once percent-decoded (RFC 1929)",
            ));
        }
        let basic = credentials
            .as_ref()
            .map(|(user, password)| {
                let joined = [user.as_slice(), b":", password.as_slice()].concat();
                let mut value = HeaderValue::try_from(format!("Basic {}", base64(&joined)))
                    .map_err(|_| bad("has credentials that cannot be sent"))?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        let display = format!(
            "{scheme}://{}{}:{port}",
            if userinfo.is_some() { "***@" } else { "" },
            authority.host()
        );
        Ok(ProxyUrl {
            kind,
            uri,
            display: display.into(),
            credentials,
            basic,
            source,
        })
    }

    /// The proxy as it may be shown: `http://***@host:port`.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// Whether the proxy itself is on this machine (a loopback address or `localhost`).
    pub(crate) fn is_loopback(&self) -> bool {
        self.uri.host().is_some_and(volley_core::host::is_loopback)
    }

    /// Where the URL came from: `http_proxy`, or the proxy setting.
    pub(crate) fn source(&self) -> &'static str {
        self.source
    }

    /// Whether this is an HTTP proxy (not SOCKS).
    pub(crate) fn is_http(&self) -> bool {
        self.kind == ProxyKind::Http
    }

    /// The `Proxy-Authorization` value, when the URL carries credentials.
    pub(crate) fn basic_auth(&self) -> Option<&HeaderValue> {
        self.basic.as_ref()
    }

    /// Adds what of the credentials must never be shown to `out` (the scrubber's list): the
    /// `Proxy-Authorization` value, its base64 alone, and the password when it is long enough
    /// not to be a word of an answer too (scrubbing a password `error` would rewrite every
    /// error body before it is read).
    pub(crate) fn secrets(&self, out: &mut Vec<bytes::Bytes>) {
        if let Some(basic) = &self.basic {
            crate::inner::secrets_of(basic.as_bytes(), out);
        }
        if let Some((_, password)) = &self.credentials
            && password.len() >= MIN_PLAIN_SECRET
        {
            crate::inner::secrets_of(password, out);
        }
    }
}

/// The proxy variables of the environment, read once per process.
#[derive(Clone, Debug, Default)]
struct ProxyEnv {
    http: Option<(&'static str, String)>,
    https: Option<(&'static str, String)>,
    all: Option<(&'static str, String)>,
    no: Option<(&'static str, String)>,
}

impl ProxyEnv {
    fn read(var: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (*name, v))
            })
        };
        ProxyEnv {
            // curl reads `http_proxy` in lower case only: `HTTP_PROXY` is what a CGI server
            // sets from a request's `Proxy:` header ("httpoxy").
            http: first(&["http_proxy"]),
            https: first(&["https_proxy", "HTTPS_PROXY"]),
            all: first(&["all_proxy", "ALL_PROXY"]),
            no: first(&["no_proxy", "NO_PROXY"]),
        }
    }

    fn process() -> &'static ProxyEnv {
        static ENV: OnceLock<ProxyEnv> = OnceLock::new();
        ENV.get_or_init(|| ProxyEnv::read(|name| std::env::var(name).ok()))
    }
}

/// The proxy the origin `scheme://host` is reached through, if any.
pub(crate) fn choose(
    settings: &ProxySettings,
    scheme: &Scheme,
    authority: &http::uri::Authority,
) -> Result<Option<ProxyUrl>, Error> {
    let env = if settings.ignore_env {
        &ProxyEnv::default()
    } else {
        ProxyEnv::process()
    };
    choose_with(settings, env, scheme, authority)
}

fn choose_with(
    settings: &ProxySettings,
    env: &ProxyEnv,
    scheme: &Scheme,
    authority: &http::uri::Authority,
) -> Result<Option<ProxyUrl>, Error> {
    let (source, raw) = match &settings.proxy {
        Some(url) if url.trim().is_empty() => return Ok(None),
        Some(url) => ("the proxy setting", url.as_str()),
        None => {
            let own = if *scheme == Scheme::HTTPS {
                &env.https
            } else {
                &env.http
            };
            match own.as_ref().or(env.all.as_ref()) {
                Some((name, value)) => (*name, value.as_str()),
                None => return Ok(None),
            }
        }
    };
    // NO_PROXY is consulted first, as curl does: a proxy this origin bypasses is never
    // parsed, so one Volley cannot use (an `https://` proxy in the environment, for other
    // tools) does not stop a client whose hosts are all exempt.
    let no_proxy = settings
        .no_proxy
        .as_deref()
        .or(env.no.as_ref().map(|(_, v)| v.as_str()));
    if let Some(list) = no_proxy
        && bypasses(list, scheme, authority)
    {
        return Ok(None);
    }
    ProxyUrl::parse(raw, source).map(Some)
}

/// Whether a `NO_PROXY` list names this origin, by curl's rules (`lib/noproxy.c`), matched
/// with hyper-util's matcher.
fn bypasses(list: &str, scheme: &Scheme, authority: &http::uri::Authority) -> bool {
    // curl: `*` as the whole list matches every host, names and addresses alike.
    if list.trim() == "*" {
        return true;
    }
    // Among other entries curl matches `*` with nothing (hyper-util would match every name
    // with it); curl ignores one trailing dot of an entry and of the host; and curl reads a
    // CIDR range of `/0` as its address alone (`0.0.0.0/0` is `0.0.0.0`, not every address,
    // as hyper-util would read it). An entry ends at a blank, and curl stops reading the list
    // where something other than a comma follows it (`a b,c` is `a` alone).
    let mut ended = false;
    let list = list
        .split(',')
        .map_while(|entry| {
            let entry = entry.trim();
            if ended {
                return None;
            }
            match entry.split_once([' ', '\t']) {
                Some((first, _)) => {
                    ended = true;
                    Some(first)
                }
                None => Some(entry),
            }
        })
        .filter(|entry| !entry.is_empty() && *entry != "*")
        .map(|entry| entry.strip_suffix('.').unwrap_or(entry))
        .map(|entry| entry.strip_suffix("/0").unwrap_or(entry))
        .collect::<Vec<_>>()
        .join(",");
    let host = authority.host();
    let authority = match host.strip_suffix('.') {
        Some(host) if !host.is_empty() => {
            let port = authority
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            match format!("{host}{port}").parse::<http::uri::Authority>() {
                Ok(authority) => authority,
                Err(_) => return false,
            }
        }
        _ => authority.clone(),
    };
    let Ok(dst) = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority)
        .path_and_query("/")
        .build()
    else {
        return false;
    };
    // Any proxy will do: only whether the list lets it intercept matters.
    Matcher::builder()
        .all("http://proxy.invalid:1")
        .no(list)
        .build()
        .intercept(&dst)
        .is_none()
}

/// How connections to the origin are opened.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    Direct,
    /// Plain HTTP requests sent to the proxy in absolute form.
    Forward(ProxyUrl),
    /// An HTTP `CONNECT` tunnel.
    Tunnel(ProxyUrl),
    Socks(ProxyUrl),
}

impl Route {
    pub(crate) fn new(proxy: Option<ProxyUrl>, scheme: &Scheme, h2c: bool) -> Route {
        match proxy {
            None => Route::Direct,
            Some(p) if !p.is_http() => Route::Socks(p),
            Some(p) if *scheme == Scheme::HTTP && !h2c => Route::Forward(p),
            Some(p) => Route::Tunnel(p),
        }
    }

    /// The proxy, when there is one.
    pub(crate) fn proxy(&self) -> Option<&ProxyUrl> {
        match self {
            Route::Direct => None,
            Route::Forward(p) | Route::Tunnel(p) | Route::Socks(p) => Some(p),
        }
    }
}

/// Opens TCP connections along a [`Route`]: to the origin, to the proxy, or to the proxy and
/// then through a tunnel to the origin.
#[derive(Clone)]
pub(crate) struct Dial {
    http: HttpConnector,
    route: Arc<Route>,
    /// Bounds the proxy's handshake as the TCP connect is bounded.
    handshake_timeout: Option<Duration>,
}

impl Dial {
    pub(crate) fn new(
        http: HttpConnector,
        route: Arc<Route>,
        handshake_timeout: Option<Duration>,
    ) -> Dial {
        Dial {
            http,
            route,
            handshake_timeout,
        }
    }
}

type DialFuture = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for Dial {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = DialFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> DialFuture {
        // Boxed once per new connection, never per request. A direct connection is only the
        // TCP connect, kept apart from the proxy handshakes: one future for all four routes
        // would be as large as the largest (a tunnel's, 2 672 bytes) for every connection, and
        // ten thousand opened at once would hold all of them.
        if let Route::Direct = *self.route {
            return Box::pin(self.http.call(dst).map_err(Into::into));
        }
        let route = self.route.clone();
        let mut http = self.http.clone();
        let limit = self.handshake_timeout;
        Box::pin(async move {
            match &*route {
                // Not reached: a direct connection is made above.
                Route::Direct => Ok(http.call(dst).await?),
                Route::Forward(proxy) => reach(&mut http, proxy).await,
                Route::Tunnel(proxy) => {
                    let io = reach(&mut http, proxy).await?;
                    let handshake = connect_tunnel(io, &dst, proxy);
                    Ok(bounded(limit, proxy, handshake).await?)
                }
                Route::Socks(proxy) => bounded(limit, proxy, socks(http, proxy, dst)).await,
            }
        })
    }
}

/// A TCP connection to the proxy itself.
async fn reach(http: &mut HttpConnector, proxy: &ProxyUrl) -> Result<TokioIo<TcpStream>, BoxError> {
    http.call(proxy.uri.clone()).await.map_err(|e| {
        ProxyError::new(proxy, Failure::Unreachable)
            .with_source(e)
            .into()
    })
}

async fn bounded<T>(
    limit: Option<Duration>,
    proxy: &ProxyUrl,
    handshake: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, handshake)
            .await
            .unwrap_or_else(|_| Err(ProxyError::new(proxy, Failure::TimedOut).into())),
        None => handshake.await,
    }
}

/// The most bytes of a proxy's answer to `CONNECT` read before giving up on it.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Asks the proxy for a tunnel to `dst` and reads its answer.
async fn connect_tunnel(
    io: TokioIo<TcpStream>,
    dst: &Uri,
    proxy: &ProxyUrl,
) -> Result<TokioIo<TcpStream>, BoxError> {
    let fail = |failure| -> BoxError { ProxyError::new(proxy, failure).into() };
    let host = dst
        .host()
        .ok_or_else(|| fail(Failure::Protocol("no target host")))?;
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let mut stream = io.into_inner();
    let mut request = format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: volley/{}\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some(auth) = proxy.basic_auth() {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream
        .write_all(&request)
        .await
        .map_err(|e| ProxyError::new(proxy, Failure::Broken).with_source(e))?;

    // The answer is read up to its end and no further: what follows is the tunnel's (a
    // server may speak first through it: h2c's SETTINGS), left in the socket for the
    // connection. Each read takes only bytes first seen by a peek: all of them while the
    // head is incomplete (they are all head), then exactly the rest of the head.
    let broken = |e| -> BoxError {
        ProxyError::new(proxy, Failure::Broken)
            .with_source(e)
            .into()
    };
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let header_end = loop {
        let n = stream.peek(&mut chunk).await.map_err(broken)?;
        if n == 0 {
            return Err(fail(Failure::Closed));
        }
        let seen = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        // httparse takes line ends as RFC 9112 (2.2) lets a recipient: CRLF, or a lone LF
        // (curl accepts a proxy's `HTTP/1.0 200 OK\n\n` too).
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let complete = match httparse::Response::new(&mut headers).parse(&buf) {
            Ok(httparse::Status::Complete(end)) => Some(end),
            Ok(httparse::Status::Partial) => None,
            Err(_) => return Err(fail(Failure::Protocol("its answer to CONNECT is not HTTP"))),
        };
        let take = complete.map_or(n, |end| end - seen);
        buf.truncate(seen + take);
        stream
            .read_exact(&mut chunk[..take])
            .await
            .map_err(broken)?;
        if let Some(end) = complete {
            break end;
        }
        if buf.len() > MAX_CONNECT_RESPONSE {
            return Err(fail(Failure::Protocol("its answer to CONNECT is too long")));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf[..header_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(fail(Failure::Protocol("its answer to CONNECT is not HTTP"))),
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| {
            fail(Failure::Protocol(
                "its answer to CONNECT has no valid status",
            ))
        })?;
    if !status.is_success() {
        let mut map = HeaderMap::new();
        for header in response.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(header.name.as_bytes()),
                HeaderValue::from_bytes(header.value),
            ) {
                map.append(name, value);
            }
        }
        return Err(fail(Failure::Status(status, map)));
    }
    Ok(TokioIo::new(stream))
}

/// Through a SOCKS5 proxy (RFC 1928, with RFC 1929's user name and password). With
/// `socks5://` the target's name is resolved here (by tokio, off the runtime threads), with
/// `socks5h://` by the proxy. As curl does, "no authentication" is always offered, and the user
/// name and password too when the URL has them: the proxy chooses, so one that takes none
/// (`ssh -D`) works with credentials in its URL.
async fn socks(
    mut http: HttpConnector,
    proxy: &ProxyUrl,
    dst: Uri,
) -> Result<TokioIo<TcpStream>, BoxError> {
    let fail = |failure| -> BoxError { ProxyError::new(proxy, failure).into() };
    let broken = |e: std::io::Error| -> BoxError {
        ProxyError::new(proxy, Failure::Broken)
            .with_source(e)
            .into()
    };
    let ProxyKind::Socks5 { remote_dns } = proxy.kind else {
        return Err(fail(Failure::Protocol("not a SOCKS proxy")));
    };
    let host = dst
        .host()
        .ok_or_else(|| fail(Failure::Protocol("no target host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    // An `http://` base URL without a port goes to 80, its scheme's port, as with curl.
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    // The target as the CONNECT request names it: an address, or a name the proxy resolves.
    let mut target = Vec::with_capacity(host.len() + 4);
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) if remote_dns => None,
        Err(_) => Some(
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| fail(Failure::Resolve))?
                .ip(),
        ),
    };
    match ip {
        Some(std::net::IpAddr::V4(v4)) => {
            target.push(1);
            target.extend_from_slice(&v4.octets());
        }
        Some(std::net::IpAddr::V6(v6)) => {
            target.push(4);
            target.extend_from_slice(&v6.octets());
        }
        None => {
            let name = u8::try_from(host.len()).map_err(|_| fail(Failure::SocksName))?;
            target.push(3);
            target.push(name);
            target.extend_from_slice(host.as_bytes());
        }
    }
    target.extend_from_slice(&port.to_be_bytes());

    let mut stream = reach(&mut http, proxy).await?.into_inner();
    // The methods offered: none, and user name and password when the URL has them.
    let hello: &[u8] = if proxy.credentials.is_some() {
        &[5, 2, 0x00, 0x02]
    } else {
        &[5, 1, 0x00]
    };
    stream.write_all(hello).await.map_err(broken)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(broken)?;
    if choice[0] != 5 {
        return Err(fail(Failure::Protocol("its answer is not SOCKS5")));
    }
    tracing::debug!(
        proxy = proxy.display(),
        method = choice[1],
        "SOCKS5 method chosen (0 none, 2 user name and password)"
    );
    match (choice[1], &proxy.credentials) {
        (0x00, _) => {}
        (0x02, Some((user, password))) => {
            // Lengths of at most 255: checked when the URL was parsed.
            let mut login = Vec::with_capacity(3 + user.len() + password.len());
            login.extend_from_slice(&[1, user.len() as u8]);
            login.extend_from_slice(user);
            login.push(password.len() as u8);
            login.extend_from_slice(password);
            stream.write_all(&login).await.map_err(broken)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(broken)?;
            if status[1] != 0 {
                return Err(fail(Failure::SocksAuth));
            }
        }
        // It wants a login the URL does not have, or none of the methods offered.
        (0xff, None) => return Err(fail(Failure::SocksAuth)),
        (0xff, Some(_)) => return Err(fail(Failure::SocksMethod)),
        _ => {
            return Err(fail(Failure::Protocol(
                "it chose an authentication method that was not offered",
            )));
        }
    }
    let mut connect = Vec::with_capacity(3 + target.len());
    connect.extend_from_slice(&[5, 1, 0]);
    connect.extend_from_slice(&target);
    stream.write_all(&connect).await.map_err(broken)?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(broken)?;
    if reply[0] != 5 {
        return Err(fail(Failure::Protocol("its answer is not SOCKS5")));
    }
    if reply[1] != 0 {
        return Err(fail(Failure::SocksReply(reply[1])));
    }
    // The address the proxy bound, and its port: read and dropped.
    let bound = match reply[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(broken)?;
            usize::from(len[0])
        }
        _ => {
            return Err(fail(Failure::Protocol(
                "its answer names an unknown address type",
            )));
        }
    };
    let mut rest = vec![0u8; bound + 2];
    stream.read_exact(&mut rest).await.map_err(broken)?;
    Ok(TokioIo::new(stream))
}

/// The shortest proxy password scrubbed as itself (its `Basic` value always is).
const MIN_PLAIN_SECRET: usize = 12;

/// A connection through a proxy failed. The proxy is named as `redact_url` shows it.
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: Arc<str>,
    source_name: &'static str,
    has_credentials: bool,
    failure: Failure,
    source: Option<BoxError>,
}

#[derive(Debug)]
enum Failure {
    Unreachable,
    TimedOut,
    Broken,
    Closed,
    Resolve,
    Protocol(&'static str),
    Status(StatusCode, HeaderMap),
    SocksAuth,
    /// The proxy takes none of the methods offered (none, user name and password).
    SocksMethod,
    /// The proxy refused the connection to the target, with this reply code (RFC 1928, 6).
    SocksReply(u8),
    /// The target's name is longer than SOCKS5 can carry (255 bytes).
    SocksName,
}

impl ProxyError {
    fn new(proxy: &ProxyUrl, failure: Failure) -> ProxyError {
        ProxyError {
            proxy: proxy.display.clone(),
            source_name: proxy.source,
            has_credentials: proxy.credentials.is_some(),
            failure,
            source: None,
        }
    }

    fn with_source(mut self, source: impl Into<BoxError>) -> ProxyError {
        self.source = Some(source.into());
        self
    }

    /// The Volley error for a request that failed here; `context` says which request.
    pub(crate) fn to_error(&self, context: &str) -> Error {
        match &self.failure {
            Failure::Status(status, headers) => {
                let context = format!("{context}: {}", status_message(self, *status));
                // A refusal of the tunnel is the proxy's answer: nothing reached the server.
                Error::from_status(*status, headers.clone(), b"", None, context)
                    .with_request_sent(false)
            }
            // Credentials missing from the proxy URL, or refused: the setting is wrong, and
            // trying again would only repeat a failed login (`Config` is never retried).
            // The settings are wrong, or the proxy refuses this target by its rules, command or
            // address type: the same every time (`Config` is never retried).
            Failure::SocksAuth
            | Failure::SocksMethod
            | Failure::SocksName
            | Failure::SocksReply(2 | 7 | 8) => {
                Error::new(ErrorKind::Config, format!("{context}: {self}")).with_request_sent(false)
            }
            _ => Error::new(ErrorKind::Connect, format!("{context}: {self}")),
        }
    }
}

/// What a proxy's refusal of a request means, naming the proxy (never its password).
pub(crate) fn status_message_for(proxy: &ProxyUrl, status: StatusCode) -> String {
    status_message(&ProxyError::new(proxy, Failure::Closed), status)
}

fn status_message(e: &ProxyError, status: StatusCode) -> String {
    let proxy = &e.proxy;
    let from = e.source_name;
    // Some proxies (tinyproxy) refuse a CONNECT with 401 rather than 407: either way it is the
    // proxy's answer, since nothing reached the server.
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED || status == StatusCode::UNAUTHORIZED {
        if e.has_credentials {
            format!(
                "the proxy {proxy} (from {from}) rejected the user name and password in its URL"
            )
        } else {
            format!(
                "the proxy {proxy} (from {from}) requires authentication: put \
                 user:password@ in the proxy URL"
            )
        }
    } else {
        format!("the proxy {proxy} (from {from}) refused the request")
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = &self.proxy;
        let from = self.source_name;
        match &self.failure {
            Failure::Unreachable => {
                write!(f, "could not connect to the proxy {proxy} (from {from})")
            }
            Failure::TimedOut => write!(
                f,
                "the proxy {proxy} (from {from}) did not complete its handshake within the \
                 connect timeout"
            ),
            Failure::Broken => write!(
                f,
                "the connection to the proxy {proxy} (from {from}) failed"
            ),
            Failure::Closed => write!(
                f,
                "the proxy {proxy} (from {from}) closed the connection without answering"
            ),
            Failure::Resolve => write!(
                f,
                "could not resolve the target's address for the SOCKS proxy {proxy} (from {from})"
            ),
            Failure::Protocol(what) => {
                write!(f, "the proxy {proxy} (from {from}) misbehaved: {what}")
            }
            Failure::Status(status, _) => {
                write!(f, "{}: HTTP {status}", status_message(self, *status))
            }
            Failure::SocksName => write!(
                f,
                "the target's host name is longer than the 255 bytes the SOCKS5 proxy {proxy} \
                 (from {from}) can be given"
            ),
            Failure::SocksReply(code) => {
                let why = match code {
                    1 => "a general failure of the proxy",
                    2 => "the proxy's rules do not allow it",
                    3 => "the network is unreachable",
                    4 => "the host is unreachable",
                    5 => "the connection was refused",
                    6 => "the TTL expired",
                    7 => "the proxy does not support CONNECT",
                    8 => "the proxy does not support the address type",
                    _ => "an unknown reply code",
                };
                write!(
                    f,
                    "the SOCKS5 proxy {proxy} (from {from}) could not connect to the target: \
                     {why} (reply {code})"
                )
            }
            Failure::SocksAuth if !self.has_credentials => write!(
                f,
                "the SOCKS5 proxy {proxy} (from {from}) requires a user name and password: put \
                 user:password@ in the proxy URL"
            ),
            Failure::SocksAuth => write!(
                f,
                "the SOCKS5 proxy {proxy} (from {from}) rejected the user name and password in \
                 its URL"
            ),
            Failure::SocksMethod => write!(
                f,
                "the SOCKS5 proxy {proxy} (from {from}) takes neither no authentication nor a \
                 user name and password"
            ),
        }
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits make one byte: hi and lo are below 16.
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What follows a proxy's `200` in the same read is the tunnel's (an h2c server's
    /// SETTINGS, sent before the client speaks): it is left for the connection, not refused.
    #[tokio::test]
    async fn bytes_after_the_connect_answer_stay_in_the_tunnel() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = volley_testkit::raw::read_request_head(&mut socket).await;
            // The answer and the server's first bytes in one write, the head split in two.
            socket.write_all(b"HTTP/1.1 200 Connection").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            socket
                .write_all(b" established\r\n\r\nSERVER-FIRST")
                .await
                .unwrap();
            let _ = socket.read(&mut [0; 16]).await;
        });
        let proxy = ProxyUrl::parse(&format!("http://127.0.0.1:{port}"), "the test").unwrap();
        let io = TokioIo::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        let dst: Uri = "http://127.0.0.1:9/".parse().unwrap();
        let bounded = |f| tokio::time::timeout(std::time::Duration::from_secs(10), f);
        let tunnel = bounded(connect_tunnel(io, &dst, &proxy))
            .await
            .expect("the answer is read within 10 s")
            .unwrap();
        let mut stream = tunnel.into_inner();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"SERVER-FIRST");
    }

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyEnv::read(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn pick(settings: &ProxySettings, env: &ProxyEnv, url: &str) -> Option<String> {
        let uri: Uri = url.parse().unwrap();
        choose_with(
            settings,
            env,
            uri.scheme().unwrap(),
            uri.authority().unwrap(),
        )
        .unwrap()
        .map(|p| format!("{} from {}", p.display(), p.source))
    }

    #[test]
    fn proxy_urls_are_read_as_curl_reads_them() {
        let p = ProxyUrl::parse("proxy.corp:3128", "x").unwrap();
        assert_eq!(p.display(), "http://proxy.corp:3128");
        assert_eq!(p.uri, "http://proxy.corp:3128/");
        let p = ProxyUrl::parse("http://proxy.corp", "x").unwrap();
        assert_eq!(p.uri.port_u16(), Some(1080), "curl's default proxy port");
        let p = ProxyUrl::parse("http://us%40er:p%3Ass@[::1]:8080/", "x").unwrap();
        assert_eq!(p.display(), "http://***@[::1]:8080");
        assert_eq!(p.credentials, Some((b"us@er".to_vec(), b"p:ss".to_vec())));
        // An unencoded password with URL delimiters stays whole.
        let p = ProxyUrl::parse("http://u:p@ss/w?rd#1@127.0.0.1:3128", "x").unwrap();
        assert_eq!(p.credentials.as_ref().unwrap().1, b"p@ss/w?rd#1");
        assert_eq!(p.uri, "http://127.0.0.1:3128/");
        let auth = p.basic_auth().unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth, &format!("Basic {}", base64(b"u:p@ss/w?rd#1")));
        assert_eq!(base64(b"Aladdin:opensesame"), "QWxhZGRpbjpvcGVuc2VzYW1l");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        // A password that is Latin-1, not UTF-8, once decoded ("pä" as ISO 8859-1) is sent
        // byte for byte, as curl sends it: 'p', 0xE4.
        let p = ProxyUrl::parse("http://u:p%E4@127.0.0.1:3128", "x").unwrap();
        assert_eq!(p.credentials.as_ref().unwrap().1, [b'p', 0xE4]);
        assert_eq!(
            p.basic_auth().unwrap(),
            &format!("Basic {}", base64(&[b'u', b':', b'p', 0xE4]))
        );
        assert_eq!(base64(&[b'u', b':', b'p', 0xE4]), "dTpw5A==");
        // SOCKS5 sends them byte for byte too (RFC 1929 takes octets).
        let p = ProxyUrl::parse("socks5://u:p%E4@127.0.0.1:1080", "x").unwrap();
        assert_eq!(p.credentials.as_ref().unwrap().1, [b'p', 0xE4]);
        let p = ProxyUrl::parse("SOCKS5H://127.0.0.1:1080", "x").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5 { remote_dns: true });
    }

    #[test]
    fn unusable_proxy_urls_are_errors_without_the_password() {
        for url in [
            "https://u:hunter2@proxy:443",
            "socks4://u:hunter2@proxy:1080",
            "ftp://u:hunter2@proxy:21",
            "http://u:hunter2@",
            "http://u:hunter2@pro xy:1",
            "http://u:hunter2@proxy:99999",
        ] {
            let err = ProxyUrl::parse(url, "HTTPS_PROXY").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("HTTPS_PROXY"), "{text}");
        }
    }

    #[test]
    fn the_environment_follows_curl() {
        let none = ProxySettings::default();
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://plain:3"),
        ]);
        assert_eq!(
            pick(&none, &e, "https://api.openai.com").unwrap(),
            "http://lower:2 from https_proxy"
        );
        // curl reads http_proxy in lower case only (httpoxy: a CGI server sets HTTP_PROXY from
        // a request's `Proxy:` header), CGI or not; ALL_PROXY then applies.
        assert_eq!(pick(&none, &e, "http://10.0.0.1"), None);
        let upper = env(&[
            ("HTTP_PROXY", "http://plain:3"),
            ("ALL_PROXY", "http://all:4"),
        ]);
        assert_eq!(
            pick(&none, &upper, "http://10.0.0.1").unwrap(),
            "http://all:4 from ALL_PROXY"
        );
        let lower = env(&[
            ("http_proxy", "http://plain:3"),
            ("ALL_PROXY", "http://all:4"),
        ]);
        assert_eq!(
            pick(&none, &lower, "http://10.0.0.1").unwrap(),
            "http://plain:3 from http_proxy"
        );
        let all = env(&[("ALL_PROXY", "http://all:4"), ("https_proxy", "")]);
        assert_eq!(
            pick(&none, &all, "https://x.example").unwrap(),
            "http://all:4 from ALL_PROXY"
        );
        assert_eq!(pick(&none, &env(&[]), "https://x.example"), None);
    }

    #[test]
    fn no_proxy_bypasses_as_curl_does() {
        let none = ProxySettings::default();
        let e = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "internal.corp, 10.0.0.0/8,::1"),
        ]);
        assert_eq!(pick(&none, &e, "https://internal.corp"), None);
        assert_eq!(pick(&none, &e, "https://api.internal.corp:8443"), None);
        assert_eq!(pick(&none, &e, "https://10.2.3.4"), None);
        assert_eq!(pick(&none, &e, "https://[::1]:8443"), None);
        assert!(pick(&none, &e, "https://notinternal.corp").is_some());
        assert!(pick(&none, &e, "https://api.openai.com").is_some());
        // `*` is everything only as the whole list; among other entries curl matches nothing
        // with it.
        let star = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", " * ")]);
        assert_eq!(pick(&none, &star, "https://api.openai.com"), None);
        assert_eq!(pick(&none, &star, "https://127.0.0.1:8443"), None);
        let listed = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "x.example, *")]);
        assert!(pick(&none, &listed, "https://api.openai.com").is_some());
        assert!(pick(&none, &listed, "https://127.0.0.1:8443").is_some());
        assert_eq!(pick(&none, &listed, "https://x.example"), None);
        // One trailing dot, of the entry or of the host, is ignored.
        let dotted = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("no_proxy", "corp.internal."),
        ]);
        assert_eq!(pick(&none, &dotted, "https://api.corp.internal"), None);
        assert_eq!(
            pick(&none, &dotted, "https://api.corp.internal.:8443"),
            None
        );
        assert!(pick(&none, &dotted, "https://api.corp.example").is_some());
        let plain = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "corp.internal")]);
        assert_eq!(pick(&none, &plain, "https://corp.internal."), None);
        // Blanks end an entry, and the list where no comma follows: `a b, c` is `a` alone.
        let blanks = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("no_proxy", "llm.corp internal.corp, x.example"),
        ]);
        assert_eq!(pick(&none, &blanks, "https://llm.corp"), None);
        assert!(pick(&none, &blanks, "https://internal.corp").is_some());
        assert!(pick(&none, &blanks, "https://x.example").is_some());
        // A range of `/0` is its address alone, as curl reads it.
        let zero = env(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("no_proxy", "0.0.0.0/0, ::/0"),
        ]);
        assert!(pick(&none, &zero, "https://10.2.3.4").is_some());
        assert!(pick(&none, &zero, "https://[2001:db8::1]").is_some());
        assert_eq!(pick(&none, &zero, "https://0.0.0.0"), None);
        // A proxy Volley cannot use is no error for an origin that bypasses it, as curl never
        // looks at it then; for any other origin it is.
        let unusable = env(&[
            ("HTTPS_PROXY", "https://proxy.corp:443"),
            ("no_proxy", "llm.corp"),
        ]);
        assert_eq!(pick(&none, &unusable, "https://llm.corp"), None);
        let uri: Uri = "https://api.openai.com".parse().unwrap();
        let other = choose_with(
            &none,
            &unusable,
            uri.scheme().unwrap(),
            uri.authority().unwrap(),
        );
        assert!(other.is_err(), "{other:?}");
    }

    #[test]
    fn explicit_settings_win_over_the_environment() {
        let e = env(&[
            ("HTTPS_PROXY", "http://env:1"),
            ("NO_PROXY", "api.openai.com"),
        ]);
        let explicit = ProxySettings {
            proxy: Some("http://mine:2".into()),
            ..ProxySettings::default()
        };
        // The environment's NO_PROXY still applies to an explicit proxy, as with curl -x.
        assert_eq!(pick(&explicit, &e, "https://api.openai.com"), None);
        assert_eq!(
            pick(&explicit, &e, "https://other.example").unwrap(),
            "http://mine:2 from the proxy setting"
        );
        let own_list = ProxySettings {
            no_proxy: Some("other.example".into()),
            ..explicit.clone()
        };
        assert!(pick(&own_list, &e, "https://api.openai.com").is_some());
        assert_eq!(pick(&own_list, &e, "https://other.example"), None);
        let off = ProxySettings {
            proxy: Some(String::new()),
            ..ProxySettings::default()
        };
        assert_eq!(pick(&off, &e, "https://other.example"), None);
    }

    #[test]
    fn a_refused_tunnel_names_the_proxy_without_its_password() {
        let proxy = ProxyUrl::parse("http://user:hunter2@127.0.0.1:3128", "HTTPS_PROXY").unwrap();
        let err = ProxyError::new(
            &proxy,
            Failure::Status(StatusCode::PROXY_AUTHENTICATION_REQUIRED, HeaderMap::new()),
        )
        .to_error("request 1 POST https://x/v1/chat/completions");
        assert_eq!(
            err.status(),
            Some(StatusCode::PROXY_AUTHENTICATION_REQUIRED)
        );
        assert!(!err.is_request_sent());
        let text = format!("{err} {err:?}");
        assert!(text.contains("http://***@127.0.0.1:3128"), "{text}");
        assert!(
            text.contains("rejected the user name and password"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("user:"),
            "{text}"
        );
    }
}
