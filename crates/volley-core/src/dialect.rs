//! The dialect seam: everything a layer or an engine needs to know about a provider's wire
//! format, behind one small enum, so that middleware stays dialect-free.
//!
//! A [`Request`](crate::Request) carries its [`Dialect`] (OpenAI unless said otherwise; the
//! facade stamps its provider's). Layers ask the dialect instead of reading JSON themselves:
//!
//! | question | OpenAI | Anthropic |
//! |---|---|---|
//! | output budget of a request ([`request_facts`](Dialect::request_facts)) | `max_completion_tokens` or `max_tokens`, times `n` | `max_tokens` |
//! | usage of a body ([`usage_in_body`](Dialect::usage_in_body)) | `usage.prompt_tokens` / `completion_tokens` | `usage.input_tokens` (+ cache) / `output_tokens` |
//! | usage of a stream ([`usage_scanner`](Dialect::usage_scanner)) | the last `usage` chunk | `message_start` merged with the last `message_delta` |
//! | error document ([`looks_like_error`](Dialect::looks_like_error)) | first key `error` | `"type": "error"` |
//! | complete stream ([`stream_complete`](Dialect::stream_complete)) | `data: [DONE]` | `message_stop` |
//! | error kind ([`error_kind`](Dialect::error_kind)) | 429 | 429, `rate_limit_error` |
//! | rate-limit headers ([`rate_limits`](Dialect::rate_limits)) | `x-ratelimit-*` | `anthropic-ratelimit-*` |
//! | request id header ([`request_id_header`](Dialect::request_id_header)) | `x-request-id` | `request-id` |
//!
//! Overload (HTTP 529, Anthropic's `overloaded_error`) stays an `ErrorKind::Status` with its
//! status: the retry layer's default classifier retries it as a rate signal.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, StatusCode};
use serde::Deserialize;

use crate::headers::RateLimitInfo;
use crate::openai::falsy_value_follows;
use crate::{Error, ErrorKind, anthropic, openai, tokens};

/// A provider's wire dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI's chat completions and embeddings, spoken by most compatible servers and Azure.
    #[default]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// The tokens a response reported, split as rate limits need them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Input tokens that count toward an input-tokens limit (Anthropic: uncached input and
    /// cache writes; OpenAI: all prompt tokens).
    pub input: u64,
    /// Input tokens read from a prompt cache that input-token limits do not count
    /// (Anthropic's `cache_read_input_tokens`; 0 for OpenAI, whose prompt tokens include
    /// them).
    pub cache_read: u64,
    /// Output tokens.
    pub output: u64,
}

impl TokenUsage {
    /// A usage of `input` and `output` tokens.
    pub fn new(input: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input,
            cache_read: 0,
            output,
        }
    }

    /// Every token of the request, saturating: these are a peer's numbers.
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.output)
    }
}

/// A token estimate of a request, before it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenEstimate {
    /// The estimated input (prompt) tokens.
    pub input: u32,
    /// The most output tokens the request may use (its budget, or a default).
    pub output: u32,
}

impl TokenEstimate {
    /// Input plus output, saturating: what a combined tokens-per-minute limit charges.
    pub fn total(&self) -> u32 {
        self.input.saturating_add(self.output)
    }
}

/// What a request body says about itself, read without parsing the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestFacts {
    /// The `model`.
    pub model: Option<String>,
    /// The output budget the request sets, if any.
    pub max_output_tokens: Option<u32>,
    /// Whether it asks for a stream (`"stream": true`).
    pub stream: bool,
}

