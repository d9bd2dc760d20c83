//! Turning hyper's and rustls's errors into Volley's.

use std::error::Error as StdError;

use volley_core::{BoxError, Error, ErrorKind};

use crate::proxy::ProxyError;

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
pub(crate) fn from_send(err: SendError, context: String, inner: &crate::inner::Inner) -> Error {
    let host = inner.authority.host();
    let sent = matches!(err, SendError::Sent(_));
    match err {
        SendError::Http2(err) => {
            if err.is_connect()
                && let Some(error) = connect_failure(&err, &context, host)
            {
                return error.with_source(err);
            }
            // A TLS 1.3 server that checks the client's certificate after the handshake
            // refuses it on the first request, which it never processed: as over HTTP/1.1.
            let alert = find::<rustls::Error>(&err)
                .cloned()
                .or_else(|| alert_in_text(&err));
            if let Some(tls) = alert.filter(is_handshake_refusal) {
                let message = match tls_advice(&tls) {
                    Some(advice) => {
                        format!("{context}: TLS handshake with {host} failed: {advice}")
                    }
                    None => format!("{context}: TLS handshake with {host} failed"),
                };
                return Error::new(ErrorKind::Tls, message)
                    .with_request_sent(false)
                    .with_source(err);
            }
            if inner.http2_only && not_http2(&err) {
                // Still a broken connection (retried as one, sent as hyper says: an HTTP/2
                // server that sends one frame too long later on is not told apart), with
                // what to change when the server speaks HTTP/1.1 only.
                let sent = from_http2_sent(&err);
                return Error::new(
                    ErrorKind::Connection,
                    format!(
                        "{context}: {host} sent bytes that are no HTTP/2 frame, as a server \
                         that speaks HTTP/1.1 only answers HTTP/2's connection preface; if it \
                         does, turn http2_prior_knowledge off for it"
                    ),
                )
                .with_request_sent(sent)
                .with_source(err);
            }
            from_http2(err, context)
        }
        SendError::Connect(err) => {
            if let Some(error) = connect_failure(err.as_ref(), &context, host) {
                error.with_source(err)
            } else {
                Error::new(ErrorKind::Connect, format!("{context}: could not connect"))
                    .with_source(err)
            }
        }
        // With TLS 1.3 a server checks the client's certificate after the client's handshake
        // is done, so its refusal arrives as the answer to the first request, which it never
        // processed. Any other TLS failure after the request was written (a fatal alert, a bad
        // record) may come after the server did the work: the request counts as sent.
        SendError::NotSent(err) | SendError::Sent(err) if find::<rustls::Error>(&err).is_some() => {
            let refused = find::<rustls::Error>(&err).is_some_and(is_handshake_refusal);
            if sent && !refused {
                return Error::new(
                    ErrorKind::Tls,
                    format!(
                        "{context}: the TLS connection to {host} failed after the request was sent"
                    ),
                )
                .with_request_sent(true)
                .with_source(err);
            }
            match connect_failure(&err, &context, host) {
                Some(error) => error.with_source(err),
                None => connection_failed(err, true, context),
            }
        }
        SendError::NotSent(err) => connection_failed(err, false, context),
        SendError::Sent(err) => connection_failed(err, true, context),
    }
}

/// A connection that could not be opened because of the proxy or TLS: the error that says
/// so, naming the proxy (never its password) or the host and what to do about it.
fn connect_failure(err: &(dyn StdError + 'static), context: &str, host: &str) -> Option<Error> {
    if find::<crate::connector::HandshakeTimedOut>(err).is_some() {
        // Nothing was sent: the request waits for a connection that never came. A server
        // too busy to answer may answer the next attempt, so it is a connect failure (retried),
        // not a TLS one (a certificate problem does not heal).
        return Some(Error::new(
            ErrorKind::Connect,
            format!(
                "{context}: the TLS handshake with {host} did not finish in time (the server \
                 accepted the connection but did not answer the handshake)"
            ),
        ));
    }
    if let Some(tls) = find::<rustls::Error>(err) {
        // The rustls error itself is the source; the message says what it means, once.
        let message = match tls_advice(tls) {
            Some(advice) => format!("{context}: TLS handshake with {host} failed: {advice}"),
            None => format!("{context}: TLS handshake with {host} failed"),
        };
        return Some(Error::new(ErrorKind::Tls, message));
    }
    find::<ProxyError>(err).map(|proxy| proxy.to_error(context))
}

/// The TLS alert an HTTP/2 connection failed with, when only its text is left: h2 keeps an
/// I/O error as its kind and text (to clone it for every stream), so rustls's error is found
/// by the text it gave (`received fatal alert: CertificateRequired`). Only the alerts of a
/// refused handshake ([`is_handshake_refusal`]).
fn alert_in_text(err: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    use rustls::AlertDescription as Alert;
    let io = find::<std::io::Error>(err)?;
    let text = io.to_string();
    let name = text.strip_prefix("received fatal alert: ")?;
    [
        Alert::CertificateRequired,
        Alert::BadCertificate,
        Alert::UnknownCA,
        Alert::HandshakeFailure,
        Alert::CertificateUnknown,
        Alert::CertificateRevoked,
        Alert::CertificateExpired,
        Alert::UnsupportedCertificate,
        Alert::AccessDenied,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)
    .map(rustls::Error::AlertReceived)
}

/// Whether the server refused the TLS handshake (a client certificate it wants, or does not
/// accept): it processed nothing, even when the refusal answers a request already written.
fn is_handshake_refusal(err: &rustls::Error) -> bool {
    use rustls::AlertDescription;
    matches!(
        err,
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::HandshakeFailure
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
        )
    )
}

