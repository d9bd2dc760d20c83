//! The one error type of Volley: opaque, cheap to move, and free of secrets.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// A boxed error from a lower layer (hyper, rustls, serde_json, ...).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong while sending a request or reading its response.
///
/// The error is opaque: ask it questions ([`kind`](Error::kind), [`status`](Error::status),
/// [`retry_after`](Error::retry_after), [`api_error`](Error::api_error)) instead of matching on
/// its insides. Its `Display` names what failed and where (the request id and path, the host),
/// and never contains a credential: the transport never puts one in, and nothing derived from a
/// request's headers is ever formatted.
///
/// Whether an error is worth retrying is not decided here; that is the retry layer's
/// classifier's job, using these facts.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    headers: Option<HeaderMap>,
    api_error: Option<ApiError>,
    /// The error response's body, as [`Error::from_status`] was given it.
    body: Option<bytes::Bytes>,
    request_sent: bool,
    source: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
///
/// New kinds may be added in minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The TCP connection could not be established (refused, unreachable, DNS failure,
    /// connect timeout). The request was not sent.
    Connect,
    /// TLS failed: the handshake (certificate, protocol or ALPN mismatch; the request was not
    /// sent, or refused unread when a server checks the client's certificate after it), or a
    /// TLS error after the request was written ([`Error::is_request_sent`] then says so).
    Tls,
    /// An established connection failed before a complete response head arrived: reset,
    /// closed by the peer, or an HTTP protocol violation.
    Connection,
    /// The whole attempt took longer than its deadline.
    Timeout,
    /// No response byte arrived within the time-to-first-byte deadline.
    FirstByteTimeout,
    /// A streaming response went quiet for longer than the idle deadline between chunks.
    IdleTimeout,
    /// The server answered with an HTTP error status other than 429, or a 429 no wait heals
    /// ([`Error::no_wait_helps`]). The provider's error JSON, when present, is in
    /// [`Error::api_error`].
    Status,
    /// The server answered 429 Too Many Requests. [`Error::retry_after`] says how long it asked
    /// us to wait, when it did. A 429 that no wait heals ([`Error::no_wait_helps`]: the
    /// account's quota used up, a request above a whole per-minute limit) is a `Status` error
    /// instead.
    RateLimited,
    /// The response arrived but its body could not be decoded: invalid JSON, invalid
    /// compression, or an event larger than the configured cap.
    BodyDecode,
    /// The response body or event stream broke off before it was complete.
    StreamBroken,
    /// The request itself is invalid (bad URL, body that cannot be serialised, a cost larger
    /// than any budget). Sending it again will not help.
    InvalidInput,
    /// The client was configured wrongly (for example plain `http://` to a remote host without
    /// allowing it, or a SOCKS5 proxy whose credentials are missing from its URL or refused).
    Config,
    /// The request was cancelled by the caller or by shutdown.
    Cancelled,
}

