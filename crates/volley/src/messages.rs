//! Anthropic's Messages API on the [`Client`]: [`Client::messages`] and
//! [`Client::messages_stream`], and the [`MessageStream`] of events.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt as _;
use volley_core::anthropic::{MESSAGES_PATH, Message, MessagesRequest, StreamEvent};
use volley_core::sse::EventStream;
use volley_core::{BodyStream, Dialect, Error, ErrorKind, Request, RequestId, Response, tokens};

use crate::Client;

impl Client {
    /// Sends a Messages request (`POST /messages` under the base URL, with
    /// [`Provider::Anthropic`](crate::Provider::Anthropic) `https://api.anthropic.com/v1`) and
    /// parses the answer. The request travels through the whole stack in the Anthropic
    /// [`Dialect`]: retries treat 529 `overloaded_error` as a rate signal, and the rate limiter
    /// settles with the answer's `usage`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), volley::Error> {
    /// use volley::anthropic::{InputMessage, MessagesRequest};
    /// use volley::{Client, Provider};
    ///
    /// let client = Client::builder()
    ///     .provider(Provider::Anthropic)
    ///     .api_key(std::env::var("ANTHROPIC_API_KEY").unwrap_or_default())
    ///     .build()?;
    /// let request = MessagesRequest::new("claude-sonnet-4-5", 256, vec![InputMessage::user("Hi")]);
    /// let message = client.messages(&request).await?;
    /// println!("{}", message.text());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::chat`]; `InvalidInput` for a request with `stream: true` (use
    /// [`Client::messages_stream`]).
    pub async fn messages(&self, request: &MessagesRequest) -> Result<Message, Error> {
        if request.stream == Some(true) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "messages() was given a request with stream: true; use messages_stream()",
            ));
        }
        let http = self.messages_request(request)?;
        let response = self.send(http).await?;
        crate::client::decode_reply(response, Dialect::Anthropic, self.scrubber(), true).await
    }

    /// Sends a Messages request with `stream: true` and returns its events as they arrive
    /// ([`MessageStream`]; [`MessageStream::text`] gives just the text).
    ///
    /// # Errors
    /// Errors before the first event come from this call; after it, from the stream. With
    /// retries on, an `error` event sent first (a 200, then `overloaded_error`) is one of the
    /// former, and retried as a 529 would be.
    pub async fn messages_stream(&self, request: &MessagesRequest) -> Result<MessageStream, Error> {
        let mut request = request.clone();
        request.stream = Some(true);
        let http = self.messages_request(&request)?;
        let response = self.send(http).await?;
        if !response.is_stream() {
            return Err(self.not_a_stream(response, Dialect::Anthropic).await);
        }
        Ok(MessageStream::new(
            response,
            self.sse_limits(),
            self.scrubber().clone(),
        ))
    }

    fn messages_request(&self, request: &MessagesRequest) -> Result<Request, Error> {
        let estimate = self.estimate(|| tokens::estimate_messages(request).total());
        Ok(Request::post_json(MESSAGES_PATH, request)?
            .with_estimated_tokens(estimate)
            .with_dialect(Dialect::Anthropic))
    }
}

/// The events of a streamed Messages answer, ending after `message_stop`. `ping`s are
/// skipped.
///
/// Yields `Err` once and then ends when the stream breaks off, when an event is not valid
/// JSON, when the provider sends an `error` event (an `overloaded_error` mid-stream, say), or
/// when the body ends before `message_stop`.
pub struct MessageStream {
    events: EventStream<BodyStream>,
    /// The response's headers (moved out of it, not copied).
    headers: http::HeaderMap,
    scrubber: crate::secrets::Scrubber,
    id: RequestId,
    finished: bool,
}

impl MessageStream {
    fn new(
        response: Response,
        limits: volley_core::sse::Limits,
        scrubber: crate::secrets::Scrubber,
    ) -> MessageStream {
        let id = response.request_id();
        let (head, body) = response.into_parts();
        MessageStream {
            id,
            events: EventStream::with_limits(body.into_stream(), limits),
            headers: head.headers,
            scrubber,
            finished: false,
        }
    }

