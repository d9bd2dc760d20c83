//! The stream of chunks of a streamed chat completion.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use volley_core::openai::ChatCompletionChunk;
use volley_core::sse::EventStream;
use volley_core::{BodyStream, Error, ErrorKind, RequestId, Response};

/// The chunks of a streamed chat completion, ending after OpenAI's `[DONE]` sentinel.
///
/// Yields `Err` once and then ends when the stream breaks off, when a chunk is not valid JSON,
/// when the provider sends an error object in the stream, or when the body ends before
/// `[DONE]` without everything it promised: a non-empty `finish_reason` for each of the `n`
/// choices asked for, and, when the request asked for usage itself
/// (`stream_options.include_usage`, not the client on its own), a usage object in the chunk
/// that finished the last of them or after it (a server that puts usage in every chunk, as
/// vLLM's `continuous_usage_stats` does, has not finished when its first chunk carries usage).
///
/// Until it ends, fails or is dropped, the stream holds one of the client's concurrency slots
/// and its connection. Read it through or drop it: one kept unread holds its slot as long as
/// it is kept, since the idle and whole-stream timeouts are checked as it is read (a program
/// that opens more streams than the client has slots before reading any waits for ever).
pub struct ChatStream {
    events: EventStream<BodyStream>,
    /// The response's headers (moved out of it, not copied).
    headers: http::HeaderMap,
    scrubber: crate::secrets::Scrubber,
    id: RequestId,
    finished: bool,
    expect_usage: bool,
    /// How many choices the request asked for (`n`, at least 1).
    choices: u32,
    /// The indexes below `choices` that had a non-empty `finish_reason`, each once.
    finished_choices: Vec<u32>,
    /// A usage object arrived once every choice had finished.
    saw_final_usage: bool,
}

impl ChatStream {
    /// `response` must be an event stream; the facade checks that before. It is read with
    /// the client's caps, `limits`. `choices`: the request's `n` (1 when it has none).
    pub(crate) fn new(
        response: Response,
        limits: volley_core::sse::Limits,
        expect_usage: bool,
        choices: u32,
        scrubber: crate::secrets::Scrubber,
    ) -> ChatStream {
        let id = response.request_id();
        let (head, body) = response.into_parts();
        ChatStream {
            events: volley_core::sse::EventStream::with_limits(body.into_stream(), limits),
            headers: head.headers,
            scrubber,
            id,
            finished: false,
            expect_usage,
            choices: choices.max(1),
            finished_choices: Vec::new(),
            saw_final_usage: false,
        }
    }

    /// The response's headers: the provider's request id, its rate-limit headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    /// The provider's id of this request (OpenAI's `x-request-id`), which its support asks
    /// for, when it sent one.
    pub fn provider_request_id(&self) -> Option<&str> {
        volley_core::Dialect::OpenAi.request_id(&self.headers)
    }

    /// Volley's id of this request, the one its errors and logs name.
    pub fn id(&self) -> RequestId {
        self.id
    }

    fn all_choices_finished(&self) -> bool {
        self.finished_choices.len() as u64 >= u64::from(self.choices)
    }

    /// Whether a body that ends here, without `[DONE]`, has delivered all it promised.
    fn ended_cleanly(&self) -> bool {
        self.all_choices_finished() && (!self.expect_usage || self.saw_final_usage)
    }