impl ErrorKind {
    /// A short, stable, lower-case name for metrics labels and logs (`"rate_limited"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::FirstByteTimeout => "first_byte_timeout",
            ErrorKind::IdleTimeout => "idle_timeout",
            ErrorKind::Status => "status",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BodyDecode => "body_decode",
            ErrorKind::StreamBroken => "stream_broken",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// Whether a failure of this kind can only happen before any byte of the request reached
    /// the server.
    fn before_send(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect | ErrorKind::Tls | ErrorKind::InvalidInput | ErrorKind::Config
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error object a provider put in an error response (`{"error": {...}}` in the OpenAI
/// dialect).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ApiError {
    /// The human-readable message.
    pub message: String,
    /// The error type (`"invalid_request_error"`, `"rate_limit_exceeded"`, ...).
    pub r#type: Option<String>,
    /// The machine-readable code, as a string even when the provider sent a number.
    pub code: Option<String>,
    /// The request parameter the error is about.
    pub param: Option<String>,
    /// The wait the body asks for, when it says one: Google's `google.rpc.RetryInfo` detail
    /// (`"retryDelay": "47s"`), which Gemini sends with a 429 instead of a `Retry-After`.
    pub retry_delay: Option<Duration>,
    /// Whether the body says a per-day quota is used up: a Google `google.rpc.QuotaFailure`
    /// detail whose `quotaId` names a day (`GenerateRequestsPerDayPerProjectPerModel`).
    pub daily_quota: bool,
}

impl ApiError {
    /// Parses an OpenAI-style error body: `{"error": {"message": .., "type": .., "code": ..,
    /// "param": ..}}`, or the bare inner object, or `{"error": "text"}`, or `{"message": ..}`,
    /// or the Responses API's `response.failed` event (its `response.error`).
    /// Returns `None` when the body is not JSON or has none of these shapes.
    pub fn from_body(body: &[u8]) -> Option<ApiError> {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        // Some OpenAI-compatible servers wrap the error object in a one-element array.
        if let serde_json::Value::Array(items) = &mut value
            && items.len() == 1
        {
            value = items.pop()?;
        }
        let obj = match value.get("error") {
            Some(serde_json::Value::String(s)) => {
                return Some(ApiError {
                    message: clean_text(s, MAX_MESSAGE_CHARS),
                    ..ApiError::default()
                });
            }
            Some(inner @ serde_json::Value::Object(_)) => inner,
            // The Responses API's `response.failed` event: the error is the response's.
            _ if value.get("type").and_then(serde_json::Value::as_str)
                == Some("response.failed") =>
            {
                match value.pointer("/response/error") {
                    Some(inner @ serde_json::Value::Object(_)) => inner,
                    _ => &value,
                }
            }
            _ => &value,
        };
        // Every field a server chose is cleaned: each ends up on a terminal or in a log, where
        // an escape sequence could rewrite what the reader sees.
        let text = |key: &str, max: usize| match obj.get(key)? {
            serde_json::Value::String(s) => Some(clean_text(s, max)),
            serde_json::Value::Null => None,
            other => Some(clean_text(&other.to_string(), max)),
        };
        let (retry_delay, daily_quota) = google_details(obj);
        Some(ApiError {
            message: text("message", MAX_MESSAGE_CHARS)?,
            r#type: text("type", MAX_FIELD_CHARS),
            code: text("code", MAX_FIELD_CHARS),
            param: text("param", MAX_FIELD_CHARS),
            retry_delay,
            daily_quota,
        })
    }

    /// Whether this error says the account's quota or credit is used up: OpenAI's
    /// `insufficient_quota` (as its `type` or its `code`), which it answers with a 429 that
    /// no wait heals, or a Google per-day quota ([`daily_quota`](ApiError::daily_quota)), which
    /// only the next day heals.
    pub fn is_quota_exhausted(&self) -> bool {
        const QUOTA: &str = "insufficient_quota";
        self.r#type.as_deref() == Some(QUOTA)
            || self.code.as_deref() == Some(QUOTA)
            || self.daily_quota
    }

    /// Whether this error says the request alone is larger than a whole per-minute limit:
    /// OpenAI's 429 "Request too large for MODEL ... on tokens per min (TPM): Limit L,
    /// Requested R", which no wait heals either.
    pub fn is_request_too_large(&self) -> bool {
        self.message.starts_with("Request too large")
    }

    /// Whether an error `body` says a moderation filter flagged the request's input
    /// (OpenRouter's 403 with `metadata.flagged_input` or `metadata.reasons`): a refusal of
    /// that input alone, however many others share the key. Any other 403 (OpenAI's
    /// `model_not_found`, Anthropic's `permission_error`, a firewall's HTML page) may hold for
    /// every request with the key, and this returns `false`.
    ///
    /// ```
    /// use volley_core::ApiError;
    /// assert!(ApiError::flags_the_input(br#"{"error": {"code": 403, "message": "flagged",
    ///     "metadata": {"reasons": ["violence"], "flagged_input": "..."}}}"#));
    /// assert!(!ApiError::flags_the_input(br#"{"type": "error", "error":
    ///     {"type": "permission_error", "message": "Your API key does not have permission"}}"#));
    /// ```
    pub fn flags_the_input(body: &[u8]) -> bool {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let error = match value.get_mut("error") {
            Some(inner @ serde_json::Value::Object(_)) => inner.take(),
            _ => value,
        };
        error
            .get("metadata")
            .is_some_and(|m| m.get("flagged_input").is_some() || m.get("reasons").is_some())
    }

    /// Whether no wait can make the request succeed: [`ApiError::is_quota_exhausted`] or
    /// [`ApiError::is_request_too_large`].
    pub fn no_wait_helps(&self) -> bool {
        self.is_quota_exhausted() || self.is_request_too_large()
    }
}

impl ApiError {
    /// An error from a provider's fields, cleaned and bounded as
    /// [`from_body`](ApiError::from_body) does: the dialects' typed error objects convert
    /// through here, so either way a hostile server's escape sequences never reach a terminal.
    pub(crate) fn cleaned(
        message: &str,
        r#type: Option<&str>,
        code: Option<&str>,
        param: Option<&str>,
    ) -> ApiError {
        let field = |text: Option<&str>| text.map(|t| clean_text(t, MAX_FIELD_CHARS));
        ApiError {
            message: clean_text(message, MAX_MESSAGE_CHARS),
            r#type: field(r#type),
            code: field(code),
            param: field(param),
            ..ApiError::default()
        }
    }
}

/// What the `details` of a Google error (Gemini's, native or behind its OpenAI-compatible
/// endpoint) say: the wait of a `google.rpc.RetryInfo` (`"retryDelay": "47s"`, a protobuf
/// duration), and whether a `google.rpc.QuotaFailure` names a per-day quota. Nothing when
/// there are no details.
fn google_details(error: &serde_json::Value) -> (Option<Duration>, bool) {
    let Some(details) = error.get("details").and_then(serde_json::Value::as_array) else {
        return (None, false);
    };
    let of_type = |detail: &&serde_json::Value, name: &str| {
        detail
            .get("@type")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| t.ends_with(name))
    };
    let retry_delay = details
        .iter()
        .find(|d| of_type(d, "google.rpc.RetryInfo"))
        .and_then(|d| d.get("retryDelay")?.as_str())
        .and_then(crate::headers::parse_duration);
    let daily_quota = details
        .iter()
        .filter(|d| of_type(d, "google.rpc.QuotaFailure"))
        .filter_map(|d| d.get("violations")?.as_array())
        .flatten()
        .filter_map(|v| v.get("quotaId")?.as_str())
        .any(|id| id.contains("PerDay"));
    (retry_delay, daily_quota)
}

/// The most characters of a provider's message kept in an [`ApiError`].
const MAX_MESSAGE_CHARS: usize = 1024;

/// The most characters kept of a provider's error `type`, `code` or `param`.
const MAX_FIELD_CHARS: usize = 128;

/// Keeps a provider's text printable on one line and bounded: control characters (the ESC
/// that starts a terminal escape sequence among them) become spaces and a long text is cut
/// after `max` characters.
fn clean_text(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (&self.r#type, &self.code) {
            (Some(t), Some(c)) => write!(f, " (type {t}, code {c})"),
            (Some(t), None) => write!(f, " (type {t})"),
            (None, Some(c)) => write!(f, " (code {c})"),
            (None, None) => Ok(()),
        }
    }
}

