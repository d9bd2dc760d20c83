//! Validating one input line and turning it into a [`Request`].

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::Value;
use volley::core::cache_key::canonical_json;
use volley::core::openai::{ChatCompletionRequest, EmbeddingsRequest};
use volley::core::{Dialect, Request, RequestId, tokens};

use super::format::Format;

/// The header OpenAI reads a caller's own request id from.
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
/// OpenAI accepts client request ids of at most 512 ASCII characters.
const MAX_CLIENT_REQUEST_ID: usize = 512;

/// The endpoints a batch line may name, and the path sent for each (relative to a base URL
/// that ends in `/v1`).
const URLS: [(&str, &str, Endpoint); 7] = [
    ("/v1/chat/completions", "/chat/completions", Endpoint::Chat),
    ("/v1/embeddings", "/embeddings", Endpoint::Embeddings),
    ("/v1/completions", "/completions", Endpoint::Generation),
    ("/v1/responses", "/responses", Endpoint::Generation),
    ("/v1/moderations", "/moderations", Endpoint::Other),
    // JSON bodies, as the Batch API takes them (images by URL or file id for edits).
    (
        "/v1/images/generations",
        "/images/generations",
        Endpoint::Generation,
    ),
    ("/v1/images/edits", "/images/edits", Endpoint::Generation),
];

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Chat,
    Embeddings,
    /// Other endpoints that generate text or images (whose output tokens GPT Image models
    /// count too), charged their cap on output or the default completion budget, times `n`.
    Generation,
    Other,
}

/// The path of Anthropic's Messages endpoint, where every Message Batches line goes.
const MESSAGES_PATH: &str = "/messages";

/// A valid line.
#[derive(Debug)]
pub(crate) struct ParsedLine {
    pub(crate) custom_id: String,
    path: &'static str,
    /// The `url` as the line wrote it (OpenAI's, or Azure's form without `/v1`).
    url: &'static str,
    body: Bytes,
    estimated_tokens: u32,
    dialect: Dialect,
    /// When the answer is drawn at random (a generation not at temperature 0), the body in
    /// canonical JSON (as a cache key covers it), for the reader to find repeats by: a repeat
    /// of the line is then another sample, cached apart ([`ParsedLine::repeat`]). Taken, and
    /// dropped, by the reader.
    pub(crate) canonical: Option<Vec<u8>>,
    /// Which repetition of an identical earlier sampled line this is (0: the first), set by
    /// the reader ([`Request::with_repeat`]).
    pub(crate) repeat: u32,
}

/// Why a line is not a valid request.
#[derive(Debug)]
pub(crate) struct InvalidLine {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// The line's `custom_id` when it has a usable one.
    pub(crate) custom_id: Option<String>,
}

impl InvalidLine {
    fn new(code: &'static str, message: String) -> InvalidLine {
        InvalidLine {
            code,
            message,
            custom_id: None,
        }
    }

    /// A line longer than the cap (`len` bytes, newline excluded).
    pub(crate) fn too_long(line: u64, len: u64, max: usize) -> InvalidLine {
        InvalidLine::new(
            "line_too_long",
            format!("line {line}: the line is {len} bytes, above the limit of {max} bytes"),
        )
    }

    /// A line whose `custom_id` an earlier line already used. Its record has no `custom_id`
    /// (the message names it): under that id, a reader that maps records by `custom_id` would
    /// take this error for the earlier line's outcome.
    pub(crate) fn duplicate(line: u64, custom_id: &str) -> InvalidLine {
        InvalidLine::new(
            "duplicate_custom_id",
            format!(
                "line {line}: field `custom_id`: {} is already used by an earlier line",
                Value::from(custom_id)
            ),
        )
    }
}

