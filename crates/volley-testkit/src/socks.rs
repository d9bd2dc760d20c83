//! A small SOCKS5 proxy for the tests (RFC 1928, `CONNECT` only, with the user name and
//! password method of RFC 1929 when credentials are given), on a free loopback port, that
//! only connects to loopback targets and records them. Threads, not tasks: it serves
//! whichever runtime the test uses. Stopped when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running SOCKS5 proxy.
#[derive(Debug)]
pub struct Socks5 {
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Socks5 {
    /// Starts the proxy, requiring `credentials` when given.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(credentials: Option<(&str, &str)>) -> Socks5 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (credentials, targets, stop) = (credentials.clone(), targets.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (credentials, targets) = (credentials.clone(), targets.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, credentials.as_ref(), &targets);
                    });
                }
            })
        };
        Socks5 {
            addr,
            credentials,
            targets,
            stop,
            accept: Some(accept),
        }
    }

    /// `socks5h://[user:password@]127.0.0.1:PORT` (the proxy resolves names); replace the
    /// scheme with `socks5` to resolve them in the client.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("socks5h://{user}:{password}@{}", self.addr),
            None => format!("socks5h://{}", self.addr),
        }
    }

    /// The targets it connected to, as `host:port` (a name when the client sent one).
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().expect("not poisoned").clone()
    }
}

impl Drop for Socks5 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(
    mut client: TcpStream,
    credentials: Option<&(String, String)>,
    targets: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods)?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if head[0] != 5 || !methods.contains(&wanted) {
        return client.write_all(&[5, 0xff]);
    }
    client.write_all(&[5, wanted])?;
    if let Some((user, password)) = credentials {
        let mut version_and_len = [0u8; 2];
        client.read_exact(&mut version_and_len)?;
        let mut given_user = vec![0u8; usize::from(version_and_len[1])];
        client.read_exact(&mut given_user)?;
        let mut len = [0u8; 1];
        client.read_exact(&mut len)?;
        let mut given_password = vec![0u8; usize::from(len[0])];
        client.read_exact(&mut given_password)?;
        // RFC 1929: the sub-negotiation's version is 1.
        let ok = version_and_len[0] == 1
            && given_user == user.as_bytes()
            && given_password == password.as_bytes();
        client.write_all(&[1, if ok { 0 } else { 1 }])?;
        if !ok {
            return Ok(());
        }
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    // RFC 1928: version 5, CONNECT (1), a reserved zero; anything else is refused as an
    // unsupported command, so a client that gets the layout wrong fails the tests.
    if request[..3] != [5, 1, 0] {
        return client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip)?;
            Ipv4Addr::from(ip).to_string()
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip)?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name)?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port)?;
    let port = u16::from_be_bytes(port);
    targets
        .lock()
        .expect("not poisoned")
        .push(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
    // Loopback only: the tests' servers, never anything else.
    let ip = if host == "localhost" {
        "127.0.0.1"
    } else {
        host.as_str()
    };
    let allowed = ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let upstream = match allowed.then(|| TcpStream::connect((ip, port))) {
        Some(Ok(upstream)) => upstream,
        _ => return client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])?;
    let (mut up_read, mut client_write) = (upstream.try_clone()?, client.try_clone()?);
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    let (mut client_read, mut up_write) = (client, upstream);
    let _ = std::io::copy(&mut client_read, &mut up_write);
    let _ = up_write.shutdown(Shutdown::Write);
    let _ = down.join();
    Ok(())
}
