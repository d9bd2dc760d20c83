//! The errors of the deadlines passing, one constructor per deadline, each naming the request
//! and the limit.

use std::time::Duration;

use volley_core::{Error, ErrorKind, RequestId};

/// The time-to-first-byte deadline passed before the response head (or a stream's first
/// chunk).
pub(crate) fn first_byte_error(id: RequestId, limit: Duration) -> Error {
    Error::new(
        ErrorKind::FirstByteTimeout,
        format!("request {id}: no response byte within {limit:?}"),
    )
}

/// The whole-attempt deadline passed before the response was complete (or a stream's first
/// chunk arrived).
pub(crate) fn attempt_error(id: RequestId, limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("request {id}: no complete response within {limit:?}"),
    )
}

/// A stream went quiet for longer than the idle limit.
pub(crate) fn idle_error(id: RequestId, limit: Duration) -> Error {
    Error::new(
        ErrorKind::IdleTimeout,
        format!("request {id}: stream idle for more than {limit:?}"),
    )
}
