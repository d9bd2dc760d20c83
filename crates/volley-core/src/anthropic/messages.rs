//! The Messages request and response, their content blocks and usage.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;
use super::tagged::tagged_union;

/// A Messages API request (`POST /v1/messages`).
///
/// `model`, `max_tokens` and `messages` are required by the API; the common options are
/// named, everything else (tools, tool choice, thinking, metadata, service tier, ...) is kept
/// in [`extra`](Self::extra) or as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model (`claude-sonnet-4-5`, ...).
    pub model: String,
    /// The most tokens the answer may use (the API requires it).
    pub max_tokens: u32,
    /// The conversation so far, alternating `user` and `assistant`.
    pub messages: Vec<InputMessage>,
    /// The system prompt: a string or text blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    /// Whether to stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature, 0 to 1. Only for `anthropic-version` 2023-06-01: version
    /// 2026-10-21 (the default with bearer auth) answers any temperature with HTTP 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Texts that end the answer when generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Tool definitions, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// Extended thinking settings (`{"type": "enabled", "budget_tokens": N}`), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl MessagesRequest {
    /// A request for `model` with the given conversation and output budget, nothing else set.
    pub fn new(
        model: impl Into<String>,
        max_tokens: u32,
        messages: Vec<InputMessage>,
    ) -> MessagesRequest {
        MessagesRequest {
            model: model.into(),
            max_tokens,
            messages,
            system: None,
            stream: None,
            temperature: None,
            stop_sequences: None,
            tools: None,
            thinking: None,
            extra: Extra::new(),
        }
    }
}

/// One message of the conversation in a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// A string, or content blocks.
    pub content: MessageContent,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl InputMessage {
    /// A `user` message with text content.
    pub fn user(text: impl Into<String>) -> InputMessage {
        InputMessage::text("user", text)
    }

    /// An `assistant` message with text content (a prefill, or an earlier answer).
    pub fn assistant(text: impl Into<String>) -> InputMessage {
        InputMessage::text("assistant", text)
    }

    fn text(role: &str, text: impl Into<String>) -> InputMessage {
        InputMessage {
            role: role.to_owned(),
            content: MessageContent::Text(text.into()),
            extra: Extra::new(),
        }
    }
}

/// The content of an [`InputMessage`]: a plain string or a list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// A plain string (one text block).
    Text(String),
    /// Content blocks.
    Blocks(Vec<ContentBlock>),
}

/// The system prompt: a plain string or text blocks (which may carry `cache_control`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    /// A plain string.
    Text(String),
    /// Text blocks.
    Blocks(Vec<ContentBlock>),
}

tagged_union! {
    /// A content block, in a request message or an answer, tagged by its `type`.
    pub enum ContentBlock {
        /// `text`.
        "text" => Text(TextBlock),
        /// `image`.
        "image" => Image(SourceBlock),
        /// `document`.
        "document" => Document(SourceBlock),
        /// `tool_use`: the model calls a tool.
        "tool_use" => ToolUse(ToolUseBlock),
        /// `tool_result`: the caller answers a tool call.
        "tool_result" => ToolResult(ToolResultBlock),
        /// `thinking`: extended thinking, with its signature.
        "thinking" => Thinking(ThinkingBlock),
    }
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> ContentBlock {
        ContentBlock::Text(TextBlock {
            text: text.into(),
            extra: Extra::new(),
        })
    }

    /// The text of a `text` block.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ContentBlock::Text(block) => Some(&block.text),
            _ => None,
        }
    }
}

/// A `text` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBlock {
    /// The text.
    pub text: String,
    /// Every other field (`citations`, `cache_control`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An `image` or `document` block: its `source` (base64, URL, file, text), kept as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceBlock {
    /// Where the content comes from.
    pub source: Value,
    /// Every other field (`title`, `citations`, `cache_control`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `tool_use` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUseBlock {
    /// The call's id, quoted by the `tool_result` that answers it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON.
    pub input: Value,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `tool_result` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResultBlock {
    /// The id of the `tool_use` this answers.
    pub tool_use_id: String,
    /// The result: a string or blocks, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Whether the tool failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `thinking` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkingBlock {
    /// The model's reasoning (or its summary).
    pub thinking: String,
    /// The signature that lets the block be sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A Messages API answer (`"type": "message"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The message id (`msg_...`).
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type", default = "message_type")]
    pub r#type: String,
    /// Always `"assistant"`.
    #[serde(default = "assistant_role")]
    pub role: String,
    /// The answer's blocks.
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Why generation stopped (`end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, ...);
    /// `None` in the `message_start` event of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The stop sequence that ended the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    /// The tokens used.
    #[serde(default)]
    pub usage: Usage,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// The text of the answer: its `text` blocks joined.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(ContentBlock::as_text)
            .collect()
    }
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

/// The tokens a message used.
///
/// In a stream, `message_start` carries the input counts and `message_delta` the cumulative
/// output count (recent API versions repeat the input counts there too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to the prompt cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens, thinking included.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// Every other field (`server_tool_use`, `service_tier`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    /// The request example of the Messages API reference, with a system prompt, blocks of
    /// every kind and fields Volley does not name.
    #[test]
    fn requests_round_trip() {
        let req: MessagesRequest = assert_round_trip(
            r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
                "system":[{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral"}}],
                "messages":[
                  {"role":"user","content":"Hello, world"},
                  {"role":"assistant","content":[
                    {"type":"thinking","thinking":"Hmm.","signature":"sig"},
                    {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}}]},
                  {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"toolu_01","content":"15 C","is_error":false},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}},
                    {"type":"document","source":{"type":"url","url":"https://x/a.pdf"},"title":"A"},
                    {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}]}],
                "tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
                "thinking":{"type":"enabled","budget_tokens":2048},
                "metadata":{"user_id":"u1"},"stream":false,"temperature":0.5,
                "stop_sequences":["\n\nHuman:"],"service_tier":"auto"}"#,
        );
        assert_eq!(req.max_tokens, 1024);
        assert_eq!(req.extra["service_tier"], "auto");
        let MessageContent::Blocks(blocks) = &req.messages[2].content else {
            panic!("blocks expected")
        };
        assert!(matches!(blocks[0], ContentBlock::ToolResult(_)));
        assert_eq!(blocks[3].type_name(), "server_tool_use");
        assert!(matches!(blocks[3], ContentBlock::Other(_)));
    }

    #[test]
    fn built_requests_are_minimal() {
        let req = MessagesRequest::new("m", 16, vec![InputMessage::user("Hi")]);
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#
        );
    }

    /// The response example of the Messages API reference.
    #[test]
    fn responses_round_trip() {
        let msg: Message = assert_round_trip(
            r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant",
                "content":[{"type":"text","text":"Hi! My name is Claude.","citations":null},
                           {"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],
                "model":"claude-sonnet-4-5","stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":2095,"output_tokens":503,
                         "cache_creation_input_tokens":0,"cache_read_input_tokens":0,
                         "service_tier":"standard","server_tool_use":{"web_search_requests":0}},
                "container":null}"#,
        );
        assert_eq!(msg.text(), "Hi! My name is Claude.");
        assert_eq!(msg.usage.input_tokens, 2095);
        assert_eq!(msg.usage.extra["service_tier"], "standard");
        assert_eq!(msg.stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn a_block_that_is_not_an_object_is_an_error() {
        assert!(serde_json::from_str::<ContentBlock>("\"text\"").is_err());
        assert!(serde_json::from_str::<ContentBlock>(r#"{"type":"text"}"#).is_err());
    }
}
