//! The per-connection service: routing, authentication, fault and latency decisions, and the
//! OpenAI endpoints.

use std::future::{Future, ready};
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use crate::body::{Abort, MockBody, SseStream, StreamFault, StreamPlan};
use crate::config::{MAX_EMBEDDING_DIMS, retry_after_values};
use crate::conn::ResetHandle;
use crate::openai::{self, BadRequest, ChatRequest, Completion, EmbeddingsRequest};
use crate::rate_limit::{Dimension, Rejection};
use crate::shared::{Guard, Shared};
use crate::{FAULT_HEADER, FaultKind, LATENCY_HEADER, Latency, encoding};

mod anthropic;
mod more;

pub(crate) use anthropic::render as render_anthropic;

/// Request bodies above this size get a `413`.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The service of one connection.
pub(crate) struct MockService {
    shared: Arc<Shared>,
    reset: ResetHandle,
}

impl MockService {
    pub(crate) fn new(shared: Arc<Shared>, reset: ResetHandle) -> Self {
        Self { shared, reset }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<MockBody>, Abort>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for MockService {
    type Response = Response<MockBody>;
    type Error = Abort;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> ResponseFuture {
        let shared = &self.shared;
        let route = Route::of(req.method(), req.uri().path());
        let api = match route {
            Route::Stats => return done(stats_response(&shared.counters.snapshot())),
            Route::StatsReset => return done(stats_response(&shared.reset())),
            Route::Journal => return done(journal_response(shared)),
            Route::Api(api) => Some(api),
            Route::NotFound | Route::MethodNotAllowed(_) => None,
        };
        let journaled = if api.is_some() {
            shared.record(req.headers())
        } else {
            None
        };
        let index = shared.counters.request_started();
        let reply = Reply {
            guard: Guard::new(shared.clone()),
            gzip: shared.config.gzip && accepts_gzip(req.headers()),
            azure: req.uri().path().starts_with("/openai/"),
            journaled,
            messages: crate::azure::api_path(req.uri().path()).starts_with("/messages"),
            index,
        };
        let Some(api) = api else {
            let response = match route {
                Route::MethodNotAllowed(allow) => reply.method_not_allowed(req.method(), allow),
                _ => reply.not_found(req.method(), req.uri().path()),
            };
            return after_body(req, response);
        };
        if !shared.authorized(req.headers(), req.uri().path()) {
            let response = reply.unauthorized(req.headers());
            return after_body(req, response);
        }
        if crate::azure::lacks_api_version(req.uri()) {
            let response = reply.not_found(req.method(), req.uri().path());
            return after_body(req, response);
        }

        // Every request makes the same draws in the same order, forced or not, so a request's
        // outcome depends only on the seed and its arrival index.
        let config = &shared.config;
        let mut rng =
            SmallRng::seed_from_u64(config.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let roll: f64 = rng.random();
        let mut timing = Timing {
            latency: config.latency.sample(&mut rng),
            ttft: config.effective_ttft().sample(&mut rng),
            output_tokens: config.output_tokens.sample(&mut rng),
        };
        let fault = match forced_fault(req.headers()) {
            Ok(Some(kind)) => Some(kind),
            Ok(None) => config.faults.pick(roll),
            Err(bad) => return after_body(req, reply.bad_request(&bad)),
        };
        match latency_override(req.headers()) {
            Ok(Some(latency)) => {
                let latency = latency.sample(&mut rng);
                timing.latency = latency;
                timing.ttft = latency;
            }
            Ok(None) => {}
            Err(bad) => return after_body(req, reply.bad_request(&bad)),
        }
        if config.capacity != crate::Capacity::UNLIMITED {
            // This request is among those in flight already.
            let in_flight = shared.counters.in_flight();
            if !config.capacity.admits(in_flight) {
                return after_body(req, reply.over_capacity());
            }
            timing.latency = config.capacity.stretch(timing.latency, in_flight);
            timing.ttft = config.capacity.stretch(timing.ttft, in_flight);
        }

        match fault {
            Some(FaultKind::Reset) => {
                shared.counters.fault(FaultKind::Reset);
                // On HTTP/2 the service error resets just this stream; on HTTP/1 the
                // connection closes, with an RST thanks to this.
                if req.version() <= Version::HTTP_11 {
                    self.reset.arm();
                }
                drop(reply);
                done_err(Abort::Reset)
            }
            Some(FaultKind::Stall) => {
                shared.counters.fault(FaultKind::Stall);
                let stall = config.stall_duration;
                Box::pin(async move {
                    tokio::time::sleep(stall).await;
                    drop(reply);
                    Err(Abort::Stall)
                })
            }
            _ => Box::pin(respond(reply, api, req, fault, timing, rng)),
        }
    }
}

/// The API endpoints.
#[derive(Debug, Clone, Copy)]
enum Api {
    Chat,
    Embeddings,
    Models,
    /// `GET /v1/models/{id}`.
    Model,
    /// Legacy completions, the Responses API, moderations.
    Generated(more::Endpoint),
    /// Anthropic's `/v1/messages`.
    Messages,
}

fn generated(endpoint: more::Endpoint) -> Route {
    Route::Api(Api::Generated(endpoint))
}

/// The id of a `/models/{id}` path (one segment, not empty).
fn model_id(api_path: &str) -> Option<&str> {
    api_path
        .strip_prefix("/models/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Api(Api),
    Stats,
    StatsReset,
    Journal,
    NotFound,
    MethodNotAllowed(&'static str),
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let allow = |allowed: Method, ok: Route| {
            if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
                ok
            } else if allowed == Method::GET {
                Route::MethodNotAllowed("GET")
            } else {
                Route::MethodNotAllowed("POST")
            }
        };
        let api_path = crate::azure::api_path(path);
        match (path, api_path) {
            ("/stats", _) => allow(Method::GET, Route::Stats),
            ("/stats/reset", _) => allow(Method::POST, Route::StatsReset),
            ("/journal", _) => allow(Method::GET, Route::Journal),
            (_, "/chat/completions") => allow(Method::POST, Route::Api(Api::Chat)),
            (_, "/embeddings") => allow(Method::POST, Route::Api(Api::Embeddings)),
            (_, "/models") => allow(Method::GET, Route::Api(Api::Models)),
            (_, "/messages") => allow(Method::POST, Route::Api(Api::Messages)),
            (_, "/completions") => allow(Method::POST, generated(more::Endpoint::Completions)),
            (_, "/responses") => allow(Method::POST, generated(more::Endpoint::Responses)),
            (_, "/moderations") => allow(Method::POST, generated(more::Endpoint::Moderations)),
            (_, model) if model_id(model).is_some() => allow(Method::GET, Route::Api(Api::Model)),
            _ => Route::NotFound,
        }
    }
}

/// The request's draws that shape its timing and length.
struct Timing {
    latency: Duration,
    ttft: Duration,
    output_tokens: u32,
}

async fn respond(
    reply: Reply,
    api: Api,
    req: Request<Incoming>,
    fault: Option<FaultKind>,
    timing: Timing,
    rng: SmallRng,
) -> Result<Response<MockBody>, Abort> {
    let has_version = req.headers().contains_key("anthropic-version");
    let model = model_id(crate::azure::api_path(req.uri().path())).map(str::to_owned);
    let refuses_stream_options = crate::azure::refuses_stream_options(req.uri());
    // Read the whole body first, even for a rejection, so an HTTP/1 connection stays usable.
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Ok(reply.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &BadRequest {
                    message: format!("request body above {MAX_REQUEST_BODY} bytes (mock)"),
                    param: None,
                    code: None,
                },
            ));
        }
        // The client went away mid-request: nobody is left to answer.
        Err(_) => return Err(Abort::RequestBody),
    };
    // The Messages API answers these faults in its own dialect.
    let openai_api = !matches!(api, Api::Messages);
    match fault {
        Some(FaultKind::RateLimit) if openai_api => return Ok(reply.rate_limited()),
        Some(FaultKind::Unavailable) if openai_api => return Ok(reply.unavailable()),
        _ => {}
    }
    match api {
        Api::Messages => {
            Ok(anthropic::messages(reply, &body, has_version, fault, timing, rng).await)
        }
        Api::Chat => {
            let chat = chat(reply, &body, refuses_stream_options, fault, timing, rng);
            Ok(chat.await)
        }
        Api::Embeddings => Ok(embeddings(reply, &body, fault, timing.latency).await),
        Api::Generated(endpoint) => {
            Ok(more::answer(endpoint, reply, &body, fault, timing, rng).await)
        }
        Api::Model => {
            let id = model.unwrap_or_default();
            Ok(more::model(reply, &id, has_version, fault, timing).await)
        }
        Api::Models => {
            let reply = match reply.admit(0, "models") {
                Ok(reply) => reply,
                Err(limited) => return Ok(*limited),
            };
            wait(timing.latency).await;
            if fault == Some(FaultKind::ServerError) {
                return Ok(reply.server_error());
            }
            // An Anthropic client (it sends `anthropic-version`) gets Anthropic's list.
            let list = if has_version {
                openai::ANTHROPIC_MODELS_BODY
            } else {
                openai::MODELS_BODY
            };
            Ok(reply.json(StatusCode::OK, Bytes::from_static(list.as_bytes()), fault))
        }
    }
}

