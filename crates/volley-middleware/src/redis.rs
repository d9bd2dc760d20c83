//! The Redis connection the shared limiter and cache use (feature `redis`).
//!
//! One [`RedisConnection`] is one reconnecting, multiplexed connection: `redis`'s
//! [`ConnectionManager`] for a single server (or a primary behind a proxy), its async cluster
//! client for Redis Cluster. Clones share the connection; commands from many tasks are
//! pipelined on it.
//!
//! URLs: `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS (rustls, the same
//! crypto provider as the HTTP transport), `redis+unix:///path`. Plain `redis://` to a host
//! that is not loopback is refused unless [`RedisOptions::allow_plain_redis`] says otherwise,
//! as plain `http://` is: the password, the cached answers and the limiter's state would cross
//! the network in clear text. A password in the URL is sent
//! with `AUTH` and never appears in a log line, an error or `Debug` output: everything this
//! module prints names the server by [`redacted`] URL (`scheme://***@host:port/db?***`).
//!
//! Commands that were in flight when the connection dropped fail; the manager reconnects in the
//! background and the next command goes over the new connection. Callers (the limiter and the
//! cache) retry or degrade as their docs say.
//!
//! A single server's connection that answers `READONLY` is replaced with a new one (at most
//! once a second, in the background): after a failover behind one name (a managed Redis's
//! primary endpoint, a DNS name, a proxy) the old connection stays open to the demoted node,
//! now a replica, which refuses every write for good, while a new connection reaches the new
//! primary. The command that got `READONLY` fails as before.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};
use volley_core::redact::{redact_url, redact_url_in};
use volley_core::{Error, ErrorKind};

/// How long one command may take before it counts as failed, by default.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach Redis: URL, cluster or not, timeouts.
#[derive(Clone)]
pub struct RedisOptions {
    urls: Vec<String>,
    cluster: bool,
    allow_plain: bool,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// CA certificates (PEM) trusted for `rediss://` instead of the operating system's.
    tls_ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), for mutual TLS.
    tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field(
                "urls",
                &self.urls.iter().map(|u| redacted(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("allow_plain_redis", &self.allow_plain)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("tls_client_identity", &self.tls_identity_pem.is_some())
            .finish()
    }
}

impl RedisOptions {
    /// One server (or any node of a cluster, with [`cluster`](Self::cluster)).
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            urls: vec![url.into()],
            cluster: false,
            allow_plain: false,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls_ca_pem: None,
            tls_identity_pem: None,
        }
    }

    /// For `rediss://`: trust the CA certificates of this PEM (a private CA, as a managed
    /// Redis on a private network uses) instead of the operating system's roots, as
    /// `redis-cli --cacert` does. A file that holds no certificate fails
    /// [`RedisConnection::connect`] with `ErrorKind::Config`.
    ///
    /// Default: the operating system's roots.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> RedisOptions {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// For `rediss://` to a server that requires mutual TLS: the client certificate chain
    /// (PEM, leaf first) and its private key (PEM), as `redis-cli --cert --key`.
    ///
    /// Default: none.
    pub fn tls_client_identity_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> RedisOptions {
        self.tls_identity_pem = Some((cert_chain.into(), private_key.into()));
        self
    }

    /// The TLS settings given, for `redis`'s client; `None` for its defaults.
    fn tls(&self) -> Option<::redis::TlsCertificates> {
        if self.tls_ca_pem.is_none() && self.tls_identity_pem.is_none() {
            return None;
        }
        Some(::redis::TlsCertificates {
            client_tls: self.tls_identity_pem.as_ref().map(|(cert, key)| {
                ::redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }
            }),
            root_cert: self.tls_ca_pem.clone(),
        })
    }

    /// Talks to a Redis Cluster through these seed nodes (their URLs). Keys of one limiter
    /// share a hash tag, so each script runs on one node.
    pub fn cluster(mut self, cluster: bool) -> RedisOptions {
        self.cluster = cluster;
        self
    }

    /// Allow plain `redis://` to a host that is not loopback. Without it,
    /// [`RedisConnection::connect`] refuses such a URL with `ErrorKind::Config`: use
    /// `rediss://` (TLS), a loopback address or a Unix socket, or allow it here for a network
    /// you trust. A [cluster](Self::cluster) reached in plain text through loopback seeds is
    /// refused too when a node it names (`CLUSTER SLOTS`, read before connecting to the
    /// others) is not on loopback: the client would send the password there. Nodes the
    /// cluster names later (a resharding, a failover) are not checked again.
    ///
    /// Default: `false` (plain text only to `localhost`, `127.0.0.0/8`, `[::1]` and Unix
    /// sockets).
    pub fn allow_plain_redis(mut self, allowed: bool) -> RedisOptions {
        self.allow_plain = allowed;
        self
    }

    /// More seed nodes for a cluster.
    pub fn seed(mut self, url: impl Into<String>) -> RedisOptions {
        self.urls.push(url.into());
        self
    }

    /// How long one command may take before it fails (500 ms by default).
    pub fn response_timeout(mut self, timeout: Duration) -> RedisOptions {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (2 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisOptions {
        self.connect_timeout = timeout;
        self
    }

    /// The command timeout set with [`response_timeout`](Self::response_timeout): callers
    /// that bound a whole exchange (several commands, or a command waiting for a reconnect)
    /// derive their own deadline from it.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The first URL, without its password, for messages.
    pub fn redacted_url(&self) -> String {
        redacted(&self.urls[0])
    }
}

/// A reconnecting connection to Redis or Redis Cluster. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
    server: std::sync::Arc<str>,
    /// The URLs as given, kept only to scrub their secrets from errors (never printed).
    urls: std::sync::Arc<[String]>,
    command_timeout: Duration,
}

