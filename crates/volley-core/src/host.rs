//! Which hosts are this machine: the one rule behind "plain text only to loopback", shared by
//! the HTTP transport (`http://`) and the Redis connection (`redis://`).
//!
//! ```
//! use volley_core::host::{is_loopback, url_host};
//!
//! assert!(is_loopback("localhost"));
//! assert!(is_loopback("127.8.9.10"));
//! assert!(is_loopback("[::1]"));
//! assert!(!is_loopback("10.0.0.5"));
//! assert_eq!(url_host("redis://:pw@cache.example:6379/0"), Some("cache.example"));
//! assert_eq!(url_host("redis://[::1]:6379"), Some("[::1]"));
//! ```

use std::net::IpAddr;

/// Whether `host` (a name, an IPv4 address or an IPv6 address with or without brackets) is
/// loopback: `localhost`, `127.0.0.0/8` or `::1`. No name is resolved: `localhost` is trusted
/// by its name, any other name is not loopback.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `scheme://[userinfo@]host[:port][/path][?query]`, IPv6 brackets kept; `None`
/// when the URL has no `://` or an empty host. The user information ends at the last `@`
/// before the path, so a password holding `@`, `/`, `?` or `#` is never read as the host.
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    // The authority ends at the first `/`, `?` or `#` after the last `@` (a password may
    // hold any of them; a host holds none).
    let after_at = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let authority = after_at.split(['/', '?', '#']).next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority.find(']').map(|end| &authority[..=end])?
    } else {
        authority.split(':').next().unwrap_or("")
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "example.com",
            "localhost.example",
            "[::2]",
            "",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("redis://127.0.0.1:6379/2"), Some("127.0.0.1"));
        assert_eq!(url_host("redis://u:p/w@d@10.1.2.3:6379"), Some("10.1.2.3"));
        assert_eq!(url_host("rediss://cache.example"), Some("cache.example"));
        assert_eq!(url_host("redis://[::1]:1/0"), Some("[::1]"));
        assert_eq!(url_host("redis+unix:///tmp/r.sock"), None);
        assert_eq!(url_host("no scheme"), None);
    }
}
