//! The slice of the OpenAI wire format the mock reads and writes.
//!
//! Requests are parsed lazily: only the fields the mock needs, and message contents are
//! measured while parsing instead of being copied. Responses are written by hand into a byte
//! buffer; only user-supplied strings (the model) go through `serde_json`'s escaping.

use std::fmt;
use std::io::Write as _;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::encoding;

/// A request body the mock cannot use: answered with a `400`.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
    /// OpenAI's `code` for it, when it gives one.
    pub(crate) code: Option<&'static str>,
}

impl BadRequest {
    pub(crate) fn missing(param: &'static str) -> Self {
        Self {
            message: format!("you must provide a {param} parameter"),
            param: Some(param),
            code: None,
        }
    }

    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }

    pub(crate) fn json(err: &serde_json::Error) -> Self {
        Self {
            message: format!("We could not parse the JSON body of your request. ({err}) (mock)"),
            param: None,
            code: None,
        }
    }

    /// A token budget of 0, which OpenAI refuses as it does (Anthropic too).
    pub(crate) fn below_one(param: &'static str) -> Self {
        Self {
            message: format!(
                "Invalid '{param}': integer below minimum value. Expected a value >= 1, but got \
                 0 instead. (mock)"
            ),
            param: Some(param),
            code: Some("integer_below_min_value"),
        }
    }
}

/// `Some(0)` of a token budget named `param` is refused ([`BadRequest::below_one`]).
pub(crate) fn at_least_one(value: Option<u64>, param: &'static str) -> Result<(), BadRequest> {
    match value {
        Some(0) => Err(BadRequest::below_one(param)),
        _ => Ok(()),
    }
}

/// What the mock needs from a `/chat/completions` request.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) prompt_tokens: u64,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// Whether the body has `stream_options` at all (old Azure API versions refuse it).
    pub(crate) has_stream_options: bool,
    /// How many choices to answer with (`n`, 1 when absent).
    pub(crate) choices: u32,
}

/// The most choices a request may ask for, as OpenAI allows.
pub(crate) const MAX_CHOICES: u64 = 128;

impl ChatRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            messages: Option<Messages>,
            #[serde(default)]
            max_tokens: Option<u64>,
            #[serde(default)]
            max_completion_tokens: Option<u64>,
            #[serde(default)]
            stream: Option<bool>,
            #[serde(default)]
            stream_options: Option<StreamOptions>,
            #[serde(default)]
            n: Option<u64>,
        }
        #[derive(Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: Option<bool>,
        }

        let raw: Raw = serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
        let model = raw.model.ok_or_else(|| BadRequest::missing("model"))?;
        at_least_one(raw.max_tokens, "max_tokens")?;
        at_least_one(raw.max_completion_tokens, "max_completion_tokens")?;
        let messages = raw
            .messages
            .ok_or_else(|| BadRequest::missing("messages"))?;
        if messages.count == 0 {
            return Err(BadRequest::invalid(
                "messages",
                "[] is too short - 'messages' (mock)",
            ));
        }
        let choices = match raw.n {
            None => 1,
            Some(n @ 1..=MAX_CHOICES) => n as u32,
            Some(n) => {
                return Err(BadRequest::invalid(
                    "n",
                    format!("{n} is not between 1 and {MAX_CHOICES} - 'n' (mock)"),
                ));
            }
        };
        Ok(Self {
            model,
            prompt_tokens: estimate_tokens(messages.text_bytes),
            max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
            stream: raw.stream.unwrap_or(false),
            has_stream_options: raw.stream_options.is_some(),
            include_usage: raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            choices,
        })
    }
}

/// What the mock needs from an `/embeddings` request.
#[derive(Debug)]
pub(crate) struct EmbeddingsRequest {
    pub(crate) model: String,
    /// One fingerprint per input, which seeds that input's vector.
    pub(crate) inputs: Vec<u64>,
    pub(crate) prompt_tokens: u64,
    pub(crate) dimensions: Option<u64>,
    pub(crate) base64: bool,
}