impl Dialect {
    /// The name, as `--provider` spells the provider that speaks it: `openai`, `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// The model, output budget and stream flag of a JSON request body; defaults when the
    /// body is not a JSON object.
    pub fn request_facts(self, body: &[u8]) -> RequestFacts {
        #[derive(Deserialize)]
        struct Facts<'a> {
            #[serde(borrow, default)]
            model: Option<Cow<'a, str>>,
            #[serde(default)]
            max_tokens: Option<u32>,
            #[serde(default)]
            max_completion_tokens: Option<u32>,
            #[serde(default)]
            n: Option<u32>,
            #[serde(default)]
            stream: Option<bool>,
        }
        let Ok(facts) = serde_json::from_slice::<Facts<'_>>(body) else {
            return RequestFacts::default();
        };
        let max_output_tokens = match self {
            Dialect::OpenAi => facts
                .max_completion_tokens
                .or(facts.max_tokens)
                .map(|max| max.saturating_mul(facts.n.unwrap_or(1).max(1))),
            Dialect::Anthropic => facts.max_tokens,
        };
        RequestFacts {
            model: facts.model.map(Cow::into_owned),
            max_output_tokens,
            stream: facts.stream == Some(true),
        }
    }

    /// The token estimate of a JSON request body: the typed estimate when the body parses as
    /// the dialect's request ([`tokens::estimate_chat`], [`tokens::estimate_messages`]),
    /// otherwise the text estimate of the whole body plus its output budget (or the default
    /// budget).
    pub fn estimate_body(self, body: &[u8]) -> TokenEstimate {
        match self {
            Dialect::OpenAi => {
                if let Ok(chat) = serde_json::from_slice::<openai::ChatCompletionRequest>(body) {
                    let input = tokens::estimate_chat(&chat);
                    let total = tokens::estimate_request_cost(&chat);
                    return TokenEstimate {
                        input,
                        output: total.saturating_sub(input),
                    };
                }
            }
            Dialect::Anthropic => {
                if let Ok(req) = serde_json::from_slice::<anthropic::MessagesRequest>(body) {
                    return tokens::estimate_messages(&req);
                }
            }
        }
        let text = std::str::from_utf8(body).unwrap_or_default();
        TokenEstimate {
            input: tokens::estimate_text(text),
            output: self
                .request_facts(body)
                .max_output_tokens
                .unwrap_or(tokens::DEFAULT_COMPLETION_TOKENS),
        }
    }

    /// The usage a complete JSON response body reports, if it has a usage object.
    pub fn usage_in_body(self, body: &[u8]) -> Option<TokenUsage> {
        match self {
            Dialect::OpenAi => openai::usage_in_body(body).map(from_openai),
            Dialect::Anthropic => anthropic::usage_in_body(body).map(from_anthropic),
        }
    }

    /// A scanner for the usage of an event stream in this dialect.
    pub fn usage_scanner(self) -> UsageScanner {
        UsageScanner(match self {
            Dialect::OpenAi => Scanner::OpenAi(openai::UsageScanner::new()),
            Dialect::Anthropic => Scanner::Anthropic(anthropic::UsageScanner::new()),
        })
    }

    /// Whether a JSON document (a body, or one event's data) is an error object of this
    /// dialect.
    pub fn looks_like_error(self, json: &[u8]) -> bool {
        match self {
            Dialect::OpenAi => openai::looks_like_error(json),
            Dialect::Anthropic => anthropic::looks_like_error(json),
        }
    }

    /// Whether a whole 2xx body is an error object in fact, whatever the order of its keys:
    /// the fast look of [`looks_like_error`](Dialect::looks_like_error) (the error key first),
    /// then, when the body names an error at all, a parse of its top level: an `"error"` that
    /// Python reads as true, as openai-python reads a stream's events (a Responses object's
    /// `"error": null` is no error, nor a gateway's `"error": false` or `""`), vLLM's
    /// `"object": "error"`, or Anthropic's `"type": "error"`.
    ///
    /// Gateways and compatible servers answer so with a 200 (vLLM behind RunPod, LiteLLM's
    /// pass-through); read as an answer, such a body would be an empty one, since the answer
    /// types default every field a server leaves out.
    ///
    /// ```
    /// use volley_core::Dialect;
    ///
    /// let vllm = br#"{"object":"error","message":"The model `x` does not exist.","code":404}"#;
    /// assert!(Dialect::OpenAi.is_error_reply(vllm));
    /// assert!(Dialect::OpenAi.is_error_reply(br#"{"id":"r","error":{"message":"m"}}"#));
    /// assert!(!Dialect::OpenAi.is_error_reply(br#"{"id":"r","error":null,"output":[]}"#));
    /// assert!(!Dialect::OpenAi.is_error_reply(br#"{"id":"c","object":"chat.completion"}"#));
    /// ```
    pub fn is_error_reply(self, body: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct TopLevel<'a> {
            #[serde(default)]
            error: Option<serde_json::Value>,
            #[serde(default, rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            object: Option<std::borrow::Cow<'a, str>>,
        }
        // A byte order mark before the JSON may be ignored (RFC 8259, 8.1), and is.
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if self.looks_like_error(body) {
            return true;
        }
        // Every error shape has the string "error", quotes included, as a key or a value; an
        // answer whose text says error has it escaped (`\"error\"`) or within longer text. A
        // body where it is only ever a key whose value is `null` (every Responses object has
        // `"error": null`) is no error either: no parse for those.
        let mut hits = ERROR_KEY.find_iter(body).peekable();
        if hits.peek().is_none() || hits.all(|at| falsy_value_follows(&body[at + 7..])) {
            return false;
        }
        // `error: null` reads as `None`; an error object as `Some`.
        match serde_json::from_slice::<TopLevel<'_>>(body) {
            Ok(top) => {
                top.error.as_ref().is_some_and(truthy)
                    || matches!(top.kind.as_deref(), Some("error" | "response.failed"))
                    || top.object.as_deref() == Some("error")
            }
            Err(_) => false,
        }
    }

    /// Whether an event stream (the whole body so far, or its tail) ends with this dialect's
    /// end-of-stream event; a stream without it ended early.
    pub fn stream_complete(self, tail: &[u8]) -> bool {
        match self {
            Dialect::OpenAi => openai::ends_with_done(tail),
            Dialect::Anthropic => anthropic::ends_with_message_stop(tail),
        }
    }

    /// The [`ErrorKind`] of an error response: `RateLimited` for 429 (and, for Anthropic, a
    /// `rate_limit_error` body under any status), except a 429 no wait heals
    /// ([`ApiError::no_wait_helps`](crate::ApiError::no_wait_helps)), `Status` otherwise. A 529 or an
    /// `overloaded_error` is a `Status` whose status the retry classifier treats as a rate
    /// signal.
    pub fn error_kind(self, status: StatusCode, body: &[u8]) -> ErrorKind {
        if status == StatusCode::TOO_MANY_REQUESTS {
            // As Error::from_status: a 429 no wait heals is no rate limit.
            return match crate::ApiError::from_body(body) {
                Some(api) if api.no_wait_helps() => ErrorKind::Status,
                _ => ErrorKind::RateLimited,
            };
        }
        if self == Dialect::Anthropic
            && anthropic_error_type(body).as_deref() == Some("rate_limit_error")
        {
            return ErrorKind::RateLimited;
        }
        ErrorKind::Status
    }

    /// Whether an error says the provider is overloaded (refused before any work): HTTP 529,
    /// or an Anthropic `overloaded_error` body (also sent as a stream's `error` event).
    pub fn is_overloaded(self, status: Option<StatusCode>, body: &[u8]) -> bool {
        status.is_some_and(|s| s.as_u16() == 529)
            || (self == Dialect::Anthropic
                && anthropic_error_type(body).as_deref() == Some("overloaded_error"))
    }

    /// The error for an error body that arrived inside a 200 response (an event of a stream):
    /// `RateLimited` for a rate-limit error (or a `code` of 429), `StreamBroken` for overload
    /// or a server error (OpenAI's `server_error`, Anthropic's `api_error`, a `code` of 5xx as
    /// OpenRouter sends: what a 500 would have said) and for an error that names neither a
    /// type nor a code, which is retried before the first byte reached the caller, `Status`
    /// otherwise (a request the provider refuses: a context window exceeded), with the
    /// provider's message.
    pub fn error_in_stream(self, data: &[u8], context: impl fmt::Display) -> Error {
        self.error_in_ok(data, context, "error event", true)
    }

    /// The error an event stream's first bytes carry: one of the complete events in them is
    /// an error (an `error` event, data that is an error object in this dialect, or
    /// llama.cpp's `error: {..}` line), so the stream failed before anything of it reached the
    /// caller and may be retried as a whole.
    /// `None` otherwise; at once, with one SIMD search, when the bytes never say `error`.
    ///
    /// ```
    /// use volley_core::{Dialect, ErrorKind};
    ///
    /// let overloaded = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    /// let error = Dialect::Anthropic.error_at_stream_start(overloaded, "request 1").unwrap();
    /// assert_eq!(error.kind(), ErrorKind::StreamBroken);
    /// let start = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    /// assert!(Dialect::OpenAi.error_at_stream_start(start, "request 2").is_none());
    /// let llama = b"error: {\"code\":500,\"message\":\"slot unavailable\",\"type\":\"server_error\"}\n\n";
    /// let error = Dialect::OpenAi.error_at_stream_start(llama, "request 3").unwrap();
    /// assert_eq!(error.kind(), ErrorKind::StreamBroken);
    /// assert!(error.to_string().contains("slot unavailable"));
    /// ```
    pub fn error_at_stream_start(self, first: &[u8], context: impl fmt::Display) -> Option<Error> {
        memchr::memmem::find(first, b"error")?;
        let mut decoder = crate::sse::Decoder::new();
        decoder.feed_slice(first);
        while let Ok(Some(event)) = decoder.next_event() {
            let data = event.data_bytes();
            if event.event_type() == "error" || self.is_error_reply(data) {
                return Some(self.error_in_stream(data, context));
            }
        }
        // llama.cpp's `error: {..}` line, which is no event ([`Decoder::error_field`]).
        //
        // [`Decoder::error_field`]: crate::sse::Decoder::error_field
        let field = decoder.error_field()?;
        Some(self.error_in_stream(field, context))
    }

    /// The error for a whole 2xx answer that is an error object
    /// ([`is_error_reply`](Dialect::is_error_reply)): of the kinds
    /// [`error_in_stream`](Dialect::error_in_stream) gives, with the provider's message,
    /// except that a server error is `Status`. When the error's `code` is an HTTP error status
    /// (OpenRouter's and LiteLLM's `{"error": {"code": 502, ..}}` after a 200), the error
    /// carries it as its [`status`](Error::status), as if the server had answered with it:
    /// retry classifiers read it as they read that status.
    ///
    /// ```
    /// use volley_core::{Dialect, ErrorKind};
    ///
    /// let gateway = br#"{"error":{"message":"upstream failed","code":502}}"#;
    /// let error = Dialect::OpenAi.error_in_answer(gateway, "request 1");
    /// assert_eq!(error.kind(), ErrorKind::Status);
    /// assert_eq!(error.status().map(|s| s.as_u16()), Some(502));
    /// ```
    pub fn error_in_answer(self, data: &[u8], context: impl fmt::Display) -> Error {
        self.error_in_ok(data, context, "the answer is an error", false)
    }

    fn error_in_ok(
        self,
        data: &[u8],
        context: impl fmt::Display,
        what: &str,
        in_stream: bool,
    ) -> Error {
        let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        let api = crate::ApiError::from_body(data);
        // The HTTP status the error stands for, when its `code` is one (`{"error": {"code":
        // 502, ..}}`: OpenRouter's and LiteLLM's errors sent after a 200).
        let status_code = api
            .as_ref()
            .and_then(|api| api.code.as_deref())
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|code| (400..=599).contains(code));
        // A server error by its type (OpenAI's `server_error`, Anthropic's `api_error`), by a
        // `code` that says so (OpenRouter's `"code": "server_error"`), or by a 5xx `code`.
        let names_server_error =
            |name: Option<&str>| name.is_some_and(|t| t == "server_error" || t == "api_error");
        let server_error = in_stream
            && (api.as_ref().is_some_and(|api| {
                names_server_error(api.r#type.as_deref()) || names_server_error(api.code.as_deref())
            }) || status_code.is_some_and(|code| code >= 500));
        // A rate limit by its `code` or `type` as a 429's body names it (OpenAI's
        // `rate_limit_exceeded`, as the Responses API's `error` and `response.failed` events and
        // gateways that keep the 200 send it; Anthropic's `rate_limit_error`), or by a 429
        // `code`; unless no wait heals it (a quota used up).
        let names_rate_limit = |name: Option<&str>| {
            name.is_some_and(|t| t == "rate_limit_exceeded" || t == "rate_limit_error")
        };
        let rate_limited = self.error_kind(StatusCode::OK, data) == ErrorKind::RateLimited
            || ((status_code == Some(429)
                || api.as_ref().is_some_and(|api| {
                    names_rate_limit(api.r#type.as_deref()) || names_rate_limit(api.code.as_deref())
                }))
                && !api.as_ref().is_some_and(crate::ApiError::no_wait_helps));
        // An error event that names neither a type nor a code (not JSON, or a bare
        // `{"message": ..}`) says only that the stream failed.
        let unnamed = in_stream
            && api
                .as_ref()
                .is_none_or(|api| api.r#type.is_none() && api.code.is_none());
        let kind = if rate_limited {
            ErrorKind::RateLimited
        } else if server_error || unnamed || self.is_overloaded(None, data) {
            ErrorKind::StreamBroken
        } else {
            ErrorKind::Status
        };
        let message = match &api {
            Some(api) => format!("{context}: {what}: {api}"),
            None => format!("{context}: {what}"),
        };
        let mut error = Error::new(kind, message);
        if !in_stream && let Some(status) = status_code.and_then(|c| StatusCode::from_u16(c).ok()) {
            error = error.with_status(status);
        }
        match api {
            Some(api) => error.with_api_error(api),
            None => error,
        }
    }

    /// The rate-limit state a response's headers report, resets measured from `now`.
    pub fn rate_limits(self, headers: &HeaderMap, now: SystemTime) -> RateLimitInfo {
        match self {
            Dialect::OpenAi => RateLimitInfo::from_headers(headers),
            Dialect::Anthropic => anthropic::AnthropicRateLimits::from_headers(headers, now).info(),
        }
    }

    /// The response header that carries the provider's request id.
    pub fn request_id_header(self) -> HeaderName {
        match self {
            Dialect::OpenAi => HeaderName::from_static("x-request-id"),
            Dialect::Anthropic => HeaderName::from_static(anthropic::REQUEST_ID_HEADER),
        }
    }

    /// The provider's request id of a response, when it sent one.
    pub fn request_id(self, headers: &HeaderMap) -> Option<&str> {
        headers
            .get(self.request_id_header())
            .and_then(|v| v.to_str().ok())
    }
}

/// Finds `"error"`, quotes included.
static ERROR_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));

