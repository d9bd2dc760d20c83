//! The model list (`GET /models`).

use serde::{Deserialize, Serialize};

use super::Extra;

/// The response of `GET /models`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"` from OpenAI.
    #[serde(default)]
    pub object: String,
    /// The models this key can use.
    #[serde(default)]
    pub data: Vec<Model>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of a [`ModelList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The model id to put in requests.
    pub id: String,
    /// Always `"model"` from OpenAI.
    #[serde(default)]
    pub object: String,
    /// Creation time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// The owning organisation (`"openai"`, `"system"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// Every other field (`max_model_len`, `permission`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn openai_model_list() {
        let list: ModelList = assert_round_trip(
            r#"{"object":"list","data":[
                {"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},
                {"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}"#,
        );
        let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small"]);
    }

    #[test]
    fn vllm_model_list_keeps_extensions() {
        let list: ModelList = assert_round_trip(
            r#"{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model",
                "created":1730000000,"owned_by":"vllm","root":"meta-llama/Llama-3.1-8B-Instruct",
                "parent":null,"max_model_len":8192,"permission":[{"id":"modelperm-1","allow_sampling":true}]}]}"#,
        );
        assert_eq!(list.data[0].extra["max_model_len"], 8192);
        assert!(list.data[0].extra["parent"].is_null());
    }
}
