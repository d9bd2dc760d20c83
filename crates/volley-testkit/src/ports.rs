//! Loopback ports for tests.

/// A loopback port nothing listens on: connections to it are refused. The port stays bound
/// (never listening) while this lives, so no other test can take it meanwhile, as it could a
/// port that was bound and released.
#[derive(Debug)]
pub struct RefusedPort {
    socket: tokio::net::TcpSocket,
}

impl RefusedPort {
    /// Binds a free loopback port without listening on it. Needs no runtime.
    pub fn new() -> RefusedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("binding a loopback port");
        RefusedPort { socket }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.socket.local_addr().expect("a bound address").port()
    }

    /// `http://127.0.0.1:PORT/v1`, a base URL nothing answers.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port())
    }
}

impl Default for RefusedPort {
    fn default() -> RefusedPort {
        RefusedPort::new()
    }
}