/// Whether Python reads a JSON value as true, as openai-python's `data.get("error")` does: not
/// `null`, `false`, a zero, `""`, `{}` or `[]`.
fn truthy(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_none_or(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = Error;

    fn from_str(s: &str) -> Result<Dialect, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" | "azure" => Ok(Dialect::OpenAi),
            "anthropic" => Ok(Dialect::Anthropic),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown dialect {other:?}: expected openai or anthropic"),
            )),
        }
    }
}

/// The usage of an event stream, scanned chunk by chunk in a [`Dialect`]'s way.
#[derive(Debug, Clone)]
pub struct UsageScanner(Scanner);

#[derive(Debug, Clone)]
enum Scanner {
    OpenAi(openai::UsageScanner),
    Anthropic(anthropic::UsageScanner),
}

impl UsageScanner {
    /// Scans the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.0 {
            Scanner::OpenAi(s) => s.feed(chunk),
            Scanner::Anthropic(s) => s.feed(chunk),
        }
    }

    /// The usage seen in complete lines so far.
    pub fn last(&self) -> Option<TokenUsage> {
        match &self.0 {
            Scanner::OpenAi(s) => s.last().map(from_openai),
            Scanner::Anthropic(s) => s.last().map(from_anthropic),
        }
    }

    /// The usage of a stream that has ended (or was dropped), its unterminated last line
    /// included.
    pub fn finish(&mut self) -> Option<TokenUsage> {
        match &mut self.0 {
            Scanner::OpenAi(s) => s.finish().map(from_openai),
            Scanner::Anthropic(s) => s.finish().map(from_anthropic),
        }
    }

    /// Whether the usage seen counts the whole output. OpenAI's usage chunk does; Anthropic's
    /// output count comes with `message_delta` (see
    /// [`anthropic::UsageScanner::output_is_final`]), and a stream cut before it used more
    /// than `message_start` says.
    pub fn output_is_final(&self) -> bool {
        match &self.0 {
            Scanner::OpenAi(_) => true,
            Scanner::Anthropic(s) => s.output_is_final(),
        }
    }
}