    /// The response's headers: Anthropic's `request-id`, its `anthropic-ratelimit-*`.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    /// The provider's id of this request (Anthropic's `request-id`), when it sent one.
    pub fn provider_request_id(&self) -> Option<&str> {
        Dialect::Anthropic.request_id(&self.headers)
    }

    /// Volley's id of this request, the one its errors and logs name.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Reads the stream to its end and returns the text of its `text_delta`s.
    ///
    /// # Errors
    /// The stream's first error.
    pub async fn text(mut self) -> Result<String, Error> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            if let Some(delta) = event?.text_delta() {
                text.push_str(delta);
            }
        }
        Ok(text)
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<StreamEvent, Error>>> {
        self.finish();
        Poll::Ready(Some(Err(error)))
    }

    /// Ends the stream and lets go of the body at once, so its concurrency slot and
    /// connection are free even while the caller keeps this stream around.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        self.events = crate::chat_stream::no_events(self.id);
    }
}

/// An event of one of the six message events' names whose data has no `type` takes its
/// name's, as Anthropic's SDKs read it (`data["type"] = sse.event`): a proxy that rewrites
/// the data may drop the tag and keep the `event:` line. Any other unknown event is handed
/// on as it came.
fn typed_by_event_name(
    value: serde_json::Value,
    name: &str,
) -> Result<StreamEvent, serde_json::Error> {
    const NAMED: [&str; 6] = [
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    ];
    match value {
        serde_json::Value::Object(mut map)
            if !map.contains_key("type") && NAMED.contains(&name) =>
        {
            map.insert("type".to_owned(), serde_json::Value::from(name));
            serde_json::from_value(serde_json::Value::Object(map))
        }
        value => Ok(StreamEvent::Other(value)),
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("request_id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Stream for MessageStream {
    type Item = Result<StreamEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            let event = match Pin::new(&mut self.events).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(event))) => event,
                Poll::Ready(Some(Err(e))) => return self.fail(e),
                Poll::Ready(None) => {
                    let id = self.id;
                    return self.fail(Error::new(
                        ErrorKind::StreamBroken,
                        format!("request {id}: the event stream ended before message_stop"),
                    ));
                }
            };
            let data = event.data_bytes();
            // An `error` event ends the stream even with no data; so does an error body that
            // came without an `event:` line, whatever the order of its keys.
            let error = event.event_type() == "error"
                || (!data.is_empty() && Dialect::Anthropic.looks_like_error(data));
            if !error && (event.event_type() == "ping" || data.is_empty()) {
                continue;
            }
            if error {
                let data = self.scrubber.scrub(data.clone());
                let context = format!("request {}", self.id);
                return self.fail(Dialect::Anthropic.error_in_stream(&data, context));
            }
            let parsed = match serde_json::from_slice::<StreamEvent>(data) {
                Ok(StreamEvent::Other(value)) => typed_by_event_name(value, event.event_type()),
                other => other,
            };
            return match parsed {
                Ok(StreamEvent::Error(_)) => {
                    let data = self.scrubber.scrub(data.clone());
                    let context = format!("request {}", self.id);
                    self.fail(Dialect::Anthropic.error_in_stream(&data, context))
                }
                // A `ping` whose `event:` line a proxy dropped is still a ping.
                Ok(StreamEvent::Ping(_)) => continue,
                Ok(event) => {
                    if matches!(event, StreamEvent::MessageStop(_)) {
                        self.finished = true;
                        let id = self.id;
                        crate::chat_stream::let_go_after_last_event(&mut self.events, id, cx);
                    }
                    Poll::Ready(Some(Ok(event)))
                }
                Err(e) => {
                    let id = self.id;
                    let error = self.scrubber.decode_error(
                        format_args!("request {id}: an event of the stream is not valid JSON"),
                        &e,
                    );
                    self.fail(error)
                }
            };
        }
    }
}