/// When the first line of a file is a JSON object in the other format, the error that refuses
/// the file: every line would fail, so nothing is sent and nothing is written.
pub(crate) fn foreign_format(line: u64, bytes: &[u8], format: Format) -> Option<String> {
    #[derive(Deserialize)]
    struct Keys {
        #[serde(default)]
        params: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        body: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        url: Option<serde::de::IgnoredAny>,
    }
    let keys: Keys = serde_json::from_slice(bytes).ok()?;
    let openai = keys.body.is_some() || keys.url.is_some();
    let anthropic = keys.params.is_some();
    let other = match format {
        Format::OpenAi if anthropic && !openai => Format::Anthropic,
        Format::Anthropic if openai && !anthropic => Format::OpenAi,
        _ => return None,
    };
    let provider = match other {
        Format::Anthropic => "--provider anthropic",
        Format::OpenAi => "--provider openai (or azure)",
    };
    Some(format!(
        "line {line}: this is a file in {}, but this run reads {}; run it with {provider}, or \
         convert the file",
        other.shape(),
        format.shape()
    ))
}

/// The `custom_id` a line that is not valid JSON seems to give: the string after its first
/// `"custom_id"` key and colon, when that reads as a non-empty JSON string.
fn lenient_custom_id(text: &str) -> Option<String> {
    id_after_key(text, text.find(CUSTOM_ID_KEY)?)
}

const CUSTOM_ID_KEY: &str = "\"custom_id\"";

