//! Streaming events: what a `"stream": true` request answers, one server-sent event each.
//!
//! A stream is `message_start`, then per content block `content_block_start`, any number of
//! `content_block_delta`s and `content_block_stop`, then `message_delta` (the stop reason and
//! the cumulative usage) and `message_stop`. `ping`s may come anywhere; an `error` event ends
//! a stream that failed after its 200 status (an `overloaded_error`, say).

use serde::{Deserialize, Serialize};

use super::Extra;
use super::error::ErrorObject;
use super::messages::{ContentBlock, Message};
use super::tagged::tagged_union;

tagged_union! {
    /// One event of a Messages stream, tagged by its `type` (which is also the SSE event
    /// name).
    pub enum StreamEvent {
        /// `message_start`: the message, with empty content and the input usage.
        "message_start" => MessageStart(MessageStart),
        /// `content_block_start`: a block begins (its text empty).
        "content_block_start" => ContentBlockStart(ContentBlockStart),
        /// `content_block_delta`: more of a block.
        "content_block_delta" => ContentBlockDelta(ContentBlockDelta),
        /// `content_block_stop`: a block is complete.
        "content_block_stop" => ContentBlockStop(IndexOnly),
        /// `message_delta`: the stop reason and the cumulative usage.
        "message_delta" => MessageDelta(MessageDelta),
        /// `message_stop`: the end of the stream.
        "message_stop" => MessageStop(Empty),
        /// `ping`: keeps the connection alive.
        "ping" => Ping(Empty),
        /// `error`: the stream failed.
        "error" => Error(StreamError),
    }
}

tagged_union! {
    /// The delta of a `content_block_delta` event, tagged by its `type`.
    pub enum ContentDelta {
        /// `text_delta`: more text.
        "text_delta" => Text(TextDelta),
        /// `input_json_delta`: more of a tool call's JSON arguments.
        "input_json_delta" => InputJson(InputJsonDelta),
        /// `thinking_delta`: more thinking.
        "thinking_delta" => Thinking(ThinkingDelta),
        /// `signature_delta`: a thinking block's signature.
        "signature_delta" => Signature(SignatureDelta),
    }
}

impl StreamEvent {
    /// The text a `text_delta` adds, if this is one.
    pub fn text_delta(&self) -> Option<&str> {
        match self {
            StreamEvent::ContentBlockDelta(ContentBlockDelta {
                delta: ContentDelta::Text(delta),
                ..
            }) => Some(&delta.text),
            _ => None,
        }
    }
}

/// The body of `message_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageStart {
    /// The message so far.
    pub message: Message,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of `content_block_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentBlockStart {
    /// The block's index in the message's content.
    pub index: u32,
    /// The block, empty.
    pub content_block: ContentBlock,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of `content_block_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentBlockDelta {
    /// The block's index in the message's content.
    pub index: u32,
    /// What it adds.
    pub delta: ContentDelta,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of `content_block_stop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexOnly {
    /// The block's index.
    pub index: u32,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of `message_stop` and `ping`: nothing but what a server may add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {
    /// Every field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of `message_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDelta {
    /// The stop reason and stop sequence.
    pub delta: MessageDeltaBody,
    /// The cumulative usage: `output_tokens` always, the input counts in recent versions.
    pub usage: DeltaUsage,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `delta` of `message_delta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The stop sequence that ended the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The usage of `message_delta`: cumulative counts, the input ones optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaUsage {
    /// Output tokens so far.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens, when the server repeats them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The body of an `error` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamError {
    /// The error.
    pub error: ErrorObject,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `text_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextDelta {
    /// The text added.
    pub text: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An `input_json_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputJsonDelta {
    /// A piece of the JSON arguments (not valid JSON on its own).
    pub partial_json: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `thinking_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkingDelta {
    /// The thinking added.
    pub thinking: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `signature_delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureDelta {
    /// The signature.
    pub signature: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    /// The events of the streaming example in the Messages API documentation.
    const EVENTS: [&str; 11] = [
        r#"{"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"thinking_delta","thinking":"Let me"}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        r#"{"type":"message_stop"}"#,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ];

    #[test]
    fn documented_events_round_trip() {
        let events: Vec<StreamEvent> = EVENTS.iter().map(|e| assert_round_trip(e)).collect();
        let names: Vec<&str> = events.iter().map(StreamEvent::type_name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_delta",
                "content_block_delta",
                "message_delta",
                "message_stop",
                "error"
            ]
        );
        let text: String = events.iter().filter_map(StreamEvent::text_delta).collect();
        assert_eq!(text, "Hello!");
        let StreamEvent::MessageDelta(delta) = &events[8] else {
            panic!("message_delta expected")
        };
        assert_eq!(delta.usage.output_tokens, 15);
        let StreamEvent::Error(error) = &events[10] else {
            panic!("error expected")
        };
        assert_eq!(error.error.r#type, "overloaded_error");
    }

    #[test]
    fn unknown_events_and_deltas_are_kept() {
        let event: StreamEvent = assert_round_trip(r#"{"type":"brand_new","x":[1,{"y":null}]}"#);
        assert_eq!(event.type_name(), "brand_new");
        let event: StreamEvent = assert_round_trip(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"a":1}},"x":2}"#,
        );
        let StreamEvent::ContentBlockDelta(delta) = event else {
            panic!("delta expected")
        };
        assert_eq!(delta.delta.type_name(), "citations_delta");
        assert_eq!(delta.extra["x"], 2);
    }
}
