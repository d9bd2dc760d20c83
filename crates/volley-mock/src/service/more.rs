//! The OpenAI endpoints besides chat and embeddings that a Batch file may name, and a model
//! by id: `/v1/completions` (legacy text completions), `/v1/responses` (the Responses API),
//! `/v1/moderations` and `GET /v1/models/{id}`. Each answers in OpenAI's shape, with the
//! mock's latency, faults and rate limits, so that `volley run --mock` and an SDK pointed at
//! the mock see every Batch URL work. None of them streams: a request with `"stream": true`
//! gets a 400 saying so, rather than a stream in a shape the mock does not keep up to date.

use std::io::Write as _;

use http::{Response, StatusCode};
use rand::Rng as _;
use rand::rngs::SmallRng;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Reply, Timing, unix_now, wait};
use crate::FaultKind;
use crate::body::MockBody;
use crate::openai::{self, BadRequest, write_json_str, write_usage};

/// The most choices a completion is answered with (prompts times `n`).
const MAX_COMPLETION_CHOICES: u32 = 1024;

/// The categories of an omni-moderation result, all unflagged.
const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// What these endpoints read of a request: the model, the input (measured, not parsed), the
/// output budget and whether a stream is asked for.
struct Generic<'a> {
    model: String,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
    /// The input, as sent (moderations counts its items).
    input: Option<&'a RawValue>,
    /// Completions: how many choices to answer with, `n` for each prompt (a `prompt` that is
    /// an array of strings, or of token arrays, is that many prompts).
    choices: u32,
}

impl<'a> Generic<'a> {
    /// Parses `body`; `input` names the field holding the input (`prompt` or `input`), which
    /// must be there; `model_required` is false for moderations, whose model is optional.
    fn parse(
        body: &'a [u8],
        input: &'static str,
        model_required: bool,
    ) -> Result<Self, BadRequest> {
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(default)]
            model: Option<String>,
            #[serde(default, borrow)]
            prompt: Option<&'a RawValue>,
            #[serde(default, borrow)]
            input: Option<&'a RawValue>,
            #[serde(default)]
            max_tokens: Option<u64>,
            #[serde(default)]
            max_output_tokens: Option<u64>,
            #[serde(default)]
            stream: Option<bool>,
            #[serde(default)]
            n: Option<u64>,
        }
        let raw: Raw<'a> = serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
        openai::at_least_one(raw.max_tokens, "max_tokens")?;
        openai::at_least_one(raw.max_output_tokens, "max_output_tokens")?;
        let model = match raw.model {
            Some(model) => model,
            None if model_required => return Err(BadRequest::missing("model")),
            None => "omni-moderation-latest".to_owned(),
        };
        let text = if input == "prompt" {
            raw.prompt
        } else {
            raw.input
        };
        let text = text.ok_or_else(|| BadRequest::missing(input))?;
        if raw.stream == Some(true) {
            return Err(BadRequest::invalid(
                "stream",
                "the mock answers this endpoint whole only; ask without \"stream\": true (mock)",
            ));
        }
        let choices = if input == "prompt" {
            let n = match raw.n {
                None => 1,
                Some(n @ 1..=openai::MAX_CHOICES) => n,
                Some(n) => {
                    return Err(BadRequest::invalid(
                        "n",
                        format!(
                            "{n} is not between 1 and {} - 'n' (mock)",
                            openai::MAX_CHOICES
                        ),
                    ));
                }
            };
            // A string, or one prompt's token array, is one prompt; an array of strings or of
            // token arrays is that many.
            let prompts = match serde_json::from_str::<Vec<&RawValue>>(text.get()) {
                Ok(items)
                    if items
                        .iter()
                        .any(|i| !i.get().starts_with(|c: char| c.is_ascii_digit())) =>
                {
                    items.len().max(1) as u64
                }
                _ => 1,
            };
            u32::try_from((n * prompts).min(u64::from(u32::MAX))).unwrap_or(u32::MAX)
        } else {
            1
        };
        if choices > MAX_COMPLETION_CHOICES {
            return Err(BadRequest::invalid(
                "prompt",
                format!(
                    "{choices} choices (prompts times n) is more than the mock answers, \
                     {MAX_COMPLETION_CHOICES} (mock)"
                ),
            ));
        }
        Ok(Generic {
            model,
            prompt_tokens: (text.get().len() as u64).div_ceil(4),
            max_tokens: raw.max_output_tokens.or(raw.max_tokens),
            input: Some(text),
            choices,
        })
    }

    /// The answer's length in tokens and whether the budget cut it.
    fn output(&self, drawn: u32) -> (u32, bool) {
        match self.max_tokens {
            Some(max) if max < u64::from(drawn) => (max as u32, true),
            _ => (drawn, false),
        }
    }
}

