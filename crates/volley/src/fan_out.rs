//! [`Client::fan_out`]: many requests through one client, a bounded number at a time.
//!
//! Each request runs as its own tokio task, so requests in flight make progress while the
//! caller is busy with a result; the stream itself only decides when the next one starts. A
//! slot is freed when its result is taken from the stream, which bounds memory for inputs of
//! any length: at most `concurrency` requests are in flight or waiting to be taken.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;
use volley_core::openai::{ChatCompletionRequest, ChatCompletionResponse};
use volley_core::{Error, ErrorKind, Request, Response};

use crate::Client;

impl Client {
    /// Sends every request of `requests` through the whole stack, `concurrency` at a time, and
    /// yields `(index, result)` pairs in the order they complete, `index` being the request's
    /// position in `requests`.
    ///
    /// - **Every input gets exactly one outcome.** A failure is that request's `Err`; it never
    ///   cancels or delays the others.
    /// - **Lazy.** The iterator is pulled only when a slot frees up, so an input of millions
    ///   of requests (read from a file, generated on the fly) runs in bounded memory.
    /// - **Slots stay full.** A finished request's slot is refilled when the stream is next
    ///   polled for a result, so take results promptly (or use [`Client::fan_out_collect`]);
    ///   the requests already in flight keep going while the caller works on a result,
    ///   because each runs in its own task.
    /// - `concurrency` 0 is treated as 1. The client's own limit
    ///   ([`ClientBuilder::concurrency`](crate::ClientBuilder::concurrency)), rate limits and
    ///   retries still apply to each request, so fanning out wider than the client's limit
    ///   only queues requests inside the client.
    ///
    /// With a [`deadline`](crate::ClientBuilder::deadline), each request's deadline starts
    /// when it is started here, so time it waits inside the client (for a slot, or in the
    /// rate limiter) counts: a request the rate limiter would hold past its deadline (during a
    /// 429's pause longer than the deadline, or when more requests are in flight than the
    /// limits send within one deadline) fails at once, unsent (`RateLimited`,
    /// [`is_request_sent`](crate::Error::is_request_sent) `false`, safe to send again), and the
    /// next input is started. Keep `concurrency` within what the limits send in one deadline
    /// (requests per minute × deadline in minutes), or bound each attempt with
    /// [`timeout`](crate::ClientBuilder::timeout) instead of a deadline.
    ///
    /// A streamed response (`text/event-stream`) holds its client slot until its body is
    /// read or dropped; every other response arrives complete.
    ///
    /// The stream is `Send` when the iterator is, and must be polled inside a tokio runtime,
    /// as every call of this client. Dropping it aborts the requests still in flight. Each
    /// request's task runs in the [tracing span](tracing::Span::current) current where the
    /// fan-out was made, so what the stack logs of a request carries the caller's fields.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// use volley::{Client, Request};
    /// use volley::openai::{ChatCompletionRequest, ChatMessage};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let client = Client::from_env()?;
    /// let requests = (0..10_000).map(|i| {
    ///     let chat = ChatCompletionRequest::new(
    ///         "gpt-4o-mini",
    ///         vec![ChatMessage::user(format!("Summarise document {i}"))],
    ///     );
    ///     Request::post_json("/chat/completions", &chat).expect("a chat request serialises")
    /// });
    /// let mut results = client.fan_out(requests, 200);
    /// while let Some((index, result)) = results.next().await {
    ///     match result {
    ///         Ok(response) => println!("{index}: {}", response.status()),
    ///         Err(error) => eprintln!("{index}: {error}"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn fan_out<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> impl Stream<Item = (usize, Result<Response, Error>)> + use<I>
    where
        I: IntoIterator<Item = Request>,
    {
        let client = self.clone();
        fan_out_with(requests, concurrency, move |request| {
            let client = client.clone();
            async move { client.send(request).await }
        })
    }

    /// [`Client::fan_out`] for chat completions: sends each request as [`Client::chat`] would
    /// and yields `(index, reply)` pairs in the order they complete.
    ///
    /// Takes owned requests or references (`&requests` of a `Vec`); each is serialised when
    /// its slot frees up. A request with `stream: true` gets an `InvalidInput` error at its
    /// index, as with [`Client::chat`].
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// use volley::Client;
    /// use volley::openai::{ChatCompletionRequest, ChatMessage};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let client = Client::from_env()?;
    /// let questions = ["What is Rust?", "What is tokio?", "What is tower?"];
    /// let requests = questions
    ///     .iter()
    ///     .map(|q| ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(*q)]));
    /// let mut replies = client.fan_out_chat(requests, 3);
    /// while let Some((index, reply)) = replies.next().await {
    ///     println!("{}: {:?}", questions[index], reply.map(|r| r.text().map(str::to_owned)));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn fan_out_chat<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> impl Stream<Item = (usize, Result<ChatCompletionResponse, Error>)> + use<I>
    where
        I: IntoIterator<Item: Borrow<ChatCompletionRequest>>,
    {
        let client = self.clone();
        fan_out_with(requests, concurrency, move |request| {
            // Serialised here, on the polling task, so borrowed requests never have to be
            // cloned into the spawned one.
            let http = client.chat_request(request.borrow(), "fan_out_chat()");
            let client = client.clone();
            async move {
                let response = client.send(http?).await?;
                crate::client::decode_reply(
                    response,
                    volley_core::Dialect::OpenAi,
                    client.scrubber(),
                    true,
                )
                .await
            }
        })
    }