    /// Notes what `chunk` finishes: its choices with a `finish_reason`, then the usage.
    fn record(&mut self, chunk: &ChatCompletionChunk) {
        for choice in &chunk.choices {
            let finished = choice
                .finish_reason
                .as_deref()
                .is_some_and(|r| !r.is_empty());
            // An index the request did not ask for (a server's mistake) finishes nothing.
            if finished
                && choice.index < self.choices
                && !self.finished_choices.contains(&choice.index)
            {
                self.finished_choices.push(choice.index);
            }
        }
        if chunk.usage.is_some() && self.all_choices_finished() {
            self.saw_final_usage = true;
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<ChatCompletionChunk, Error>>> {
        self.finish();
        Poll::Ready(Some(Err(error)))
    }

    /// Ends the stream and lets go of the body at once, so its concurrency slot and
    /// connection are free even while the caller keeps this stream around.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        self.events = no_events(self.id);
    }
}

/// Lets go of a stream's body after its last event (`[DONE]`, `message_stop`), putting
/// [`no_events`] in its place. It looks once more without waiting: when the body's end is
/// already here, hyper sees it and returns the connection to the pool; when it is not
/// (uvicorn, vLLM's server, ends the chunked body in a write of its own), the rest is read on
/// a task of its own ([`drain_rest`]).
pub(crate) fn let_go_after_last_event(
    events: &mut EventStream<BodyStream>,
    id: RequestId,
    cx: &mut Context<'_>,
) {
    let ended = matches!(Pin::new(&mut *events).poll_next(cx), Poll::Ready(None));
    let events = std::mem::replace(events, no_events(id));
    if !ended {
        drain_rest(events);
    }
}

/// How long the rest of a body whose last event has arrived may take to end (its slot and
/// connection are held meanwhile). A terminator written just after the last event arrives
/// within a millisecond or two; a server that keeps the body open costs the slot this long.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_millis(20);

/// Reads what is left of an event stream whose last event has arrived (`[DONE]`,
/// `message_stop`), on a task of its own for at most [`DRAIN_FOR`], so that its connection
/// goes back to the pool instead of being closed: HTTP/1.1 cannot reuse a connection whose
/// answer was not read to its end, and servers such as uvicorn (vLLM's) send the chunked
/// body's terminator in a write of its own, just after the last event. Outside a runtime, or
/// past the bound, the body is dropped and its connection closed, as before.
fn drain_rest(mut events: EventStream<BodyStream>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        use futures_util::StreamExt as _;
        let _ =
            tokio::time::timeout(DRAIN_FOR, async { while events.next().await.is_some() {} }).await;
    });
}

/// An empty stream of events, put in place of a finished stream's so that its body (and with
/// it the request's concurrency slot and connection) is let go: at once, or once its rest is
/// read ([`drain_rest`]).
pub(crate) fn no_events(id: RequestId) -> EventStream<BodyStream> {
    Response::new(
        http::StatusCode::OK,
        http::HeaderMap::new(),
        volley_core::Body::Full(bytes::Bytes::new()),
        volley_core::Timings::start(),
        id,
    )
    .events()
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let event = loop {
            let event = match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(event))) => event,
                Poll::Ready(Some(Err(e))) => return self.fail(e),
                Poll::Ready(None) => {
                    let id = self.id;
                    // llama.cpp's server ends a stream that failed with an `error: {..}`
                    // line, which is no event: the decoder kept it aside.
                    if let Some(field) = self.events.decoder().error_field() {
                        let field = self.scrubber.scrub(bytes::Bytes::copy_from_slice(field));
                        let error = volley_core::Dialect::OpenAi
                            .error_in_stream(&field, format!("request {id}"));
                        return self.fail(error);
                    }
                    if self.ended_cleanly() {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    return self.fail(Error::new(
                        ErrorKind::StreamBroken,
                        format!("request {id}: the event stream ended before [DONE]"),
                    ));
                }
            };
            // An event with no data (`data:` alone, which some proxies send to keep a quiet
            // stream open) carries no chunk; an `error` event is looked at all the same.
            if event.event_type() == "error" || !event.data_bytes().trim_ascii().is_empty() {
                break event;
            }
        };
        if event.is_done() {
            self.finished = true;
            let id = self.id;
            let_go_after_last_event(&mut self.events, id, cx);
            return Poll::Ready(None);
        }
        let data = event.data_bytes();
        // An error object anywhere in the chunk (OpenRouter puts `error` after the chunk's
        // own fields, with `finish_reason: "error"`; vLLM sends `"object": "error"`).
        if event.event_type() == "error" || volley_core::Dialect::OpenAi.is_error_reply(data) {
            // Of the kind the retry layer gives the same event at the stream's start: a rate
            // limit, a broken stream for a server error, `Status` for the rest (a context
            // window exceeded), which no retry heals.
            let data = self.scrubber.scrub(data.clone());
            let context = format!("request {}", self.id);
            return self.fail(volley_core::Dialect::OpenAi.error_in_stream(&data, context));
        }
        match serde_json::from_slice::<ChatCompletionChunk>(data) {
            Ok(chunk) => {
                self.record(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Err(e) => {
                let id = self.id;
                let error = self.scrubber.decode_error(
                    format_args!("request {id}: a stream chunk is not a chat completion chunk"),
                    &e,
                );
                self.fail(error)
            }
        }
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("request_id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}