impl Error {
    /// Creates an error of `kind` with a message that says what failed and where.
    ///
    /// The message must not contain a secret; callers build it from ids, paths and hosts only.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                retry_after: None,
                headers: None,
                api_error: None,
                body: None,
                request_sent: !kind.before_send(),
                source: None,
            }),
        }
    }

    /// Creates the error for an HTTP error response: `RateLimited` for 429, `Status` for any
    /// other status and for a 429 whose body says the quota is used up
    /// ([`ApiError::no_wait_helps`]: the quota used up, or a request above a whole
    /// per-minute limit). The provider's error JSON is parsed from `body` when
    /// it has one; a body that holds none is quoted in the message ([`Error::body_excerpt`]),
    /// so `body` must come scrubbed of secrets (the transport's does).
    pub fn from_status(
        status: StatusCode,
        headers: HeaderMap,
        body: &[u8],
        retry_after: Option<Duration>,
        context: impl fmt::Display,
    ) -> Error {
        let api_error = ApiError::from_body(body);
        let kind = if status == StatusCode::TOO_MANY_REQUESTS
            && !api_error.as_ref().is_some_and(ApiError::no_wait_helps)
        {
            ErrorKind::RateLimited
        } else {
            ErrorKind::Status
        };
        let message = match &api_error {
            Some(api) => format!("{context}: HTTP {status}: {api}"),
            None => match body_excerpt(body) {
                Some(excerpt) => format!("{context}: HTTP {status}: {excerpt}"),
                None => format!("{context}: HTTP {status}"),
            },
        };
        let mut err = Error::new(kind, message);
        err.inner.status = Some(status);
        err.inner.headers = Some(headers);
        // Without a header's wait, the body's (Gemini says it only there).
        err.inner.retry_after = retry_after.or(api_error.as_ref().and_then(|a| a.retry_delay));
        err.inner.api_error = api_error;
        if !body.is_empty() {
            err.inner.body = Some(bytes::Bytes::copy_from_slice(body));
        }
        err
    }

    /// What a response body says, in one line for a message: its text with white space
    /// collapsed, cut at 200 characters; of an HTML page its `<title>`, of other markup the
    /// text between its tags; `None` for a body without text. [`Error::from_status`] quotes a body that is no provider's
    /// error object so. Scrub the body of secrets first: the excerpt is the server's text.
    ///
    /// ```
    /// use volley_core::Error;
    ///
    /// let page = b"<html><head><title>502 Bad Gateway</title></head><body>...</body></html>";
    /// assert_eq!(Error::body_excerpt(page).as_deref(), Some("502 Bad Gateway"));
    /// assert_eq!(Error::body_excerpt(b"  no\n  model ").as_deref(), Some("no model"));
    /// assert_eq!(Error::body_excerpt(b"\n"), None);
    /// ```
    pub fn body_excerpt(body: &[u8]) -> Option<String> {
        body_excerpt(body)
    }

    /// Attaches the lower-level cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.inner.source = Some(source.into());
        self
    }

    /// Attaches a provider error object (one sent inside an event stream, say).
    #[must_use]
    pub fn with_api_error(mut self, api_error: ApiError) -> Error {
        self.inner.api_error = Some(api_error);
        self
    }

    /// Records how long the server asked us to wait.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Error {
        self.inner.retry_after = retry_after;
        self
    }

    /// Attaches the headers of the response the error came with (a 2xx answer that is an error
    /// object, say), for what reads them: `Retry-After`, `x-should-retry`, the rate-limit
    /// headers.
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Error {
        self.inner.headers = Some(headers);
        self
    }

    /// Records the HTTP status the error stands for (one a 2xx answer's error object names).
    pub(crate) fn with_status(mut self, status: StatusCode) -> Error {
        self.inner.status = Some(status);
        self
    }

    /// Records whether any byte of the request may have reached the server. Errors of kind
    /// connect, TLS, invalid input and config default to `false`, all others to `true`.
    #[must_use]
    pub fn with_request_sent(mut self, sent: bool) -> Error {
        self.inner.request_sent = sent;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status, for `Status` and `RateLimited` errors: the response's, or, for a 2xx
    /// answer that is an error object whose `code` is an HTTP error status (a gateway's
    /// `{"error": {"code": 502, ..}}` with a 200), that code
    /// ([`Dialect::error_in_answer`](crate::Dialect::error_in_answer)).
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// How long the server asked us to wait before trying again (`retry-after-ms`,
    /// `Retry-After` in seconds or as an HTTP date), when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The response headers of an HTTP error response (rate-limit headers live here).
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.inner.headers.as_ref()
    }

    /// The provider's parsed error object, for HTTP error responses that carried one.
    pub fn api_error(&self) -> Option<&ApiError> {
        self.inner.api_error.as_ref()
    }

    /// The error response's body as the server sent it, for a `Status` or `RateLimited`
    /// error: at most the transport's cap on error bodies (64 KiB by default), with the
    /// request's own secrets (its key, should the server echo it) replaced by `***`. `None`
    /// when the body was empty. Not in `Display` or `Debug` (it can be long, and it is the
    /// server's text, which [`Error::api_error`] carries cleaned).
    pub fn body(&self) -> Option<&bytes::Bytes> {
        self.inner.body.as_ref()
    }

    /// Whether any byte of the request may have reached the server. When this is `false` the
    /// request cannot have been processed or billed, so sending it again is always safe.
    pub fn is_request_sent(&self) -> bool {
        self.inner.request_sent
    }

    /// Whether the provider refused the request because the account's quota or credit is used
    /// up (OpenAI's 429 `insufficient_quota`): not a rate limit, since no wait restores it, so
    /// the built-in retry classifiers fail it at once and the limiters do not slow down for it.
    pub fn is_quota_exhausted(&self) -> bool {
        self.inner
            .api_error
            .as_ref()
            .is_some_and(ApiError::is_quota_exhausted)
    }

    /// Whether no wait can make this request succeed: the quota used up
    /// ([`Error::is_quota_exhausted`]), or the request alone larger than a whole per-minute
    /// limit (OpenAI's 429 "Request too large ..."). Such a 429 is a `Status` error, not
    /// `RateLimited`: the built-in retry classifiers fail it at once and the limiters do not
    /// slow down for it.
    pub fn no_wait_helps(&self) -> bool {
        self.inner
            .api_error
            .as_ref()
            .is_some_and(ApiError::no_wait_helps)
    }

    /// Whether this is a timeout of any kind (attempt, first byte, stream idle).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Timeout | ErrorKind::FirstByteTimeout | ErrorKind::IdleTimeout
        )
    }

    /// Whether the server answered 429.
    pub fn is_rate_limited(&self) -> bool {
        self.inner.kind == ErrorKind::RateLimited
    }

    /// Whether the server said it is overloaded: HTTP 529, or an error object of type
    /// `overloaded_error` (Anthropic's, also sent as an `error` event of a stream that
    /// answered 200 first). Refused before any work, like a 429.
    pub fn is_overloaded(&self) -> bool {
        self.inner.status.is_some_and(|s| s.as_u16() == 529)
            || self
                .inner
                .api_error
                .as_ref()
                .is_some_and(|api| api.r#type.as_deref() == Some("overloaded_error"))
    }

    /// Whether the connection could not be established.
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers are left out on purpose: they are response headers today, but Debug output
        // ends up in logs and must never be able to carry a credential.
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(retry_after) = self.inner.retry_after {
            d.field("retry_after", &retry_after);
        }
        if let Some(api) = &self.inner.api_error {
            d.field("api_error", api);
        }
        d.field("request_sent", &self.inner.request_sent);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    /// What failed and where. The lower-level cause is not repeated here: it is
    /// [`source`](StdError::source), which error reporters (`anyhow`'s `{:#}`, say) print after
    /// this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.inner.kind, self.inner.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

impl Error {
    /// The error and its causes on one line, outermost first, each cause once: what a user
    /// should see (`connect error: request 1 POST …: could not connect: tcp connect error:
    /// Connection refused`). See [`ErrorReport`].
    pub fn report(&self) -> ErrorReport<'_> {
        ErrorReport::new(self)
    }
}