/// What a TLS failure means for the user, and what to do about it, when there is more to say
/// than rustls's own message (which the error's source carries).
fn tls_advice(err: &rustls::Error) -> Option<&'static str> {
    use rustls::{AlertDescription, CertificateError};
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
            "its certificate is not signed by a trusted certificate authority. If the server \
             uses a private or corporate CA, trust that CA's certificate with --ca-cert PATH \
             (or SSL_CERT_FILE; in the library, tls_ca_file). Verification stays on",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Some("its certificate is not valid for this host name"),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => Some("its certificate has expired"),
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::HandshakeFailure,
        ) => Some(
            "the server refused the handshake; if it requires a client certificate (mutual \
             TLS), give one with --client-cert and --client-key",
        ),
        _ => None,
    }
}

/// A connection that failed once it was open, before (`sent == false`) or after the request
/// was written.
fn connection_failed(err: hyper::Error, sent: bool, context: String) -> Error {
    let message = if err.is_parse() {
        not_http(&context)
    } else if sent {
        format!("{context}: the connection failed before a response arrived")
    } else {
        format!("{context}: the connection closed before the request was sent")
    };
    Error::new(ErrorKind::Connection, message)
        .with_request_sent(sent)
        .with_source(err)
}

/// The message of a response hyper could not parse; what it could not (a bad status line, a
/// header, a head too large) is the source's text.
fn not_http(context: &str) -> String {
    format!("{context}: the server's response could not be read as HTTP/1.1")
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
    let canceled = !from_http2_sent(&err);
    // With HTTP/2 asked for over ALPN, an origin that did not pick it (or plain `http://`)
    // is spoken to in HTTP/1.1 through the same pool.
    let unparsable = find::<hyper::Error>(&err).is_some_and(hyper::Error::is_parse);
    let message = if unparsable && !canceled {
        not_http(&context)
    } else if canceled {
        format!("{context}: the connection closed before the request was sent")
    } else if refused_stream(&err) {
        // The server reset the stream with REFUSED_STREAM, or named a last stream below it
        // in a GOAWAY: it did not process the request (RFC 9113, 8.7 and 6.8), which can be
        // sent again whatever its method.
        return Error::new(
            ErrorKind::Connection,
            format!("{context}: the server refused the HTTP/2 stream before processing it"),
        )
        .with_request_sent(false)
        .with_source(err);
    } else {
        format!("{context}: the connection failed before a response arrived")
    };
    Error::new(ErrorKind::Connection, message)
        .with_request_sent(!canceled)
        .with_source(err)
}

/// Whether the server did not process the request's stream: it reset it with
/// `REFUSED_STREAM`, or its `GOAWAY` named a last stream below it (or came before the stream
/// was opened). h2 gives only those streams the remote `GOAWAY` as their error; the streams at
/// or below the last one, which the server may have processed, end with an I/O error when the
/// connection closes.
fn refused_stream(err: &(dyn StdError + 'static)) -> bool {
    find::<::h2::Error>(err).is_some_and(|e| {
        e.is_remote()
            && ((e.is_reset() && e.reason() == Some(::h2::Reason::REFUSED_STREAM))
                || e.is_go_away())
    })
}

/// Whether a request hyper-util's pool failed may have been written: not when hyper reports
/// it canceled (a reused connection dropped it first), nor when no connection was checked out
/// for it (the error carries no `connect_info`: it came before any request could be written).
fn from_http2_sent(err: &hyper_util::client::legacy::Error) -> bool {
    !(find::<hyper::Error>(err).is_some_and(hyper::Error::is_canceled)
        || err.connect_info().is_none())
}

/// Whether h2 found the server's bytes to be no HTTP/2 frames: a frame longer than the
/// 16 KiB a client allows, which h2 itself detected (not an error the server sent). An
/// HTTP/1.1 server answers the connection preface so: its `HTTP/1.1 400` read as a frame
/// header is a frame of 4.7 MB.
fn not_http2(err: &(dyn StdError + 'static)) -> bool {
    find::<::h2::Error>(err).is_some_and(|e| {
        e.is_library() && e.is_go_away() && e.reason() == Some(::h2::Reason::FRAME_SIZE_ERROR)
    })
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
