//! A blocking client, for code without an async runtime.
//!
//! [`Client`] owns a small multi-thread tokio runtime and an async [`crate::Client`]. Each
//! call blocks the calling thread until its result is in, but the work runs on the runtime,
//! so calls from many threads run in parallel, and [`Client::fan_out`] runs many requests at
//! once from a single thread: sync code still gets the concurrency the async client has.
//!
//! ```no_run
//! use volley::blocking::Client;
//! use volley::openai::{ChatCompletionRequest, ChatMessage};
//!
//! # fn run() -> Result<(), volley::Error> {
//! let client = Client::builder().api_key("sk-...").build()?;
//! let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Hello!")]);
//! let reply = client.chat(&request)?;
//! println!("{}", reply.text().unwrap_or_default());
//!
//! // Three requests in flight at once, replies in input order.
//! let requests: Vec<_> = ["one", "two", "three"]
//!     .into_iter()
//!     .map(|word| ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user(word)]))
//!     .collect();
//! for reply in client.fan_out_chat(&requests, 3)? {
//!     println!("{:?}", reply.map(|r| r.text().map(str::to_owned)));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Anthropic's Messages API works the same way ([`Client::messages`],
//! [`Client::messages_stream`]) on a client built with
//! [`Provider::Anthropic`](crate::Provider::Anthropic).
//!
//! # Inside an async runtime
//!
//! A blocking call on a runtime thread would stall every task of that thread, so every method
//! first checks for a tokio runtime on the calling thread and returns an
//! [`ErrorKind::Config`] error when there is one: async code should use [`crate::Client`]
//! (also reachable as [`Client::as_async`]). The check cannot tell a runtime's worker from
//! its `spawn_blocking` threads, so it refuses both; from `spawn_blocking`, use
//! `Handle::current().block_on(client.as_async().chat(..))`.
//!
//! # Processes that fork
//!
//! The runtime's threads are not copied by `fork(2)`: a client built before a fork hangs in
//! the child (Python's multiprocessing, a pre-forking server). Build the client in each
//! process, after the fork.
//!
//! # Large fan-outs
//!
//! [`Client::fan_out`] and [`Client::fan_out_chat`] return every result at once, when the
//! last request is done, so their memory grows with the input. For millions of requests,
//! call them on chunks of the input, or use the async [`crate::Client::fan_out`], which
//! yields each result as it comes.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::runtime::Runtime;
use volley_core::anthropic::{Message, MessagesRequest, StreamEvent};
use volley_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingsRequest,
    EmbeddingsResponse,
};
use volley_core::{ApiKey, Error, ErrorKind, Request, RequestId, Response};

use crate::fan_out::{collect_in_order, fan_out_with, send_complete};

/// The default of [`ClientBuilder::worker_threads`].
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// A blocking client for an OpenAI-compatible API.
///
/// Cheap to clone: clones share one runtime and one connection pool, so create one and reuse
/// it. The runtime shuts down, without waiting, when the last clone (and the last
/// [`ChatStream`] it returned) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Configures a blocking [`Client`]: the async [`crate::ClientBuilder`]'s settings plus the
/// runtime's. Setters never fail; [`ClientBuilder::build`] reports problems.
///
/// The common setters are repeated here; for the others, configure a [`crate::ClientBuilder`]
/// and convert it with `From`:
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn run() -> Result<(), volley::Error> {
/// let settings = volley::Client::builder()
///     .first_byte_timeout(Duration::from_secs(30))
///     .cache_memory(64 << 20, Duration::from_secs(3600));
/// let client = volley::blocking::ClientBuilder::from(settings)
///     .worker_threads(4)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    client: crate::ClientBuilder,
    worker_threads: usize,
}

/// The chunks of a streamed chat completion, as a blocking iterator: each `next` waits for
/// the next chunk. See [`crate::ChatStream`] for when it yields an error.
pub struct ChatStream {
    stream: crate::ChatStream,
    // Keeps the runtime that drives the connection alive as long as the stream.
    inner: Arc<Inner>,
    finished: bool,
}

/// The events of a streamed Messages answer, as a blocking iterator: each `next` waits for
/// the next event. See [`crate::MessageStream`] for when it yields an error.
pub struct MessageStream {
    stream: crate::MessageStream,
    // Keeps the runtime that drives the connection alive as long as the stream.
    inner: Arc<Inner>,
    finished: bool,
}

struct Inner {
    // `None` only while dropping.
    runtime: Option<Runtime>,
    client: crate::Client,
}

