//! `POST /v1/messages`: Anthropic's Messages API, plain and streaming, beside the OpenAI
//! endpoints and through the same latency, fault, capacity and rate-limit machinery.
//!
//! The dialect changes what each fault looks like, not when it happens: the `503` fault
//! (`unavailable`) is answered as Anthropic answers overload, `529` with an
//! `overloaded_error`; `429` is a `rate_limit_error`, `500` an `api_error`. The limiter's
//! headers are sent as `anthropic-ratelimit-*` (resets as RFC 3339 times) and every answer
//! carries a `request-id`. Either auth header is accepted (`Authorization: Bearer`,
//! `x-api-key`), and `anthropic-version` is required, as by the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use rand::Rng as _;
use rand::rngs::SmallRng;
use volley_core::Dialect;
use volley_core::anthropic::{MessagesRequest, REQUEST_ID_HEADER};

use super::{Reply, Timing, wait};
use crate::FaultKind;
use crate::body::{MockBody, SseStream, StreamFault, StreamPlan};

/// The status Anthropic answers when it is overloaded.
const OVERLOADED: u16 = 529;

/// Answers a Messages request whose body has been read.
pub(super) async fn messages(
    reply: Reply,
    body: &[u8],
    has_version: bool,
    fault: Option<FaultKind>,
    timing: Timing,
    mut rng: SmallRng,
) -> Response<MockBody> {
    let request_id = format!("req_mock{:016x}", rng.random::<u64>());
    let response = answer(reply, body, has_version, fault, timing, rng).await;
    anthropic_headers(response, &request_id)
}

async fn answer(
    reply: Reply,
    body: &[u8],
    has_version: bool,
    fault: Option<FaultKind>,
    timing: Timing,
    mut rng: SmallRng,
) -> Response<MockBody> {
    if !has_version {
        return error(
            reply,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required (mock)",
        );
    }
    match fault {
        Some(FaultKind::RateLimit) => {
            let shared = reply.shared();
            shared.counters.fault(FaultKind::RateLimit);
            let (secs, _) = shared.retry_after.clone();
            let message = "Number of requests has exceeded your rate limit (mock)";
            let mut response = error(
                reply,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                message,
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, secs);
            return response;
        }
        Some(FaultKind::Unavailable) => return overloaded(reply),
        _ => {}
    }
    let request: MessagesRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("invalid Messages request: {e} (mock)");
            return error(
                reply,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &message,
            );
        }
    };
    if request.max_tokens == 0 {
        return error(
            reply,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Input should be greater than or equal to 1 (mock)",
        );
    }
    let prompt_tokens = prompt_tokens(&request);
    let (tokens, stop_reason) = if request.max_tokens < timing.output_tokens {
        (request.max_tokens, "max_tokens")
    } else {
        (timing.output_tokens, "end_turn")
    };
    let reply = match reply.admit(prompt_tokens + u64::from(tokens), &request.model) {
        Ok(reply) => reply,
        Err(limited) => {
            // The limiter's 429 and its waits, with Anthropic's body. (The body is plain, so
            // the in-flight count drops when the head is sent.)
            let mut limited = *limited;
            let message = "This request would exceed your organization's rate limit (mock)";
            limited.headers_mut().remove(http::header::CONTENT_ENCODING);
            *limited.body_mut() = MockBody::full(error_body("rate_limit_error", message), None);
            return limited;
        }
    };
    let id = format!("msg_mock{:016x}", rng.random::<u64>());
    let model = json_string(&request.model);
    let shared = reply.guard.owner().clone();

    if request.stream == Some(true) {
        if fault == Some(FaultKind::ServerError) {
            wait(timing.ttft).await;
            return api_error(reply);
        }
        let fault = match fault {
            Some(kind @ FaultKind::Cut) => {
                shared.counters.fault(kind);
                StreamFault::Cut
            }
            Some(kind @ FaultKind::Malformed) => {
                shared.counters.fault(kind);
                StreamFault::Malformed
            }
            _ => StreamFault::None,
        };
        let start = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":{model},\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{prompt_tokens},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n\
             event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
             event: ping\ndata: {{\"type\":\"ping\"}}\n\n"
        );
        let plan = StreamPlan {
            prefix: start.into_bytes(),
            tokens,
            finish_reason: stop_reason,
            include_usage: false,
            prompt_tokens,
            ttft: timing.ttft,
            inter_token: shared.config.inter_token,
            fault,
            dialect: Dialect::Anthropic,
            choices: 1,
        };
        return reply.sse(SseStream::new(shared, plan, rng));
    }

    wait(timing.latency).await;
    if fault == Some(FaultKind::ServerError) {
        return api_error(reply);
    }
    let text = shared.filler.content(tokens);
    let out = format!(
        "{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"stop_reason\":\"{stop_reason}\",\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{prompt_tokens},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":{tokens}}}}}"
    );
    reply.json(StatusCode::OK, out.into(), fault)
}

/// The frames of an Anthropic stream: `i` of `token_events` text deltas (the first after the
/// plan's `message_start` and `content_block_start`), then one frame that closes the block
/// and the message.
pub(crate) fn render(
    plan: &StreamPlan,
    token: &str,
    i: u32,
    token_events: u32,
    malformed: bool,
) -> Bytes {
    if i >= token_events {
        return format!(
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
            plan.finish_reason, plan.tokens
        )
        .into();
    }
    let mut out = Vec::with_capacity(plan.prefix.len() + 128);
    if i == 0 {
        out.extend_from_slice(&plan.prefix);
    }
    if malformed {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":\n\n",
        );
        return out.into();
    }
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
    );
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\"}}\n\n");
    out.into()
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
fn error_body(kind: &str, message: &str) -> Bytes {
    format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{}}}}}",
        json_string(message)
    )
    .into()
}