/// The non-empty JSON string after the `"custom_id"` key at `at` and its colon.
fn id_after_key(text: &str, at: usize) -> Option<String> {
    let rest = text[at + CUSTOM_ID_KEY.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if !rest.starts_with('"') {
        return None;
    }
    // The string token alone: serde reads the first value and stops there.
    let id = serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()?
        .ok()?;
    (!id.is_empty()).then_some(id)
}

/// The `custom_id` a line too long to read seems to give, from its first bytes (`head`: the
/// first key there) or else its last (`tail`: the last key there). A multi-byte character cut
/// at either end reads as U+FFFD, which is never inside the id found.
pub(crate) fn claimed_custom_id(head: &[u8], tail: &[u8]) -> Option<String> {
    lenient_custom_id(&String::from_utf8_lossy(head)).or_else(|| {
        let tail = String::from_utf8_lossy(tail);
        id_after_key(&tail, tail.rfind(CUSTOM_ID_KEY)?)
    })
}

/// Checks one non-blank line (without its newline) of a file in `format`.
pub(crate) fn parse_line(
    line: u64,
    bytes: &[u8],
    format: Format,
) -> Result<ParsedLine, InvalidLine> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let mut invalid = InvalidLine::new(
            "invalid_utf8",
            format!(
                "line {line}: invalid UTF-8 at byte {} of the line",
                e.valid_up_to() + 1
            ),
        );
        // Claimed as a malformed line's id is (below): a Latin-1 `é` elsewhere in the line
        // leaves the id readable, and a later line with it must not take its place.
        invalid.custom_id = lenient_custom_id(&String::from_utf8_lossy(bytes));
        invalid
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's message ends in "at line 1 column N"; say where in our terms.
        let what = e.to_string();
        let what = what.rsplit_once(" at line ").map_or(&*what, |(w, _)| w);
        let mut invalid = InvalidLine::new(
            "invalid_json",
            format!(
                "line {line}: malformed JSON at column {}: {what}",
                e.column()
            ),
        );
        // The id it seems to give is claimed: a later line with the same id is a duplicate,
        // as it will be once this line is fixed, and never sent meanwhile under an id whose
        // answer would then be taken for this line's.
        invalid.custom_id = lenient_custom_id(text);
        invalid
    })?;
    let Value::Object(mut object) = value else {
        return Err(InvalidLine::new(
            "invalid_json",
            format!(
                "line {line}: expected a JSON object, found {}",
                type_name(&value)
            ),
        ));
    };
    let custom_id = match object.remove("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::String(_)) => return Err(invalid_field(line, "custom_id", "an empty string")),
        Some(other) => return Err(invalid_field(line, "custom_id", type_name(&other))),
        None => return Err(missing(line, "custom_id")),
    };
    let with_id = |mut invalid: InvalidLine| {
        invalid.custom_id = Some(custom_id.clone());
        invalid
    };
    if format == Format::Anthropic {
        if !is_message_batches_id(&custom_id) {
            return Err(with_id(InvalidLine::new(
                "invalid_field",
                format!(
                    "line {line}: field `custom_id`: the Message Batches format takes 1 to \
                     {MAX_MESSAGE_BATCHES_ID} letters, digits, `-` and `_`, found {}",
                    Value::from(custom_id.as_str())
                ),
            )));
        }
        let params = match object.get("params") {
            Some(params @ Value::Object(_)) => params,
            Some(other) => return Err(with_id(invalid_field(line, "params", type_name(other)))),
            None => return Err(with_id(missing(line, "params"))),
        };
        if params.get("stream") == Some(&Value::Bool(true)) {
            return Err(with_id(InvalidLine::new(
                "invalid_field",
                format!(
                    "line {line}: field `params.stream`: streaming is not supported in batch \
                     files"
                ),
            )));
        }
        let bytes = raw_member(text, "params").unwrap_or_else(|| {
            // Serialising a `Value` cannot fail (its map keys are strings).
            serde_json::to_vec(params).unwrap_or_default()
        });
        let estimated_tokens = Dialect::Anthropic.estimate_body(&bytes).total();
        return Ok(ParsedLine {
            custom_id,
            path: MESSAGES_PATH,
            url: MESSAGES_PATH,
            body: Bytes::from(bytes),
            estimated_tokens,
            dialect: Dialect::Anthropic,
            canonical: sampled(params).then(|| canonical_json(params)),
            repeat: 0,
        });
    }
    match object.get("method") {
        Some(Value::String(m)) if m == "POST" => {}
        Some(Value::String(m)) => {
            return Err(with_id(InvalidLine::new(
                "unsupported_method",
                format!(
                    "line {line}: field `method`: {} is not supported; only \"POST\" is",
                    Value::from(m.as_str())
                ),
            )));
        }
        Some(other) => return Err(with_id(invalid_field(line, "method", type_name(other)))),
        None => return Err(with_id(missing(line, "method"))),
    }
    let (path, endpoint, url) = match object.get("url") {
        // Azure OpenAI's batch format names the path without `/v1` (`/chat/completions`).
        Some(Value::String(url)) => match URLS.iter().find(|(u, p, _)| u == url || p == url) {
            Some(&(written, path, endpoint)) => (
                path,
                endpoint,
                if written == url.as_str() {
                    written
                } else {
                    path
                },
            ),
            None => {
                return Err(with_id(InvalidLine::new(
                    "unknown_url",
                    format!(
                        "line {line}: field `url`: unknown URL {}; expected one of {}",
                        Value::from(url.as_str()),
                        URLS.map(|(u, ..)| u).join(", ")
                    ),
                )));
            }
        },
        Some(other) => return Err(with_id(invalid_field(line, "url", type_name(other)))),
        None => return Err(with_id(missing(line, "url"))),
    };
    let body = match object.get("body") {
        Some(body @ Value::Object(_)) => body,
        Some(other) => return Err(with_id(invalid_field(line, "body", type_name(other)))),
        None => return Err(with_id(missing(line, "body"))),
    };
    // A streamed reply would be billed and then fail to decode as one JSON body.
    if body.get("stream") == Some(&Value::Bool(true)) {
        return Err(with_id(InvalidLine::new(
            "invalid_field",
            format!("line {line}: field `body.stream`: streaming is not supported in batch files"),
        )));
    }
    // The body is sent as the line wrote it, byte for byte: re-serialising the parsed value
    // would reorder keys and could change the text of large or precise numbers.
    let bytes = raw_member(text, "body").unwrap_or_else(|| {
        // Serialising a `Value` cannot fail (its map keys are strings).
        serde_json::to_vec(body).unwrap_or_default()
    });
    let estimated_tokens = estimate(endpoint, body, &bytes);
    Ok(ParsedLine {
        custom_id,
        path,
        url,
        body: Bytes::from(bytes),
        estimated_tokens,
        dialect: Dialect::OpenAi,
        canonical: (!matches!(endpoint, Endpoint::Embeddings | Endpoint::Other) && sampled(body))
            .then(|| canonical_json(body)),
        repeat: 0,
    })
}

