//! Redis for the tests: the shared server CI starts (`REDIS_URL`), unique key prefixes so
//! tests share it without meeting, and servers of a test's own that it can kill and restart.
//!
//! Skips are visible: a test that needs Redis carries `#[ignore = "needs Redis: REDIS_URL"]`
//! ([`IGNORE`]), so a plain `cargo test` reports it as ignored, never as a silent `ok`. Asked
//! for (`cargo test -- --include-ignored`, as CI does), it runs against `REDIS_URL` and fails
//! when that is not set. `VOLLEY_REQUIRE_REDIS=1` (as in CI) says the Redis tests must run:
//! [`assert_required_tests_run`] (a test of each crate with Redis tests, compiled whatever its
//! features) then fails when the crate's `redis` feature is off, `REDIS_URL` is missing or the
//! ignored tests were not asked for.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The reason a test that needs Redis is ignored unless asked for; written
/// `#[ignore = "needs Redis: REDIS_URL"]` (an attribute takes a literal, not this constant).
pub const IGNORE: &str = "needs Redis: REDIS_URL";

/// The Redis to test against (`REDIS_URL`). A test that calls it is `#[ignore]`d (see
/// [`IGNORE`]): it runs only when asked for, and then a missing Redis is a failure.
///
/// # Panics
/// When `REDIS_URL` is not set.
pub fn url() -> String {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "this test needs Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379), or leave it \
             ignored (run without --include-ignored)"
        ),
    }
}

/// `REDIS_URL`, or a failure naming it (see [`url`]).
#[macro_export]
macro_rules! require_redis {
    () => {
        $crate::redis::url()
    };
}

/// With `VOLLEY_REQUIRE_REDIS=1` (as in CI), fails unless the calling crate's Redis tests are
/// compiled (`redis_feature`: `cfg!(feature = "redis")` of that crate, or `true` where they
/// need no feature), have a Redis (`REDIS_URL`) and were asked for (`--include-ignored` or
/// `--ignored` on the test binary's command line). Without the variable it checks nothing.
///
/// # Panics
/// As above, naming what is missing.
pub fn assert_required_tests_run(crate_name: &str, redis_feature: bool) {
    if std::env::var("VOLLEY_REQUIRE_REDIS").as_deref() != Ok("1") {
        return;
    }
    assert!(
        redis_feature,
        "VOLLEY_REQUIRE_REDIS=1 but {crate_name}'s `redis` feature is off, so its Redis tests \
         are not compiled: add `--features redis` (or test the whole workspace)"
    );
    assert!(
        std::env::var("REDIS_URL").is_ok_and(|url| !url.trim().is_empty()),
        "VOLLEY_REQUIRE_REDIS=1 but REDIS_URL is not set"
    );
    assert!(
        std::env::args().any(|arg| arg == "--include-ignored" || arg == "--ignored"),
        "VOLLEY_REQUIRE_REDIS=1 but {crate_name}'s Redis tests are ignored: pass \
         `-- --include-ignored` to cargo test"
    );
}

/// A key prefix no other test (or earlier run) uses, so tests share one Redis without
/// meeting: the test's name, the process id, the time and a counter.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!(
        "volley-test:{test}:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `redis-server` of the test's own on a free loopback port, without persistence, that the
/// test can kill and restart (empty) on the same port; killed when dropped. The binary is
/// `REDIS_SERVER`, or `redis-server` on the `PATH` (CI installs it).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    /// A directory with `server.pem`, `server.key` and `ca.pem` ([`TestPki`](crate::tls::TestPki)):
    /// the server speaks TLS only.
    tls: Option<std::path::PathBuf>,
    /// More arguments for `redis-server` (a cluster node's).
    args: Vec<String>,
    /// Its working directory (`--dir`), where a replica writes what it synced: its own, under
    /// the system's temporary directory, removed when dropped.
    dir: std::path::PathBuf,
    /// While it is killed: its port, bound and not listening, so that connecting is refused
    /// as it is to a server that is down, and no outgoing connection takes the port as its
    /// own before [`restart`](Self::restart) (which would keep the server from starting).
    held: Option<socket2::Socket>,
}

