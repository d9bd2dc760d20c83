//! Outcome records: one per input line, in the OpenAI Batch output format.

use std::io::Write as _;

use bytes::Bytes;
use serde_json::json;
use volley::core::Error;

use super::format::Format;

/// The outcome of one input line, as written to the output file (see the
/// [module docs](super#output) for the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The input line number, from 1.
    pub line: u64,
    /// The line's `custom_id`; `None` when the line has no usable one (written as `null`).
    pub custom_id: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to one input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered: a success, or a final HTTP error (after retries) with the
    /// provider's error body.
    Response {
        /// The HTTP status.
        status_code: u16,
        /// The provider's `x-request-id` response header; empty when it sent none.
        request_id: String,
        /// The response body: JSON on one line.
        body: Bytes,
    },
    /// The request failed without an HTTP response (connection, timeout, broken stream, a
    /// request larger than the rate limit, a reply that is not JSON).
    Error {
        /// The [`ErrorKind`](volley::ErrorKind) name (`timeout`, `connection`, …) or
        /// `body_decode`.
        code: String,
        /// What failed, starting with `line N:`.
        message: String,
    },
    /// The input line is not a valid request; nothing was sent. Written with an extra
    /// `"line"` member, by which a resumed run recognises it.
    Invalid {
        /// `invalid_json`, `invalid_utf8`, `missing_field`, `invalid_field`,
        /// `unsupported_method`, `unknown_url`, `duplicate_custom_id` or `line_too_long`.
        code: &'static str,
        /// What is wrong, starting with `line N:` and naming the field.
        message: String,
    },
}