fn from_openai(usage: openai::UsageCounts) -> TokenUsage {
    // A server that reported only `total_tokens` is charged it as input.
    TokenUsage::new(
        usage.total().saturating_sub(usage.completion_tokens),
        usage.completion_tokens,
    )
}

fn from_anthropic(usage: anthropic::UsageCounts) -> TokenUsage {
    TokenUsage {
        input: usage
            .input_tokens
            .unwrap_or(0)
            .saturating_add(usage.cache_creation_input_tokens.unwrap_or(0)),
        cache_read: usage.cache_read_input_tokens.unwrap_or(0),
        output: usage.output_tokens.unwrap_or(0),
    }
}

/// The `error.type` of an Anthropic error document.
fn anthropic_error_type(body: &[u8]) -> Option<String> {
    if !anthropic::looks_like_error(body) {
        return None;
    }
    serde_json::from_slice::<anthropic::ErrorResponse>(body)
        .ok()
        .map(|e| e.error.r#type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        let openai =
            br#"{"model":"m","max_tokens":10,"max_completion_tokens":20,"n":3,"stream":true}"#;
        assert_eq!(
            Dialect::OpenAi.request_facts(openai),
            RequestFacts {
                model: Some("m".into()),
                max_output_tokens: Some(60),
                stream: true
            }
        );
        assert_eq!(
            Dialect::Anthropic.request_facts(openai).max_output_tokens,
            Some(10)
        );
        assert_eq!(
            Dialect::Anthropic.request_facts(b"[1]"),
            RequestFacts::default()
        );
        let req = br#"{"model":"claude","max_tokens":300,"messages":[{"role":"user","content":"Hello there"}]}"#;
        let estimate = Dialect::Anthropic.estimate_body(req);
        assert_eq!(estimate.output, 300);
        assert!(estimate.input > 0 && estimate.input < 20, "{estimate:?}");
    }

    #[test]
    fn usage_per_dialect() {
        let anthropic = br#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7}}"#;
        let usage = Dialect::Anthropic.usage_in_body(anthropic).unwrap();
        assert_eq!(
            (usage.input, usage.cache_read, usage.output, usage.total()),
            (15, 100, 7, 122)
        );
        let openai = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            Dialect::OpenAi.usage_in_body(openai),
            Some(TokenUsage::new(3, 4))
        );
        let total_only = br#"{"usage":{"total_tokens":9}}"#;
        assert_eq!(
            Dialect::OpenAi.usage_in_body(total_only).map(|u| u.total()),
            Some(9)
        );
        // Each dialect reads only its own fields.
        assert_eq!(
            Dialect::Anthropic.usage_in_body(openai).map(|u| u.total()),
            Some(0)
        );
    }

    /// An error object after a byte order mark (which RFC 8259 lets a parser ignore) is an
    /// error too, and its message is read.
    #[test]
    fn an_error_after_a_byte_order_mark_is_an_error() {
        let body = b"\xEF\xBB\xBF{\"error\":{\"message\":\"no such model\",\"type\":\"invalid_request_error\"}}";
        assert!(Dialect::OpenAi.is_error_reply(body));
        let error = Dialect::OpenAi.error_in_answer(body, "request 1");
        assert_eq!(
            error.api_error().map(|a| a.message.as_str()),
            Some("no such model")
        );
        let anthropic = b"\xEF\xBB\xBF{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"m\"}}";
        assert!(Dialect::Anthropic.is_error_reply(anthropic));
    }

    /// `"error": null` (every Responses object has it) is passed over without a parse; any
    /// other `"error"` is parsed for.
    #[test]
    fn a_null_error_key_is_no_error() {
        let cases: [(&[u8], bool); 6] = [
            (
                br#"{"id":"r","error":null,"output":[{"text":"an \"error\" word"}]}"#,
                false,
            ),
            (
                br#"{"id":"r","error" : null , "usage":{"error":null}}"#,
                false,
            ),
            (br#"{"id":"r","error":null,"object":"error"}"#, true),
            (br#"{"id":"r","error":{"code":"server_error"}}"#, true),
            (br#"{"id":"r","error":nullish}"#, false),
            (br#"{"id":"r","message":"error"}"#, false),
        ];
        for (body, error) in cases {
            let text = String::from_utf8_lossy(body);
            assert_eq!(Dialect::OpenAi.is_error_reply(body), error, "{text}");
        }
    }

    /// An `"error"` Python reads as false is no error, first key or not, as openai-python
    /// reads a stream's events (`if data.get("error")`); a truthy one is, whatever its type.
    #[test]
    fn an_error_python_reads_as_false_is_no_error() {
        let falsy = [
            "false", "\"\"", "0", "-0", "0.0", "0e3", "{}", "{ }", "[]", "[ ]", "null",
        ];
        for value in falsy {
            for body in [
                format!(r#"{{"error": {value} ,"id":"c","choices":[]}}"#),
                format!(r#"{{"id":"c","error":{value},"choices":[]}}"#),
                format!(r#"{{"id":"c","choices":[],"error":{value}}}"#),
            ] {
                assert!(!Dialect::OpenAi.is_error_reply(body.as_bytes()), "{body}");
                assert!(
                    !Dialect::Anthropic.is_error_reply(body.as_bytes()),
                    "{body}"
                );
            }
        }
        let truthy = [
            "true",
            "\"x\"",
            "1",
            "0.5",
            "-2",
            "{\"message\":\"m\"}",
            "[0]",
            "\"false\"",
            "00x",
        ];
        for value in truthy {
            for body in [
                format!(r#"{{"error": {value} ,"id":"c"}}"#),
                format!(r#"{{"id":"c","error":{value}}}"#),
            ] {
                // `00x` is no JSON: only the fast look of the first key says error then.
                let first = body.starts_with(r#"{"error""#);
                let expected = value != "00x" || first;
                assert_eq!(
                    Dialect::OpenAi.is_error_reply(body.as_bytes()),
                    expected,
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn errors_per_dialect() {
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let limited =
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let invalid = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
        let a = Dialect::Anthropic;
        let status = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(a.error_kind(status(529), overloaded), ErrorKind::Status);
        assert!(a.is_overloaded(Some(status(529)), b""));
        assert!(a.is_overloaded(None, overloaded));
        assert!(!Dialect::OpenAi.is_overloaded(None, overloaded));
        assert_eq!(a.error_kind(status(429), limited), ErrorKind::RateLimited);
        assert_eq!(a.error_kind(status(400), invalid), ErrorKind::Status);
        assert_eq!(
            a.error_in_stream(overloaded, "stream").kind(),
            ErrorKind::StreamBroken
        );
        assert_eq!(
            a.error_in_stream(limited, "stream").kind(),
            ErrorKind::RateLimited
        );
        let err = a.error_in_stream(invalid, "POST /messages");
        assert_eq!(err.kind(), ErrorKind::Status);
        assert_eq!(
            err.api_error().and_then(|e| e.r#type.as_deref()),
            Some("invalid_request_error")
        );
        assert!(a.looks_like_error(overloaded) && !Dialect::OpenAi.looks_like_error(overloaded));
        // A server error in a stream is what a 500 would have said: retried before the first
        // byte reached the caller. As a whole 2xx answer it stays `Status`.
        let api_error = br#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#;
        assert_eq!(
            a.error_in_stream(api_error, "stream").kind(),
            ErrorKind::StreamBroken
        );
        assert_eq!(
            a.error_in_answer(api_error, "answer").kind(),
            ErrorKind::Status
        );
        let server_error =
            br#"{"error":{"message":"The server had an error","type":"server_error"}}"#;
        assert_eq!(
            Dialect::OpenAi.error_in_stream(server_error, "s").kind(),
            ErrorKind::StreamBroken
        );
        // OpenRouter's and LiteLLM's errors after a 200 carry the status as their code.
        for (body, kind) in [
            (
                &br#"{"error":{"code":502,"message":"Provider returned error"}}"#[..],
                ErrorKind::StreamBroken,
            ),
            (
                br#"{"error":{"code":"429","message":"Rate limit exceeded"}}"#,
                ErrorKind::RateLimited,
            ),
            (
                br#"{"id":"gen-1","error":{"code":429,"message":"x"},"choices":[]}"#,
                ErrorKind::RateLimited,
            ),
            (
                br#"{"error":{"code":400,"message":"Bad request"}}"#,
                ErrorKind::Status,
            ),
            (
                br#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#,
                ErrorKind::Status,
            ),
        ] {
            let text = String::from_utf8_lossy(body);
            assert_eq!(
                Dialect::OpenAi.error_in_stream(body, "s").kind(),
                kind,
                "{text}"
            );
        }
        // A 429 code that no wait heals is no rate limit.
        let quota = br#"{"error":{"code":429,"type":"insufficient_quota","message":"quota"}}"#;
        assert_eq!(
            Dialect::OpenAi.error_in_stream(quota, "s").kind(),
            ErrorKind::Status
        );
        // A rate limit named by its text code, not its status: the Responses API's `error`
        // event (OpenRouter's), a gateway's error event or whole answer after a 200 carrying
        // OpenAI's 429 body, the Responses API's `response.failed` event (Azure's, at its
        // token limit). Retried as a rate signal, in a stream and as a whole answer.
        let responses_error = br#"{"type":"error","code":"rate_limit_exceeded","message":"Rate limit exceeded. Please try again later.","param":null,"sequence_number":2}"#;
        let gateway = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}}"#;
        let failed = br#"{"type":"response.failed","sequence_number":3,"response":{"id":"resp_1","status":"failed","error":{"code":"rate_limit_exceeded","message":"exceeded token rate limit"}}}"#;
        for body in [&responses_error[..], gateway, failed] {
            let text = String::from_utf8_lossy(body);
            assert!(Dialect::OpenAi.is_error_reply(body), "{text}");
            let err = Dialect::OpenAi.error_in_stream(body, "s");
            assert_eq!(err.kind(), ErrorKind::RateLimited, "{text}");
            assert!(err.to_string().contains("ate limit"), "{err}");
            let err = Dialect::OpenAi.error_in_answer(body, "a");
            assert_eq!(err.kind(), ErrorKind::RateLimited, "{text}");
        }
        // A `response.failed` for a server error is a broken stream, with its message.
        let failed = br#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"The model failed"}}}"#;
        let err = Dialect::OpenAi.error_in_stream(failed, "s");
        assert_eq!(err.kind(), ErrorKind::StreamBroken);
        assert!(err.to_string().contains("The model failed"), "{err}");
        // The other events of a Responses stream are no errors.
        for event in [
            &br#"{"type":"response.completed","response":{"id":"resp_1","status":"completed","error":null}}"#[..],
            br#"{"type":"response.incomplete","response":{"status":"incomplete","error":null,"incomplete_details":{"reason":"max_output_tokens"}}}"#,
        ] {
            assert!(!Dialect::OpenAi.is_error_reply(event));
        }
        // A quota used up, named by its code, is still no rate limit.
        let quota = br#"{"error":{"type":"rate_limit_exceeded","code":"insufficient_quota","message":"quota"}}"#;
        assert_eq!(
            Dialect::OpenAi.error_in_stream(quota, "s").kind(),
            ErrorKind::Status
        );
        // A whole answer's server error stays a status error.
        let whole = br#"{"error":{"code":502,"message":"Provider returned error"}}"#;
        assert_eq!(
            Dialect::OpenAi.error_in_answer(whole, "a").kind(),
            ErrorKind::Status
        );
    }

    #[test]
    fn headers_per_dialect() {
        let mut h = HeaderMap::new();
        h.insert("request-id", "req_1".parse().unwrap());
        h.insert("x-request-id", "x_1".parse().unwrap());
        h.insert("anthropic-ratelimit-tokens-limit", "9".parse().unwrap());
        h.insert("x-ratelimit-limit-tokens", "7".parse().unwrap());
        assert_eq!(Dialect::Anthropic.request_id(&h), Some("req_1"));
        assert_eq!(Dialect::OpenAi.request_id(&h), Some("x_1"));
        let now = SystemTime::now();
        assert_eq!(
            Dialect::Anthropic.rate_limits(&h, now).limit_tokens,
            Some(9)
        );
        assert_eq!(Dialect::OpenAi.rate_limits(&h, now).limit_tokens, Some(7));
    }

    #[test]
    fn streams_per_dialect() {
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":6}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut scanner = Dialect::Anthropic.usage_scanner();
        scanner.feed(stream);
        assert_eq!(scanner.finish(), Some(TokenUsage::new(4, 6)));
        assert!(Dialect::Anthropic.stream_complete(stream));
        assert!(!Dialect::OpenAi.stream_complete(stream));
        assert_eq!("Anthropic".parse::<Dialect>().unwrap(), Dialect::Anthropic);
        assert!("gemini".parse::<Dialect>().is_err());
    }
}