impl RedisServer {
    /// Starts a server, with `requirepass` when a password is given, and waits until it
    /// answers.
    ///
    /// # Panics
    /// When the server cannot be started or does not answer within 10 s.
    pub fn start(password: Option<&str>) -> RedisServer {
        RedisServer::started(password.map(str::to_owned), None, Vec::new())
    }

    /// [`start`](Self::start) without a password, with more arguments for `redis-server`
    /// (`--rename-command SCRIPT ...`, say).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(args: &[&str]) -> RedisServer {
        RedisServer::started(None, None, args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Starts a server that speaks only TLS, with the certificate of `pki` (signed by its
    /// CA, for `127.0.0.1`), not asking for client certificates, and waits until it accepts
    /// connections. Its [`url`](Self::url) is `rediss://`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_tls(pki: &crate::tls::TestPki) -> RedisServer {
        RedisServer::started(None, Some(pki.dir().to_owned()), Vec::new())
    }

    /// Starts a server on a free port (picked by the kernel and released for the server to
    /// take). A port something else took in between (another test's listener, or an
    /// outgoing connection's) makes `redis-server` exit as it starts: another port is tried.
    fn started(
        password: Option<String>,
        tls: Option<std::path::PathBuf>,
        args: Vec<String>,
    ) -> RedisServer {
        RedisServer::unstarted(0, password, tls, args).on_a_port(free_port)
    }

    /// Starts the server on the first of at most five ports `pick` gives where it starts.
    fn on_a_port(mut self, mut pick: impl FnMut() -> u16) -> RedisServer {
        let mut tries = 0;
        loop {
            self.port = pick();
            tries += 1;
            match self.launch() {
                Ok(()) => return self,
                Err(e) if tries < 5 => eprintln!("{e}; trying another port"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Starts a server on `port`.
    fn started_on(
        port: u16,
        password: Option<String>,
        tls: Option<std::path::PathBuf>,
        args: Vec<String>,
    ) -> RedisServer {
        let mut server = RedisServer::unstarted(port, password, tls, args);
        server.restart();
        server
    }

    /// A server on `port`, not started, with a working directory of its own.
    fn unstarted(
        port: u16,
        password: Option<String>,
        tls: Option<std::path::PathBuf>,
        args: Vec<String>,
    ) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "volley-redis-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a working directory for redis-server");
        RedisServer {
            child: None,
            port,
            password,
            tls,
            args,
            dir,
            held: None,
        }
    }

    /// The URL, with the password when there is one.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, empty) on its port and waits until it answers.
    ///
    /// # Panics
    /// When it is already running, cannot be started or does not answer within 10 s.
    pub fn restart(&mut self) {
        if let Err(e) = self.launch() {
            panic!("{e}");
        }
    }

    /// Starts the server on its port and waits until it answers; an error when it exits as
    /// it starts (its port taken, say).
    ///
    /// # Panics
    /// When it is already running, cannot be spawned or does not answer within 10 s.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(&binary);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(dir) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem"))
                .args(["--tls-auth-clients", "no"]),
        };
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        command.arg("--dir").arg(&self.dir).args(&self.args);
        // The port is let go just before the server binds it.
        self.held = None;
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e} (set REDIS_SERVER)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "redis-server exited as it started ({status}), on port {}",
                    self.port
                ));
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills the server at once (SIGKILL): connections drop, nothing is saved. Its port is
    /// held for [`restart`](Self::restart) meanwhile (connections to it are refused).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.held = hold(self.port);
        }
    }

    /// Whether it answers a `PING` (a server with a password answers `-NOAUTH`: it is up).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls.is_some() {
            // It speaks only TLS: accepting the connection is the sign it is up.
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 5];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG" || &reply == b"-NOAU")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// `port` on loopback, bound without listening; `None` when it cannot be bound. Bound so, it
/// is no outgoing connection's port (the kernel skips bound ports when it picks one). Without
/// `SO_REUSEADDR` no listener can take it either, which the killed server's connections
/// closing on it (`TIME_WAIT`) may forbid: then with it, as `redis-server` binds.
fn hold(port: u16) -> Option<socket2::Socket> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    [false, true].into_iter().find_map(|reuse| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        socket.set_reuse_address(reuse).ok()?;
        socket.bind(&address.into()).ok()?;
        Some(socket)
    })
}