    /// [`Client::fan_out`], collected: one result per request, in input order, once all are
    /// done.
    ///
    /// A streamed response (`text/event-stream`) is read to its end in its own task, which
    /// frees its client slot, so the result holds it complete: otherwise the responses held for
    /// the result would keep every slot of the client and the rest would wait for ever. An
    /// error while reading it is that request's `Err`.
    ///
    /// ```no_run
    /// use volley::{Client, Request};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let client = Client::from_env()?;
    /// let requests = vec![Request::get("/models")?, Request::get("/models")?];
    /// for (index, result) in client.fan_out_collect(requests, 2).await.iter().enumerate() {
    ///     println!("{index}: {:?}", result.as_ref().map(|r| r.status()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fan_out_collect<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> Vec<Result<Response, Error>>
    where
        I: IntoIterator<Item = Request>,
    {
        let client = self.clone();
        let all = fan_out_with(requests, concurrency, move |request| {
            send_complete(client.clone(), request)
        });
        collect_in_order(all).await
    }

    /// [`Client::fan_out_chat`], collected: one reply or error per request, in input order,
    /// once all are done.
    ///
    /// ```no_run
    /// use volley::Client;
    /// use volley::openai::{ChatCompletionRequest, ChatMessage};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let client = Client::from_env()?;
    /// let requests: Vec<_> = ["one", "two", "three"]
    ///     .into_iter()
    ///     .map(|word| ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(word)]))
    ///     .collect();
    /// let replies = client.fan_out_chat_collect(&requests, 3).await;
    /// assert_eq!(replies.len(), requests.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fan_out_chat_collect<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> Vec<Result<ChatCompletionResponse, Error>>
    where
        I: IntoIterator<Item: Borrow<ChatCompletionRequest>>,
    {
        collect_in_order(self.fan_out_chat(requests, concurrency)).await
    }
}

/// Sends `request` and reads a streamed body to its end, so that the response holds no
/// client slot and can be read without the runtime.
pub(crate) async fn send_complete(client: Client, request: Request) -> Result<Response, Error> {
    let response = client.send(request).await?;
    if !response.is_stream() {
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let body = body.collect().await?;
    Ok(Response::from_parts(head, volley_core::Body::Full(body)))
}

/// The engine of every fan-out: `start` turns an input into the future of its outcome, which
/// is spawned when the input's slot frees up.
pub(crate) fn fan_out_with<I, T, F, Fut>(
    inputs: I,
    concurrency: usize,
    mut start: F,
) -> impl Stream<Item = (usize, Result<T, Error>)>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    // `buffer_unordered(0)` would mean "unbounded", the opposite of what a caller asking for
    // no concurrency wants.
    let concurrency = concurrency.max(1);
    // Each request runs in a task of its own, which would start with no span: it runs in the
    // caller's (the span current where the fan-out was made), so that what the layers log of
    // a request carries the caller's fields (a job id, a tenant), as with `Client::send`.
    let span = tracing::Span::current();
    futures_util::stream::iter(inputs.into_iter().enumerate())
        .map(move |(index, input)| Slot {
            index,
            task: tokio::spawn(start(input).instrument(span.clone())),
        })
        .buffer_unordered(concurrency)
}

/// Collects `(index, result)` pairs, indices `0..n` each exactly once, into input order.
pub(crate) async fn collect_in_order<T>(results: impl Stream<Item = (usize, T)>) -> Vec<T> {
    let mut results = std::pin::pin!(results);
    let mut slots: Vec<Option<T>> = Vec::with_capacity(results.size_hint().0);
    while let Some((index, result)) = results.next().await {
        if index >= slots.len() {
            slots.resize_with(index + 1, || None);
        }
        slots[index] = Some(result);
    }
    slots
        .into_iter()
        // The fan-out yields every index below the number of inputs exactly once.
        .map(|slot| slot.expect("every index of a fan-out has an outcome"))
        .collect()
}

/// One spawned request and its input index. Dropping it aborts the request, so dropping the
/// fan-out stream cancels what is still in flight.
struct Slot<T> {
    index: usize,
    task: JoinHandle<Result<T, Error>>,
}

impl<T> Future for Slot<T> {
    type Output = (usize, Result<T, Error>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match ready!(Pin::new(&mut self.task).poll(cx)) {
            Ok(result) => result,
            // A panic inside the stack is a bug; let it surface where the caller can see it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::new(
                ErrorKind::Cancelled,
                "the runtime shut down before the request finished",
            )),
        };
        Poll::Ready((self.index, result))
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        // A no-op for a finished task.
        self.task.abort();
    }
}
