//! Token usage, as reported in responses and in the final stream chunk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;

/// How many tokens a request used.
///
/// Counts default to 0 when a server leaves them out (embeddings responses have no
/// `completion_tokens`, some compatible servers omit more) or sends `null` (some proxies in
/// front of custom models). For the same reason a
/// `completion_tokens` of 0 is not written back: an embeddings usage survives a round trip
/// unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (input).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub prompt_tokens: u64,
    /// Tokens generated (output), reasoning tokens included.
    #[serde(
        default,
        deserialize_with = "null_as_zero",
        skip_serializing_if = "is_zero"
    )]
    pub completion_tokens: u64,
    /// Prompt plus completion tokens.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub total_tokens: u64,
    /// The prompt breakdown (`cached_tokens`, `audio_tokens`), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Value>,
    /// The completion breakdown (`reasoning_tokens`, ...), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// Prompt tokens served from the provider's prompt cache
    /// (`prompt_tokens_details.cached_tokens`), 0 when not reported.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// Reasoning tokens among the completion tokens
    /// (`completion_tokens_details.reasoning_tokens`), 0 when not reported.
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.get("reasoning_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// A count that may be `null`, read as 0: OpenAI's schema requires an integer, but a proxy's
/// `null` is no reason to throw away the answer it came with.
pub(crate) fn null_as_zero<'de, D: serde::Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    null_as_default(de)
}

/// A field that may be `null`, read as its default, as a missing one is (with
/// `#[serde(default)]`): gateways in front of Azure send `"delta": null` in a choice's last
/// chunk, and others `"choices": null` or `"id": null`; the official SDKs read them as absent.
pub(crate) fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

// serde's `skip_serializing_if` passes a reference.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn null_counts_read_as_zero_in_an_answer_and_as_no_usage_by_the_scanner() {
        let json = r#"{"prompt_tokens":12,"completion_tokens":null,"total_tokens":12}"#;
        let usage: Usage = serde_json::from_str(json).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (12, 0, 12)
        );
        // For a rate limiter a null count is no count: its estimate stands, rather than be
        // refunded for an output of "0".
        let body = format!(r#"{{"id":"c","choices":[],"usage":{json}}}"#);
        assert_eq!(crate::openai::usage_in_body(body.as_bytes()), None);
    }

    #[test]
    fn missing_counts_default_to_zero() {
        let usage: Usage = serde_json::from_str(r#"{"prompt_tokens": 5}"#).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (5, 0, 0)
        );
        assert_eq!(usage.cached_tokens(), 0);
    }

    #[test]
    fn details_and_unknown_fields_round_trip() {
        let usage: Usage = assert_round_trip(
            r#"{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
                "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":192},
                "queue_time":0.02}"#,
        );
        assert_eq!(usage.cached_tokens(), 1920);
        assert_eq!(usage.reasoning_tokens(), 192);
        assert_eq!(usage.extra["queue_time"], 0.02);
    }

    #[test]
    fn embeddings_usage_round_trips() {
        assert_round_trip::<Usage>(r#"{"prompt_tokens":8,"total_tokens":8}"#);
    }

    #[test]
    fn negative_counts_are_errors() {
        assert!(serde_json::from_str::<Usage>(r#"{"prompt_tokens":-1}"#).is_err());
    }
}
