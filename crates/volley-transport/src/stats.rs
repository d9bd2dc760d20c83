//! Connection statistics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the transport and its connector.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) requests: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ConnectionStats {
        // Read `closed` before `opened` so that `open` never goes negative.
        let closed = self.closed.load(Ordering::Relaxed);
        let opened = self.opened.load(Ordering::Relaxed);
        let requests = self.requests.load(Ordering::Relaxed);
        ConnectionStats {
            opened,
            closed,
            requests,
        }
    }
}

/// A snapshot of a transport's connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connections opened (TCP connected, and TLS done for `https`).
    pub opened: u64,
    /// Connections closed (by either side, or evicted from the pool).
    pub closed: u64,
    /// Requests handed to the pool.
    pub requests: u64,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }

    /// Requests that went over a connection that was already open: every request but the
    /// first on each connection. Over HTTP/2 this counts the streams multiplexed onto existing
    /// connections.
    pub fn reused(&self) -> u64 {
        self.requests.saturating_sub(self.opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures() {
        let s = ConnectionStats {
            opened: 4,
            closed: 1,
            requests: 10,
        };
        assert_eq!(s.open(), 3);
        assert_eq!(s.reused(), 6);
        assert_eq!(ConnectionStats::default().reused(), 0);
    }
}
