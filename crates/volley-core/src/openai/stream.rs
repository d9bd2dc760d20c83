//! Streaming chat completions: the chunks sent as server-sent events.
//!
//! A stream is a sequence of `data: {chunk}` events ended by `data: [DONE]`. The first chunk's
//! delta usually carries the role, later ones carry content, the last one with choices carries
//! the `finish_reason`. When the request set `stream_options.include_usage`, one more chunk
//! follows with `"choices": []` and the usage of the whole request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Extra, Role, Usage};

/// One `data:` event of a streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion id, the same in every chunk of a stream.
    #[serde(default)]
    pub id: String,
    /// Always `"chat.completion.chunk"` from OpenAI.
    #[serde(default)]
    pub object: String,
    /// Creation time, in seconds since the Unix epoch.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// The deltas of this chunk; empty in the final usage chunk.
    #[serde(default)]
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
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
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

/// What one chunk adds to a choice's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The role, usually only in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The next piece of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
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
