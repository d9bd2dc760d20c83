//! Outcome records in the results format of Anthropic's Message Batches API.

use std::io::Write as _;

use serde::Deserialize;
use serde_json::json;
use volley::core::ApiError;

use super::record::{Outcome, OutcomeRecord};

/// Appends the `result` of `record` (and, for an invalid line, its `"line"`), closing the
/// record and its line; the caller wrote `{"id":…,"custom_id":…`.
pub(crate) fn write_result(record: &OutcomeRecord, out: &mut Vec<u8>) {
    match &record.outcome {
        Outcome::Response { body, .. } if record.is_success() => {
            out.extend_from_slice(br#","result":{"type":"succeeded","message":"#);
            out.extend_from_slice(body);
            out.extend_from_slice(b"}}");
        }
        Outcome::Response {
            request_id, body, ..
        } => {
            out.extend_from_slice(br#","result":{"type":"errored","error":"#);
            write_error_response(out, body, request_id);
            out.extend_from_slice(b"}}");
        }
        Outcome::Error { code, message } => {
            errored(out, error_type(code), message, code);
            out.extend_from_slice(b"}");
        }
        Outcome::Invalid { code, message } => {
            errored(out, "invalid_request_error", message, code);
            // Writing to a `Vec` cannot fail.
            let _ = write!(out, r#","line":{}}}"#, record.line);
        }
    }
    out.push(b'\n');
}

/// An error response for a failure without one: the closest Anthropic error type, and
/// Volley's own code beside it.
fn errored(out: &mut Vec<u8>, r#type: &str, message: &str, code: &str) {
    let error = json!({
        "type": "error",
        "error": {"type": r#type, "message": message, "code": code},
        "request_id": null,
    });
    out.extend_from_slice(br#","result":{"type":"errored","error":"#);
    // Serialising a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &error);
    out.push(b'}');
}

/// The provider's error response as it sent it when it is one (`{"type": "error", …}`),
/// else one rebuilt from the error object (an error record keeps the provider's body when it
/// is JSON, else one rebuilt in OpenAI's shape).
fn write_error_response(out: &mut Vec<u8>, body: &[u8], request_id: &str) {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        r#type: Option<&'a str>,
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
    }
    if let Ok(Probe {
        r#type: Some("error"),
        error: Some(_),
    }) = serde_json::from_slice::<Probe<'_>>(body)
    {
        out.extend_from_slice(body);
        return;
    }
    let api = ApiError::from_body(body);
    let error = json!({
        "type": "error",
        "error": {
            "type": api.as_ref().and_then(|a| a.r#type.as_deref()).unwrap_or("api_error"),
            "message": api.as_ref().map_or("", |a| a.message.as_str()),
        },
        "request_id": if request_id.is_empty() { None } else { Some(request_id) },
    });
    let _ = serde_json::to_writer(&mut *out, &error);
}

/// The Anthropic error type closest to a failure of Volley's own (an
/// [`ErrorKind`](volley::ErrorKind) name).
fn error_type(code: &str) -> &'static str {
    match code {
        "timeout" | "first_byte_timeout" | "idle_timeout" => "timeout_error",
        "rate_limited" => "rate_limit_error",
        "invalid_input" => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::super::Format;
    use super::*;

    fn line(record: &OutcomeRecord) -> Value {
        let text = record.to_json_line_as(Format::Anthropic, "batch_req_1");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        serde_json::from_str(&text).unwrap()
    }

    fn record(outcome: Outcome) -> OutcomeRecord {
        OutcomeRecord {
            line: 4,
            custom_id: Some("c".into()),
            outcome,
        }
    }

    #[test]
    fn succeeded_and_errored_in_the_sdk_shape() {
        let v = line(&record(Outcome::Response {
            status_code: 200,
            request_id: "req_1".into(),
            body: Bytes::from_static(br#"{"id":"msg_1","type":"message"}"#),
        }));
        assert_eq!(v["custom_id"], "c");
        assert_eq!(v["result"]["type"], "succeeded");
        assert_eq!(v["result"]["message"]["id"], "msg_1");
        assert!(v.get("response").is_none() && v.get("line").is_none());

        // The provider's error response is kept as it is.
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_2"}"#;
        let v = line(&record(Outcome::Response {
            status_code: 529,
            request_id: "req_2".into(),
            body: Bytes::from(body),
        }));
        assert_eq!(v["result"]["type"], "errored");
        assert_eq!(
            v["result"]["error"],
            serde_json::from_str::<Value>(body).unwrap()
        );

        // One in OpenAI's shape (rebuilt from a final error) becomes Anthropic's.
        let v = line(&record(Outcome::Response {
            status_code: 400,
            request_id: "req_3".into(),
            body: Bytes::from_static(
                br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#,
            ),
        }));
        let error = &v["result"]["error"];
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["message"], "bad");
        assert_eq!(error["request_id"], "req_3");
    }

    #[test]
    fn failures_without_a_response_and_invalid_lines() {
        let v = line(&record(Outcome::Error {
            code: "timeout".into(),
            message: "line 4: timed out".into(),
        }));
        let error = &v["result"]["error"];
        assert_eq!(v["result"]["type"], "errored");
        assert_eq!(error["error"]["type"], "timeout_error");
        assert_eq!(error["error"]["code"], "timeout");
        assert_eq!(error["error"]["message"], "line 4: timed out");
        assert!(v.get("line").is_none());

        let invalid = OutcomeRecord {
            line: 9,
            custom_id: None,
            outcome: Outcome::Invalid {
                code: "missing_field",
                message: "line 9: field `params` is missing".into(),
            },
        };
        let v = line(&invalid);
        assert!(v["custom_id"].is_null());
        assert_eq!(v["line"], 9);
        assert_eq!(
            v["result"]["error"]["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(v["result"]["error"]["error"]["code"], "missing_field");
    }
}