impl Client {
    /// A builder with the defaults its setters document.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::from(crate::Client::builder())
    }

    /// A client configured from the environment, as [`crate::Client::from_env`].
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().from_env().build()
    }

    /// Sends a chat completion request and waits for the whole reply, as
    /// [`crate::Client::chat`].
    ///
    /// # Errors
    /// As [`crate::Client::chat`], and `Config` when called inside an async runtime.
    pub fn chat(&self, request: &ChatCompletionRequest) -> Result<ChatCompletionResponse, Error> {
        self.block_on("chat", self.inner.client.chat(request))?
    }

    /// Sends a chat completion request with `stream: true`, as [`crate::Client::chat_stream`],
    /// and returns the chunks as a blocking iterator.
    ///
    /// # Errors
    /// As [`crate::Client::chat_stream`], and `Config` when called inside an async runtime.
    pub fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChatStream, Error> {
        let stream = self.block_on("chat_stream", self.inner.client.chat_stream(request))??;
        Ok(ChatStream {
            stream,
            inner: self.inner.clone(),
            finished: false,
        })
    }

    /// Sends an embeddings request, as [`crate::Client::embeddings`].
    ///
    /// # Errors
    /// As [`crate::Client::embeddings`], and `Config` when called inside an async runtime.
    pub fn embeddings(&self, request: &EmbeddingsRequest) -> Result<EmbeddingsResponse, Error> {
        self.block_on("embeddings", self.inner.client.embeddings(request))?
    }

    /// Sends an Anthropic Messages request and waits for the whole answer, as
    /// [`crate::Client::messages`].
    ///
    /// ```no_run
    /// use volley::anthropic::{InputMessage, MessagesRequest};
    /// use volley::Provider;
    ///
    /// # fn run() -> Result<(), volley::Error> {
    /// let client = volley::blocking::Client::builder()
    ///     .provider(Provider::Anthropic)
    ///     .api_key(std::env::var("ANTHROPIC_API_KEY").unwrap_or_default())
    ///     .build()?;
    /// let request = MessagesRequest::new("claude-sonnet-4-5", 256, vec![InputMessage::user("Hi")]);
    /// println!("{}", client.messages(&request)?.text());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`crate::Client::messages`], and `Config` when called inside an async runtime.
    pub fn messages(&self, request: &MessagesRequest) -> Result<Message, Error> {
        self.block_on("messages", self.inner.client.messages(request))?
    }

    /// Sends an Anthropic Messages request with `stream: true`, as
    /// [`crate::Client::messages_stream`], and returns its events as a blocking iterator.
    ///
    /// # Errors
    /// As [`crate::Client::messages_stream`], and `Config` when called inside an async
    /// runtime.
    pub fn messages_stream(&self, request: &MessagesRequest) -> Result<MessageStream, Error> {
        let stream = self.block_on(
            "messages_stream",
            self.inner.client.messages_stream(request),
        )??;
        Ok(MessageStream {
            stream,
            inner: self.inner.clone(),
            finished: false,
        })
    }

    /// Sends a raw request through the whole stack, as [`crate::Client::send`], and returns
    /// the complete response: a streamed body (`text/event-stream`) is read to its end first,
    /// so the body is always [`Body::Full`](volley_core::Body::Full) and needs no runtime to read
    /// ([`Response::body`], [`Response::into_parts`]). [`Client::chat_stream`] gives chat
    /// chunks as they arrive.
    ///
    /// # Errors
    /// Any [`Error`] of the stack or of reading the body, and `Config` when called inside an
    /// async runtime.
    pub fn send(&self, request: Request) -> Result<Response, Error> {
        self.block_on("send", send_complete(self.inner.client.clone(), request))?
    }

    /// Sends every request, `concurrency` at a time, on the client's runtime, and returns one
    /// result per request in input order once all are done; see [`crate::Client::fan_out`].
    /// One failure never cancels the others. `concurrency` 0 is treated as 1. Responses are
    /// complete, as with [`Client::send`].
    ///
    /// ```no_run
    /// use volley::Request;
    ///
    /// # fn run() -> Result<(), volley::Error> {
    /// let client = volley::blocking::Client::from_env()?;
    /// let requests = (0..100).map(|_| Request::get("/models").expect("a valid path"));
    /// let results = client.fan_out(requests, 20)?;
    /// println!("{} of 100 succeeded", results.iter().filter(|r| r.is_ok()).count());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `Config` when called inside an async runtime; each request's own failure is its entry
    /// in the vector.
    pub fn fan_out<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> Result<Vec<Result<Response, Error>>, Error>
    where
        I: IntoIterator<Item = Request>,
    {
        let client = &self.inner.client;
        let results = fan_out_with(requests, concurrency, |request| {
            send_complete(client.clone(), request)
        });
        self.block_on("fan_out", collect_in_order(results))
    }

    /// [`Client::fan_out`] for chat completions: one reply or error per request, in input
    /// order; see [`crate::Client::fan_out_chat`]. Takes owned requests or references.
    ///
    /// # Errors
    /// `Config` when called inside an async runtime; each request's own failure is its entry
    /// in the vector.
    pub fn fan_out_chat<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> Result<Vec<Result<ChatCompletionResponse, Error>>, Error>
    where
        I: IntoIterator<Item: Borrow<ChatCompletionRequest>>,
    {
        self.block_on(
            "fan_out_chat",
            self.inner
                .client
                .fan_out_chat_collect(requests, concurrency),
        )
    }

    /// The async client inside, sharing this client's pool and limits: for statistics
    /// ([`crate::Client::connection_stats`], [`crate::Client::cache_stats`]) and for async
    /// code. Its calls must run inside a tokio runtime.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner.client
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.client.base_url()
    }

    /// Runs `future` on the client's runtime, unless the calling thread is inside a runtime.
    fn block_on<F: Future>(&self, method: &str, future: F) -> Result<F::Output, Error> {
        refuse_inside_runtime(method)?;
        Ok(self.inner.runtime().block_on(future))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl From<crate::ClientBuilder> for ClientBuilder {
    /// A blocking builder with `client`'s settings and [`DEFAULT_WORKER_THREADS`].
    fn from(client: crate::ClientBuilder) -> ClientBuilder {
        ClientBuilder {
            client,
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

impl ClientBuilder {
    /// The number of runtime threads doing the network work of all calls. Requests spend
    /// nearly all their time waiting on the network, so a few threads carry thousands of
    /// requests in flight; raise it for large responses or heavy streaming.
    ///
    /// Default: [`DEFAULT_WORKER_THREADS`] (2).
    pub fn worker_threads(mut self, threads: usize) -> ClientBuilder {
        self.worker_threads = threads;
        self
    }

    /// Reads `OPENAI_API_KEY` and `OPENAI_BASE_URL`, as [`crate::ClientBuilder::from_env`].
    pub fn from_env(mut self) -> ClientBuilder {
        self.client = self.client.from_env();
        self
    }

    /// The base URL, `/v1` included, as [`crate::ClientBuilder::base_url`].
    ///
    /// Default: `https://api.openai.com/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> ClientBuilder {
        self.client = self.client.base_url(url);
        self
    }

    /// The API key, as [`crate::ClientBuilder::api_key`].
    ///
    /// Default: none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> ClientBuilder {
        self.client = self.client.api_key(key);
        self
    }

    /// The most requests in flight at once, as [`crate::ClientBuilder::concurrency`].
    ///
    /// Default: [`crate::DEFAULT_CONCURRENCY`] (256).
    pub fn concurrency(mut self, max: usize) -> ClientBuilder {
        self.client = self.client.concurrency(max);
        self
    }

    /// Requests per minute, as [`crate::ClientBuilder::rpm`].
    ///
    /// Default: learned from the provider's rate-limit headers, with a slow start of four
    /// requests and a pause after a 429, as [`crate::ClientBuilder::rpm`] says.
    pub fn rpm(mut self, requests_per_minute: u32) -> ClientBuilder {
        self.client = self.client.rpm(requests_per_minute);
        self
    }

    /// Tokens per minute, as [`crate::ClientBuilder::tpm`].
    ///
    /// Default: learned, as for [`rpm`](ClientBuilder::rpm).
    pub fn tpm(mut self, tokens_per_minute: u64) -> ClientBuilder {
        self.client = self.client.tpm(tokens_per_minute);
        self
    }

    /// Retries of a failed attempt, as [`crate::ClientBuilder::retries`].
    ///
    /// Default: 3.
    pub fn retries(mut self, max_retries: u32) -> ClientBuilder {
        self.client = self.client.retries(max_retries);
        self
    }

    /// The provider's conventions, as [`crate::ClientBuilder::provider`].
    ///
    /// Default: [`Provider::OpenAi`](crate::Provider::OpenAi).
    pub fn provider(mut self, provider: crate::Provider) -> ClientBuilder {
        self.client = self.client.provider(provider);
        self
    }

    /// The deadline of one attempt, as [`crate::ClientBuilder::timeout`].
    ///
    /// Default: [`crate::DEFAULT_TIMEOUT`] (600 s).
    pub fn timeout(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.client = self.client.timeout(limit);
        self
    }

    /// The caps on one line and one event of a stream, as [`crate::ClientBuilder::sse_limits`].
    ///
    /// Default: 16 MiB per line and per event.
    pub fn sse_limits(mut self, limits: volley_core::sse::Limits) -> ClientBuilder {
        self.client = self.client.sse_limits(limits);
        self
    }

    /// The deadline of a whole call, retries and waits included, as
    /// [`crate::ClientBuilder::deadline`].
    ///
    /// Default: none.
    pub fn deadline(mut self, limit: impl Into<Option<Duration>>) -> ClientBuilder {
        self.client = self.client.deadline(limit);
        self
    }

    /// Starts the runtime and builds the client. May be called inside an async runtime; the
    /// client's methods may not (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`crate::ClientBuilder::build`]; `Config` for 0 worker threads or when the runtime
    /// cannot start.
    pub fn build(self) -> Result<Client, Error> {
        if self.worker_threads == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "the blocking client needs at least 1 worker thread",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .thread_name("volley-blocking")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "starting the blocking client's runtime")
                    .with_source(e)
            })?;
        // Built inside the runtime's context, for any part of the stack that looks for one.
        let client = {
            let _context = runtime.enter();
            self.client.build()
        };
        match client {
            Ok(client) => Ok(Client {
                inner: Arc::new(Inner {
                    runtime: Some(runtime),
                    client,
                }),
            }),
            Err(e) => {
                // Dropping a runtime inside another one panics; this never does.
                runtime.shutdown_background();
                Err(e)
            }
        }
    }
}