#[derive(Clone)]
enum Inner {
    Single(Arc<Single>),
    Cluster(ClusterConnection),
}

/// The connection to a single server, replaced when it answers `READONLY` (see the module's
/// docs).
struct Single {
    /// The connection, and its generation: 0 for the first, one more for each replacement.
    manager: RwLock<(u64, ConnectionManager)>,
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    /// Whether a replacement is being made.
    replacing: AtomicBool,
    /// When the last replacement was started.
    replaced_at: Mutex<Option<Instant>>,
}

/// Whether `e` is Redis's `READONLY`: a write sent to a replica. Before Redis 7 a write in a
/// script fails as `ERR Error running script ... READONLY You can't write ...`.
fn is_read_only(e: &::redis::RedisError) -> bool {
    e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly)
        || e.code() == Some("READONLY")
        || e.to_string().contains("READONLY You can't write")
}

/// Whether a reply is, or holds, a `READONLY` error (a pipeline's replies, or a script's).
fn is_read_only_value(value: &Value) -> bool {
    match value {
        Value::ServerError(e) => {
            e.code() == "READONLY"
                || e.details()
                    .is_some_and(|d| d.contains("READONLY You can't write"))
        }
        Value::Array(values) => values.iter().any(is_read_only_value),
        _ => false,
    }
}

/// The least time between two replacements of a connection that answered `READONLY`: a
/// server that is a replica by configuration (not after a failover) answers every new
/// connection so too.
const MIN_REPLACE_INTERVAL: Duration = Duration::from_secs(1);

impl Single {
    /// The connection commands go over now, and its generation.
    fn current(&self) -> (u64, ConnectionManager) {
        self.manager
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After a command over the connection of generation `generation`: when it answered
    /// `READONLY` (`read_only`), starts a replacement of the connection in the background,
    /// unless that connection was replaced already, a replacement is under way, or the last
    /// started less than [`MIN_REPLACE_INTERVAL`] ago.
    fn after(self: &Arc<Self>, generation: u64, read_only: bool) {
        if !read_only || self.current().0 != generation {
            return;
        }
        {
            let mut at = self
                .replaced_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if at.is_some_and(|at| at.elapsed() < MIN_REPLACE_INTERVAL)
                || self.replacing.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *at = Some(Instant::now());
        }
        /// Lets the next `READONLY` try again however the replacement ends (its task
        /// aborted by a runtime shutting down included).
        struct Done(Arc<Single>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.replacing.store(false, Ordering::Release);
            }
        }
        let done = Done(Arc::clone(self));
        tokio::spawn(async move {
            let this = &done.0;
            let fresh = this
                .client
                .get_connection_manager_with_config(this.config.clone())
                .await;
            match fresh {
                Ok(fresh) => {
                    let mut current = this.manager.write().unwrap_or_else(PoisonError::into_inner);
                    *current = (current.0 + 1, fresh);
                    drop(current);
                    tracing::warn!(
                        "Redis answered READONLY (a failover made its node a replica): \
                         connected again"
                    );
                }
                // The next `READONLY` tries again.
                Err(e) => tracing::warn!(
                    error_kind = ?e.kind(),
                    "Redis answered READONLY, and connecting again failed"
                ),
            }
        });
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("server", &self.server)
            .field("cluster", &matches!(self.inner, Inner::Cluster(_)))
            .finish()
    }
}

