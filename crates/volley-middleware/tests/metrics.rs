//! The metrics layer: counters, histograms and the gauge through a local `DebuggingRecorder`,
//! and spans that never carry the key or the prompt.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, Service, ServiceExt, service_fn};
use volley_core::{Body, BodyStream, Error, ErrorKind, Request, Response, Timings};
use volley_middleware::metrics::{MetricsLayer, Scope};
use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;

/// Serialises the tests of this file. `tracing` computes a callsite's interest when the
/// callsite is first hit; a first hit on another test's thread at the moment the capturing
/// subscriber is installed can cache "never" for it, and the span test would miss events.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every value recorded so far. A `DebuggingRecorder` snapshot drains what it reports
/// (counters and gauges are swapped to 0, histograms emptied), so snapshots are summed here.
struct Recorded {
    snapshotter: Snapshotter,
    values: Vec<(String, Labels, Value)>,
}

/// A metric's labels, sorted.
type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(usize),
}

impl Recorded {
    fn new(snapshotter: Snapshotter) -> Recorded {
        Recorded {
            snapshotter,
            values: Vec::new(),
        }
    }

    /// Adds what was recorded since the last update.
    fn update(&mut self) -> &Recorded {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let name = key.name().to_owned();
            let index = match self
                .values
                .iter()
                .position(|(n, l, _)| *n == name && *l == labels)
            {
                Some(i) => i,
                None => {
                    let zero = match value {
                        DebugValue::Counter(_) => Value::Counter(0),
                        DebugValue::Gauge(_) => Value::Gauge(0.0),
                        DebugValue::Histogram(_) => Value::Histogram(0),
                    };
                    self.values.push((name, labels, zero));
                    self.values.len() - 1
                }
            };
            match (&mut self.values[index].2, value) {
                (Value::Counter(total), DebugValue::Counter(n)) => *total += n,
                (Value::Gauge(total), DebugValue::Gauge(g)) => *total += g.into_inner(),
                (Value::Histogram(total), DebugValue::Histogram(v)) => *total += v.len(),
                (total, value) => panic!("{total:?} then {value:?}"),
            }
        }
        self
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        self.values
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| v)
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(Value::Counter(n)) => *n,
            None => 0,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(name, labels) {
            Some(Value::Gauge(g)) => *g,
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        match self.get(name, labels) {
            Some(Value::Histogram(n)) => *n,
            None => 0,
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

fn fault(request: Request, fault: &'static str) -> Request {
    request.with_header(
        HeaderName::from_static("x-mock-fault"),
        HeaderValue::from_static(fault),
    )
}

async fn send<S>(service: &mut S, request: Request) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service.ready().await?.call(request).await
}

#[tokio::test]
async fn outcomes_durations_and_tokens_over_a_socket() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = Transport::builder().base_url(server.url()).build().unwrap();
    let mut service =
        metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(transport));

    for _ in 0..2 {
        let request = Request::post("/chat/completions", CHAT).unwrap();
        send(&mut service, request).await.unwrap();
    }
    let stream = Request::post("/chat/completions", STREAM).unwrap();
    let response = send(&mut service, stream).await.unwrap();
    assert!(response.is_stream());
    // Until the stream ends, the call is in flight.
    let m = recorded.update();
    assert_eq!(m.gauge("volley_in_flight", &[("scope", "request")]), 1.0);
    response.bytes().await.unwrap();

    let request = fault(Request::post("/chat/completions", CHAT).unwrap(), "429");
    let err = send(&mut service, request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    let request = fault(Request::post("/chat/completions", CHAT).unwrap(), "500");
    send(&mut service, request).await.unwrap_err();

    let m = recorded.update();
    let req = |outcome| [("scope", "request"), ("outcome", outcome)];
    assert_eq!(m.counter("volley_requests_total", &req("ok")), 3);
    assert_eq!(m.counter("volley_requests_total", &req("rate_limited")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("status")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("timeout")), 0);
    let scope = [("scope", "request")];
    assert_eq!(m.samples("volley_request_duration_seconds", &scope), 5);
    // Errors have no first byte to time.
    assert_eq!(m.samples("volley_time_to_first_byte_seconds", &scope), 3);
    assert_eq!(m.gauge("volley_in_flight", &scope), 0.0);
    // The mock's usage: "Say hello" is 9 bytes, 3 prompt tokens; 16 completion tokens.
    let tokens = |direction| [("scope", "request"), ("direction", direction)];
    assert_eq!(m.counter("volley_tokens_total", &tokens("in")), 9);
    assert_eq!(m.counter("volley_tokens_total", &tokens("out")), 48);
    server.shutdown().await;
}

