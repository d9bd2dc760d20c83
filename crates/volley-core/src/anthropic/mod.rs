//! The Anthropic Messages dialect: requests, answers, stream events and error bodies as plain
//! serde types, the usage and error scans middleware needs, and the rate-limit headers.
//!
//! The types follow the rules of [`crate::openai`]: unknown fields are kept in an `extra` map
//! and written back, content blocks, deltas and events of a `type` Volley does not know are
//! kept whole as `Other(Value)`, and optional fields are skipped when `None`.
//!
//! Paths are relative to a base URL that ends in `/v1`, as for every provider in Volley
//! (`https://api.anthropic.com/v1` + [`MESSAGES_PATH`]). The official SDKs take a base URL
//! *without* `/v1` (`ANTHROPIC_BASE_URL`); [`base_url_from_sdk`] converts one.
//!
//! ```
//! use volley_core::anthropic::{InputMessage, MessagesRequest};
//!
//! let req = MessagesRequest::new("claude-sonnet-4-5", 256, vec![InputMessage::user("Hi")]);
//! let body = serde_json::to_string(&req).unwrap();
//! assert_eq!(body, r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hi"}]}"#);
//! ```

mod error;
mod headers;
mod messages;
mod scan;
mod stream;
pub(crate) mod tagged;

pub use error::{ErrorObject, ErrorResponse};
pub use headers::{AnthropicRateLimits, Quota};
pub use messages::{
    ContentBlock, InputMessage, Message, MessageContent, MessagesRequest, SourceBlock,
    SystemPrompt, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, Usage,
};
pub use scan::{
    UsageCounts, UsageScanner, ends_with_message_stop, looks_like_error, usage_in_body,
};
pub use stream::{
    ContentBlockDelta, ContentBlockStart, ContentDelta, DeltaUsage, Empty, IndexOnly,
    InputJsonDelta, MessageDelta, MessageDeltaBody, MessageStart, SignatureDelta, StreamError,
    StreamEvent, TextDelta, ThinkingDelta,
};

/// The Messages endpoint, relative to a base URL ending in `/v1`.
pub const MESSAGES_PATH: &str = "/messages";

/// The default base URL, with `/v1` as every Volley base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The `anthropic-version` the current official SDK sends (Python SDK 2.x, which sends the
/// key as `Authorization: Bearer`).
pub const API_VERSION: &str = "2026-10-21";

/// The `anthropic-version` older SDKs send with `x-api-key`; the API still takes it.
pub const LEGACY_API_VERSION: &str = "2023-06-01";

/// The version header.
pub const VERSION_HEADER: &str = "anthropic-version";

/// The beta-features header (comma-separated feature names).
pub const BETA_HEADER: &str = "anthropic-beta";

/// The header that carries the request id of an answer.
pub const REQUEST_ID_HEADER: &str = "request-id";

/// Variables the official SDK reads the credential from: `ANTHROPIC_API_KEY` first, then
/// `ANTHROPIC_AUTH_TOKEN`.
pub const KEY_VARIABLES: [&str; 2] = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"];

/// The variable the official SDK reads its base URL from (without `/v1`).
pub const BASE_URL_VARIABLE: &str = "ANTHROPIC_BASE_URL";

/// Volley's base URL (with `/v1`) for a base URL given the SDK's way (without it, as in
/// `ANTHROPIC_BASE_URL`): `/v1` is appended unless the URL already ends with it.
///
/// ```
/// use volley_core::anthropic::base_url_from_sdk;
///
/// assert_eq!(base_url_from_sdk("https://gw.example/anthropic/"), "https://gw.example/anthropic/v1");
/// assert_eq!(base_url_from_sdk("http://127.0.0.1:8080/v1"), "http://127.0.0.1:8080/v1");
/// ```
pub fn base_url_from_sdk(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_owned()
    } else {
        format!("{url}/v1")
    }
}

/// The map every type uses to keep the JSON fields it does not name.
pub type Extra = serde_json::Map<String, serde_json::Value>;
