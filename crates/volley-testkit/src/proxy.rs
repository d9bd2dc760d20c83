//! A real forward proxy for the tests: Debian's `tinyproxy`, started by the test with its own
//! configuration on a free loopback port (CONNECT to any port, enough clients for the load
//! tests, optional Basic authentication), its log readable to see what went through it.
//!
//! Without `tinyproxy` on the `PATH` (or at `TINYPROXY`) a test that needs it says so in one
//! line and passes, unless `VOLLEY_REQUIRE_PROXY=1` (as in CI), which makes it a failure.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The clients tinyproxy serves at once: above the tests' concurrency (256) with room for the
/// connections a pool opens while others close.
const MAX_CLIENTS: usize = 1024;

/// A `tinyproxy` of the test's own, killed when dropped.
#[derive(Debug)]
pub struct Tinyproxy {
    child: Child,
    port: u16,
    credentials: Option<(String, String)>,
    log: PathBuf,
    _dir: TempDir,
}

/// Starts a tinyproxy, or returns from the calling test after saying it is skipped (see
/// [`Tinyproxy::start`]). Give `Some(("user", "password"))` for Basic authentication.
#[macro_export]
macro_rules! require_tinyproxy {
    ($credentials:expr) => {
        match $crate::proxy::Tinyproxy::start($credentials) {
            Some(proxy) => proxy,
            None => return,
        }
    };
}

impl Tinyproxy {
    /// Starts tinyproxy on a free `127.0.0.1` port, with Basic authentication when
    /// `credentials` are given, and waits until it accepts connections. `None` (after a
    /// line saying the test is skipped) when tinyproxy is not installed.
    ///
    /// # Panics
    /// When `VOLLEY_REQUIRE_PROXY=1` and tinyproxy is not installed, or when it cannot be
    /// started or does not listen within 10 s.
    pub fn start(credentials: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let binary = std::env::var("TINYPROXY").unwrap_or_else(|_| "tinyproxy".to_owned());
        if Command::new(&binary)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var("VOLLEY_REQUIRE_PROXY").as_deref() != Ok("1"),
                "VOLLEY_REQUIRE_PROXY=1 but {binary} is not installed (apt-get install tinyproxy)"
            );
            println!("proxy tests skipped: {binary} is not installed (apt-get install tinyproxy)");
            return None;
        }
        let dir = TempDir::new();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = dir.0.join("tinyproxy.log");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients {MAX_CLIENTS}\n\
             Allow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nDisableViaHeader Yes\n",
            log.display()
        );
        // No ConnectPort line: CONNECT is allowed to every port (Debian's default config
        // allows only 443 and 563; the test servers listen on free ports).
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let config_path = dir.0.join("tinyproxy.conf");
        std::fs::write(&config_path, config).expect("writing the tinyproxy configuration");
        let child = Command::new(&binary)
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let proxy = Tinyproxy {
            child,
            port,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(proxy)
    }

    /// The proxy URL, with the user and password when it has them:
    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => self.url_without_credentials(),
        }
    }

    /// The proxy URL without credentials: `http://127.0.0.1:PORT`.
    pub fn url_without_credentials(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of tinyproxy (to read its CPU time in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The request lines tinyproxy logged so far (`CONNECT 127.0.0.1:PORT HTTP/1.1`,
    /// `POST http://127.0.0.1:PORT/v1/chat/completions HTTP/1.1`), in order.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split_once("): "))
            .filter(|(head, _)| head.contains("Request (file descriptor"))
            .map(|(_, rest)| rest.trim().to_owned())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "volley-tinyproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