/// A request-scope layer outside the cache counts a hit as a request, but not its tokens: the
/// usage it replays was billed when the answer first came. Complete bodies and streams.
#[tokio::test]
async fn cache_hits_are_requests_but_not_tokens() {
    use volley_core::ApiKey;
    use volley_core::cache_key::CredentialId;
    use volley_middleware::cache::{CacheLayer, MemoryStore};
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = Transport::builder().base_url(server.url()).build().unwrap();
    let credential = CredentialId::from_api_key(&ApiKey::new("sk-volley-metrics-0123456789"));
    let cache = CacheLayer::new(
        MemoryStore::new(1 << 20, std::time::Duration::from_secs(3600)),
        credential,
    )
    .cache_streams(true);
    let mut service = metrics::with_local_recorder(&recorder, || {
        MetricsLayer::new()
            .replays(true)
            .layer(cache.layer(transport))
    });
    for body in [CHAT, CHAT, STREAM, STREAM] {
        let response = send(
            &mut service,
            Request::post("/chat/completions", body).unwrap(),
        )
        .await
        .unwrap();
        response.bytes().await.unwrap();
    }
    assert_eq!(
        server.stats().requests_total,
        2,
        "two of the four were hits"
    );
    let m = recorded.update();
    let ok = [("scope", "request"), ("outcome", "ok")];
    assert_eq!(m.counter("volley_requests_total", &ok), 4);
    // One answer and one stream reached the server: 3 prompt and 16 completion tokens each.
    let tokens = |direction| [("scope", "request"), ("direction", direction)];
    assert_eq!(m.counter("volley_tokens_total", &tokens("in")), 6);
    assert_eq!(m.counter("volley_tokens_total", &tokens("out")), 32);
    server.shutdown().await;

    // Without a cache inside, a server's own `x-volley-cache: hit` hides nothing.
    let forged = service_fn(|request: Request| async move {
        let mut headers = HeaderMap::new();
        headers.insert("x-volley-cache", HeaderValue::from_static("hit"));
        let body = Body::Full(Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        ));
        Ok::<_, Error>(Response::new(
            StatusCode::OK,
            headers,
            body,
            Timings::start(),
            request.id(),
        ))
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(forged));
    send(
        &mut service,
        Request::post("/chat/completions", CHAT).unwrap(),
    )
    .await
    .unwrap();
    let m = recorded.update();
    assert_eq!(m.counter("volley_tokens_total", &tokens("in")), 6 + 5);
    assert_eq!(m.counter("volley_tokens_total", &tokens("out")), 32 + 7);
}

fn ok_response(request: &Request, body: Body) -> Response {
    Response::new(
        StatusCode::OK,
        HeaderMap::new(),
        body,
        Timings::start(),
        request.id(),
    )
}

#[tokio::test]
async fn attempts_and_requests_are_told_apart() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    // An attempt service that fails every other call, and a "retry" that tries twice.
    let calls = Arc::new(Mutex::new(0));
    let attempt = metrics::with_local_recorder(&recorder, || {
        MetricsLayer::new()
            .scope(Scope::Attempt)
            .layer(service_fn(move |request: Request| {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                async move {
                    if n % 2 == 1 {
                        Err(Error::new(ErrorKind::Connection, "reset"))
                    } else {
                        Ok(ok_response(&request, Body::Full(Bytes::new())))
                    }
                }
            }))
    });
    let retry = service_fn(move |request: Request| {
        let mut attempt = attempt.clone();
        async move {
            match send(&mut attempt, request.clone()).await {
                Ok(response) => Ok(response),
                Err(_) => send(&mut attempt, request).await,
            }
        }
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(retry));
    assert_eq!(service.scope(), Scope::Request);
    for _ in 0..3 {
        send(&mut service, Request::get("/models").unwrap())
            .await
            .unwrap();
    }
    let m = recorded.update();
    let total = |scope, outcome| {
        m.counter(
            "volley_requests_total",
            &[("scope", scope), ("outcome", outcome)],
        )
    };
    assert_eq!(total("request", "ok"), 3);
    assert_eq!(total("request", "connection"), 0);
    assert_eq!(total("attempt", "ok"), 3);
    assert_eq!(total("attempt", "connection"), 3);
}

