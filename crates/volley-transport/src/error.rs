//! Turning hyper's and rustls's errors into Volley's.

use std::error::Error as StdError;

use volley_core::{BoxError, Error, ErrorKind};

use crate::pool::SendError;

/// An error from sending a request and waiting for the response head.
pub(crate) fn from_send(err: SendError, context: String) -> Error {
    let (sent, err) = match err {
        SendError::Legacy(err) => return from_legacy(err, context),
        SendError::Connect(_) => {
            if chain_has_tls_error(&err) {
                return Error::new(ErrorKind::Tls, format!("{context}: TLS handshake failed"))
                    .with_source(err);
            }
            return Error::new(ErrorKind::Connect, format!("{context}: could not connect"))
                .with_source(err);
        }
        SendError::NotSent(_) => (false, err),
        SendError::Sent(_) => (true, err),
    };
    let message = if sent {
        format!("{context}: the connection failed before a response arrived")
    } else {
        format!("{context}: the connection closed before the request was sent")
    };
    Error::new(ErrorKind::Connection, message)
        .with_request_sent(sent)
        .with_source(err)
}

/// An error from hyper-util's pool (the HTTP/2 configurations).
fn from_legacy(err: hyper_util::client::legacy::Error, context: String) -> Error {
    if err.is_connect() {
        if chain_has_tls_error(&err) {
            return Error::new(ErrorKind::Tls, format!("{context}: TLS handshake failed"))
                .with_source(err);
        }
        return Error::new(ErrorKind::Connect, format!("{context}: could not connect"))
            .with_source(err);
    }
    // The pool retries by itself a request that a reused connection dropped before writing
    // it; a request hyper reports as canceled still never left this process.
    // Errors raised after a connection was checked out carry its `connect_info`; without it
    // the failure came before any request could be written (an HTTP/2 handshake, say).
    let canceled = find::<hyper::Error>(&err).is_some_and(hyper::Error::is_canceled)
        || err.connect_info().is_none();
    let message = if canceled {
        format!("{context}: the connection closed before the request was sent")
    } else {
        format!("{context}: the connection failed before a response arrived")
    };
    Error::new(ErrorKind::Connection, message)
        .with_request_sent(!canceled)
        .with_source(err)
}

/// An error while reading a response body (after decompression).
pub(crate) fn from_body(err: BoxError, context: &str) -> Error {
    if find::<hyper::Error>(err.as_ref()).is_some() {
        Error::new(
            ErrorKind::StreamBroken,
            format!("{context}: the response body broke off"),
        )
        .with_source(err)
    } else {
        Error::new(
            ErrorKind::BodyDecode,
            format!("{context}: the response body could not be decoded"),
        )
        .with_source(err)
    }
}

fn chain_has_tls_error(err: &(dyn StdError + 'static)) -> bool {
    find::<rustls::Error>(err).is_some()
}

/// Finds a `T` in the chain of causes. `std::io::Error::source` skips the error it wraps (it
/// returns that error's source), so for I/O errors the wrapped error itself is followed.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cause: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => None,
            },
            None => c.source(),
        };
    }
    None
}
