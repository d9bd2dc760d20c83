//! Streaming chat completions: the chunks sent as server-sent events.
//!
//! A stream is a sequence of `data: {chunk}` events ended by `data: [DONE]`. The first chunk's
//! delta usually carries the role, later ones carry content, the last one with choices carries
//! the `finish_reason`. When the request set `stream_options.include_usage`, one more chunk
//! follows with `"choices": []` and the usage of the whole request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::usage::null_as_default;
use super::{Extra, Role, Usage};

/// One `data:` event of a streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion id, the same in every chunk of a stream.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Always `"chat.completion.chunk"` from OpenAI.
    #[serde(default, deserialize_with = "null_as_default")]
    pub object: String,
    /// Creation time, in seconds since the Unix epoch.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: u64,
    /// The model that answers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    /// The deltas of this chunk; empty in the final usage chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    /// Token counts for the whole request, in the final chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Every other field (`service_tier`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionChunk {
    /// The text the first choice (`index` 0) adds in this chunk, if any. With `n` above 1 each
    /// chunk may carry another choice; [`ChunkChoice::index`] tells them apart.
    ///
    /// ```
    /// use volley_core::openai::ChatCompletionChunk;
    ///
    /// let second: ChatCompletionChunk =
    ///     serde_json::from_str(r#"{"choices":[{"index":1,"delta":{"content":"B"}}]}"#).unwrap();
    /// assert_eq!(second.delta_text(), None);
    /// let first: ChatCompletionChunk =
    ///     serde_json::from_str(r#"{"choices":[{"index":0,"delta":{"content":"A"}}]}"#).unwrap();
    /// assert_eq!(first.delta_text(), Some("A"));
    /// ```
    pub fn delta_text(&self) -> Option<&str> {
        self.first_choice()?.delta.content.as_deref()
    }

    /// The finish reason of the first choice (`index` 0), in the chunk that ends it.
    pub fn finish_reason(&self) -> Option<&str> {
        self.first_choice()?.finish_reason.as_deref()
    }

    fn first_choice(&self) -> Option<&ChunkChoice> {
        self.choices.iter().find(|c| c.index == 0)
    }
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default, deserialize_with = "null_as_default")]
    pub delta: Delta,
    /// Set in the last chunk of this choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Log probabilities, when requested, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What one chunk adds to a choice's message. Written back as it came: a `content` sent as a
/// list of parts is written as that list ([`content_parts`](Delta::content_parts)), not as
/// its joined text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "RawDelta")]
pub struct Delta {
    /// The role, usually only in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The next piece of text. When a server sends the content as a list of parts (Mistral's
    /// reasoning models: `[{"type": "thinking", ..}, {"type": "text", "text": ..}]`), the text
    /// of its `text` parts, joined, and `None` when it has none; the list itself is in
    /// [`content_parts`](Delta::content_parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content as the server sent it when that was a list of parts, as JSON (see
    /// [`content`](Delta::content)); `None` for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_parts: Option<Vec<Value>>,
    /// Pieces of tool calls (each with an `index`; `arguments` arrive in fragments), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// The next piece of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Serialize for Delta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireDelta {
            role: self.role.as_ref(),
            content: match (&self.content_parts, &self.content) {
                (Some(parts), _) => Some(WireContent::Parts(parts)),
                (None, Some(text)) => Some(WireContent::Text(text)),
                (None, None) => None,
            },
            tool_calls: self.tool_calls.as_deref(),
            refusal: self.refusal.as_deref(),
            extra: &self.extra,
        }
        .serialize(serializer)
    }
}

/// A [`Delta`] as it is written: its content as text, or as the list of parts it came as.
#[derive(Serialize)]
struct WireDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Extra,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(&'a [Value]),
}

