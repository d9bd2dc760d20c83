//! Turning a connection's close into a TCP reset, for the `reset` fault.
//!
//! hyper owns the socket while it serves a connection, so the service keeps only the socket's
//! descriptor. Setting `SO_LINGER` to zero makes the kernel answer the coming close with an
//! RST instead of a FIN; the service then fails, hyper drops the connection, and the client
//! sees "connection reset" rather than any HTTP response.

pub(crate) use imp::ResetHandle;

#[cfg(unix)]
mod imp {
    use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
    use std::time::Duration;

    use socket2::SockRef;
    use tokio::net::TcpStream;

    /// The descriptor of a served connection's socket.
    ///
    /// Neither `Clone` nor `Send`-able out of the connection's service: it is only used from
    /// `Service::call`, see [`ResetHandle::arm`].
    pub(crate) struct ResetHandle {
        fd: RawFd,
    }

    impl ResetHandle {
        pub(crate) fn new(stream: &TcpStream) -> Self {
            Self {
                fd: stream.as_raw_fd(),
            }
        }

        /// Makes the socket's close send an RST.
        ///
        /// Call only from the connection's `Service::call`: hyper calls it while polling the
        /// connection future, which owns the `TcpStream`, so the descriptor is open and still
        /// names this socket.
        pub(crate) fn arm(&self) {
            // SAFETY: per the contract above, `self.fd` is the open descriptor of the socket
            // owned by the connection currently calling us; it cannot be closed (or reused)
            // until that call returns, and the borrow does not outlive this function.
            let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
            if let Err(err) = SockRef::from(&fd).set_linger(Some(Duration::ZERO)) {
                tracing::debug!(%err, "volley-mock: could not arm a connection reset");
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use tokio::net::TcpStream;

    /// Without a portable way to force an RST, the connection is merely closed.
    pub(crate) struct ResetHandle;

    impl ResetHandle {
        pub(crate) fn new(_stream: &TcpStream) -> Self {
            Self
        }

        pub(crate) fn arm(&self) {}
    }
}
