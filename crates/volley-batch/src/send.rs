//! Sending one line's request and turning what came back into its outcome.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use volley::core::{Error, ErrorKind, Request};

use super::record::{Outcome, OutcomeRecord, from_error};
use volley::Client;
use volley::middleware::cache::CACHE_STATUS_HEADER;

/// A request's outcome and what it counts for.
pub(crate) struct Finished {
    pub(crate) record: OutcomeRecord,
    pub(crate) tokens_in: u64,
    pub(crate) tokens_out: u64,
    /// Whether the request made at least one HTTP attempt.
    pub(crate) attempted: bool,
    /// Whether the client's cache answered it (no attempt).
    pub(crate) cached: bool,
}

/// Sends `request` (line `line`, position `seq`) through the client's whole stack and reads
/// the reply.
pub(crate) async fn execute(
    client: Client,
    seq: u64,
    line: u64,
    custom_id: String,
    request: Request,
) -> (u64, Finished) {
    let dialect = request.dialect();
    let mut cached = false;
    let (outcome, usage, attempted) = match client.send(request).await {
        Ok(response) => {
            // The cache layer removes a server's own header of that name: with a cache, the
            // header marks its replays alone.
            cached = response
                .headers()
                .get(CACHE_STATUS_HEADER)
                .is_some_and(|v| v == "hit")
                && client.cache_stats().is_some();
            let status = response.status().as_u16();
            let request_id = dialect
                .request_id(response.headers())
                .unwrap_or_default()
                .to_owned();
            match response.bytes().await {
                // A 2xx whose body is an error object (a gateway's `{"error": {"code": 429,
                // ..}}` with a 200): no answer, so a failure, which `retry_failed` sends again.
                Ok(body) if (200..300).contains(&status) && dialect.is_error_reply(&body) => {
                    let context = format!("HTTP {status}");
                    let error = dialect.error_in_answer(&body, context);
                    (from_error(line, &error), Usage::default(), !cached)
                }
                Ok(body) => {
                    let (outcome, usage) = from_response(line, status, request_id, body);
                    (outcome, usage, !cached)
                }
                Err(e) => (from_error(line, &e), Usage::default(), !cached),
            }
        }
        Err(e) => {
            let attempted = !matches!(
                e.kind(),
                ErrorKind::InvalidInput | ErrorKind::Config | ErrorKind::Cancelled
            );
            (from_error(line, &e), Usage::default(), attempted)
        }
    };
    let finished = Finished {
        record: OutcomeRecord {
            line,
            custom_id: Some(custom_id),
            outcome,
        },
        // A cache hit's usage was billed when the answer first came: not counted again.
        tokens_in: if cached { 0 } else { usage.tokens_in() },
        tokens_out: if cached {
            0
        } else {
            usage.completion_tokens.unwrap_or(0)
        },
        attempted,
        cached,
    };
    (seq, finished)
}

/// The `usage` of a reply: chat and completions (`prompt_tokens`, `completion_tokens`),
/// embeddings (`prompt_tokens`), the Responses API (`input_tokens`, `output_tokens`) and
/// Anthropic's Messages (`input_tokens`, `output_tokens`, and the prompt-cache tokens its
/// `input_tokens` leaves out).
#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    /// Anthropic: input tokens written to the prompt cache (not in `input_tokens`).
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    /// Anthropic: input tokens read from the prompt cache (not in `input_tokens`).
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Every input token: OpenAI's counts include cached tokens, Anthropic's add its cache's.
    fn tokens_in(&self) -> u64 {
        [
            self.prompt_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .into_iter()
        .flatten()
        .fold(0, u64::saturating_add)
    }
}

/// Whether `body` is JSON text a record can hold as it is: UTF-8 (serde_json skips the
/// strings of values it does not read without checking them) and valid JSON.
pub(crate) fn is_json_text(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok() && serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

/// The most bytes of a 2xx reply that is not JSON kept, as text, in its error record.
const MAX_KEPT_TEXT: usize = 64 * 1024;

/// The outcome of a reply that arrived whole. Its body goes into the record as it is, so it
/// must be JSON on one line, in UTF-8: it is checked (the same pass reads the usage), and line
/// breaks, which valid JSON has only between tokens, become spaces.
fn from_response(line: u64, status: u16, request_id: String, body: Bytes) -> (Outcome, Usage) {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        usage: Option<Usage>,
    }
    // Records are UTF-8 text: a body that is not is no JSON to keep.
    let (is_json, usage) = if std::str::from_utf8(&body).is_err() {
        (false, Usage::default())
    } else {
        match serde_json::from_slice::<Probe>(&body) {
            Ok(probe) => (true, probe.usage.unwrap_or_default()),
            // Valid JSON of another shape: a data error stops early, so check the rest.
            Err(e) if e.is_data() => (is_json_text(&body), Usage::default()),
            Err(_) => (false, Usage::default()),
        }
    };
    let success = (200..300).contains(&status);
    if !is_json && success {
        // The answer may have been paid for: its text is kept in the record (invalid UTF-8
        // shown as U+FFFD), up to a bound, rather than lost.
        let kept = &body[..body.len().min(MAX_KEPT_TEXT)];
        let error = Error::new(
            ErrorKind::BodyDecode,
            format!(
                "the HTTP {status} reply ({} bytes) is not JSON; its text{}: {}",
                body.len(),
                if kept.len() < body.len() {
                    format!(" (the first {} bytes)", kept.len())
                } else {
                    String::new()
                },
                String::from_utf8_lossy(kept)
            ),
        );
        return (from_error(line, &error), usage);
    }
    let body = if is_json {
        one_line(body)
    } else {
        // An error status with a body that is not JSON: keep its start as the message.
        let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
        let wrapped = serde_json::json!({"error": {
            "message": text, "type": null, "param": null, "code": null,
        }});
        Bytes::from(wrapped.to_string())
    };
    let outcome = Outcome::Response {
        status_code: status,
        request_id,
        body,
    };
    (outcome, usage)
}

