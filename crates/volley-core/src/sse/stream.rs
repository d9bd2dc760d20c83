//! The async adapter: a stream of body chunks in, a stream of events out.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::{FusedStream, Stream};

use super::decoder::Decoder;
use super::event::Event;
use super::limits::Limits;
use crate::Error;

/// Adapts a stream of body chunks into a stream of [`Event`]s, with a [`Decoder`] inside.
///
/// It yields every event, the `[DONE]` sentinel included; the caller decides when to stop.
/// An error from the inner stream is passed through unchanged and ends the event stream, as
/// does a decoding error (a cap exceeded). When the inner stream ends, so does this one; an
/// event that was not finished by a blank line is discarded, as the standard says.
///
/// No runtime is needed: it only polls the inner stream.
pub struct EventStream<S> {
    inner: S,
    decoder: Decoder,
    finished: bool,
}

impl<S> EventStream<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    /// Wraps `inner` with a decoder that has the default [`Limits`].
    pub fn new(inner: S) -> EventStream<S> {
        EventStream::with_limits(inner, Limits::new())
    }

    /// Wraps `inner` with a decoder that has the given caps.
    pub fn with_limits(inner: S, limits: Limits) -> EventStream<S> {
        EventStream {
            inner,
            decoder: Decoder::with_limits(limits),
            finished: false,
        }
    }
}

impl<S> EventStream<S> {
    /// The decoder, to read [`last_event_id`](Decoder::last_event_id) and
    /// [`reconnection_time`](Decoder::reconnection_time) when reconnecting.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The inner byte stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner byte stream. Taking chunks from it directly loses them to the decoder.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Returns the inner byte stream; input the decoder buffered is lost.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Stream for EventStream<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => {}
                Err(error) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => this.decoder.feed(chunk),
                Some(Err(error)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => this.finished = true,
            }
        }
    }
}

impl<S> FusedStream for EventStream<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<S> fmt::Debug for EventStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("decoder", &self.decoder)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures_util::stream;

    use super::*;
    use crate::ErrorKind;

    /// Polls `s` to its end with a no-op waker. `Pending` is retried: the test streams are all
    /// in memory and only return it to check that it is propagated.
    fn collect<S: Stream + Unpin>(mut s: S) -> Vec<S::Item> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut items = Vec::new();
        let mut pending_in_a_row = 0;
        loop {
            match Pin::new(&mut s).poll_next(&mut cx) {
                Poll::Ready(Some(item)) => {
                    items.push(item);
                    pending_in_a_row = 0;
                }
                Poll::Ready(None) => return items,
                Poll::Pending => {
                    pending_in_a_row += 1;
                    assert!(pending_in_a_row < 10, "stream never made progress");
                }
            }
        }
    }

    fn chunks(parts: &[&'static str]) -> Vec<Result<Bytes, Error>> {
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect()
    }

    #[test]
    fn debug_shows_the_decoder_and_whether_the_stream_ended() {
        let mut events = EventStream::new(stream::iter(chunks(&["id: 3\n\ndata: x"])));
        let debug = format!("{events:?}");
        assert!(
            debug.starts_with("EventStream { decoder: Decoder {"),
            "{debug}"
        );
        assert!(debug.contains("finished: false"), "{debug}");
        assert!(collect(&mut events).is_empty());
        let debug = format!("{events:?}");
        assert!(debug.contains(r#"last_event_id: "3""#), "{debug}");
        assert!(debug.contains("finished: true"), "{debug}");
    }

    #[test]
    fn yields_events_split_across_chunks_then_ends() {
        let input = chunks(&[
            "data: {\"a\"",
            ":1}\r",
            "\n\r\nevent: ping\ndata: x\n\ndata: [DONE]\n\n",
            "data: unfinished\n",
        ]);
        let events = collect(EventStream::new(stream::iter(input)));
        let events: Vec<Event> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data(), "{\"a\":1}");
        assert_eq!(events[1].event_type(), "ping");
        assert_eq!(events[1].data(), "x");
        assert!(events[2].is_done());
    }

    #[test]
    fn inner_errors_pass_through_and_end_the_stream() {
        let mut input = chunks(&["data: one\n\ndata: two"]);
        input.push(Err(Error::new(ErrorKind::StreamBroken, "peer reset")));
        input.extend(chunks(&["\n\n"]));
        let mut s = EventStream::new(stream::iter(input));
        let items = collect(&mut s);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().data(), "one");
        let error = items[1].as_ref().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::StreamBroken);
        assert_eq!(error.to_string(), "stream_broken error: peer reset");
        assert!(s.is_terminated());
    }

    #[test]
    fn decode_errors_end_the_stream() {
        let input = chunks(&["data: ok\n\n", "data: 0123456789\n\n", "data: more\n\n"]);
        let limits = Limits::new().max_line_bytes(10);
        let items = collect(EventStream::with_limits(stream::iter(input), limits));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().data(), "ok");
        let error = items[1].as_ref().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BodyDecode);
        assert!(error.to_string().contains("max_line_bytes"), "{error}");
    }

    #[test]
    fn pending_is_propagated_and_resumed() {
        let mut parts = chunks(&["data: a", "\n\n", "id: 7\nretry: 250\n\n"]).into_iter();
        let mut pend = true;
        let inner = stream::poll_fn(move |_| {
            pend = !pend;
            if pend {
                Poll::Pending
            } else {
                Poll::Ready(parts.next())
            }
        });
        let mut s = EventStream::new(inner);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut s).poll_next(&mut cx).is_pending());
        let items = collect(&mut s);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().data(), "a");
        assert_eq!(s.decoder().last_event_id(), "7");
        assert_eq!(
            s.decoder().reconnection_time(),
            Some(std::time::Duration::from_millis(250))
        );
    }

    #[test]
    fn works_with_stream_ext() {
        use futures_util::StreamExt;
        let input = chunks(&["data: 1\n\n", "data: 2\n\ndata: 3\n\n"]);
        let data = EventStream::new(stream::iter(input))
            .map(|event| event.unwrap().data().to_owned())
            .collect::<Vec<_>>();
        let mut data = std::pin::pin!(data);
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(data) = data.as_mut().poll(&mut cx) else {
            panic!("in-memory stream was pending");
        };
        assert_eq!(data, ["1", "2", "3"]);
    }
}