impl OutcomeRecord {
    /// Whether this is a response with a 2xx status.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Response { status_code, .. } if (200..300).contains(&status_code))
    }

    /// The code this outcome is counted under in [`Summary::errors_by_code`]: `http_<status>`
    /// for an HTTP error, the error's code otherwise; `None` for a success.
    ///
    /// [`Summary::errors_by_code`]: super::Summary::errors_by_code
    pub fn error_code(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Response { status_code, .. } if !self.is_success() => {
                Some(format!("http_{status_code}"))
            }
            Outcome::Response { .. } => None,
            Outcome::Error { code, .. } => Some(code.clone()),
            Outcome::Invalid { code, .. } => Some((*code).to_owned()),
        }
    }

    /// About how many bytes the record takes in memory and in the file.
    pub(crate) fn approx_bytes(&self) -> u64 {
        let outcome = match &self.outcome {
            Outcome::Response {
                request_id, body, ..
            } => request_id.len() + body.len(),
            Outcome::Error { code, message } => code.len() + message.len(),
            Outcome::Invalid { message, .. } => message.len(),
        };
        let id = self.custom_id.as_ref().map_or(0, String::len);
        (outcome + id + 128) as u64
    }

    /// The record as one JSON line (newline included) with the record id `id`, in the
    /// OpenAI Batch output format.
    pub fn to_json_line(&self, id: &str) -> String {
        self.to_json_line_as(Format::OpenAi, id)
    }

    /// The record as one JSON line (newline included) with the record id `id`, in `format`.
    pub fn to_json_line_as(&self, format: Format, id: &str) -> String {
        let mut out = Vec::new();
        self.write_json(format, |out| out.extend_from_slice(id.as_bytes()), &mut out);
        // Only JSON (valid UTF-8) and the id, a `&str`, were written.
        String::from_utf8(out).expect("a record is UTF-8")
    }

    /// Appends the record as one JSON line in `format`; `write_id` writes the id's characters
    /// (no quotes, no escapes needed).
    pub(crate) fn write_json(
        &self,
        format: Format,
        write_id: impl FnOnce(&mut Vec<u8>),
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(br#"{"id":""#);
        write_id(out);
        out.extend_from_slice(br#"","custom_id":"#);
        match &self.custom_id {
            Some(id) => write_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        if format == Format::Anthropic {
            super::results::write_result(self, out);
            return;
        }
        match &self.outcome {
            Outcome::Response {
                status_code,
                request_id,
                body,
            } => {
                // Writing to a `Vec` cannot fail.
                let _ = write!(
                    out,
                    r#","response":{{"status_code":{status_code},"request_id":"#
                );
                write_str(out, request_id);
                out.extend_from_slice(br#","body":"#);
                out.extend_from_slice(body);
                out.extend_from_slice(br#"},"error":null}"#);
            }
            Outcome::Error { code, message } => {
                out.extend_from_slice(br#","response":null,"error":{"code":"#);
                write_str(out, code);
                out.extend_from_slice(br#","message":"#);
                write_str(out, message);
                out.extend_from_slice(b"}}");
            }
            Outcome::Invalid { code, message } => {
                out.extend_from_slice(br#","response":null,"error":{"code":"#);
                write_str(out, code);
                out.extend_from_slice(br#","message":"#);
                write_str(out, message);
                let _ = write!(out, r#"}},"line":{}}}"#, self.line);
            }
        }
        out.push(b'\n');
    }
}

/// The outcome of a request that ended in `error`: an HTTP error status becomes a
/// `response` with the provider's error object, anything else an `error`.
pub(crate) fn from_error(line: u64, error: &Error) -> Outcome {
    // An HTTP error response, which always has its headers: a 2xx answer that is an error
    // object names a status (its `code`) it was not sent with, and is recorded as an error.
    if let Some(status) = error.status().filter(|_| error.headers().is_some()) {
        let request_id = error
            .headers()
            // OpenAI's header, or Anthropic's.
            .and_then(|h| h.get("x-request-id").or_else(|| h.get("request-id")))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // The provider's own error body when it is JSON (on one line, as a record needs);
        // otherwise OpenAI's shape, rebuilt from the parsed error object or the message.
        let raw = error.body().filter(|body| crate::send::is_json_text(body));
        let body = match (raw, error.api_error()) {
            (Some(raw), _) => crate::send::one_line(raw.clone()),
            (None, Some(api)) => Bytes::from(
                json!({"error": {
                    "message": api.message, "type": api.r#type, "param": api.param,
                    "code": api.code,
                }})
                .to_string(),
            ),
            (None, None) => Bytes::from(
                json!({"error": {
                    "message": error.to_string(), "type": null, "param": null, "code": null,
                }})
                .to_string(),
            ),
        };
        return Outcome::Response {
            status_code: status.as_u16(),
            request_id,
            body,
        };
    }
    // The error and its causes, each once, outermost first.
    let message = format!("line {line}: {}", error.report());
    Outcome::Error {
        code: error.kind().as_str().to_owned(),
        message,
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use volley::core::ErrorKind;

    fn parse(record: &OutcomeRecord) -> serde_json::Value {
        let line = record.to_json_line("batch_req_1");
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn success_and_errors_in_openai_shape() {
        let ok = OutcomeRecord {
            line: 1,
            custom_id: Some("a\"b".into()),
            outcome: Outcome::Response {
                status_code: 200,
                request_id: "req_1".into(),
                body: Bytes::from_static(br#"{"x":1}"#),
            },
        };
        let v = parse(&ok);
        assert_eq!(v["id"], "batch_req_1");
        assert_eq!(v["custom_id"], "a\"b");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(v["response"]["request_id"], "req_1");
        assert_eq!(v["response"]["body"]["x"], 1);
        assert!(v["error"].is_null());
        assert!(ok.is_success() && ok.error_code().is_none());

        let bad = OutcomeRecord {
            line: 17,
            custom_id: None,
            outcome: Outcome::Invalid {
                code: "missing_field",
                message: "line 17: field `body` is missing".into(),
            },
        };
        let v = parse(&bad);
        assert!(v["custom_id"].is_null() && v["response"].is_null());
        assert_eq!(v["error"]["code"], "missing_field");
        assert_eq!(v["line"], 17);
        assert_eq!(bad.error_code().as_deref(), Some("missing_field"));
    }

    #[test]
    fn the_size_estimate_follows_the_written_record() {
        // The reorder window is bounded by these estimates: each must track the record's
        // real size, however its bytes are split between the custom_id and the rest.
        let long = "x".repeat(3000);
        let short = "y".repeat(10);
        let outcomes = |a: &str| {
            [
                Outcome::Response {
                    status_code: 200,
                    request_id: "req_1".into(),
                    body: Bytes::from(format!("{{\"t\":\"{a}\"}}")),
                },
                Outcome::Error {
                    code: "timeout".into(),
                    message: a.to_owned(),
                },
                Outcome::Invalid {
                    code: "invalid_json",
                    message: a.to_owned(),
                },
            ]
        };
        for (custom_id, rest) in [(&long, &short), (&short, &long), (&long, &long)] {
            for outcome in outcomes(rest) {
                let record = OutcomeRecord {
                    line: 12,
                    custom_id: Some(custom_id.clone()),
                    outcome,
                };
                let real = record
                    .to_json_line("batch_req_0123456789abcdef01234567")
                    .len();
                let approx = record.approx_bytes() as usize;
                assert!(
                    real.abs_diff(approx) <= 64,
                    "{approx} for {real}: {record:?}"
                );
            }
        }
    }

    #[test]
    fn http_errors_become_responses() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "req_9".parse().unwrap());
        let body = br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#;
        let err = Error::from_status(StatusCode::BAD_REQUEST, headers, body, None, "ctx");
        let record = OutcomeRecord {
            line: 3,
            custom_id: Some("c".into()),
            outcome: from_error(3, &err),
        };
        let v = parse(&record);
        assert_eq!(v["response"]["status_code"], 400);
        assert_eq!(v["response"]["request_id"], "req_9");
        assert_eq!(v["response"]["body"]["error"]["message"], "bad");
        assert_eq!(record.error_code().as_deref(), Some("http_400"));

        let io = std::io::Error::other("reset by peer");
        let err = Error::new(ErrorKind::Connection, "request 3").with_source(io);
        let Outcome::Error { code, message } = from_error(3, &err) else {
            panic!("no status: an error record");
        };
        assert_eq!(code, "connection");
        assert!(message.starts_with("line 3: ") && message.ends_with("reset by peer"));
    }
}