pub(crate) fn one_line(body: Bytes) -> Bytes {
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
        return body;
    }
    let flat: Vec<u8> = body
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect();
    Bytes::from(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, body: &'static str) -> (Outcome, Usage) {
        from_response(5, status, "r".into(), Bytes::from_static(body.as_bytes()))
    }

    #[test]
    fn usage_is_read_and_bodies_kept_on_one_line() {
        let (o, usage) = outcome(
            200,
            "{\n \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 4}\r\n}",
        );
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(3), Some(4))
        );
        let Outcome::Response { body, .. } = o else {
            panic!()
        };
        assert!(!body.contains(&b'\n') && !body.contains(&b'\r'));
        let (_, usage) = outcome(200, r#"{"usage":{"input_tokens":7,"output_tokens":1}}"#);
        assert_eq!(usage.prompt_tokens, Some(7));
        assert_eq!(usage.tokens_in(), 7);
        // Anthropic's input_tokens leaves out the prompt cache's tokens; the summary does not.
        let (_, usage) = outcome(
            200,
            r#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":5000,"output_tokens":3}}"#,
        );
        assert_eq!(
            (usage.tokens_in(), usage.completion_tokens),
            (5210, Some(3))
        );
        let (_, usage) = outcome(
            200,
            r#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":null,"output_tokens":3}}"#,
        );
        assert_eq!(usage.tokens_in(), 10);
        let (o, _) = outcome(200, r#"{"usage":"odd"}"#);
        assert!(
            matches!(o, Outcome::Response { .. }),
            "valid JSON of another shape is kept"
        );
    }

    #[test]
    fn replies_that_are_not_json() {
        let (o, _) = outcome(200, r#"{"usage":"odd", nope"#);
        let Outcome::Error { code, message } = o else {
            panic!()
        };
        assert_eq!(code, "body_decode");
        assert!(message.starts_with("line 5: "), "{message}");
        let (o, _) = outcome(502, "<html>bad gateway</html>");
        let Outcome::Response {
            status_code: 502,
            body,
            ..
        } = o
        else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
        // JSON whose strings are not UTF-8 (serde_json skips them unchecked): not kept as is,
        // so the record stays UTF-8 text.
        let bytes = Bytes::from_static(b"{\"choices\":[{\"message\":{\"content\":\"\xff\xfe\"}}]}");
        let (o, _) = from_response(5, 200, "r".into(), bytes.clone());
        assert!(
            matches!(o, Outcome::Error { ref code, .. } if code == "body_decode"),
            "{o:?}"
        );
        let (o, _) = from_response(5, 500, "r".into(), bytes);
        let Outcome::Response { body, .. } = o else {
            panic!()
        };
        assert!(std::str::from_utf8(&body).is_ok());
    }

    /// A 2xx that is not JSON may have been paid for: its text is in the record (a byte that
    /// is not UTF-8 as U+FFFD), up to a bound.
    #[test]
    fn a_paid_reply_that_is_not_json_keeps_its_text() {
        let latin1 = Bytes::from_static(b"{\"choices\":[{\"message\":{\"content\":\"caf\xe9\"}}]}");
        let (o, _) = from_response(5, 200, "r".into(), latin1);
        let Outcome::Error { message, .. } = o else {
            panic!("{o:?}")
        };
        assert!(message.contains("\"content\":\"caf\u{fffd}\""), "{message}");
        let long = Bytes::from("x".repeat(MAX_KEPT_TEXT + 10));
        let (o, _) = from_response(5, 200, "r".into(), long);
        let Outcome::Error { message, .. } = o else {
            panic!("{o:?}")
        };
        assert!(message.contains(&format!("(the first {MAX_KEPT_TEXT} bytes)")));
        assert!(message.len() < MAX_KEPT_TEXT + 200, "{}", message.len());
    }
}
