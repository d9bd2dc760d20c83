//! # volley-core
//!
//! The protocol-agnostic bottom of Volley: the [`Request`] and [`Response`] types every layer
//! passes along, the one opaque [`Error`] with its [`ErrorKind`], the OpenAI wire dialect
//! ([`openai`]), the Anthropic Messages dialect ([`anthropic`]), the [`dialect`] seam through which
//! layers read usage, errors and rate-limit headers without knowing either, helpers that read providers' rate-limit headers ([`headers`]), a sans-io
//! server-sent-events decoder ([`sse`]), token estimation ([`tokens`]), the one duration grammar
//! of user-facing settings ([`duration`]) and the one URL redactor ([`redact`]).
//!
//! This crate does no I/O and depends on no runtime: no tokio, no hyper, no sockets, no clock
//! beyond `std::time`. The transport and middleware crates build on it.
//!
//! ## Features
//! - `tiktoken`: exact token counts with OpenAI's BPE encodings (`tiktoken-rs`), in addition
//!   to the fast estimate that is always available.
#![deny(missing_docs)]

pub mod anthropic;
pub mod cache_key;
pub mod dialect;
pub mod duration;
mod error;
pub mod headers;
pub mod host;
pub mod openai;
pub mod redact;
mod request;
mod response;
mod secret;
pub mod sse;
pub mod tokens;
mod usage_counts;
mod usage_scan;

pub use dialect::Dialect;
pub use error::{ApiError, BoxError, Error, ErrorKind, ErrorReport};
pub use request::{Request, RequestId, RequestParts};
pub use response::{Body, BodyStream, DEFAULT_MAX_BODY_BYTES, Response, ResponseHead, Timings};
pub use secret::ApiKey;
