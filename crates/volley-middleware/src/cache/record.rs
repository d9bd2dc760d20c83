//! [`RecordingBody`]: passes a stream through while keeping a copy, and stores the copy when
//! the stream is complete.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::{HeaderMap, StatusCode};
use volley_core::cache_key::{CacheKey, CredentialId};
use volley_core::{BodyStream, Dialect, Error, ResponseHead};

use super::layer::Shared;
use super::store::{CachedResponse, StoreFuture};

pub(crate) struct RecordingBody {
    inner: BodyStream,
    /// The copy so far; `None` once the stream failed or grew too large to store.
    buffer: Option<BytesMut>,
    /// The store write, once the stream has ended; the end is reported when it is done.
    saving: Option<StoreFuture<'static, ()>>,
    finished: bool,
    shared: Arc<Shared>,
    key: CacheKey,
    credential: CredentialId,
    status: StatusCode,
    headers: HeaderMap,
    /// How the stream ends and how it states an error.
    dialect: Dialect,
}

impl RecordingBody {
    pub(crate) fn new(
        inner: BodyStream,
        shared: Arc<Shared>,
        key: CacheKey,
        credential: CredentialId,
        head: &ResponseHead,
        dialect: Dialect,
    ) -> RecordingBody {
        RecordingBody {
            inner,
            buffer: Some(BytesMut::new()),
            saving: None,
            finished: false,
            shared,
            key,
            credential,
            status: head.status,
            headers: head.headers.clone(),
            dialect,
        }
    }

    /// The store write of the copy, consuming it; `None` when there is no copy or it is not a
    /// finished answer (see [`is_complete`]).
    fn save(&mut self) -> Option<StoreFuture<'static, ()>> {
        let body = self.buffer.take()?.freeze();
        if !is_complete(self.dialect, &body) {
            return None;
        }
        let entry = CachedResponse::new(self.status, &self.headers, body, true);
        let shared = self.shared.clone();
        let key = self.key;
        let credential = self.credential;
        Some(Box::pin(async move {
            shared.store.put_for(key, &credential, entry).await?;
            shared.counters.stored();
            Ok(())
        }))
    }
}

impl Stream for RecordingBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.saving.is_none() {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(buffer) = &mut this.buffer {
                        if buffer.len() + chunk.len() > this.shared.max_entry_bytes {
                            this.buffer = None;
                        } else {
                            buffer.extend_from_slice(&chunk);
                        }
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.buffer = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => match this.save() {
                    Some(saving) => this.saving = Some(saving),
                    None => {
                        this.finished = true;
                        return Poll::Ready(None);
                    }
                },
            }
        }
        // The stream has ended: finish storing before reporting the end, so a request made
        // right after reading a stream to its end finds it cached.
        if let Some(saving) = &mut this.saving {
            let result = std::task::ready!(saving.as_mut().poll(cx));
            if let Err(e) = result {
                this.shared
                    .counters
                    .store_failed("cache write of a stream failed", &e);
            }
            this.saving = None;
        }
        this.finished = true;
        Poll::Ready(None)
    }
}

impl Drop for RecordingBody {
    fn drop(&mut self) {
        // Callers often stop reading at `data: [DONE]` without waiting for the end of the
        // body; that stream is complete, so it is stored in the background. (`save` checks the
        // whole copy; this cheap look at its end skips the streams dropped half way.)
        let dialect = self.dialect;
        let complete = self
            .buffer
            .as_ref()
            .is_some_and(|b| dialect.stream_complete(b));
        if !complete || self.saving.is_some() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some(saving) = self.save()
        {
            let shared = self.shared.clone();
            runtime.spawn(async move {
                if let Err(e) = saving.await {
                    shared
                        .counters
                        .store_failed("cache write of a stream failed", &e);
                }
            });
        }
    }
}

/// Whether a recorded event stream is a finished answer worth replaying: its last event is
/// the dialect's end (`data: [DONE]`, `message_stop`; a stream that stopped without it broke
/// off, however cleanly the connection closed), and no event is an error (`event: error`, or
/// data that is an error object, which vLLM sends before its `[DONE]` when a generation
/// fails).
fn is_complete(dialect: Dialect, body: &[u8]) -> bool {
    dialect.stream_complete(body) && !has_error_event(dialect, body)
}

fn has_error_event(dialect: Dialect, body: &[u8]) -> bool {
    // Most streams never mention an error: one SIMD search clears them.
    if memchr::memmem::find(body, b"error").is_none() {
        return false;
    }
    body.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(name) = line.strip_prefix(b"event:") {
            return name.trim_ascii() == b"error";
        }
        line.strip_prefix(b"data:")
            .is_some_and(|data| dialect.is_error_reply(data))
    })
}

#[cfg(test)]
mod tests {
    use super::is_complete;
    use volley_core::Dialect;

    #[test]
    fn only_finished_streams_without_errors_are_complete() {
        assert!(is_complete(
            Dialect::OpenAi,
            b"data: {}\n\ndata: [DONE]\n\n"
        ));
        assert!(is_complete(
            Dialect::OpenAi,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\ndata: [DONE]\n\n"
        ));
        assert!(!is_complete(Dialect::OpenAi, b"data: {}\n\n"));
        assert!(!is_complete(
            Dialect::OpenAi,
            b"data: {\"error\":{\"message\":\"boom\"}}\r\n\r\ndata: [DONE]\r\n\r\n"
        ));
        assert!(!is_complete(
            Dialect::OpenAi,
            b"event: error\ndata: {}\n\ndata: [DONE]\n\n"
        ));
        // OpenRouter's mid-stream error: a chunk with `error` after its own fields.
        assert!(!is_complete(
            Dialect::OpenAi,
            b"data: {\"id\":\"g\",\"error\":{\"message\":\"cut\"},\"choices\":[]}\n\ndata: [DONE]\n\n"
        ));
    }

    #[test]
    fn anthropic_streams_end_with_message_stop() {
        let done = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(is_complete(Dialect::Anthropic, done));
        assert!(!is_complete(Dialect::OpenAi, done));
        assert!(!is_complete(
            Dialect::Anthropic,
            b"data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
    }
}
