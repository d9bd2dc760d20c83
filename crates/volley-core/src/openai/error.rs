//! Error bodies: `{"error": {"message": .., "type": .., "param": .., "code": ..}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Extra;
use crate::ApiError;

/// The body of an OpenAI error response.
///
/// This is the strict, typed shape. To read whatever error a server sent (a bare string, a
/// bare object), use [`ApiError::from_body`], which accepts this shape and its variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorObject,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `error` object of an [`ErrorResponse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// The error type (`"invalid_request_error"`, `"insufficient_quota"`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// The request parameter the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The machine-readable code. OpenAI sends a string (`"rate_limit_exceeded"`), some
    /// compatible servers a number (`429`), so it is kept as JSON; see
    /// [`code_string`](Self::code_string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorObject {
    /// The code as text: a string as is, anything else as its JSON (`429` gives `"429"`).
    pub fn code_string(&self) -> Option<String> {
        match self.code.as_ref()? {
            Value::String(code) => Some(code.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl From<&ErrorObject> for ApiError {
    /// The fields cleaned and bounded, as [`ApiError::from_body`] reads them.
    fn from(error: &ErrorObject) -> ApiError {
        ApiError::cleaned(
            &error.message,
            error.r#type.as_deref(),
            error.code_string().as_deref(),
            error.param.as_deref(),
        )
    }
}

impl From<ErrorObject> for ApiError {
    fn from(error: ErrorObject) -> ApiError {
        ApiError::from(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn string_code() {
        let body: ErrorResponse = assert_round_trip(
            r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): Limit 200000, Used 199776, Requested 873. Please try again in 194ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        let api = ApiError::from(&body.error);
        assert_eq!(api.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(api.r#type.as_deref(), Some("tokens"));
        assert_eq!(api.param, None);
        assert!(api.message.starts_with("Rate limit reached"));
    }

    #[test]
    fn number_code() {
        let body: ErrorResponse = assert_round_trip(
            r#"{"error":{"message":"model overloaded","type":"server_error","code":503,"x_detail":{"retry":true}},"x_top":1}"#,
        );
        assert_eq!(body.error.code_string().as_deref(), Some("503"));
        assert_eq!(
            ApiError::from(body.error.clone()).code.as_deref(),
            Some("503")
        );
        assert_eq!(body.error.extra["x_detail"]["retry"], true);
    }

    #[test]
    fn null_code_and_param() {
        let body: ErrorResponse = assert_round_trip(
            r#"{"error":{"message":"You must provide a model parameter.","type":"invalid_request_error","param":"model","code":null}}"#,
        );
        assert_eq!(body.error.code, None);
        let api = ApiError::from(body.error);
        assert_eq!((api.code, api.param.as_deref()), (None, Some("model")));
    }

    #[test]
    fn agrees_with_the_lenient_parser() {
        let raw = br#"{"error":{"message":"m","type":"t","param":"p","code":42}}"#;
        let typed: ErrorResponse = serde_json::from_slice(raw).unwrap();
        assert_eq!(Some(ApiError::from(&typed.error)), ApiError::from_body(raw));
        // Control characters (a terminal escape) are cleaned either way, and long text cut.
        let long = "x".repeat(5000);
        let hostile = format!(
            r#"{{"error":{{"message":"\u001b[2Jgone {long}","type":"t\u0007","param":null,"code":"c"}}}}"#
        );
        let typed: ErrorResponse = serde_json::from_str(&hostile).unwrap();
        let api = ApiError::from(&typed.error);
        assert_eq!(Some(api.clone()), ApiError::from_body(hostile.as_bytes()));
        assert!(!api.message.chars().any(char::is_control), "{api:?}");
        assert!(api.message.chars().count() < 1100);
        assert_eq!(api.r#type.as_deref(), Some("t "));
    }

    #[test]
    fn other_shapes_are_errors() {
        assert!(serde_json::from_str::<ErrorResponse>(r#"{"error":"boom"}"#).is_err());
        assert!(serde_json::from_str::<ErrorResponse>(r#"{"message":"m"}"#).is_err());
    }
}