/// Which of the generated endpoints a request is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint {
    /// `POST /v1/completions`: a legacy text completion.
    Completions,
    /// `POST /v1/responses`: a Responses API answer with one output message.
    Responses,
    /// `POST /v1/moderations`: one unflagged result per input (a string, or an array of
    /// strings or content parts).
    Moderations,
}

/// Answers a request for `endpoint`: parsed, admitted by the rate limits (charged its input,
/// and its output when it generates one), its latency waited, then written; or stopped on
/// the way by a `400`, a `429` or an injected `500`.
pub(super) async fn answer(
    endpoint: Endpoint,
    reply: Reply,
    body: &[u8],
    fault: Option<FaultKind>,
    timing: Timing,
    mut rng: SmallRng,
) -> Response<MockBody> {
    let (input, generates) = match endpoint {
        Endpoint::Completions => ("prompt", true),
        Endpoint::Responses => ("input", true),
        Endpoint::Moderations => ("input", false),
    };
    let request = match Generic::parse(body, input, generates) {
        Ok(request) => request,
        Err(bad) => return reply.bad_request(&bad),
    };
    let (tokens, cut) = if generates {
        request.output(timing.output_tokens)
    } else {
        (0, false)
    };
    // Charged what the usage will report: every choice's answer.
    let output = u64::from(tokens) * u64::from(request.choices);
    let reply = match reply.admit(request.prompt_tokens + output, &request.model) {
        Ok(reply) => reply,
        Err(limited) => return *limited,
    };
    wait(timing.latency).await;
    if fault == Some(FaultKind::ServerError) {
        return reply.server_error();
    }
    let content = reply.shared().filler.content(tokens);
    let out = match endpoint {
        Endpoint::Completions => completion(&request, content, tokens, cut, &mut rng),
        Endpoint::Responses => response(&request, content, tokens, cut, &mut rng),
        Endpoint::Moderations => moderation(&request, &mut rng),
    };
    reply.json(StatusCode::OK, out.into(), fault)
}