impl EmbeddingsRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            input: Option<EmbeddingInput>,
            #[serde(default)]
            dimensions: Option<u64>,
            #[serde(default)]
            encoding_format: Option<String>,
        }

        let raw: Raw = serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
        let model = raw.model.ok_or_else(|| BadRequest::missing("model"))?;
        let input = raw.input.ok_or_else(|| BadRequest::missing("input"))?;
        if input.fingerprints.is_empty() {
            return Err(BadRequest::invalid(
                "input",
                "'input' must not be empty (mock)",
            ));
        }
        let base64 = match raw.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(BadRequest::invalid(
                    "encoding_format",
                    format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                ));
            }
        };
        Ok(Self {
            model,
            inputs: input.fingerprints,
            prompt_tokens: input.tokens,
            dimensions: raw.dimensions,
            base64,
        })
    }
}

/// The usual estimate of about four bytes of English text per token, rounded up.
fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// `messages`, measured: how many, and how many bytes of text their contents hold.
struct Messages {
    count: u64,
    text_bytes: u64,
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessagesVisitor;
        impl<'de> Visitor<'de> for MessagesVisitor {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                #[derive(Deserialize)]
                struct Message {
                    #[serde(default)]
                    content: TextBytes,
                }
                let mut messages = Messages {
                    count: 0,
                    text_bytes: 0,
                };
                while let Some(message) = seq.next_element::<Message>()? {
                    messages.count += 1;
                    messages.text_bytes += message.content.0;
                }
                Ok(messages)
            }
        }
        deserializer.deserialize_seq(MessagesVisitor)
    }
}

/// The bytes of text in a message `content`: a string, or an array of parts whose `text`
/// fields count (images and other parts count nothing). Nothing is copied.
#[derive(Default)]
struct TextBytes(u64);