/// A loopback port free now (picked by the kernel and released for a server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A Redis Cluster of the test's own: `redis-server`s started with `cluster-enabled`, the
/// 16 384 slots split between them, no replicas; every node killed and its directory removed
/// when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `nodes` primaries, gives each its share of the slots, introduces them to each
    /// other and waits until every node says the cluster is up.
    ///
    /// # Panics
    /// When a node cannot be started, refuses a command, or the cluster is not up within 20 s.
    pub fn start(nodes: usize) -> RedisCluster {
        RedisCluster::start_with(nodes, &[])
    }

    /// [`start`](Self::start) with more arguments for every node's `redis-server`
    /// (`--cluster-announce-hostname`, say).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(nodes: usize, more: &[&str]) -> RedisCluster {
        assert!(nodes > 0, "a cluster needs a node");
        // Each node's bus on a port of its own (by default the port + 10 000, which is past
        // 65 535 for a port the kernel may pick). Every port is picked while the others are
        // held, so no two are the same.
        let held: Vec<TcpListener> = (0..2 * nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("a bound port").port())
            .collect();
        drop(held);
        let (clients, buses) = ports.split_at(nodes);
        let nodes: Vec<RedisServer> = clients
            .iter()
            .zip(buses)
            .map(|(&port, bus)| {
                let mut args = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-port".to_owned(),
                    bus.to_string(),
                ];
                args.extend(more.iter().map(|&arg| arg.to_owned()));
                RedisServer::started_on(port, None, None, args)
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let count = cluster.nodes.len();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let first = 16_384 * i / count;
            let last = 16_384 * (i + 1) / count - 1;
            let reply = command(
                node.port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            );
            assert_eq!(reply, "+OK", "adding slots to node {i}");
        }
        let first = cluster.nodes[0].port;
        for (node, bus) in cluster.nodes.iter().zip(buses).skip(1) {
            let (port, bus) = (node.port.to_string(), bus.to_string());
            let reply = command(first, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
            assert_eq!(reply, "+OK", "introducing the nodes");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &cluster.nodes {
            loop {
                let info = command(node.port, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{count}"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not come up: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// The nodes' URLs (`redis://127.0.0.1:PORT`), the seeds a cluster client starts from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// Sends one command to the server on loopback `port` and returns its reply: a status or
/// error line as it came (`+OK`), a bulk string's text.
fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to a node");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("sending a command");
    let mut reply = Vec::new();
    let mut byte = [0; 1];
    // The first line: a status, an error, or a bulk string's length.
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("reading a reply");
        reply.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&reply[..reply.len() - 2]).into_owned();
    match line.strip_prefix('$').map(str::parse::<usize>) {
        Some(Ok(len)) => {
            let mut body = vec![0; len + 2];
            stream.read_exact(&mut body).expect("reading a bulk reply");
            String::from_utf8_lossy(&body[..len]).into_owned()
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between its pick and the server's start is no failure: another is tried.
    #[test]
    fn a_port_taken_meanwhile_is_replaced_by_another() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut picks = vec![taken_port];
        let server = RedisServer::unstarted(0, None, None, Vec::new())
            .on_a_port(|| picks.pop().unwrap_or_else(free_port));
        assert_ne!(server.port(), taken_port);
        assert!(server.answers());
    }

    /// While killed, the server's port is held, and refuses connections as a server that is
    /// down does; the restart gets it back.
    #[test]
    fn a_killed_server_s_port_is_held_for_its_restart() {
        let mut server = RedisServer::start(None);
        let port = server.port();
        server.kill();
        assert!(server.held.is_some(), "the port was not held");
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        server.restart();
        assert!(server.held.is_none());
        assert_eq!(server.port(), port);
        assert!(server.answers());
    }
}
