//! Error bodies: `{"type": "error", "error": {"type": .., "message": ..}, "request_id": ..}`.

use serde::{Deserialize, Serialize};

use super::Extra;
use crate::ApiError;

/// The body of a Messages API error response (and the data of an `error` stream event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorObject,
    /// Every other field (`type`, `request_id`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `error` object of an [`ErrorResponse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The error type: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `request_too_large`, `rate_limit_error`,
    /// `api_error`, `overloaded_error`.
    #[serde(rename = "type", default)]
    pub r#type: String,
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl From<&ErrorObject> for ApiError {
    /// The fields cleaned and bounded, as [`ApiError::from_body`] reads them.
    fn from(error: &ErrorObject) -> ApiError {
        let r#type = Some(error.r#type.as_str()).filter(|t| !t.is_empty());
        ApiError::cleaned(&error.message, r#type, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;

    #[test]
    fn documented_errors_round_trip_and_agree_with_the_lenient_parser() {
        let raw = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        let body: ErrorResponse = assert_round_trip(raw);
        assert_eq!(body.extra["request_id"], "req_011CSHoEeqs5C35K2UUqR7Fy");
        assert_eq!(
            Some(ApiError::from(&body.error)),
            ApiError::from_body(raw.as_bytes())
        );
    }
}