impl Iterator for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let Self {
            stream,
            inner,
            finished,
        } = self;
        next_blocking(stream, finished, inner, "ChatStream::next")
    }
}

/// An async stream a blocking iterator drives, which can end at once and let go of its body.
trait Finish {
    fn finish(&mut self);
}

impl Finish for crate::ChatStream {
    fn finish(&mut self) {
        crate::ChatStream::finish(self);
    }
}

impl Finish for crate::MessageStream {
    fn finish(&mut self) {
        crate::MessageStream::finish(self);
    }
}

/// The next item of `stream`, waited for on the client's runtime; `None` once `finished`.
/// Inside a runtime (`method` names the call) the stream ends with a `Config` error, and lets
/// go of its body, slot and connection now, not when the caller drops it.
fn next_blocking<S, T>(
    stream: &mut S,
    finished: &mut bool,
    inner: &Inner,
    method: &str,
) -> Option<Result<T, Error>>
where
    S: Finish + futures_core::Stream<Item = Result<T, Error>> + Unpin,
{
    if *finished {
        return None;
    }
    if let Err(e) = refuse_inside_runtime(method) {
        *finished = true;
        stream.finish();
        return Some(Err(e));
    }
    let item = inner.runtime().block_on(stream.next());
    if item.is_none() {
        *finished = true;
    }
    item
}