impl<'de> Deserialize<'de> for TextBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = TextBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextBytes, E> {
                Ok(TextBytes(v.len() as u64))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextBytes, E> {
                Ok(TextBytes(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextBytes, A::Error> {
                let mut total = 0;
                while let Some(part) = seq.next_element::<TextBytes>()? {
                    total += part.0;
                }
                Ok(TextBytes(total))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextBytes, A::Error> {
                let mut total = 0;
                while let Some(is_text) = map.next_key::<IsTextKey>()? {
                    if is_text.0 {
                        total += map.next_value::<TextBytes>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TextBytes(total))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// Whether a map key is `"text"`, read without allocating.
struct IsTextKey(bool);

impl<'de> Deserialize<'de> for IsTextKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = IsTextKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsTextKey, E> {
                Ok(IsTextKey(v == "text"))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// An embeddings `input`: a string, an array of strings, an array of token ids (one input) or
/// an array of token-id arrays. Each input is fingerprinted so equal inputs get equal vectors.
struct EmbeddingInput {
    fingerprints: Vec<u64>,
    tokens: u64,
}

/// One element of an `input` array.
enum InputItem {
    Text { fingerprint: u64, bytes: u64 },
    Token(u64),
    Tokens { fingerprint: u64, count: u64 },
}

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = EmbeddingInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an array of strings or an array of token arrays")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EmbeddingInput, E> {
                Ok(EmbeddingInput {
                    fingerprints: vec![fnv1a(v.as_bytes())],
                    tokens: estimate_tokens(v.len() as u64),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingInput, A::Error> {
                let mut input = EmbeddingInput {
                    fingerprints: Vec::new(),
                    tokens: 0,
                };
                // A flat array of token ids is a single input.
                let mut flat: Option<(u64, u64)> = None;
                while let Some(item) = seq.next_element::<InputItem>()? {
                    match item {
                        InputItem::Text { fingerprint, bytes } => {
                            input.fingerprints.push(fingerprint);
                            input.tokens += estimate_tokens(bytes);
                        }
                        InputItem::Tokens { fingerprint, count } => {
                            input.fingerprints.push(fingerprint);
                            input.tokens += count;
                        }
                        InputItem::Token(id) => {
                            let (hash, count) = flat.get_or_insert((FNV_OFFSET, 0));
                            *hash = fnv1a_extend(*hash, &id.to_le_bytes());
                            *count += 1;
                        }
                    }
                }
                if let Some((fingerprint, count)) = flat {
                    input.fingerprints.push(fingerprint);
                    input.tokens += count;
                }
                Ok(input)
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = InputItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InputItem, E> {
                Ok(InputItem::Text {
                    fingerprint: fnv1a(v.as_bytes()),
                    bytes: v.len() as u64,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<InputItem, E> {
                Ok(InputItem::Token(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<InputItem, E> {
                Ok(InputItem::Token(v as u64))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputItem, A::Error> {
                let (mut fingerprint, mut count) = (FNV_OFFSET, 0);
                while let Some(id) = seq.next_element::<u64>()? {
                    fingerprint = fnv1a_extend(fingerprint, &id.to_le_bytes());
                    count += 1;
                }
                Ok(InputItem::Tokens { fingerprint, count })
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The deterministic filler a completion is made of: `token0 token1 token2 …`, precomputed up
/// to the largest configured output so a response only copies a prefix.
pub(crate) struct Filler {
    text: String,
    /// `ends[i]` is the end of token `i` in `text`; token `i > 0` starts with its space.
    ends: Vec<usize>,
}

impl Filler {
    pub(crate) fn new(max_tokens: u32) -> Self {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(max_tokens as usize);
        for i in 0..max_tokens {
            if i > 0 {
                text.push(' ');
            }
            text.push_str("token");
            text.push_str(&i.to_string());
            ends.push(text.len());
        }
        Self { text, ends }
    }

    /// The content of a completion of `n` tokens.
    pub(crate) fn content(&self, n: u32) -> &str {
        match n.checked_sub(1) {
            None => "",
            Some(last) => &self.text[..self.ends[last as usize]],
        }
    }

    /// The text of token `i` alone, as streamed in its chunk.
    pub(crate) fn token(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// Writes a JSON string, escaped.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` cannot fail: the writer is infallible and a string is
    // always representable.
    serde_json::to_writer(&mut *out, s).expect("a str serialises into a Vec");
}

/// A `chat.completion` object.
pub(crate) struct Completion<'a> {
    pub(crate) id: &'a str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    pub(crate) content: &'a str,
    pub(crate) finish_reason: &'a str,
    pub(crate) prompt_tokens: u64,
    /// Of all the choices together.
    pub(crate) completion_tokens: u64,
    /// How many choices, each with `content`.
    pub(crate) choices: u32,
}

impl Completion<'_> {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        // Writes into a `Vec` cannot fail (here and below).
        let _ = write!(
            out,
            r#"{{"id":"{}","object":"chat.completion","created":{},"model":"#,
            self.id, self.created
        );
        write_json_str(out, self.model);
        out.extend_from_slice(br#","choices":["#);
        for index in 0..self.choices.max(1) {
            if index > 0 {
                out.push(b',');
            }
            let _ = write!(
                out,
                r#"{{"index":{index},"message":{{"role":"assistant","content":"#
            );
            write_json_str(out, self.content);
            let _ = write!(
                out,
                r#","refusal":null}},"logprobs":null,"finish_reason":"{}"}}"#,
                self.finish_reason
            );
        }
        out.extend_from_slice(br#"],"usage":"#);
        write_usage(out, self.prompt_tokens, self.completion_tokens);
        out.extend_from_slice(br#","system_fingerprint":"fp_mock"}"#);
    }
}

/// `{"prompt_tokens":..,"completion_tokens":..,"total_tokens":..,"prompt_tokens_details":..,
/// "completion_tokens_details":..}`, the details zero, as OpenAI always sends them (SDK code
/// reads `usage.prompt_tokens_details.cached_tokens`).
pub(crate) fn write_usage(out: &mut Vec<u8>, prompt: u64, completion: u64) {
    let _ = write!(
        out,
        concat!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"#,
            r#""accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
        ),
        prompt,
        completion,
        prompt + completion
    );
}

/// The start shared by every chunk of one stream, up to and including `"choices":[`.
pub(crate) fn chunk_prefix(id: &str, created: u64, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + model.len());
    let _ = write!(
        out,
        r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"#
    );
    write_json_str(&mut out, model);
    out.extend_from_slice(br#","system_fingerprint":"fp_mock","choices":["#);
    out
}

/// An embeddings `list` object.
pub(crate) fn write_embeddings(
    out: &mut Vec<u8>,
    request: &EmbeddingsRequest,
    dims: usize,
    scratch: &mut Vec<f32>,
) {
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for (index, &fingerprint) in request.inputs.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"object":"embedding","index":{index},"embedding":"#
        );
        embedding_vector(fingerprint, dims, scratch);
        if request.base64 {
            out.push(b'"');
            encoding::base64_f32_le(out, scratch);
            out.push(b'"');
        } else {
            out.push(b'[');
            for (i, v) in scratch.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "{v}");
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"model":"#);
    write_json_str(out, &request.model);
    let _ = write!(
        out,
        r#","usage":{{"prompt_tokens":{0},"total_tokens":{0}}}}}"#,
        request.prompt_tokens
    );
}

/// A unit-length vector determined by the input's fingerprint (SplitMix64 stream).
fn embedding_vector(fingerprint: u64, dims: usize, out: &mut Vec<f32>) {
    out.clear();
    let mut state = fingerprint;
    let mut norm = 0.0f64;
    for _ in 0..dims {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 24 bits as a float in [-1, 1).
        let v = ((z >> 40) as f64 / (1u64 << 23) as f64) - 1.0;
        norm += v * v;
        out.push(v as f32);
    }
    let norm = norm.sqrt();
    if norm > 0.0 {
        for v in out.iter_mut() {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}

/// `GET /models`.
pub(crate) const MODELS_BODY: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},"#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},"#,
    r#"{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}"#,
    r#"]}"#
);

/// `GET /models` asked with `anthropic-version`: Anthropic's list, newest first.
pub(crate) const ANTHROPIC_MODELS_BODY: &str = concat!(
    r#"{"data":["#,
    r#"{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"},"#,
    r#"{"type":"model","id":"claude-haiku-4-5","display_name":"Claude Haiku 4.5","created_at":"2025-10-15T00:00:00Z"}"#,
    r#"],"has_more":false,"first_id":"claude-sonnet-4-5","last_id":"claude-haiku-4-5"}"#
);

/// An OpenAI error object: `{"error":{"message":..,"type":..,"param":..,"code":..}}`.
pub(crate) fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    // A `Value` always serialises.
    serde_json::to_vec(&body).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_measures_messages_without_copying() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"12345678"},
            {"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}}]},
            {"role":"assistant","content":null,"tool_calls":[]}
        ],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true},"n":1}"#;
        let req = ChatRequest::parse(body).unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.prompt_tokens, 3); // 12 bytes / 4
        assert_eq!(req.max_tokens, Some(5));
        assert!(req.stream && req.include_usage);
    }

    #[test]
    fn chat_request_prefers_max_completion_tokens() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_completion_tokens":7}"#;
        let req = ChatRequest::parse(body).unwrap();
        assert_eq!(req.max_tokens, Some(7));
        assert_eq!(req.prompt_tokens, 1);
        assert!(!req.stream && !req.include_usage);
    }

    #[test]
    fn chat_request_errors_name_the_parameter() {
        let err =
            ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap_err();
        assert_eq!(err.param, Some("model"));
        let err = ChatRequest::parse(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(err.param, Some("messages"));
        let err = ChatRequest::parse(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(err.param, Some("messages"));
        let err = ChatRequest::parse(b"{not json").unwrap_err();
        assert_eq!(err.param, None);
        assert!(ChatRequest::parse(br#"{"model":5,"messages":[]}"#).is_err());
    }

    #[test]
    fn embedding_inputs_of_every_shape() {
        let parse = |body: &str| EmbeddingsRequest::parse(body.as_bytes()).unwrap();
        let one = parse(r#"{"model":"e","input":"abcdefgh"}"#);
        assert_eq!((one.inputs.len(), one.prompt_tokens), (1, 2));
        let many = parse(r#"{"model":"e","input":["abcd","abcdefgh","abcd"]}"#);
        assert_eq!((many.inputs.len(), many.prompt_tokens), (3, 4));
        assert_eq!(many.inputs[0], many.inputs[2]);
        assert_ne!(many.inputs[0], many.inputs[1]);
        let ids = parse(r#"{"model":"e","input":[1,2,3]}"#);
        assert_eq!((ids.inputs.len(), ids.prompt_tokens), (1, 3));
        let nested = parse(
            r#"{"model":"e","input":[[1,2],[3,4,5]],"dimensions":4,"encoding_format":"base64"}"#,
        );
        assert_eq!((nested.inputs.len(), nested.prompt_tokens), (2, 5));
        assert_eq!(nested.dimensions, Some(4));
        assert!(nested.base64);
        assert!(EmbeddingsRequest::parse(br#"{"model":"e","input":[]}"#).is_err());
        assert!(EmbeddingsRequest::parse(br#"{"model":"e"}"#).is_err());
        assert!(
            EmbeddingsRequest::parse(br#"{"model":"e","input":"x","encoding_format":"hex"}"#)
                .is_err()
        );
    }

    #[test]
    fn filler_tokens_concatenate_to_the_content() {
        let filler = Filler::new(12);
        assert_eq!(filler.content(0), "");
        assert_eq!(filler.content(3), "token0 token1 token2");
        let joined: String = (0..12).map(|i| filler.token(i)).collect();
        assert_eq!(joined, filler.content(12));
        assert_eq!(filler.token(11), " token11");
    }

    #[test]
    fn completion_is_valid_json_with_escaped_model() {
        let mut out = Vec::new();
        Completion {
            id: "chatcmpl-x",
            created: 1,
            model: "we\"ird\nmodel",
            content: "token0",
            finish_reason: "length",
            prompt_tokens: 3,
            completion_tokens: 1,
            choices: 1,
        }
        .write(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "we\"ird\nmodel");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 4);
        // `n` choices, indexed 0..n.
        let mut out = Vec::new();
        Completion {
            id: "chatcmpl-x",
            created: 1,
            model: "m",
            content: "token0",
            finish_reason: "stop",
            prompt_tokens: 3,
            completion_tokens: 3,
            choices: 3,
        }
        .write(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        for (i, choice) in choices.iter().enumerate() {
            assert_eq!(choice["index"], i);
            assert_eq!(choice["message"]["content"], "token0");
        }
    }

    #[test]
    fn embeddings_are_unit_vectors_and_deterministic() {
        let req = EmbeddingsRequest::parse(br#"{"model":"e","input":["a","b","a"]}"#).unwrap();
        let mut out = Vec::new();
        write_embeddings(&mut out, &req, 16, &mut Vec::new());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let vector = |i: usize| -> Vec<f64> {
            v["data"][i]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let norm: f64 = vector(0).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert_eq!(vector(0), vector(2));
        assert_ne!(vector(0), vector(1));
        assert_eq!(vector(1).len(), 16);
    }

    #[test]
    fn models_and_errors_are_valid_json() {
        let models: serde_json::Value = serde_json::from_str(MODELS_BODY).unwrap();
        assert_eq!(models["data"].as_array().unwrap().len(), 3);
        let models: serde_json::Value = serde_json::from_str(ANTHROPIC_MODELS_BODY).unwrap();
        assert_eq!(models["data"][0]["type"], "model");
        let err: serde_json::Value = serde_json::from_slice(&error_body(
            "m",
            "invalid_request_error",
            Some("model"),
            None,
        ))
        .unwrap();
        assert_eq!(err["error"]["param"], "model");
        assert!(err["error"]["code"].is_null());
    }
}
