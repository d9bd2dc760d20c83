//! Helpers shared by Volley's integration tests, written once for every crate that tests
//! against the same outside services. A dev-dependency only; never published.
#![deny(missing_docs)]

pub mod logs;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod runs;
pub mod socks;
pub mod tls;
