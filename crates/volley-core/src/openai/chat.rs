//! Chat completions: the request, its messages and the (non-streaming) response.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::usage::null_as_default;
use super::{Extra, Usage};

/// A `POST /chat/completions` request body.
///
/// Only the common parameters are named; anything else (`logprobs`, `reasoning_effort`,
/// `metadata`, provider extensions) goes in [`extra`](Self::extra) and is sent as is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model to use (`"gpt-4o-mini"`).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Whether to stream the answer as server-sent events of [`ChatCompletionChunk`]s.
    ///
    /// [`ChatCompletionChunk`]: super::ChatCompletionChunk
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options for streaming, such as asking for a final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The legacy cap on generated tokens; newer models want
    /// [`max_completion_tokens`](Self::max_completion_tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The cap on generated tokens, reasoning tokens included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling probability mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences: a string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// Seed for best-effort deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Tool (function) definitions, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Which tool to call: `"auto"`, `"none"`, `"required"` or an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// The output format (`{"type": "json_object"}`, a JSON schema, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// An end-user identifier for abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionRequest {
    /// A request for `model` with `messages` and every optional parameter unset.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> ChatCompletionRequest {
        ChatCompletionRequest {
            model: model.into(),
            messages,
            ..ChatCompletionRequest::default()
        }
    }
}

/// The `stream_options` of a streaming request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a last chunk that carries the usage of the whole request (and no choices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One message of a conversation, in a request or in a response choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote the message.
    pub role: Role,
    /// The text or content parts. `None` for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tool calls an assistant message makes, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model's refusal message, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every other field (`annotations`, `audio`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatMessage {
    /// A message from `role` with text `content` and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: Some(MessageContent::Text(content.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: Extra::new(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::System, content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::User, content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new(Role::Assistant, content)
    }

    /// The text of the message, when it is plain text or has a single text part (other
    /// parts, such as a Mistral reasoning model's `thinking`, left out; see
    /// [`MessageContent::as_text`]).
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref()?.as_text()
    }
}

/// The author of a [`ChatMessage`].
///
/// Roles this crate does not know (`"function"`, a provider's own) are kept in
/// [`Role::Other`] and written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `"system"`: instructions from the application.
    System,
    /// `"developer"`: instructions from the application, for reasoning models.
    Developer,
    /// `"user"`: the end user.
    User,
    /// `"assistant"`: the model.
    Assistant,
    /// `"tool"`: the result of a tool call.
    Tool,
    /// Any other role, verbatim.
    Other(String),
}