#[tokio::test]
async fn stream_failures_and_dropped_calls_are_outcomes_too() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let inner = service_fn(|request: Request| async move {
        let chunks = futures_util::stream::iter([
            Ok(Bytes::from_static(b"data: {}\n\n")),
            Err(Error::new(ErrorKind::IdleTimeout, "quiet")),
        ]);
        Ok::<_, Error>(ok_response(&request, Body::Stream(BodyStream::new(chunks))))
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(inner));

    let response = send(&mut service, Request::get("/a").unwrap())
        .await
        .unwrap();
    let err = response.bytes().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IdleTimeout);

    // A stream dropped half way, and a call dropped before its response.
    let response = send(&mut service, Request::get("/b").unwrap())
        .await
        .unwrap();
    let Body::Stream(mut body) = response.into_parts().1 else {
        panic!("a stream");
    };
    body.next().await.unwrap().unwrap();
    drop(body);
    let pending = service_fn(|_: Request| std::future::pending::<Result<Response, Error>>());
    let mut stuck = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(pending));
    let future = stuck.call(Request::get("/c").unwrap());
    drop(future);

    let m = recorded.update();
    let req = |outcome| [("scope", "request"), ("outcome", outcome)];
    assert_eq!(m.counter("volley_requests_total", &req("idle_timeout")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("cancelled")), 2);
    assert_eq!(m.counter("volley_requests_total", &req("ok")), 0);
    assert_eq!(m.gauge("volley_in_flight", &[("scope", "request")]), 0.0);
    assert_eq!(
        m.samples("volley_time_to_first_byte_seconds", &[("scope", "request")]),
        2
    );
}

#[tokio::test]
async fn stream_tokens_are_the_last_usage_counted_once() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    // vLLM with `continuous_usage_stats`: the cumulative usage in every chunk, the last one
    // split across two reads.
    let inner = service_fn(|request: Request| async move {
        let chunks = futures_util::stream::iter([
            Ok(Bytes::from_static(
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            )),
            Ok(Bytes::from_static(
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            )),
            Ok(Bytes::from_static(
                b"data: {\"choices\":[],\"usage\":{\"prompt_tok",
            )),
            Ok(Bytes::from_static(
                b"ens\":3,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            )),
        ]);
        Ok::<_, Error>(ok_response(&request, Body::Stream(BodyStream::new(chunks))))
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(inner));
    let response = send(&mut service, Request::get("/a").unwrap())
        .await
        .unwrap();
    response.bytes().await.unwrap();
    let m = recorded.update();
    let tokens = |direction| [("scope", "request"), ("direction", direction)];
    assert_eq!(m.counter("volley_tokens_total", &tokens("in")), 3);
    assert_eq!(m.counter("volley_tokens_total", &tokens("out")), 3);
}

#[tokio::test]
async fn a_stream_dropped_right_after_done_is_ok() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    // `[DONE]` split across reads; the body's end never polled.
    let inner = service_fn(|request: Request| async move {
        let chunks = futures_util::stream::iter([
            Ok(Bytes::from_static(
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DO",
            )),
            Ok(Bytes::from_static(b"NE]\n\n")),
        ])
        .chain(futures_util::stream::pending());
        Ok::<_, Error>(ok_response(&request, Body::Stream(BodyStream::new(chunks))))
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(inner));
    let response = send(&mut service, Request::get("/a").unwrap())
        .await
        .unwrap();
    let mut events = response.events();
    while let Some(event) = events.next().await {
        if event.unwrap().is_done() {
            break;
        }
    }
    drop(events);
    // Dropped before `[DONE]` completed: cancelled.
    let response = send(&mut service, Request::get("/b").unwrap())
        .await
        .unwrap();
    let Body::Stream(mut body) = response.into_parts().1 else {
        panic!("a stream");
    };
    body.next().await.unwrap().unwrap();
    drop(body);

    let m = recorded.update();
    let req = |outcome| [("scope", "request"), ("outcome", outcome)];
    assert_eq!(m.counter("volley_requests_total", &req("ok")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("cancelled")), 1);
    assert_eq!(m.gauge("volley_in_flight", &[("scope", "request")]), 0.0);
    let tokens = |direction| [("scope", "request"), ("direction", direction)];
    assert_eq!(m.counter("volley_tokens_total", &tokens("in")), 6);
    assert_eq!(m.counter("volley_tokens_total", &tokens("out")), 4);
}

/// A 200 that failed after all: an error event in its stream (vLLM's, OpenRouter's, llama.cpp's
/// `error:` line), whether the stream then ends or the caller drops it there, or a whole body
/// that is an error object.
#[tokio::test]
async fn errors_inside_a_200_are_failures() {
    let _serial = SERIAL.lock().await;
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let inner = service_fn(|request: Request| async move {
        let path = request.path_and_query().path().to_owned();
        let chunk = |bytes: &'static [u8]| Ok(Bytes::from_static(bytes));
        let body = match path.as_str() {
            // A server error mid-stream, then the body's end (no `[DONE]`).
            "/ends" => Body::Stream(BodyStream::new(futures_util::stream::iter([
                chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"an error\"}}]}\n\n"),
                chunk(b"data: {\"error\":{\"message\":\"upstream failed\",\"code\":502}}\n\n"),
            ]))),
            // A rate limit as an `error` event; the caller stops reading there.
            "/dropped" => Body::Stream(BodyStream::new(
                futures_util::stream::iter([chunk(
                    b"event: error\ndata: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\",\"code\":429}}\n\n",
                )])
                .chain(futures_util::stream::pending()),
            )),
            // Content that says "error" is no error, nor is a chunk that starts inside a line
            // with text that looks like llama.cpp's error line.
            "/fine" => Body::Stream(BodyStream::new(futures_util::stream::iter([
                chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"error\"}}]}\n\n"),
                chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\\n"),
                chunk(b"error: {\\\"message\\\":\\\"in the text\\\"}\"}}]}\n\n"),
                chunk(b"data: [DONE]\n\n"),
            ]))),
            // llama.cpp's error line, then the body's end.
            "/llama" => Body::Stream(BodyStream::new(futures_util::stream::iter([
                chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"),
                chunk(b"error: {\"code\":500,\"message\":\"the KV cache is full\",\"type\":\"server_error\"}\n\n"),
            ]))),
            _ => Body::Full(Bytes::from_static(
                b"{\"object\":\"error\",\"message\":\"The model does not exist.\",\"code\":404}",
            )),
        };
        Ok::<_, Error>(ok_response(&request, body))
    });
    let mut service = metrics::with_local_recorder(&recorder, || MetricsLayer::new().layer(inner));

    let response = send(&mut service, Request::get("/ends").unwrap())
        .await
        .unwrap();
    response.bytes().await.unwrap();
    let response = send(&mut service, Request::get("/dropped").unwrap())
        .await
        .unwrap();
    let mut events = response.events();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.event_type(), "error");
    drop(events);
    let response = send(&mut service, Request::get("/fine").unwrap())
        .await
        .unwrap();
    response.bytes().await.unwrap();
    let response = send(&mut service, Request::get("/llama").unwrap())
        .await
        .unwrap();
    response.bytes().await.unwrap();
    send(&mut service, Request::get("/whole").unwrap())
        .await
        .unwrap();

    let m = recorded.update();
    let req = |outcome| [("scope", "request"), ("outcome", outcome)];
    assert_eq!(m.counter("volley_requests_total", &req("stream_broken")), 2);
    assert_eq!(m.counter("volley_requests_total", &req("rate_limited")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("status")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("ok")), 1);
    assert_eq!(m.counter("volley_requests_total", &req("cancelled")), 0);
    assert_eq!(m.gauge("volley_in_flight", &[("scope", "request")]), 0.0);
}