/// Whether a generation's answer is drawn at random: unless it sets `temperature` to 0 (the
/// default is 1 at OpenAI and at Anthropic).
fn sampled(body: &Value) -> bool {
    body.get("temperature")
        .and_then(Value::as_f64)
        .is_none_or(|t| t != 0.0)
}

impl ParsedLine {
    /// The `url` as the line wrote it (`/v1/chat/completions`, or Azure's
    /// `/chat/completions`).
    pub(crate) fn url(&self) -> &'static str {
        self.url
    }

    /// The path the request goes to.
    pub(crate) fn path(&self) -> &'static str {
        self.path
    }

    /// The `model` of the body, read for [`validate`](crate::validate) only.
    pub(crate) fn model(&self) -> Option<String> {
        self.dialect.request_facts(&self.body).model
    }

    /// The request to send for line `line`: id = the line number, `X-Client-Request-Id` =
    /// the `custom_id` when OpenAI would accept it as one.
    pub(crate) fn into_request(self, line: u64) -> (String, Request) {
        let mut request = Request::new(Method::POST, PathAndQuery::from_static(self.path))
            .with_id(RequestId::from_u64(line))
            .with_body(self.body)
            .with_estimated_tokens(self.estimated_tokens)
            .with_repeat(self.repeat)
            .with_dialect(self.dialect)
            .with_header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        let id = &self.custom_id;
        if self.dialect == Dialect::OpenAi
            && id.len() <= MAX_CLIENT_REQUEST_ID
            && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && let Ok(value) = HeaderValue::from_str(id)
        {
            request = request.with_header(CLIENT_REQUEST_ID, value);
        }
        (self.custom_id, request)
    }
}

/// The `body` (OpenAI) or `params` (Anthropic) member of a line exactly as written, when
/// the line has exactly one.
fn raw_member(text: &str, name: &str) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow, default)]
        body: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default)]
        params: Option<&'a serde_json::value::RawValue>,
    }
    let line: Line<'_> = serde_json::from_str(text).ok()?;
    let raw = if name == "params" {
        line.params
    } else {
        line.body
    }?;
    Some(raw.get().as_bytes().to_vec())
}

/// The token cost the rate limiter charges before sending: typed estimates for chat and
/// embeddings, the body's text otherwise, plus for the other generating endpoints their cap on
/// output (`max_output_tokens` of the Responses API, `max_tokens` of completions, which the
/// provider counts against the tokens per minute) or the default completion budget.
fn estimate(endpoint: Endpoint, body: &Value, bytes: &[u8]) -> u32 {
    let text = || tokens::estimate_text(std::str::from_utf8(bytes).unwrap_or_default());
    match endpoint {
        Endpoint::Chat => match ChatCompletionRequest::deserialize(body) {
            Ok(chat) => tokens::estimate_request_cost(&chat),
            Err(_) => text().saturating_add(tokens::DEFAULT_COMPLETION_TOKENS),
        },
        Endpoint::Embeddings => match EmbeddingsRequest::deserialize(body) {
            Ok(embeddings) => tokens::estimate_embeddings(&embeddings),
            Err(_) => text(),
        },
        Endpoint::Generation => text().saturating_add(output_cap(body)),
        Endpoint::Other => text(),
    }
}