/// A [`Delta`] as it arrives: its content text or a list of parts.
#[derive(Deserialize)]
struct RawDelta {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    content: Option<RawContent>,
    #[serde(default)]
    content_parts: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

/// A delta's `content`: text (every server), or a list of parts (Mistral's reasoning models).
enum RawContent {
    Text(String),
    Parts(Vec<Value>),
}

impl<'de> Deserialize<'de> for RawContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawContent, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawContent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawContent, E> {
                Ok(RawContent::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawContent, E> {
                Ok(RawContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(RawContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl From<RawDelta> for Delta {
    fn from(raw: RawDelta) -> Delta {
        let (content, content_parts) = match raw.content {
            None => (None, raw.content_parts),
            Some(RawContent::Text(text)) => (Some(text), raw.content_parts),
            Some(RawContent::Parts(parts)) => {
                let mut texts = parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .peekable();
                let text = texts.peek().is_some().then(|| texts.collect::<String>());
                (text, Some(parts))
            }
        };
        Delta {
            role: raw.role,
            content,
            content_parts,
            tool_calls: raw.tool_calls,
            refusal: raw.refusal,
            extra: raw.extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn first_chunk_carries_the_role() {
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","service_tier":"default","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        );
        let choice = &chunk.choices[0];
        assert_eq!(choice.delta.role, Some(Role::Assistant));
        assert_eq!(chunk.delta_text(), Some(""));
        assert_eq!(chunk.finish_reason(), None);
        assert_eq!(chunk.usage, None);
        assert_eq!(chunk.extra["service_tier"], "default");
    }

    #[test]
    fn content_chunk() {
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello","x_delta":[1]},"logprobs":null,"finish_reason":null,"x_choice":{}}],"x_top":"t"}"#,
        );
        assert_eq!(chunk.delta_text(), Some("Hello"));
        assert_eq!(chunk.choices[0].delta.role, None);
        assert_eq!(chunk.choices[0].delta.extra["x_delta"][0], 1);
    }

    /// Mistral's reasoning models stream their thinking as a list of parts: the chunk reads,
    /// the list is kept, and the text parts are the content.
    #[test]
    fn content_as_a_list_of_parts() {
        // Written back as it came: the list, not its text, and no field of Volley's own.
        let thinking: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"magistral-medium-latest","choices":[{"index":0,"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":"Okay"}]}]},"finish_reason":null}]}"#,
        );
        let delta = &thinking.choices[0].delta;
        assert_eq!(delta.content, None);
        let parts = delta.content_parts.as_ref().unwrap();
        assert_eq!(parts[0]["thinking"][0]["text"], "Okay");
        let text: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":[{"type":"text","text":"The "},{"type":"text","text":"answer"}],"refusal":null}}]}"#,
        );
        assert_eq!(text.delta_text(), Some("The answer"));
        let written = serde_json::to_string(&text).unwrap();
        assert!(!written.contains("content_parts"), "{written}");
        let text: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"plain","tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}],"reasoning_content":"hm"}}]}"#,
        );
        assert_eq!(text.delta_text(), Some("plain"));
        // Text and null stay as they were, with no parts.
        let plain: ChatCompletionChunk =
            serde_json::from_str(r#"{"choices":[{"index":0,"delta":{"content":"a\"b"}}]}"#)
                .unwrap();
        assert_eq!(plain.delta_text(), Some("a\"b"));
        assert_eq!(plain.choices[0].delta.content_parts, None);
        let null: ChatCompletionChunk =
            serde_json::from_str(r#"{"choices":[{"index":0,"delta":{"content":null}}]}"#).unwrap();
        assert_eq!(null.choices[0].delta, Delta::default());
    }

    #[test]
    fn finish_chunk() {
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
        );
        assert_eq!(chunk.delta_text(), None);
        assert_eq!(chunk.finish_reason(), Some("stop"));
        assert_eq!(chunk.choices[0].delta, Delta::default());
    }

    #[test]
    fn usage_only_final_chunk() {
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        );
        assert!(chunk.choices.is_empty());
        assert_eq!(chunk.delta_text(), None);
        let usage = chunk.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (9, 12, 21)
        );
    }

    /// Gateways in front of Azure end a choice with `"delta": null`, and others send `null`
    /// for the choices or the ids: read as absent, as the official SDKs read them, so the
    /// finish reason (and the usage after it) is not lost to a decode error.
    #[test]
    fn null_where_a_field_has_a_default_reads_as_absent() {
        let finish: ChatCompletionChunk = serde_json::from_str(
            r#"{"id":null,"object":null,"created":null,"model":null,"choices":[{"index":null,"delta":null,"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(finish.finish_reason(), Some("stop"));
        assert_eq!(finish.choices[0].delta, Delta::default());
        assert_eq!((finish.id.as_str(), finish.created), ("", 0));
        let usage: ChatCompletionChunk = serde_json::from_str(
            r#"{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .unwrap();
        assert!(usage.choices.is_empty());
        assert_eq!(usage.usage.unwrap().completion_tokens, 2);
        let answer: crate::openai::ChatCompletionResponse = serde_json::from_str(
            r#"{"id":null,"model":null,"choices":[{"index":null,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(answer.text(), Some("hi"));
    }

    #[test]
    fn tool_call_fragments() {
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"loc"}}]},"finish_reason":null}]}"#,
        );
        let calls = chunk.choices[0].delta.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], "{\"loc");
    }

    #[test]
    fn azure_prompt_filter_chunk() {
        // Azure's first chunk has empty ids and no choices, only filter results.
        let chunk: ChatCompletionChunk = assert_round_trip(
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
        );
        assert!(chunk.extra.contains_key("prompt_filter_results"));
    }
}