/// Any error and its chain of [`source`](StdError::source)s as one line, outermost first,
/// joined by `": "`, each cause once.
///
/// Libraries disagree on whether `Display` includes the cause (some do, and also return it as
/// the source), so walking the chain naively repeats text: `invalid peer certificate:
/// UnknownIssuer: invalid peer certificate: UnknownIssuer`. The rule here: a cause whose text
/// already appears in the line so far is skipped (its own causes are still looked at).
///
/// ```
/// use volley_core::{Error, ErrorKind, ErrorReport};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
/// let err = Error::new(ErrorKind::Connect, "could not connect").with_source(io);
/// assert_eq!(
///     err.report().to_string(),
///     "connect error: could not connect: Connection refused"
/// );
/// # let _ = ErrorReport::new(&err);
/// ```
#[derive(Clone, Copy)]
pub struct ErrorReport<'a> {
    error: &'a (dyn StdError + 'static),
}

impl<'a> ErrorReport<'a> {
    /// The report of `error` and its causes.
    pub fn new(error: &'a (dyn StdError + 'static)) -> ErrorReport<'a> {
        ErrorReport { error }
    }
}

impl fmt::Display for ErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bound, in case some library's chain loops back on itself.
        const MAX_CAUSES: usize = 32;
        let mut line = self.error.to_string();
        let mut cause = self.error.source();
        for _ in 0..MAX_CAUSES {
            let Some(c) = cause else { break };
            let text = c.to_string();
            if !text.is_empty() && !line.contains(text.as_str()) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for ErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The most characters of an error body kept in the message when it is no provider's error
/// object.
const EXCERPT_CHARS: usize = 200;

/// What an error body that is no provider's error object says, for the message: a proxy's
/// or a server's text (LiteLLM's and vLLM's plain-text 400s, a FastAPI `detail`, a gateway's
/// `upstream connect error`) with its white space collapsed and cut at [`EXCERPT_CHARS`]
/// characters; of an HTML page its `<title>` (nginx's `502 Bad Gateway`), of markup without
/// one its text between the tags (a cloud gateway's XML error); `None` for a body without
/// text. The body comes scrubbed of the request's secrets.
fn body_excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}').trim();
    let untagged;
    let text = if !text.starts_with('<') {
        text
    } else if let Some(title) = html_title(text) {
        title
    } else {
        untagged = without_tags(text);
        &untagged
    };
    let mut excerpt = String::new();
    for (n, word) in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if n > 0 {
            excerpt.push(' ');
        }
        excerpt.push_str(word);
        if excerpt.chars().count() > EXCERPT_CHARS {
            excerpt = excerpt.chars().take(EXCERPT_CHARS).collect();
            excerpt.push('…');
            break;
        }
    }
    (!excerpt.is_empty()).then_some(excerpt)
}

