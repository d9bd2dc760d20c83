//! Turning hyper's and rustls's errors into Volley's.

use std::error::Error as StdError;

use volley_core::{BoxError, Error, ErrorKind};

/// What went wrong before a response head arrived.
#[derive(Debug)]
pub(crate) enum SendError {
    /// From hyper-util's pool (the HTTP/2 configurations).
    Http2(hyper_util::client::legacy::Error),
    /// No connection could be opened (TCP, or TLS).
    Connect(BoxError),
    /// The connection failed before the request was written: it never left this process.
    NotSent(hyper::Error),
    /// The connection failed after the request was (at least partly) written.
    Sent(hyper::Error),
}

/// An error from sending a request and waiting for the response head.
///
/// The error that caused it becomes the source as it is, with no [`SendError`] layer between:
/// that layer's text would only repeat its cause's (`tcp connect error: tcp connect error`).
pub(crate) fn from_send(err: SendError, context: String) -> Error {
    match err {
        SendError::Http2(err) => from_http2(err, context),
        SendError::Connect(err) => {
            if chain_has_tls_error(err.as_ref()) {
                Error::new(ErrorKind::Tls, format!("{context}: TLS handshake failed"))
                    .with_source(err)
            } else {
                Error::new(ErrorKind::Connect, format!("{context}: could not connect"))
                    .with_source(err)
            }
        }
        SendError::NotSent(err) => connection_failed(err, false, context),
        SendError::Sent(err) => connection_failed(err, true, context),
    }
}

/// A connection that failed once it was open, before (`sent == false`) or after the request
/// was written.
fn connection_failed(err: hyper::Error, sent: bool, context: String) -> Error {
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
fn from_http2(err: hyper_util::client::legacy::Error, context: String) -> Error {
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