/// A chat completion; `refuses_stream_options` for an Azure API version older than
/// `stream_options` (then a request that has it is answered 400, as Azure answers it).
async fn chat(
    reply: Reply,
    body: &[u8],
    refuses_stream_options: bool,
    fault: Option<FaultKind>,
    timing: Timing,
    mut rng: SmallRng,
) -> Response<MockBody> {
    let request = match ChatRequest::parse(body) {
        Ok(request) => request,
        Err(bad) => return reply.bad_request(&bad),
    };
    if request.has_stream_options && !request.stream {
        let bad = BadRequest {
            message: "The 'stream_options' parameter is only allowed when 'stream' is enabled."
                .into(),
            param: Some("stream_options"),
            code: None,
        };
        return reply.bad_request(&bad);
    }
    if refuses_stream_options && request.has_stream_options {
        let bad = BadRequest {
            message: "Unrecognized request argument supplied: stream_options".into(),
            param: None,
            code: None,
        };
        return reply.bad_request(&bad);
    }
    let (tokens, finish_reason) = match request.max_tokens {
        Some(max) if max < u64::from(timing.output_tokens) => (max as u32, "length"),
        _ => (timing.output_tokens, "stop"),
    };
    // Charged what the usage will report: the answer's length is known already.
    let completion_tokens = u64::from(tokens) * u64::from(request.choices);
    let cost = request.prompt_tokens.saturating_add(completion_tokens);
    let reply = match reply.admit(cost, &request.model) {
        Ok(reply) => reply,
        Err(limited) => return *limited,
    };
    let id = format!("chatcmpl-mock{:016x}", rng.random::<u64>());
    let created = unix_now();
    let shared = reply.guard.owner().clone();

    if request.stream {
        if fault == Some(FaultKind::ServerError) {
            wait(timing.ttft).await;
            return reply.server_error();
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
        let plan = StreamPlan {
            prefix: openai::chunk_prefix(&id, created, &request.model),
            dialect: volley_core::Dialect::OpenAi,
            tokens,
            finish_reason,
            include_usage: request.include_usage,
            prompt_tokens: request.prompt_tokens,
            ttft: timing.ttft,
            inter_token: shared.config.inter_token,
            fault,
            choices: request.choices,
        };
        return reply.sse(SseStream::new(shared, plan, rng));
    }

    wait(timing.latency).await;
    if fault == Some(FaultKind::ServerError) {
        return reply.server_error();
    }
    let content = shared.filler.content(tokens);
    let mut out = Vec::with_capacity(320 + request.model.len() + content.len());
    Completion {
        id: &id,
        created,
        model: &request.model,
        content,
        finish_reason,
        prompt_tokens: request.prompt_tokens,
        completion_tokens,
        choices: request.choices,
    }
    .write(&mut out);
    reply.json(StatusCode::OK, out.into(), fault)
}

async fn embeddings(
    reply: Reply,
    body: &[u8],
    fault: Option<FaultKind>,
    latency: Duration,
) -> Response<MockBody> {
    let request = match EmbeddingsRequest::parse(body) {
        Ok(request) => request,
        Err(bad) => return reply.bad_request(&bad),
    };
    let reply = match reply.admit(request.prompt_tokens, &request.model) {
        Ok(reply) => reply,
        Err(limited) => return *limited,
    };
    let dims = match request.dimensions {
        None => reply.guard.owner().config.embedding_dims,
        Some(d) if (1..=MAX_EMBEDDING_DIMS as u64).contains(&d) => d as usize,
        Some(d) => {
            return reply.bad_request(&BadRequest {
                message: format!("dimensions {d} is not in 1..={MAX_EMBEDDING_DIMS} (mock)"),
                param: Some("dimensions"),
                code: None,
            });
        }
    };
    wait(latency).await;
    if fault == Some(FaultKind::ServerError) {
        return reply.server_error();
    }
    let mut out = Vec::with_capacity(96 + request.inputs.len() * (40 + dims * 12));
    openai::write_embeddings(&mut out, &request, dims, &mut Vec::with_capacity(dims));
    reply.json(StatusCode::OK, out.into(), fault)
}

/// Builds the responses of one request, counting each by status as it is made.
struct Reply {
    guard: Guard,
    gzip: bool,
    /// Whether the request came by an Azure OpenAI path (`/openai/…`): its rate-limit
    /// headers are only `x-ratelimit-remaining-*`, as Azure sends them.
    azure: bool,
    /// The request's id in the journal, when it is on: a successful answer records it.
    journaled: Option<Box<str>>,
    /// Whether the request came for Anthropic's Messages API (`/v1/messages…`): every
    /// rejection is then in its dialect, even one made before the body is read.
    messages: bool,
    /// The request's arrival index: OpenAI answers carry it as `x-request-id`.
    index: u64,
}

impl Reply {
    fn shared(&self) -> &Shared {
        self.guard.owner()
    }

    /// A JSON response, damaged as `fault` says (`malformed` and `cut`; other faults are
    /// handled before a body exists).
    fn json(self, status: StatusCode, body: Bytes, fault: Option<FaultKind>) -> Response<MockBody> {
        let counters = &self.shared().counters;
        counters.response(status.as_u16());
        let mut body = body;
        if fault == Some(FaultKind::Malformed) {
            counters.fault(FaultKind::Malformed);
            // A proper prefix of a JSON object is never valid JSON.
            body.truncate(body.len() / 2);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, APPLICATION_JSON);
        self.answer_headers(response.headers_mut());
        if self.gzip {
            body = encoding::gzip(&body).into();
            response
                .headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let body = if fault == Some(FaultKind::Cut) {
            counters.fault(FaultKind::Cut);
            MockBody::cut(body, Some(self.guard))
        } else {
            let answered = self.journaled.filter(|_| status.is_success());
            MockBody::full(body, Some(self.guard)).journaled(answered)
        };
        response.map(|()| body)
    }

    fn error(self, status: StatusCode, bad: &BadRequest) -> Response<MockBody> {
        if self.messages {
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request_too_large"
            } else {
                "invalid_request_error"
            };
            return anthropic::rejection(self, status, kind, &bad.message);
        }
        let body = openai::error_body(&bad.message, "invalid_request_error", bad.param, bad.code);
        self.json(status, body.into(), None)
    }

    fn bad_request(self, bad: &BadRequest) -> Response<MockBody> {
        self.error(StatusCode::BAD_REQUEST, bad)
    }

    fn not_found(self, method: &Method, path: &str) -> Response<MockBody> {
        let message =
            format!("Unknown request URL: {method} {path}. Please check the URL for typos. (mock)");
        if self.messages {
            return anthropic::rejection(self, StatusCode::NOT_FOUND, "not_found_error", &message);
        }
        let body = openai::error_body(&message, "invalid_request_error", None, Some("unknown_url"));
        self.json(StatusCode::NOT_FOUND, body.into(), None)
    }

    fn method_not_allowed(self, method: &Method, allow: &'static str) -> Response<MockBody> {
        let message = format!("Method {method} is not allowed here; use {allow}. (mock)");
        let mut response = if self.messages {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            anthropic::rejection(self, status, "invalid_request_error", &message)
        } else {
            let body = openai::error_body(
                &message,
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            );
            self.json(StatusCode::METHOD_NOT_ALLOWED, body.into(), None)
        };
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        response
    }

    /// A `401` that quotes the key the request presented, as OpenAI's does (`Incorrect API
    /// key provided: sk-...`), but whole: a client that shows the provider's message without
    /// scrubbing its own key shows the key, and its key-leak tests see it.
    fn unauthorized(self, headers: &HeaderMap) -> Response<MockBody> {
        if self.messages {
            let status = StatusCode::UNAUTHORIZED;
            return anthropic::rejection(self, status, "authentication_error", "invalid x-api-key");
        }
        let presented = Shared::presented_key(headers);
        // No key at all is told apart, as OpenAI tells it (and without a code).
        let (message, code) = if presented.is_empty() {
            (
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). \
                 (mock)"
                    .to_owned(),
                None,
            )
        } else {
            (
                format!("Incorrect API key provided: {presented}. (mock)"),
                Some("invalid_api_key"),
            )
        };
        let body = openai::error_body(&message, "invalid_request_error", None, code);
        self.json(StatusCode::UNAUTHORIZED, body.into(), None)
    }

    fn rate_limited(self) -> Response<MockBody> {
        let shared = self.shared();
        shared.counters.fault(FaultKind::RateLimit);
        let body = shared.rate_limit_body.clone();
        let (secs, millis) = shared.retry_after.clone();
        let mut response = self.json(StatusCode::TOO_MANY_REQUESTS, body, None);
        let headers = response.headers_mut();
        headers.insert(http::header::RETRY_AFTER, secs);
        headers.insert(RETRY_AFTER_MS, millis);
        response
    }

    /// Charges the request to the rate limiter, if there is one; a refused request gets its
    /// `429` instead.
    fn admit(self, tokens: u64, model: &str) -> Result<Reply, Box<Response<MockBody>>> {
        let Some(limiter) = &self.shared().limiter else {
            return Ok(self);
        };
        match limiter.admit(tokens, model, tokio::time::Instant::now()) {
            Ok(()) => Ok(self),
            // Boxed: a refusal is the rare path, and the response is large next to a `Reply`.
            Err(rejection) => Err(Box::new(self.limited(rejection))),
        }
    }

    /// The `429` of the rate limiter (not an injected fault).
    fn limited(self, rejection: Rejection) -> Response<MockBody> {
        self.shared().counters.rate_limited();
        let kind = match rejection.dimension {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
        };
        let body = openai::error_body(&rejection.message, kind, None, Some("rate_limit_exceeded"));
        let mut response = self.json(StatusCode::TOO_MANY_REQUESTS, body.into(), None);
        if let Some(wait) = rejection.retry_after {
            // Rounded up to the millisecond: a client that waits exactly this long fits.
            let millis = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            let (secs, millis) = retry_after_values(Duration::from_millis(millis));
            let headers = response.headers_mut();
            // Decimal digits are always a valid header value.
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::try_from(secs).expect("digits are a valid header value"),
            );
            headers.insert(
                RETRY_AFTER_MS,
                HeaderValue::try_from(millis).expect("digits are a valid header value"),
            );
        }
        response
    }

    /// The headers every answer gets: on an OpenAI path its `x-request-id` (Anthropic's
    /// `request-id` is added by its module), and the `x-ratelimit-*` headers when rate limits
    /// are configured (limit, remaining and reset as OpenAI sends them, or only the remaining
    /// ones on Azure paths).
    fn answer_headers(&self, headers: &mut HeaderMap) {
        if !self.messages {
            let mut id = [0u8; 24];
            let mut cursor = &mut id[..];
            let _ = write!(cursor, "req_mock{:016x}", self.index);
            if let Ok(value) = HeaderValue::from_bytes(&id) {
                headers.insert(X_REQUEST_ID, value);
            }
        }
        if let Some(limiter) = &self.shared().limiter {
            limiter.write_headers(headers, tokio::time::Instant::now());
            if self.azure {
                crate::rate_limit::keep_remaining_only(headers);
            }
        }
    }

    fn unavailable(self) -> Response<MockBody> {
        let shared = self.shared();
        shared.counters.fault(FaultKind::Unavailable);
        let body = shared.unavailable_body.clone();
        let retry = shared.unavailable_retry_after.clone();
        let mut response = self.json(StatusCode::SERVICE_UNAVAILABLE, body, None);
        if let Some((secs, millis)) = retry {
            let headers = response.headers_mut();
            headers.insert(http::header::RETRY_AFTER, secs);
            headers.insert(RETRY_AFTER_MS, millis);
        }
        response
    }

    /// The `503` of a request beyond the server's capacity (not an injected fault).
    fn over_capacity(self) -> Response<MockBody> {
        let shared = self.shared();
        let body = shared.unavailable_body.clone();
        let retry = shared.unavailable_retry_after.clone();
        let mut response = if self.messages {
            // Anthropic answers overload with 529 and an `overloaded_error`.
            anthropic::overloaded_rejection(self)
        } else {
            self.json(StatusCode::SERVICE_UNAVAILABLE, body, None)
        };
        if let Some((secs, millis)) = retry {
            let headers = response.headers_mut();
            headers.insert(http::header::RETRY_AFTER, secs);
            headers.insert(RETRY_AFTER_MS, millis);
        }
        response
    }

    fn server_error(self) -> Response<MockBody> {
        let shared = self.shared();
        shared.counters.fault(FaultKind::ServerError);
        let body = shared.server_error_body.clone();
        self.json(StatusCode::INTERNAL_SERVER_ERROR, body, None)
    }

    fn sse(self, stream: SseStream) -> Response<MockBody> {
        self.shared().counters.response(200);
        let mut headers = HeaderMap::new();
        self.answer_headers(&mut headers);
        let body = MockBody::stream(stream, self.guard).journaled(self.journaled);
        let mut response = Response::new(body);
        *response.headers_mut() = headers;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        response
    }
}