/// `markup` with each tag (`<` to the next `>`) replaced by a space.
fn without_tags(markup: &str) -> String {
    let mut text = String::with_capacity(markup.len());
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// The text of an HTML page's `<title>`, if it has one.
fn html_title(page: &str) -> Option<&str> {
    // ASCII lower-casing keeps every byte where it was, so offsets found in it hold in `page`.
    let lower = page.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    Some(page[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dialect;

    /// A body that is no provider's error object still says what went wrong: its text, or an
    /// HTML page's title, goes into the message, white space collapsed and cut.
    #[test]
    fn status_errors_quote_a_body_that_is_no_error_object() {
        let message = |status: u16, body: &str| {
            Error::from_status(
                StatusCode::from_u16(status).unwrap(),
                HeaderMap::new(),
                body.as_bytes(),
                None,
                "request 1",
            )
            .to_string()
            .strip_prefix("status error: ")
            .expect("a status error")
            .to_owned()
        };
        assert_eq!(
            message(
                400,
                "Invalid model name passed in model=gpt-x.\n  Call /v1/models.\r\n"
            ),
            "request 1: HTTP 400 Bad Request: Invalid model name passed in model=gpt-x. Call /v1/models."
        );
        assert_eq!(
            message(
                502,
                "<html>\r\n<head><TITLE>502 Bad Gateway</TITLE></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ),
            "request 1: HTTP 502 Bad Gateway: 502 Bad Gateway"
        );
        assert_eq!(
            message(503, "<html><body>down <b>for now</b></body></html>"),
            "request 1: HTTP 503 Service Unavailable: down for now"
        );
        assert_eq!(
            message(
                403,
                "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            ),
            "request 1: HTTP 403 Forbidden: AccessDenied Access Denied"
        );
        assert_eq!(
            message(502, "<html><body></body></html>"),
            "request 1: HTTP 502 Bad Gateway"
        );
        assert_eq!(
            message(500, " \n"),
            "request 1: HTTP 500 Internal Server Error"
        );
        assert_eq!(
            message(
                422,
                r#"{"detail": [{"loc": ["body", "model"], "msg": "field required"}]}"#
            ),
            r#"request 1: HTTP 422 Unprocessable Entity: {"detail": [{"loc": ["body", "model"], "msg": "field required"}]}"#
        );
        let long = message(400, &"é ".repeat(300));
        let excerpt = long.split_once("Request: ").unwrap().1;
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1, "{long}");
        assert!(excerpt.ends_with('…'), "{long}");
        // A provider's error object is quoted by its message, as before.
        assert_eq!(
            message(400, r#"{"error": {"message": "bad things"}}"#),
            "request 1: HTTP 400 Bad Request: bad things"
        );
    }

    #[test]
    fn status_errors_parse_the_provider_body() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let err = Error::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            HeaderMap::new(),
            body,
            Some(Duration::from_secs(2)),
            "request 7 POST /v1/chat/completions to api.example.com",
        );
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(err.is_rate_limited());
        assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        let api = err.api_error().unwrap();
        assert_eq!(api.message, "Rate limit reached");
        assert_eq!(api.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(api.param, None);
        let text = err.to_string();
        assert!(text.contains("HTTP 429"), "{text}");
        assert!(text.contains("api.example.com"), "{text}");
        assert!(text.contains("Rate limit reached"), "{text}");
    }

    /// A 403 that flags its input is told from any other 403, which may hold for every
    /// request with the key.
    #[test]
    fn a_403_that_flags_its_input_is_told_from_the_others() {
        let flagged = br#"{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for \"violence\"","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#;
        assert!(ApiError::flags_the_input(flagged));
        let others = [
            &br#"{"error":{"message":"Project `proj_1` does not have access to model `gpt-4.1`","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#[..],
            br#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
            br#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#,
            br#"{"error":{"code":403,"message":"Forbidden","metadata":null}}"#,
            b"<html><body>403 Forbidden</body></html>",
            b"",
        ];
        for body in others {
            assert!(!ApiError::flags_the_input(body), "{body:?}");
        }
    }

    /// Gemini's 429 (an array of one error, as its OpenAI-compatible endpoint sends it too)
    /// says its wait only in a `RetryInfo` detail, and a per-day quota in a `QuotaFailure`:
    /// the wait is the error's when no header gave one, and a day's quota is no rate limit.
    fn gemini(quota_id: &str, delay: &str) -> Vec<u8> {
        format!(
            r#"[{{"error":{{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"{quota_id}","quotaValue":"10"}}]}},{{"@type":"type.googleapis.com/google.rpc.Help","links":[]}},{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}]"#
        )
        .into_bytes()
    }

    #[test]
    fn a_gemini_429_gives_its_wait_and_its_day_quota() {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let minute = gemini(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "47s",
        );
        let err = Error::from_status(status, HeaderMap::new(), &minute, None, "ctx");
        assert!(err.is_rate_limited(), "{err}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(47)));
        // A header's wait comes first.
        let header = Some(Duration::from_secs(2));
        let err = Error::from_status(status, HeaderMap::new(), &minute, header, "ctx");
        assert_eq!(err.retry_after(), header);
        let fraction = gemini("GenerateRequestsPerMinutePerProjectPerModel", "0.5s");
        let err = Error::from_status(status, HeaderMap::new(), &fraction, None, "ctx");
        assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));

        let day = gemini("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "20s");
        let err = Error::from_status(status, HeaderMap::new(), &day, None, "ctx");
        assert_eq!(err.kind(), ErrorKind::Status, "{err}");
        assert!(err.is_quota_exhausted() && err.no_wait_helps());
        assert_eq!(Dialect::OpenAi.error_kind(status, &day), ErrorKind::Status);
        assert_eq!(
            Dialect::OpenAi.error_kind(status, &minute),
            ErrorKind::RateLimited
        );
    }

    /// OpenAI's "You exceeded your current quota" is a 429 that no wait heals: a status
    /// error, not a rate limit, whether the marker is the type or the code.
    #[test]
    fn a_429_for_a_used_up_quota_is_not_a_rate_limit() {
        for body in [
            &br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#[..],
            br#"{"error":{"message":"quota","type":"requests","code":"insufficient_quota"}}"#,
            br#"{"error":{"message":"quota","type":"insufficient_quota","code":null}}"#,
        ] {
            let err = Error::from_status(
                StatusCode::TOO_MANY_REQUESTS,
                HeaderMap::new(),
                body,
                None,
                "ctx",
            );
            assert_eq!(err.kind(), ErrorKind::Status);
            assert!(!err.is_rate_limited());
            assert!(err.is_quota_exhausted());
            assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        }
        let limited = Error::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            HeaderMap::new(),
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            None,
            "ctx",
        );
        assert!(limited.is_rate_limited() && !limited.is_quota_exhausted());
        assert!(!limited.no_wait_helps());
        // A request larger than the whole per-minute limit: no wait heals it either.
        let too_large = Error::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            HeaderMap::new(),
            br#"{"error":{"message":"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 50000. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
            None,
            "ctx",
        );
        assert_eq!(too_large.kind(), ErrorKind::Status);
        assert!(too_large.no_wait_helps() && !too_large.is_quota_exhausted());
    }

    #[test]
    fn other_statuses_are_status_errors() {
        let err = Error::from_status(
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            b"not json",
            None,
            "ctx",
        );
        assert_eq!(err.kind(), ErrorKind::Status);
        assert!(err.api_error().is_none());
        assert!(err.is_request_sent());
    }

    #[test]
    fn api_error_shapes() {
        assert_eq!(
            ApiError::from_body(br#"{"error":"boom"}"#).unwrap().message,
            "boom"
        );
        let numeric = ApiError::from_body(br#"{"error":{"message":"m","code":429}}"#).unwrap();
        assert_eq!(numeric.code.as_deref(), Some("429"));
        assert_eq!(
            ApiError::from_body(br#"{"message":"bare"}"#)
                .unwrap()
                .message,
            "bare"
        );
        assert!(ApiError::from_body(br#"{"other":1}"#).is_none());
        assert!(ApiError::from_body(b"<html>").is_none());
    }

    #[test]
    fn before_send_kinds_are_not_sent() {
        assert!(!Error::new(ErrorKind::Connect, "x").is_request_sent());
        assert!(!Error::new(ErrorKind::Tls, "x").is_request_sent());
        assert!(Error::new(ErrorKind::Connection, "x").is_request_sent());
        assert!(
            !Error::new(ErrorKind::Connection, "x")
                .with_request_sent(false)
                .is_request_sent()
        );
    }

    #[test]
    fn the_source_is_exposed_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(ErrorKind::Connect, "connecting to 127.0.0.1:1").with_source(io);
        assert_eq!(err.to_string(), "connect error: connecting to 127.0.0.1:1");
        assert!(err.is_connect());
        assert_eq!(StdError::source(&err).unwrap().to_string(), "refused");
    }

    /// An error that, like some libraries' errors, shows its cause and also returns it.
    #[derive(Debug)]
    struct Repeating(std::io::Error);

    impl fmt::Display for Repeating {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "tcp connect error: {}", self.0)
        }
    }

    impl StdError for Repeating {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Plain(&'static str, Option<Box<Plain>>);

    impl fmt::Display for Plain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Plain {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|p| p as &(dyn StdError + 'static))
        }
    }

    #[test]
    fn a_report_shows_each_cause_once_outermost_first() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = Error::new(ErrorKind::Connect, "request 1: could not connect")
            .with_source(Repeating(refused));
        assert_eq!(
            err.report().to_string(),
            "connect error: request 1: could not connect: tcp connect error: Connection refused"
        );

        // A cause repeated further down is skipped, and the causes below it still appear.
        let chain = Plain(
            "TLS handshake failed",
            Some(Box::new(Plain(
                "invalid peer certificate: UnknownIssuer",
                Some(Box::new(Plain(
                    "invalid peer certificate: UnknownIssuer",
                    Some(Box::new(Plain("", Some(Box::new(Plain("deeper", None)))))),
                ))),
            ))),
        );
        assert_eq!(
            ErrorReport::new(&chain).to_string(),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer: deeper"
        );

        // No source: the error's own text.
        let alone = Error::new(ErrorKind::Timeout, "no response");
        assert_eq!(alone.report().to_string(), alone.to_string());
    }

    #[test]
    fn every_provider_field_is_cleaned_of_escapes() {
        let body = br#"{"error":{"message":"m\u001b[2J","type":"t\u001b]0;pwned\u0007","code":"c\r\n","param":"p\u009b31m"}}"#;
        let api = ApiError::from_body(body).unwrap();
        for field in [
            Some(&api.message),
            api.r#type.as_ref(),
            api.code.as_ref(),
            api.param.as_ref(),
        ] {
            let field = field.unwrap();
            assert!(!field.chars().any(char::is_control), "{field:?}");
        }
        let bare = ApiError::from_body(br#"{"error":"boom\u001b[31m"}"#).unwrap();
        assert_eq!(bare.message, "boom [31m");
        let long = format!(
            r#"{{"error":{{"message":"m","code":"{}"}}}}"#,
            "c".repeat(500)
        );
        let api = ApiError::from_body(long.as_bytes()).unwrap();
        assert!(api.code.unwrap().chars().count() <= MAX_FIELD_CHARS + 1);
    }

    #[test]
    fn provider_messages_are_bounded_and_on_one_line() {
        let long = format!(r#"{{"error":{{"message":"a\nb{}"}}}}"#, "x".repeat(5000));
        let api = ApiError::from_body(long.as_bytes()).unwrap();
        assert!(api.message.starts_with("a b"));
        assert!(api.message.chars().count() <= 1025);
        assert!(api.message.ends_with('…'));
        let wrapped = ApiError::from_body(br#"[{"error":{"message":"in an array"}}]"#).unwrap();
        assert_eq!(wrapped.message, "in an array");
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(ErrorKind::RateLimited.as_str(), "rate_limited");
        assert_eq!(
            ErrorKind::FirstByteTimeout.to_string(),
            "first_byte_timeout"
        );
    }
}
