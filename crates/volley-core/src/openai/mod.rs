//! The OpenAI wire dialect: chat completions, streaming chunks, embeddings, the model list,
//! usage and error bodies, as plain serde types.
//!
//! Most OpenAI-compatible servers (vLLM, llama.cpp, Ollama, Azure, gateways) speak this
//! dialect, so these types are deliberately lenient and lossless:
//!
//! - **Unknown fields are kept.** Every struct has an `extra` map
//!   (`#[serde(flatten)]`) that collects the fields it does not name and writes them back, so a
//!   request or response that passes through Volley loses nothing, at any depth.
//! - **Nothing is added.** Optional fields are `Option`s that are skipped when `None`. A JSON
//!   `null` is read as `None`, so an explicit `"logprobs": null` is written back as an absent
//!   field; the API treats the two alike.
//! - **Missing response fields default.** Some compatible servers omit `object`, `created` or
//!   token counts; response types read them as empty or zero instead of failing.
//!
//! For middleware that must look inside a response without parsing it, [`usage_in_body`],
//! [`UsageScanner`], [`looks_like_error`] and [`ends_with_done`] read the usage, spot an error
//! object and recognise a finished stream with byte searches.
//!
//! Paths are relative to a base URL that already ends in `/v1`, the OpenAI convention
//! (`https://api.openai.com/v1` + [`CHAT_COMPLETIONS_PATH`]).
//!
//! ```
//! use volley_core::openai::{ChatCompletionRequest, ChatMessage};
//!
//! let mut req = ChatCompletionRequest::new(
//!     "gpt-4o-mini",
//!     vec![
//!         ChatMessage::system("You are terse."),
//!         ChatMessage::user("Name a prime number."),
//!     ],
//! );
//! req.max_completion_tokens = Some(16);
//! let body = serde_json::to_string(&req).unwrap();
//! assert!(body.starts_with(r#"{"model":"gpt-4o-mini","messages":[{"role":"system""#));
//! ```

mod chat;
mod embeddings;
mod error;
mod models;
mod scan;
pub(crate) use scan::falsy_value_follows;
mod stream;
mod usage;

pub use chat::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ContentPart,
    MessageContent, Role, StreamOptions,
};
pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
};
pub use error::{ErrorObject, ErrorResponse};
pub use models::{Model, ModelList};
pub use scan::{
    UsageCounts, UsageScanner, asks_for_stream, ends_with_done, looks_like_error, usage_in_body,
};
pub use stream::{ChatCompletionChunk, ChunkChoice, Delta};
pub use usage::Usage;

/// The chat completions endpoint, relative to a base URL ending in `/v1`.
pub const CHAT_COMPLETIONS_PATH: &str = "/chat/completions";

/// The embeddings endpoint, relative to a base URL ending in `/v1`.
pub const EMBEDDINGS_PATH: &str = "/embeddings";

/// The model list endpoint, relative to a base URL ending in `/v1`.
pub const MODELS_PATH: &str = "/models";

/// The map every type uses to keep the JSON fields it does not name.
pub type Extra = serde_json::Map<String, serde_json::Value>;

#[cfg(test)]
pub(crate) mod test_util {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Parses `json` as `T`, writes it back and checks that nothing was lost or added. The one
    /// change allowed is an explicit `null` in a named optional field coming back as an absent
    /// field (see the module docs); `null`s in unknown fields and inside JSON values are kept.
    #[track_caller]
    pub(crate) fn assert_round_trip<T: DeserializeOwned + Serialize>(json: &str) -> T {
        let parsed: T = serde_json::from_str(json).expect("test payload parses");
        // Through text, as on the wire: an `f32` becomes its shortest decimal there.
        let text = serde_json::to_string(&parsed).expect("serialises");
        let written: Value = serde_json::from_str(&text).expect("writes JSON");
        let input: Value = serde_json::from_str(json).expect("test payload is JSON");
        if let Err(path) = same_but_dropped_nulls(&input, &written, String::new()) {
            panic!(
                "round trip changed the payload at {path}
 in: {input}
out: {written}"
            );
        }
        parsed
    }

    fn same_but_dropped_nulls(input: &Value, written: &Value, path: String) -> Result<(), String> {
        match (input, written) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, value) in a {
                    let here = format!("{path}.{key}");
                    match b.get(key) {
                        Some(w) => same_but_dropped_nulls(value, w, here)?,
                        None if value.is_null() => {}
                        None => return Err(format!("{here} (lost)")),
                    }
                }
                match b.keys().find(|k| !a.contains_key(*k)) {
                    Some(key) => Err(format!("{path}.{key} (added)")),
                    None => Ok(()),
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                a.iter().zip(b).enumerate().try_for_each(|(i, (x, y))| {
                    same_but_dropped_nulls(x, y, format!("{path}[{i}]"))
                })
            }
            (a, b) if a == b => Ok(()),
            _ => Err(path),
        }
    }
}