impl Role {
    /// The role as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Other(other) => other,
        }
    }

    fn from_wire(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// Hand-written rather than derived: a derived enum with an untagged fallback variant buffers
// its input, and this runs for every message of every request and response. Known roles
// never allocate.
impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Role, D::Error> {
        struct RoleVisitor;

        impl serde::de::Visitor<'_> for RoleVisitor {
            type Value = Role;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a role string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Role, E> {
                Ok(Role::from_wire(v).unwrap_or_else(|| Role::Other(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Role, E> {
                Ok(Role::from_wire(&v).unwrap_or(Role::Other(v)))
            }
        }

        deserializer.deserialize_str(RoleVisitor)
    }
}

/// The content of a message: plain text, or a list of parts (text, images, audio, files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts, for multimodal input.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text without copying, when the content is plain text or has exactly one part
    /// with text: other parts (a Mistral reasoning model's `thinking` before its answer, an
    /// image beside a prompt) are left out. `None` with several text parts, to be joined
    /// ([`text`](Self::text)), or none.
    ///
    /// ```
    /// use volley_core::openai::MessageContent;
    ///
    /// let magistral: MessageContent = serde_json::from_str(
    ///     r#"[{"type":"thinking","thinking":[{"type":"text","text":"6 times 7"}]},{"type":"text","text":"42"}]"#,
    /// )
    /// .unwrap();
    /// assert_eq!(magistral.as_text(), Some("42"));
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            MessageContent::Text(text) => Some(text),
            MessageContent::Parts(parts) => {
                let mut texts = parts.iter().filter_map(|p| p.text.as_deref());
                match (texts.next(), texts.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }

    /// All the text: plain text as is, or the text parts joined by newlines (other parts
    /// are left out). Borrows when there is nothing to join.
    pub fn text(&self) -> Cow<'_, str> {
        if let Some(text) = self.as_text() {
            return Cow::Borrowed(text);
        }
        let MessageContent::Parts(parts) = self else {
            unreachable!("plain text is handled by as_text");
        };
        let mut texts = parts.iter().filter_map(|p| p.text.as_deref());
        match (texts.next(), texts.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(one), None) => Cow::Borrowed(one),
            (Some(first), Some(second)) => {
                let mut joined = format!("{first}\n{second}");
                for text in texts {
                    joined.push('\n');
                    joined.push_str(text);
                }
                Cow::Owned(joined)
            }
        }
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> MessageContent {
        MessageContent::Text(text)
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> MessageContent {
        MessageContent::Text(text.to_owned())
    }
}

/// One part of a multimodal message. Only `type` and `text` are named; the payload of other
/// part types (`image_url`, `input_audio`, `file`, ...) stays in [`extra`](Self::extra).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part type (`"text"`, `"image_url"`, ...).
    #[serde(rename = "type")]
    pub r#type: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ContentPart {
    /// A `text` part.
    pub fn text(text: impl Into<String>) -> ContentPart {
        ContentPart {
            r#type: "text".to_owned(),
            text: Some(text.into()),
            extra: Extra::new(),
        }
    }

    /// An `image_url` part: `url` is an `https:` URL or a `data:` URL with base64 image data.
    pub fn image_url(url: impl Into<String>) -> ContentPart {
        let mut image = Extra::new();
        image.insert("url".to_owned(), Value::String(url.into()));
        let mut extra = Extra::new();
        extra.insert("image_url".to_owned(), Value::Object(image));
        ContentPart {
            r#type: "image_url".to_owned(),
            text: None,
            extra,
        }
    }
}

/// A (non-streaming) chat completion response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// The completion id (`"chatcmpl-..."`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Always `"chat.completion"` from OpenAI.
    #[serde(default, deserialize_with = "null_as_default")]
    pub object: String,
    /// Creation time, in seconds since the Unix epoch.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: u64,
    /// The model that answered.
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    /// The generated choices (one unless the request set `n`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChatChoice>,
    /// Token counts for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The service tier that processed the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionResponse {
    /// The text of the first choice, when it has plain text content.
    pub fn text(&self) -> Option<&str> {
        self.choices.first()?.message.text()
    }
}

/// One choice of a [`ChatCompletionResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// The position of this choice.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// The generated message.
    pub message: ChatMessage,
    /// Why generation stopped (`"stop"`, `"length"`, `"tool_calls"`, `"content_filter"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Log probabilities, when requested, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn new_request_writes_only_what_was_set() {
        let req = ChatCompletionRequest::new(
            "gpt-4o-mini",
            vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
        );
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}"#
        );
    }

    #[test]
    fn request_round_trip_keeps_unknown_fields_at_every_level() {
        let req: ChatCompletionRequest = assert_round_trip(
            r#"{
                "model": "gpt-4o",
                "messages": [
                    {"role": "developer", "content": "Answer in JSON.", "x_msg": {"a": [1, null]}},
                    {"role": "user", "name": "ann", "content": [
                        {"type": "text", "text": "What is in this image?", "x_part": true},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
                    ]},
                    {"role": "function", "content": "legacy", "name": "f"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true, "x_opt": 1},
                "max_completion_tokens": 300,
                "temperature": 0.25,
                "top_p": 0.5,
                "n": 2,
                "stop": ["\n\n", "END"],
                "seed": -7,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "response_format": {"type": "json_object"},
                "user": "u-1",
                "reasoning_effort": "low",
                "metadata": {"k": "v"},
                "x_null": null
            }"#,
        );
        assert_eq!(req.messages[0].role, Role::Developer);
        assert_eq!(req.messages[0].extra["x_msg"]["a"][1], Value::Null);
        assert_eq!(req.messages[2].role, Role::Other("function".to_owned()));
        // One text part beside an image: that text.
        assert_eq!(
            req.messages[1].content.as_ref().unwrap().as_text(),
            Some("What is in this image?")
        );
        assert_eq!(
            req.messages[1].content.as_ref().unwrap().text(),
            "What is in this image?"
        );
        assert_eq!(req.extra["reasoning_effort"], "low");
        assert!(req.extra["x_null"].is_null(), "unknown nulls are kept");
        assert_eq!(req.stream_options.unwrap().include_usage, Some(true));
        assert_eq!(req.temperature, Some(0.25));
    }

    #[test]
    fn response_round_trip() {
        let resp: ChatCompletionResponse = assert_round_trip(
            r#"{
                "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "object": "chat.completion",
                "created": 1741569952,
                "model": "gpt-4.1-2025-04-14",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello! How can I assist you today?",
                        "refusal": null,
                        "annotations": []
                    },
                    "logprobs": null,
                    "finish_reason": "stop",
                    "x_choice": "kept"
                }],
                "usage": {
                    "prompt_tokens": 19,
                    "completion_tokens": 10,
                    "total_tokens": 29,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
                    "x_usage": 5
                },
                "service_tier": "default",
                "system_fingerprint": "fp_44709d6fcb"
            }"#,
        );
        assert_eq!(resp.text(), Some("Hello! How can I assist you today?"));
        assert_eq!(resp.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(resp.choices[0].extra["x_choice"], "kept");
        assert_eq!(
            resp.choices[0].message.extra["annotations"],
            Value::Array(vec![])
        );
        let usage = resp.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (19, 29));
        assert_eq!(usage.extra["x_usage"], 5);
    }

    #[test]
    fn tool_call_message_with_null_content() {
        let resp: ChatCompletionResponse = assert_round_trip(
            r#"{
                "id": "chatcmpl-abc123",
                "object": "chat.completion",
                "created": 1699896916,
                "model": "gpt-4o-mini",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "id": "call_abc123",
                            "type": "function",
                            "function": {"name": "get_current_weather",
                                         "arguments": "{\n\"location\": \"Boston, MA\"\n}"}
                        }]
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls"
                }],
                "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
            }"#,
        );
        let message = &resp.choices[0].message;
        assert_eq!(message.content, None);
        assert_eq!(resp.text(), None);
        let calls = message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"]["name"], "get_current_weather");
    }

    #[test]
    fn tool_result_message() {
        let msg: ChatMessage = assert_round_trip(
            r#"{"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temp\": 22}"}"#,
        );
        assert_eq!(msg.role, Role::Tool);
        assert_eq!(msg.tool_call_id.as_deref(), Some("call_abc123"));
        assert_eq!(msg.text(), Some("{\"temp\": 22}"));
    }

    #[test]
    fn lenient_response_from_a_compatible_server() {
        // No object, created, usage or index, as some local servers answer.
        let resp: ChatCompletionResponse = serde_json::from_str(
            r#"{"id":"x","model":"llama","choices":[{"message":{"role":"assistant","content":"hi"}}]}"#,
        )
        .unwrap();
        assert_eq!(resp.text(), Some("hi"));
        assert_eq!((resp.created, resp.object.as_str()), (0, ""));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[{"content":"no role"}]}"#,
            r#"{"model":"m","messages":[{"role":7}]}"#,
            r#"{"model":"m","messages":[],"n":-1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":{"a":1}}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ChatCompletionRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn text_joins_text_parts_only() {
        let content = MessageContent::Parts(vec![
            ContentPart::text("one"),
            ContentPart::image_url("https://example.com/a.png"),
            ContentPart::text("two"),
        ]);
        assert_eq!(
            serde_json::to_value(&content).unwrap(),
            serde_json::json!([
                {"type": "text", "text": "one"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "two"},
            ])
        );
        assert_eq!(content.as_text(), None);
        assert_eq!(content.text(), "one\ntwo");
        assert_eq!(MessageContent::Parts(vec![]).text(), "");
        assert!(matches!(
            MessageContent::from("plain").text(),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn roles_round_trip_and_display() {
        for role in ["system", "developer", "user", "assistant", "tool", "critic"] {
            let parsed: Role = serde_json::from_value(Value::from(role)).unwrap();
            assert_eq!(parsed.as_str(), role);
            assert_eq!(parsed.to_string(), role);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), role);
        }
        // Escaped strings take the owned path of the visitor.
        let escaped: Role = serde_json::from_str(r#""us\u0065r""#).unwrap();
        assert_eq!(escaped, Role::User);
    }
}