impl RedisConnection {
    /// Connects (and authenticates) now, so a wrong URL or password fails here, not on the
    /// first request.
    ///
    /// # Errors
    /// `ErrorKind::Config` for a URL that does not parse; `ErrorKind::Connect` when the server
    /// cannot be reached or refuses the credentials. Neither message contains the password.
    pub async fn connect(options: &RedisOptions) -> Result<RedisConnection, Error> {
        let server: std::sync::Arc<str> = options.redacted_url().into();
        if !options.allow_plain {
            for url in &options.urls {
                refuse_plain_remote(url)?;
            }
        }
        let config_error = |e: ::redis::RedisError| {
            Error::new(
                ErrorKind::Config,
                format!("invalid Redis URL {server}: {}", scrub(&e, options)),
            )
        };
        let connect_error = |e: ::redis::RedisError| {
            Error::new(
                ErrorKind::Connect,
                format!("connecting to Redis at {server}: {}", scrub(&e, options)),
            )
        };
        if let Some(pem) = &options.tls_ca_pem
            && !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the CA file for Redis at {server} holds no PEM certificate"),
            ));
        }
        let inner = if options.cluster {
            let mut builder = ClusterClient::builder(options.urls.iter().map(String::as_str))
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout);
            if let Some(tls) = options.tls() {
                builder = builder.certs(tls);
            }
            let client = builder.build().map_err(config_error)?;
            if !options.allow_plain && options.urls.iter().any(|url| is_plain(url)) {
                // Before the cluster client connects to (and authenticates with) every node
                // the cluster names. (A mix of plain and TLS seeds was refused just above.)
                refuse_plain_remote_nodes(options, &server).await?;
            }
            Inner::Cluster(client.get_async_connection().await.map_err(connect_error)?)
        } else {
            let url = options.urls[0].as_str();
            let client = match options.tls() {
                Some(tls) => ::redis::Client::build_with_tls(url, tls),
                None => ::redis::Client::open(url),
            }
            .map_err(config_error)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.response_timeout))
                .set_max_delay(Duration::from_secs(2));
            let manager = client
                .get_connection_manager_with_config(config.clone())
                .await
                .map_err(connect_error)?;
            Inner::Single(Arc::new(Single {
                manager: RwLock::new((0, manager)),
                client,
                config,
                replacing: AtomicBool::new(false),
                replaced_at: Mutex::new(None),
            }))
        };
        Ok(RedisConnection {
            inner,
            server,
            urls: options.urls.clone().into(),
            command_timeout: options.command_timeout(),
        })
    }

    /// The server, as a URL without its password.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The most one command may take ([`RedisOptions::response_timeout`]). While the
    /// connection is being re-established a command can otherwise wait for the reconnect, so
    /// callers that must not wait (the cache) bound each command with it.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A Redis error as a volley error, named by the redacted server URL.
    ///
    /// `ErrorKind::Config` for an error no wait heals ([`is_permanent`]): the credentials or
    /// the ACL refused, or a cluster node answered a connection not made for a cluster;
    /// `ErrorKind::Timeout` for a timeout; `ErrorKind::Connection` otherwise.
    pub fn error(&self, context: &str, e: &::redis::RedisError) -> Error {
        let kind = if is_permanent(e, matches!(self.inner, Inner::Cluster(_))) {
            ErrorKind::Config
        } else if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
        // Scrubbed against the URLs as given: the redacted one no longer holds the password
        // a library's message might quote.
        let mut text = e.to_string();
        for url in self.urls.iter() {
            text = redact_url_in(&text, url);
        }
        use ::redis::{ErrorKind as Kind, ServerErrorKind as Server};
        if matches!(self.inner, Inner::Single(_))
            && matches!(
                e.kind(),
                Kind::Server(Server::Moved | Server::Ask | Server::ClusterDown)
            )
        {
            text.push_str(
                "; this server is a node of a Redis Cluster: connect in cluster mode \
                 (RedisOptions::cluster; volley's --redis-cluster)",
            );
        }
        Error::new(
            kind,
            format!("{context} (Redis at {}): {text}", self.server),
        )
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(single) => {
                let (generation, mut connection) = single.current();
                Box::pin(async move {
                    let result = connection.req_packed_command(cmd).await;
                    single.after(
                        generation,
                        match &result {
                            Ok(value) => is_read_only_value(value),
                            Err(e) => is_read_only(e),
                        },
                    );
                    result
                })
            }
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(single) => {
                let (generation, mut connection) = single.current();
                Box::pin(async move {
                    let result = connection
                        .req_packed_commands(pipeline, offset, count)
                        .await;
                    single.after(
                        generation,
                        match &result {
                            Ok(values) => values.iter().any(is_read_only_value),
                            Err(e) => is_read_only(e),
                        },
                    );
                    result
                })
            }
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(single) => single.current().1.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

/// `url` with its user information (user name and password) shown as `***@` and its query
/// and fragment as `?***` / `#***`: [`volley_core::redact::redact_url`], the one URL redactor,
/// under the name this module has always offered.
pub fn redacted(url: &str) -> String {
    redact_url(url)
}

/// Whether `url` is plain text: `redis://`, or Valkey's own scheme (which the client accepts
/// too), as plain.
fn is_plain(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("redis") || scheme.eq_ignore_ascii_case("valkey")
    })
}