/// A `text_completion` of `content` (`tokens` long, `cut` by the request's budget), as
/// every one of the request's choices (`n` for each prompt, in prompt order, as OpenAI
/// indexes them).
fn completion(
    request: &Generic<'_>,
    content: &str,
    tokens: u32,
    cut: bool,
    rng: &mut SmallRng,
) -> Vec<u8> {
    let choices = request.choices.max(1);
    let mut out =
        Vec::with_capacity(256 + request.model.len() + (content.len() + 64) * choices as usize);
    let _ = write!(
        out,
        r#"{{"id":"cmpl-mock{:016x}","object":"text_completion","created":{},"model":"#,
        rng.random::<u64>(),
        unix_now()
    );
    write_json_str(&mut out, &request.model);
    out.extend_from_slice(br#","choices":["#);
    let finish = if cut { "length" } else { "stop" };
    for index in 0..choices {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"text":"#);
        write_json_str(&mut out, content);
        let _ = write!(
            out,
            r#","index":{index},"logprobs":null,"finish_reason":"{finish}"}}"#
        );
    }
    out.extend_from_slice(br#"],"usage":"#);
    write_usage(
        &mut out,
        request.prompt_tokens,
        u64::from(tokens) * u64::from(choices),
    );
    out.extend_from_slice(b"}");
    out
}

/// A `response` with one output message of `content` (`tokens` long; `cut` by
/// `max_output_tokens`: then `"status": "incomplete"`).
fn response(
    request: &Generic<'_>,
    content: &str,
    tokens: u32,
    cut: bool,
    rng: &mut SmallRng,
) -> Vec<u8> {
    let (input, output) = (request.prompt_tokens, u64::from(tokens));
    let mut out = Vec::with_capacity(768 + request.model.len() + content.len());
    let (status, incomplete) = if cut {
        ("incomplete", r#"{"reason":"max_output_tokens"}"#)
    } else {
        ("completed", "null")
    };
    let _ = write!(
        out,
        r#"{{"id":"resp_mock{:016x}","object":"response","created_at":{},"status":"{status}","error":null,"incomplete_details":{incomplete},"instructions":null,"max_output_tokens":"#,
        rng.random::<u64>(),
        unix_now()
    );
    match request.max_tokens {
        Some(max) => {
            let _ = write!(out, "{max}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","model":"#);
    write_json_str(&mut out, &request.model);
    let _ = write!(
        out,
        r#","output":[{{"type":"message","id":"msg_mock{:016x}","status":"{status}","role":"assistant","content":[{{"type":"output_text","text":"#,
        rng.random::<u64>()
    );
    write_json_str(&mut out, content);
    let _ = write!(
        out,
        r#","annotations":[]}}]}}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{{"effort":null,"summary":null}},"store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}},"user":null,"metadata":{{}}}}"#,
        input + output
    );
    out
}

/// A moderation: one unflagged result per input.
fn moderation(request: &Generic<'_>, rng: &mut SmallRng) -> Vec<u8> {
    let items = request
        .input
        .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
        .map_or(1, |items| items.len().max(1));
    let mut out = Vec::with_capacity(128 + items * 900);
    let _ = write!(
        out,
        r#"{{"id":"modr-mock{:016x}","model":"#,
        rng.random::<u64>()
    );
    write_json_str(&mut out, &request.model);
    out.extend_from_slice(br#","results":["#);
    for item in 0..items {
        if item > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"flagged":false,"categories":{"#);
        for (n, category) in MODERATION_CATEGORIES.iter().enumerate() {
            let comma = if n > 0 { "," } else { "" };
            let _ = write!(out, r#"{comma}"{category}":false"#);
        }
        out.extend_from_slice(br#"},"category_scores":{"#);
        for (n, category) in MODERATION_CATEGORIES.iter().enumerate() {
            let comma = if n > 0 { "," } else { "" };
            let _ = write!(out, r#"{comma}"{category}":0.0001"#);
        }
        // Which input types each category was checked on: text, for text inputs.
        out.extend_from_slice(br#"},"category_applied_input_types":{"#);
        for (n, category) in MODERATION_CATEGORIES.iter().enumerate() {
            let comma = if n > 0 { "," } else { "" };
            let _ = write!(out, r#"{comma}"{category}":["text"]"#);
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// `GET /v1/models/{id}`: the model of that id from the list, or OpenAI's 404
/// `model_not_found`; for an Anthropic client (`anthropic`: it sent `anthropic-version`), from
/// Anthropic's list, or its 404 `not_found_error`.
pub(super) async fn model(
    reply: Reply,
    id: &str,
    anthropic: bool,
    fault: Option<FaultKind>,
    timing: Timing,
) -> Response<MockBody> {
    let reply = match reply.admit(0, "models") {
        Ok(reply) => reply,
        Err(limited) => return *limited,
    };
    wait(timing.latency).await;
    if fault == Some(FaultKind::ServerError) {
        return reply.server_error();
    }
    let list = if anthropic {
        openai::ANTHROPIC_MODELS_BODY
    } else {
        openai::MODELS_BODY
    };
    let list: serde_json::Value = serde_json::from_str(list).expect("the model list is JSON");
    let found = list["data"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["id"] == id));
    match found {
        Some(model) => reply.json(StatusCode::OK, model.to_string().into(), fault),
        None if anthropic => {
            let message = format!("model: {id} (mock)");
            super::anthropic::rejection(reply, StatusCode::NOT_FOUND, "not_found_error", &message)
        }
        None => {
            let message = format!("The model '{id}' does not exist (mock)");
            let body = openai::error_body(
                &message,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            );
            reply.json(StatusCode::NOT_FOUND, body.into(), None)
        }
    }
}