fn stats_response(stats: &crate::Stats) -> Response<MockBody> {
    // `Stats` holds only numbers, strings and maps with string keys: it always serialises.
    let body = serde_json::to_vec(stats).expect("stats serialise");
    let mut response = Response::new(MockBody::full(body.into(), None));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `GET /journal`: the journal as a JSON array of strings, or a `404` saying how to turn it on.
fn journal_response(shared: &Shared) -> Response<MockBody> {
    let (status, body) = if shared.journal.is_some() {
        // A list of strings always serialises.
        let body = serde_json::to_vec(&shared.journal()).expect("strings serialise");
        (StatusCode::OK, body)
    } else {
        let message = "the journal is off; start the mock with MockConfig::journal (--journal)";
        (
            StatusCode::NOT_FOUND,
            openai::error_body(message, "invalid_request_error", None, None),
        )
    };
    let mut response = Response::new(MockBody::full(body.into(), None));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `x-mock-fault`, when present: a fault kind, or a `400` for anything else.
fn forced_fault(headers: &HeaderMap) -> Result<Option<FaultKind>, BadRequest> {
    let Some(value) = headers.get(FAULT_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| BadRequest {
            message: format!(
                "invalid {FAULT_HEADER} header: expected 429, 500, 503, reset, stall, cut or malformed (mock)"
            ),
            param: None,
            code: None,
        })
}

/// `x-mock-latency`, when present: a latency model, or a `400` for anything else.
fn latency_override(headers: &HeaderMap) -> Result<Option<Latency>, BadRequest> {
    let Some(value) = headers.get(LATENCY_HEADER) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .map_err(|_| format!("invalid {LATENCY_HEADER} header: not ASCII"))
        .and_then(|s| {
            s.parse::<Latency>()
                .map_err(|e| format!("invalid {LATENCY_HEADER} header: {e}"))
        });
    parsed.map(Some).map_err(|message| BadRequest {
        message,
        param: None,
        code: None,
    })
}

/// Whether `Accept-Encoding` allows gzip (named with a non-zero quality).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            name.eq_ignore_ascii_case("gzip") && quality > 0.0
        })
}