/// For a cluster reached in plain text through loopback seeds: refuses it when a node the
/// cluster names (`CLUSTER SLOTS`) is not on loopback, as a plain remote URL is refused. The
/// client connects to every node it is told of, with the seeds' password and in plain text.
async fn refuse_plain_remote_nodes(options: &RedisOptions, server: &str) -> Result<(), Error> {
    let config = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout));
    // The first seed that answers, as the cluster client takes the first that connects.
    let mut last = None;
    let mut slots = None;
    for url in &options.urls {
        let asked = async {
            let client = ::redis::Client::open(url.as_str())?;
            let mut seed = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            ::redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut seed)
                .await
        };
        match asked.await {
            Ok(value) => {
                slots = Some(value);
                break;
            }
            Err(e) => last = Some(scrub(&e, options)),
        }
    }
    let Some(slots) = slots else {
        return Err(Error::new(
            ErrorKind::Connect,
            format!(
                "reading the nodes of the Redis Cluster at {server}: {}",
                last.unwrap_or_default()
            ),
        ));
    };
    let Value::Array(ranges) = slots else {
        return Ok(());
    };
    for range in &ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        // start, end, then one [host, port, id, ...] per node serving the range.
        for node in fields.iter().skip(2) {
            let Value::Array(node) = node else { continue };
            let host = match node.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            // An empty host, `?`, `0.0.0.0` or `::` is the node that answered (a seed on
            // loopback), as the cluster client reads them.
            let answering = matches!(host.as_str(), "" | "?" | "0.0.0.0" | "::");
            if !answering && !volley_core::host::is_loopback(&host) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "refusing plain redis:// to the Redis Cluster at {server}: its node \
                         {host} is not a loopback address, and the password and the cached \
                         answers would cross the network unencrypted. Use rediss://, or \
                         allow plain Redis explicitly"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses plain `redis://` to a host that is not loopback (see
/// [`RedisOptions::allow_plain_redis`]).
fn refuse_plain_remote(url: &str) -> Result<(), Error> {
    if !is_plain(url) {
        return Ok(());
    }
    match volley_core::host::url_host(url) {
        Some(host) if volley_core::host::is_loopback(host) => Ok(()),
        host => Err(Error::new(
            ErrorKind::Config,
            format!(
                "refusing plain redis:// (or valkey://) to {}, which is not a loopback \
                 address: the password and the cached answers would cross the network \
                 unencrypted. Use rediss://, or allow plain Redis explicitly",
                host.unwrap_or("an unnamed host")
            ),
        )),
    }
}

/// Whether `e` is an error no wait heals, so a caller that waits for Redis should give up:
/// the server refused the credentials (`WRONGPASS`, `NOAUTH`: a password changed or removed
/// while running), the user's ACL does not allow the command (`NOPERM`), the key holds
/// another type (`WRONGTYPE`: another program uses the key), or, on a connection not made
/// for a cluster, a cluster node redirected the command (`MOVED`, `ASK`, `CLUSTERDOWN`: the
/// server is part of a Redis Cluster; see [`RedisOptions::cluster`]). Anything else (a
/// connection refused or dropped, a timeout, `LOADING`, `OOM`, `READONLY` during a failover,
/// `BUSY`) may pass.
pub fn is_permanent(e: &::redis::RedisError, cluster: bool) -> bool {
    use ::redis::{ErrorKind as Kind, ServerErrorKind as Server};
    match e.kind() {
        Kind::AuthenticationFailed | Kind::InvalidClientConfig => true,
        Kind::Server(Server::NoPerm) => true,
        Kind::Server(Server::Moved | Server::Ask | Server::ClusterDown) => !cluster,
        _ => matches!(
            e.code(),
            Some("WRONGPASS" | "NOAUTH" | "WRONGTYPE" | "NOPERM")
        ),
    }
}

/// A Redis error's text with anything that looks like the URL's credentials removed.
fn scrub(e: &::redis::RedisError, options: &RedisOptions) -> String {
    let mut text = e.to_string();
    for url in &options.urls {
        text = redact_url_in(&text, url);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // The redactor's own rules are tested in `volley_core::redact`; here, that this module
    // uses it everywhere it names a server.
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redacted("rediss://default:p@ss/w?rd#1@cache.example:6380/1?password=x"),
            "rediss://***@cache.example:6380/1?***"
        );
        let options = RedisOptions::new("redis://u:hunter2@127.0.0.1:1");
        assert!(!format!("{options:?}").contains("hunter2"));
        assert_eq!(options.redacted_url(), "redis://***@127.0.0.1:1");
    }

    #[test]
    fn plain_redis_to_remote_hosts_is_refused_unless_allowed() {
        // Each with the password it must not show (the last: `p/w@x`, up to the last `@`).
        for (url, password) in [
            ("redis://10.0.0.5:6379", None),
            ("REDIS://:pw@cache.example:6379/0", Some("pw")),
            ("redis://u:p/w@x@cache.example", Some("p/w@x")),
            ("valkey://:pw@cache.example:6379", Some("pw")),
        ] {
            let err = refuse_plain_remote(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            let text = format!("{err} {err:?}");
            assert!(text.contains("refusing plain redis://"), "{text}");
            assert!(
                text.contains("cache.example") || password.is_none(),
                "{text}"
            );
            if let Some(password) = password {
                assert!(!text.contains(password) && !text.contains(":p/"), "{text}");
            }
        }
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pw@localhost/0",
            "redis://[::1]:6379",
            "rediss://cache.example:6380",
            "valkeys://cache.example:6380",
            "valkey://127.0.0.1:6379",
            "redis+unix:///tmp/redis.sock",
        ] {
            assert!(refuse_plain_remote(url).is_ok(), "{url}");
        }
    }

    /// What no wait heals fails at once; what may pass (or a cluster client follows itself)
    /// is waited out.
    #[test]
    fn refusals_no_wait_heals_are_permanent() {
        use ::redis::{ErrorKind as Kind, RedisError, ServerErrorKind as Server};
        let known = |kind| RedisError::from((kind, "from the server"));
        let extension = |code: &str| {
            ::redis::make_extension_error(code.to_owned(), Some("from the server".to_owned()))
        };
        for e in [
            known(Kind::AuthenticationFailed),
            known(Kind::Server(Server::NoPerm)),
            extension("WRONGPASS"),
            extension("NOAUTH"),
            extension("WRONGTYPE"),
        ] {
            assert!(is_permanent(&e, false) && is_permanent(&e, true), "{e}");
        }
        for kind in [Server::Moved, Server::Ask, Server::ClusterDown] {
            assert!(is_permanent(&known(Kind::Server(kind)), false), "{kind:?}");
            assert!(!is_permanent(&known(Kind::Server(kind)), true), "{kind:?}");
        }
        for e in [
            known(Kind::Io),
            known(Kind::Server(Server::BusyLoading)),
            known(Kind::Server(Server::ReadOnly)),
            known(Kind::Server(Server::TryAgain)),
            extension("OOM"),
            extension("BUSY"),
        ] {
            assert!(!is_permanent(&e, false), "{e}");
        }
    }

    #[tokio::test]
    async fn connect_refuses_plain_remote_urls_before_connecting() {
        // Refused by the URL alone: no address is dialled.
        let err = RedisConnection::connect(&RedisOptions::new("redis://:pw@192.0.2.1:6379"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.to_string().contains("pw"), "{err}");
        let cluster = RedisOptions::new("redis://127.0.0.1:7000")
            .cluster(true)
            .seed("redis://192.0.2.1:7001");
        let err = RedisConnection::connect(&cluster).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
