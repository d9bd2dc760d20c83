//! Deciding whether a failed attempt is worth another: [`Decision`] and the two built-in
//! classifiers.

use std::time::Duration;

use http::StatusCode;
use volley_core::{Error, ErrorKind};

/// A classifier's verdict on a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after the policy's wait: the backoff, or the server's `Retry-After` /
    /// `x-ratelimit-reset-*` when longer (a reset-derived wait at most the backoff cap).
    Retry,
    /// Retry after exactly this long, whatever the backoff and the server say.
    RetryAfter(Duration),
    /// Do not retry: the error goes to the caller.
    Fail,
}

/// The status some providers (Anthropic) answer when they are overloaded: a rate signal, like
/// a 429.
const OVERLOADED: u16 = 529;

/// Whether `error` says "too much, come back later" rather than "this failed": a 429
/// (`RateLimited`) or an overload ([`Error::is_overloaded`]: a 529, or Anthropic's
/// `overloaded_error` event in a stream that answered 200 first).
///
/// A rate signal that the classifier retries does not use up
/// [`max_retries`](super::PolicyBuilder::max_retries) and draws nothing from the retry
/// budget: it is paced by the server's own wait (`Retry-After`) and, below the retry layer, by
/// the rate limiter's shared pause. Such retries are bounded per request by time instead,
/// [`give_up_after`](super::PolicyBuilder::give_up_after).
pub fn is_rate_signal(error: &Error) -> bool {
    error.is_rate_limited() || error.is_overloaded()
}

/// The default classifier of [`Policy::default`].
///
/// Retries connection failures (`Connect`, `Connection`), timeouts of every kind (`Timeout`,
/// `FirstByteTimeout`, `IdleTimeout`), a `StreamBroken` stream, 429 (`RateLimited`), 408, 409
/// and every 5xx but 501, 505-508, 510 and 511, which do not heal (so 500, 502, 503, 504, Cloudflare's
/// 520 to 530 in front of an origin, and 529, overloaded). 429 and 529 are
/// [rate signals](is_rate_signal): they do not count toward `max_retries`. Everything else
/// fails at once: other 4xx statuses (400, 401, 403, 404, 422, ...), `InvalidInput`,
/// `Config`, `Cancelled`, `BodyDecode`, and `Tls`, because a certificate or protocol mismatch
/// does not heal by itself, and a 429 that no wait heals ([`Error::no_wait_helps`]: the quota
/// used up, a request above a whole per-minute limit).
///
/// A provider's own word wins over the status: `x-should-retry: false` (sent by OpenAI and
/// Anthropic, as their SDKs read it) fails the attempt, `x-should-retry: true` retries it.
///
/// Stream errors (`StreamBroken`, `IdleTimeout`) are only ever classified when no byte of the
/// body reached the caller: the layer hands the stream over after its first chunk and never
/// retries after that. `attempt` is unused; it is there so this function can be passed to
/// [`PolicyBuilder::classifier`] or called from a custom classifier.
///
/// [`Policy::default`]: super::Policy::default
/// [`PolicyBuilder::classifier`]: super::PolicyBuilder::classifier
pub fn classify_default(error: &Error, attempt: u32) -> Decision {
    let _ = attempt;
    if error.no_wait_helps() {
        return Decision::Fail;
    }
    match should_retry(error) {
        Some(false) => return Decision::Fail,
        Some(true) => return Decision::Retry,
        None => {}
    }
    match error.kind() {
        ErrorKind::Connect
        | ErrorKind::Connection
        | ErrorKind::Timeout
        | ErrorKind::FirstByteTimeout
        | ErrorKind::IdleTimeout
        | ErrorKind::StreamBroken
        | ErrorKind::RateLimited => Decision::Retry,
        ErrorKind::Status => match error.status() {
            Some(
                StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS,
            ) => Decision::Retry,
            // What a server cannot do, its own misconfiguration, or a captive portal: no wait
            // heals them.
            Some(
                StatusCode::NOT_IMPLEMENTED
                | StatusCode::HTTP_VERSION_NOT_SUPPORTED
                | StatusCode::VARIANT_ALSO_NEGOTIATES
                | StatusCode::INSUFFICIENT_STORAGE
                | StatusCode::LOOP_DETECTED
                | StatusCode::NOT_EXTENDED
                | StatusCode::NETWORK_AUTHENTICATION_REQUIRED,
            ) => Decision::Fail,
            Some(status) if status.is_server_error() || status.as_u16() == OVERLOADED => {
                Decision::Retry
            }
            _ => Decision::Fail,
        },
        _ => Decision::Fail,
    }
}

/// The classifier of [`Policy::safe_only`]: retries only what cannot have been billed.
///
/// That is a 429 or a 529 (overloaded: refused before any work), a 503 that carries a
/// `Retry-After` (the server refused the work and said when to come back), a 408 without an
/// error object (the server never received the whole request, RFC 9110 §15.5.9; a gateway's
/// 408 with a JSON error, as LiteLLM's after an upstream timeout, may come after the work was
/// billed), Cloudflare's 521, 522, 523, 525 and 526 (it never reached the origin), and any
/// failure where [`Error::is_request_sent`] is `false` (a refused
/// connection, or a pooled connection that closed before the request was written). `Tls` is
/// not retried even though nothing was sent: a certificate problem does not heal.
/// `InvalidInput`, `Config` and `Cancelled` are never retried, nor is another 4xx (a proxy's
/// refusal of the tunnel, 407, reached nothing yet does not heal), nor a 429 that says the
/// quota is used up or the request is above a whole per-minute limit
/// ([`Error::no_wait_helps`]). A timeout, a 500 or a broken stream may
/// come after the provider did (and billed) the work, so they fail.
///
/// [`Policy::safe_only`]: super::Policy::safe_only
pub fn classify_safe_only(error: &Error, attempt: u32) -> Decision {
    let _ = attempt;
    if error.no_wait_helps() || should_retry(error) == Some(false) {
        return Decision::Fail;
    }
    match error.kind() {
        ErrorKind::RateLimited => Decision::Retry,
        ErrorKind::Status if is_rate_signal(error) => Decision::Retry,
        ErrorKind::Status
            if error.status() == Some(StatusCode::SERVICE_UNAVAILABLE)
                && error.retry_after().is_some() =>
        {
            Decision::Retry
        }
        ErrorKind::Status
            if error.status() == Some(StatusCode::REQUEST_TIMEOUT)
                && error.api_error().is_none() =>
        {
            Decision::Retry
        }
        // Cloudflare could not reach the origin (down, timed out connecting, unresolvable, TLS
        // to it failed): the request went no further.
        ErrorKind::Status
            if error
                .status()
                .is_some_and(|s| matches!(s.as_u16(), 521 | 522 | 523 | 525 | 526)) =>
        {
            Decision::Retry
        }
        // Any other 4xx does not heal, even when nothing reached the server: a proxy that
        // refused the tunnel (407, or 401 and 403) would only see the same credentials again.
        ErrorKind::Status if error.status().is_some_and(|s| s.is_client_error()) => Decision::Fail,
        ErrorKind::Tls | ErrorKind::InvalidInput | ErrorKind::Config | ErrorKind::Cancelled => {
            Decision::Fail
        }
        _ if !error.is_request_sent() => Decision::Retry,
        _ => Decision::Fail,
    }
}

/// The provider's `x-should-retry` header (OpenAI's and Anthropic's, as their SDKs read it):
/// `Some(true)` or `Some(false)` when it says so, `None` otherwise.
fn should_retry(error: &Error) -> Option<bool> {
    let value = error.headers()?.get("x-should-retry")?.as_bytes();
    if value.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
}