async fn wait(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn done(response: Response<MockBody>) -> ResponseFuture {
    Box::pin(ready(Ok(response)))
}

/// Answers a request rejected before its body was needed once the body has been read (up to
/// the limit) and dropped: a client still sending it gets the answer, not a connection reset
/// for unread data, and an HTTP/1 connection stays usable. A client that goes away meanwhile
/// gets nothing.
fn after_body(req: Request<Incoming>, response: Response<MockBody>) -> ResponseFuture {
    Box::pin(async move {
        let mut body = Limited::new(req.into_body(), MAX_REQUEST_BODY);
        while let Some(frame) = body.frame().await {
            if let Err(err) = frame {
                if err.is::<LengthLimitError>() {
                    // Past the limit: answer anyway, and let the connection close.
                    break;
                }
                return Err(Abort::RequestBody);
            }
        }
        Ok(response)
    })
}

fn done_err(abort: Abort) -> ResponseFuture {
    Box::pin(ready(Err(abort)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_the_v1_prefix() {
        let route = |m: Method, p: &str| format!("{:?}", Route::of(&m, p));
        assert_eq!(route(Method::POST, "/v1/chat/completions"), "Api(Chat)");
        assert_eq!(route(Method::POST, "/chat/completions"), "Api(Chat)");
        assert_eq!(route(Method::POST, "/v1/embeddings"), "Api(Embeddings)");
        assert_eq!(route(Method::GET, "/models"), "Api(Models)");
        assert_eq!(route(Method::HEAD, "/v1/models"), "Api(Models)");
        assert_eq!(
            route(Method::GET, "/v1/chat/completions"),
            "MethodNotAllowed(\"POST\")"
        );
        assert_eq!(route(Method::GET, "/stats"), "Stats");
        assert_eq!(route(Method::POST, "/stats/reset"), "StatsReset");
        assert_eq!(route(Method::GET, "/journal"), "Journal");
        assert_eq!(route(Method::POST, "/v1x/models"), "NotFound");
        assert_eq!(route(Method::POST, "/v1"), "NotFound");
        assert_eq!(route(Method::POST, "/v1/v1/models"), "NotFound");
    }

    #[test]
    fn gzip_negotiation() {
        let accepts = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(!accepts("br"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
