//! When a deadline falls: `start + limit` without overflow, and which of the first-byte and
//! whole-attempt deadlines the first chunk of a response is due by. Shared by the response
//! future and the body wrapper, so neither imports the other's helpers.

use std::time::Duration;

use tokio::time::Instant;
use volley_core::{Error, RequestId};

use super::error::{attempt_error, first_byte_error};
use super::layer::Limits;

/// `start + limit`, saturating to a far future instead of overflowing.
pub(crate) fn deadline(start: Instant, limit: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    start
        .checked_add(limit)
        .unwrap_or_else(|| start + FAR_FUTURE)
}

/// Which deadline the first chunk is due by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FirstChunk {
    FirstByte(Duration),
    Attempt(Duration),
}

impl FirstChunk {
    /// The deadline due first of the first-byte and whole-attempt limits (both counted from
    /// the call), the first-byte one on a tie.
    pub(crate) fn earliest(limits: &Limits) -> Option<FirstChunk> {
        let first_byte = limits.first_byte.map(FirstChunk::FirstByte);
        let attempt = limits.attempt.map(FirstChunk::Attempt);
        match (first_byte, attempt) {
            (Some(f), Some(a)) => Some(if a.limit() < f.limit() { a } else { f }),
            (f, a) => f.or(a),
        }
    }

    /// The error of this deadline passing.
    pub(crate) fn error(self, id: RequestId) -> Error {
        match self {
            FirstChunk::FirstByte(limit) => first_byte_error(id, limit),
            FirstChunk::Attempt(limit) => attempt_error(id, limit),
        }
    }

    /// The limit of the deadline, counted from the call.
    pub(crate) fn limit(self) -> Duration {
        match self {
            FirstChunk::FirstByte(limit) | FirstChunk::Attempt(limit) => limit,
        }
    }
}