const KEY: &str = "sk-volley-metrics-0123456789abcdef";
const PROMPT: &str = "my very private prompt";

#[test]
fn spans_carry_the_request_but_never_the_key_or_the_prompt() {
    let _serial = SERIAL.blocking_lock();
    let (logs, _guard) = volley_testkit::logs::capture(tracing::Level::TRACE);
    // A current-thread runtime keeps every task on this thread, where the subscriber is set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = runtime.block_on(async {
        let server = MockServer::start(MockConfig {
            require_api_key: Some(KEY.to_owned()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let transport = Transport::builder()
            .base_url(server.url())
            .api_key(KEY)
            .build()
            .unwrap();
        let mut service = tower::ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(MetricsLayer::new().scope(Scope::Attempt))
            .service(transport);
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{PROMPT}"}}],"stream":true}}"#
        );
        let request = Request::post("/chat/completions", body).unwrap();
        let id = request.id();
        send(&mut service, request)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let request = fault(Request::post("/chat/completions", CHAT).unwrap(), "503");
        send(&mut service, request).await.unwrap_err();
        server.shutdown().await;
        id
    });
    let text = logs.text();
    assert!(text.contains("volley.request"), "{text}");
    assert!(text.contains("volley.attempt"), "{text}");
    assert!(text.contains(&format!("request={id}")), "{text}");
    assert!(text.contains("path=\"/chat/completions\""), "{text}");
    assert!(text.contains("finished outcome=\"ok\""), "{text}");
    assert!(text.contains("finished outcome=\"status\""), "{text}");
    assert!(!text.contains(KEY), "the key leaked:\n{text}");
    assert!(
        !text.contains("0123456789abcdef"),
        "part of the key leaked:\n{text}"
    );
    assert!(!text.contains(PROMPT), "the prompt leaked:\n{text}");
}