fn error(reply: Reply, status: StatusCode, kind: &str, message: &str) -> Response<MockBody> {
    reply.json(status, error_body(kind, message), None)
}

/// A rejection made before the request reached the Messages endpoint's own handling (auth,
/// routing, the mock's headers, the body's size, capacity), in Anthropic's dialect, with a
/// `request-id` as every Anthropic answer has.
pub(super) fn rejection(
    reply: Reply,
    status: StatusCode,
    kind: &str,
    message: &str,
) -> Response<MockBody> {
    // Counted, not drawn: the request's seeded draws stay as they were.
    static REJECTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REJECTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = format!("req_mockrejected{n:08x}");
    anthropic_headers(error(reply, status, kind, message), &request_id)
}

/// Over the mock's capacity, as Anthropic answers overload: 529, `overloaded_error`.
pub(super) fn overloaded_rejection(reply: Reply) -> Response<MockBody> {
    let status = StatusCode::from_u16(OVERLOADED).expect("529 is a valid status");
    rejection(reply, status, "overloaded_error", "Overloaded (mock)")
}

fn overloaded(reply: Reply) -> Response<MockBody> {
    reply.shared().counters.fault(FaultKind::Unavailable);
    let status = StatusCode::from_u16(OVERLOADED).expect("529 is a valid status");
    error(reply, status, "overloaded_error", "Overloaded (mock)")
}

fn api_error(reply: Reply) -> Response<MockBody> {
    reply.shared().counters.fault(FaultKind::ServerError);
    error(
        reply,
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "Internal server error (mock)",
    )
}

/// Renames the limiter's `x-ratelimit-*` headers to Anthropic's, with resets as RFC 3339
/// times, and adds the `request-id`.
fn anthropic_headers(mut response: Response<MockBody>, request_id: &str) -> Response<MockBody> {
    let headers = response.headers_mut();
    rename_limits(headers, SystemTime::now());
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    response
}

/// The prompt's tokens as the OpenAI routes count them: a token per four bytes of text
/// (system prompt and text blocks). Cheap on purpose: the mock shares its process with the
/// client in `volley bench --mock`, whose CPU per request it would otherwise inflate.
fn prompt_tokens(request: &MessagesRequest) -> u64 {
    use volley_core::anthropic::{ContentBlock, MessageContent, SystemPrompt};
    let blocks = |blocks: &[ContentBlock]| -> usize {
        blocks
            .iter()
            .map(|b| match b {
                ContentBlock::Text(t) => t.text.len(),
                _ => 0,
            })
            .sum()
    };
    let system = match &request.system {
        Some(SystemPrompt::Text(text)) => text.len(),
        Some(SystemPrompt::Blocks(b)) => blocks(b),
        None => 0,
    };
    let messages: usize = request
        .messages
        .iter()
        .map(|m| match &m.content {
            MessageContent::Text(text) => text.len(),
            MessageContent::Blocks(b) => blocks(b),
        })
        .sum();
    ((system + messages) as u64).div_ceil(4).max(1)
}

/// The OpenAI-style limit headers the shared limiter wrote, and Anthropic's names for them.
const RENAMED_LIMITS: [(&str, &str); 6] = [
    (
        "x-ratelimit-limit-requests",
        "anthropic-ratelimit-requests-limit",
    ),
    (
        "x-ratelimit-remaining-requests",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "x-ratelimit-reset-requests",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "x-ratelimit-limit-tokens",
        "anthropic-ratelimit-tokens-limit",
    ),
    (
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-tokens-reset",
    ),
];

fn rename_limits(headers: &mut HeaderMap, now: SystemTime) {
    for (from, to) in RENAMED_LIMITS {
        let Some(value) = headers.remove(from) else {
            continue;
        };
        let value = if from.starts_with("x-ratelimit-reset") {
            let Some(wait) = value
                .to_str()
                .ok()
                .and_then(volley_core::headers::parse_duration)
            else {
                continue;
            };
            // Digits, dashes, colons and letters: always a valid header value.
            HeaderValue::try_from(rfc3339(now + wait)).expect("ASCII time")
        } else {
            value
        };
        headers.insert(HeaderName::from_static(to), value);
    }
}

/// `at` as an RFC 3339 UTC time with whole seconds, rounded up (a client that waits until
/// then is within its quota).
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_rfc3339_times_that_core_reads_back() {
        let now = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(rfc3339(now), "2024-02-29T12:00:00Z");
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from_static("60"));
        headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("1.5s"));
        rename_limits(&mut headers, now);
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
        assert_eq!(headers["anthropic-ratelimit-requests-limit"], "60");
        assert_eq!(
            headers["anthropic-ratelimit-tokens-reset"],
            "2024-02-29T12:00:02Z"
        );
        let info = Dialect::Anthropic.rate_limits(&headers, now);
        assert_eq!(info.limit_requests, Some(60));
        assert_eq!(info.reset_tokens, Some(Duration::from_secs(2)));
    }
}