/// The cap on output tokens a Responses or completions body sets (times `n` for completions'
/// several choices), or the default completion budget when it sets none.
fn output_cap(body: &Value) -> u32 {
    let cap = ["max_output_tokens", "max_tokens"]
        .iter()
        .find_map(|key| body.get(key)?.as_u64())
        .map_or(tokens::DEFAULT_COMPLETION_TOKENS, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        });
    let choices = body
        .get("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1));
    cap.saturating_mul(choices)
}

/// The longest `custom_id` of the Message Batches format.
const MAX_MESSAGE_BATCHES_ID: usize = 64;

/// Whether `id` is a `custom_id` Anthropic's Message Batches API accepts:
/// `^[a-zA-Z0-9_-]{1,64}$`. A file Volley runs stays one the API would run.
fn is_message_batches_id(id: &str) -> bool {
    (1..=MAX_MESSAGE_BATCHES_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn missing(line: u64, field: &str) -> InvalidLine {
    InvalidLine::new(
        "missing_field",
        format!("line {line}: field `{field}` is missing"),
    )
}

fn invalid_field(line: u64, field: &str, found: &str) -> InvalidLine {
    let expected = match field {
        "body" | "params" => "a JSON object",
        _ => "a non-empty string",
    };
    InvalidLine::new(
        "invalid_field",
        format!("line {line}: field `{field}` must be {expected}, found {found}"),
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":10}}"#;

    fn invalid(line: &str) -> InvalidLine {
        parse_line(9, line.as_bytes(), Format::OpenAi).unwrap_err()
    }

    #[test]
    fn a_good_line_becomes_a_request() {
        let parsed = parse_line(4, GOOD.as_bytes(), Format::OpenAi).unwrap();
        let (id, request) = parsed.into_request(4);
        assert_eq!(id, "a");
        assert_eq!(request.path(), "/chat/completions");
        assert_eq!(request.id(), RequestId::from_u64(4));
        assert_eq!(request.headers()["x-client-request-id"], "a");
        assert!(request.estimated_tokens() >= 10 && request.estimated_tokens() < 40);
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(body["max_tokens"], 10);
        // Sent exactly as written: key order and number text survive.
        let exact = r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"z":1,"model":"m","messages":[],"temperature":0.10000000000000001,"big":12345678901234567890123}}"#;
        let (_, request) = parse_line(2, exact.as_bytes(), Format::OpenAi)
            .unwrap()
            .into_request(2);
        assert_eq!(
            request.body().as_ref(),
            br#"{"z":1,"model":"m","messages":[],"temperature":0.10000000000000001,"big":12345678901234567890123}"#
        );
    }

    #[test]
    fn every_broken_kind_names_line_and_field() {
        let cases = [
            (r#"{"custom_id":"a","#, "invalid_json", "column"),
            ("[1]", "invalid_json", "an array"),
            (r#"{"method":"POST"}"#, "missing_field", "`custom_id`"),
            (r#"{"custom_id":7}"#, "invalid_field", "`custom_id` must be"),
            (r#"{"custom_id":""}"#, "invalid_field", "an empty string"),
            (
                r#"{"custom_id":"a","url":"/v1/embeddings","body":{}}"#,
                "missing_field",
                "`method`",
            ),
            (
                r#"{"custom_id":"a","method":"GET"}"#,
                "unsupported_method",
                "\"GET\"",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v2/x","body":{}}"#,
                "unknown_url",
                "\"/v2/x\"",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings"}"#,
                "missing_field",
                "`body`",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":"x"}"#,
                "invalid_field",
                "`body` must be a JSON object, found a string",
            ),
        ];
        let cases = cases.into_iter().chain([(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"stream":true}}"#,
            "invalid_field",
            "field `body.stream`: streaming is not supported in batch files",
        )]);
        for (line, code, needle) in cases {
            let e = invalid(line);
            assert_eq!(e.code, code, "{line}: {}", e.message);
            assert!(e.message.starts_with("line 9: "), "{}", e.message);
            assert!(e.message.contains(needle), "{}", e.message);
        }
        assert_eq!(
            invalid(r#"{"custom_id":"a","method":"GET"}"#)
                .custom_id
                .as_deref(),
            Some("a")
        );
        // Malformed JSON: the id it seems to give, when it gives one.
        for (text, id) in [
            (r#"{"custom_id":"q1","method":"POST",}"#, Some("q1")),
            (r#"{"custom_id" : "a\"b\\","x":}"#, Some("a\"b\\")),
            (r#"{"custom_id":7,}"#, None),
            (r#"{"custom_id":"","#, None),
            (r#"{"custom_id":"open"#, None),
            (r#"{"method":"POST",}"#, None),
        ] {
            let e = invalid(text);
            assert_eq!(e.code, "invalid_json", "{text}");
            assert_eq!(e.custom_id.as_deref(), id, "{text}");
        }
        let e = parse_line(2, b"{\"custom_id\":\"\xff\"}", Format::OpenAi).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "invalid_utf8",
                "line 2: invalid UTF-8 at byte 15 of the line"
            )
        );
    }

    /// A Responses or completions line is charged its own cap on output (the provider counts
    /// it against the tokens per minute), not the default budget.
    #[test]
    fn generating_lines_are_charged_their_output_cap() {
        let estimate = |url: &str, body: &str| {
            let line =
                format!(r#"{{"custom_id":"g","method":"POST","url":"{url}","body":{body}}}"#);
            parse_line(1, line.as_bytes(), Format::OpenAi)
                .unwrap()
                .into_request(1)
                .1
                .estimated_tokens()
        };
        let plain = estimate("/v1/responses", r#"{"model":"m","input":"hi"}"#);
        assert!((1024..1100).contains(&plain), "the default budget: {plain}");
        let big = estimate(
            "/v1/responses",
            r#"{"model":"m","input":"hi","max_output_tokens":32000}"#,
        );
        assert!((32000..32100).contains(&big), "{big}");
        let small = estimate(
            "/v1/completions",
            r#"{"model":"m","prompt":"hi","max_tokens":16,"n":3}"#,
        );
        assert!((48..150).contains(&small), "{small}");
        // An image request: the default budget per image.
        let images = estimate(
            "/v1/images/generations",
            r#"{"model":"gpt-image-1","prompt":"a red fox","n":2}"#,
        );
        assert!((2048..2100).contains(&images), "{images}");
    }

    /// The Batch API's image endpoints are accepted (in either form of the URL), go to their
    /// path, and their requests are samples: a repeat is drawn again, not answered from the
    /// cache.
    #[test]
    fn image_lines_go_to_the_image_endpoints() {
        for (url, path) in [
            ("/v1/images/generations", "/images/generations"),
            ("/images/generations", "/images/generations"),
            ("/v1/images/edits", "/images/edits"),
        ] {
            let line = format!(
                r#"{{"custom_id":"i","method":"POST","url":"{url}","body":{{"model":"gpt-image-1","prompt":"a fox"}}}}"#
            );
            let parsed = parse_line(1, line.as_bytes(), Format::OpenAi).unwrap();
            assert_eq!(parsed.url(), url);
            assert!(parsed.canonical.is_some(), "{url}: not a sample");
            assert_eq!(parsed.into_request(1).1.path(), path);
        }
    }

    #[test]
    fn stream_false_is_accepted() {
        let line = GOOD.replace(r#""max_tokens":10"#, r#""max_tokens":10,"stream":false"#);
        assert!(parse_line(1, line.as_bytes(), Format::OpenAi).is_ok());
    }

    const MESSAGE: &str = r#"{"custom_id":"m-1","params":{"model":"claude","max_tokens":64,"messages":[{"role":"user","content":"hello there"}]}}"#;

    #[test]
    fn a_message_batches_line_becomes_a_messages_request() {
        let (id, request) = parse_line(3, MESSAGE.as_bytes(), Format::Anthropic)
            .unwrap()
            .into_request(3);
        assert_eq!(id, "m-1");
        assert_eq!(request.path(), "/messages");
        assert_eq!(request.dialect(), Dialect::Anthropic);
        assert!(request.headers().get("x-client-request-id").is_none());
        // Sent as written; estimated as a Messages request (input plus its max_tokens).
        assert!(
            request
                .body()
                .starts_with(br#"{"model":"claude","max_tokens":64,"#)
        );
        let estimate = Dialect::Anthropic.estimate_body(request.body()).total();
        assert_eq!(request.estimated_tokens(), estimate);
        assert!(estimate >= 64, "{estimate}");

        let cases = [
            (
                r#"{"custom_id":"a"}"#,
                "missing_field",
                "field `params` is missing",
            ),
            (
                r#"{"custom_id":"a","params":[]}"#,
                "invalid_field",
                "`params` must be a JSON object",
            ),
            (
                r#"{"custom_id":"a","params":{"stream":true}}"#,
                "invalid_field",
                "field `params.stream`",
            ),
        ];
        for (line, code, needle) in cases {
            let e = parse_line(5, line.as_bytes(), Format::Anthropic).unwrap_err();
            assert_eq!(e.code, code, "{line}: {}", e.message);
            assert!(
                e.message.starts_with("line 5: ") && e.message.contains(needle),
                "{}",
                e.message
            );
            assert_eq!(e.custom_id.as_deref(), Some("a"));
        }
        // Anthropic's rule for ids: ^[a-zA-Z0-9_-]{1,64}$.
        let long = "x".repeat(65);
        for bad in ["a b", "a.b", "é", "a/b", long.as_str()] {
            let line = MESSAGE.replace(
                r#""custom_id":"m-1""#,
                &format!(r#""custom_id":{}"#, Value::from(bad)),
            );
            assert_ne!(line, MESSAGE, "the sample's id changed");
            let e = parse_line(5, line.as_bytes(), Format::Anthropic).unwrap_err();
            assert_eq!(e.code, "invalid_field", "{bad:?}");
            assert!(e.message.contains("field `custom_id`"), "{}", e.message);
            assert_eq!(e.custom_id.as_deref(), Some(bad));
        }
        let sixty_four = "A_z-9".repeat(12) + "abcd";
        let line = MESSAGE.replace(
            r#""custom_id":"m-1""#,
            &format!(r#""custom_id":"{sixty_four}""#),
        );
        assert!(parse_line(5, line.as_bytes(), Format::Anthropic).is_ok());
        // OpenAI's format takes any non-empty string.
        let line = GOOD.replace(r#""a""#, r#""a b.c""#);
        assert!(parse_line(5, line.as_bytes(), Format::OpenAi).is_ok());
    }

    #[test]
    fn a_file_of_the_other_format_is_named_at_its_first_line() {
        let e = foreign_format(1, GOOD.as_bytes(), Format::Anthropic).unwrap();
        assert!(
            e.starts_with("line 1: this is a file in the OpenAI Batch format"),
            "{e}"
        );
        assert!(e.contains("--provider openai"), "{e}");
        let e = foreign_format(2, MESSAGE.as_bytes(), Format::OpenAi).unwrap();
        assert!(
            e.starts_with("line 2: this is a file in the Anthropic Message Batches format"),
            "{e}"
        );
        assert!(e.contains("--provider anthropic"), "{e}");
        assert!(foreign_format(1, GOOD.as_bytes(), Format::OpenAi).is_none());
        assert!(foreign_format(1, MESSAGE.as_bytes(), Format::Anthropic).is_none());
        assert!(foreign_format(1, b"{not json", Format::Anthropic).is_none());
    }

    #[test]
    fn odd_custom_ids_are_not_sent_as_headers() {
        let line = GOOD.replace(r#""a""#, r#""é\n""#);
        let (id, request) = parse_line(1, line.as_bytes(), Format::OpenAi)
            .unwrap()
            .into_request(1);
        assert_eq!(id, "é\n");
        assert!(request.headers().get("x-client-request-id").is_none());
    }
}