impl ChatStream {
    /// The response's headers, as [`crate::ChatStream::headers`].
    pub fn headers(&self) -> &http::HeaderMap {
        self.stream.headers()
    }

    /// The provider's id of this request (OpenAI's `x-request-id`), when it sent one.
    pub fn provider_request_id(&self) -> Option<&str> {
        self.stream.provider_request_id()
    }

    /// Volley's id of this request, the one its errors and logs name.
    pub fn id(&self) -> RequestId {
        self.stream.id()
    }
}

impl MessageStream {
    /// The response's headers: Anthropic's `request-id`, its `anthropic-ratelimit-*`.
    pub fn headers(&self) -> &http::HeaderMap {
        self.stream.headers()
    }

    /// The provider's id of this request (Anthropic's `request-id`), when it sent one.
    pub fn provider_request_id(&self) -> Option<&str> {
        self.stream.provider_request_id()
    }

    /// Volley's id of this request, the one its errors and logs name.
    pub fn id(&self) -> RequestId {
        self.stream.id()
    }

    /// Reads the stream to its end and returns the text of its `text_delta`s.
    ///
    /// # Errors
    /// The stream's first error, and `Config` when called inside an async runtime.
    pub fn text(self) -> Result<String, Error> {
        let mut text = String::new();
        for event in self {
            if let Some(delta) = event?.text_delta() {
                text.push_str(delta);
            }
        }
        Ok(text)
    }
}

impl Iterator for MessageStream {
    type Item = Result<StreamEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let Self {
            stream,
            inner,
            finished,
        } = self;
        next_blocking(stream, finished, inner, "MessageStream::next")
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::MessageStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::ChatStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn runtime(&self) -> &Runtime {
        // Only `Drop` takes the runtime out, and nothing runs after it.
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the client")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Neither waits for the runtime's tasks nor panics when the last clone is dropped
        // inside an async context, as `Runtime`'s own `Drop` would.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A `Config` error when the calling thread is inside a tokio runtime, where blocking would
/// stall that runtime's tasks (and `Runtime::block_on` would panic).
fn refuse_inside_runtime(method: &str) -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "volley::blocking::Client::{method} was called inside an async runtime, where \
                 it would block a runtime thread; use the async volley::Client there"
            ),
        ));
    }
    Ok(())
}
