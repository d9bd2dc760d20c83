//! The stream wrapper that enforces the first-chunk, idle and whole-stream deadlines.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use volley_core::{BodyStream, Error, ErrorKind, RequestId};

use super::deadline::{FirstChunk, deadline};
use super::error::idle_error;

/// What the chunk timer is counting towards.
#[derive(Debug, Clone, Copy)]
enum Phase {
    First(FirstChunk),
    Idle(Duration),
    Off,
}

pin_project! {
    pub(crate) struct TimeoutBody {
        // `None` once the stream has ended or a deadline fired: the connection is released at
        // once instead of when the caller drops the body.
        inner: Option<BodyStream>,
        #[pin]
        chunk_timer: Option<Sleep>,
        #[pin]
        total_timer: Option<Sleep>,
        phase: Phase,
        idle: Option<Duration>,
        // When the last chunk came: the idle deadline is this plus the idle limit. The timer
        // is not moved for every chunk (a timer-wheel update per token); when it fires
        // early, it is set again to the deadline the last chunk made.
        last_chunk: Option<Instant>,
        total_limit: Duration,
        id: RequestId,
    }
}

impl TimeoutBody {
    pub(crate) fn new(
        inner: BodyStream,
        id: RequestId,
        first_chunk: Option<(Instant, FirstChunk)>,
        idle: Option<Duration>,
        total: Option<(Instant, Duration)>,
    ) -> TimeoutBody {
        let (chunk_timer, phase) = match first_chunk {
            Some((at, which)) => (Some(sleep_until(at)), Phase::First(which)),
            // With no first-chunk deadline the idle timer starts only after the first chunk.
            None => (None, Phase::Off),
        };
        TimeoutBody {
            inner: Some(inner),
            chunk_timer,
            total_timer: total.map(|(at, _)| sleep_until(at)),
            phase,
            idle,
            last_chunk: None,
            total_limit: total.map(|(_, limit)| limit).unwrap_or_default(),
            id,
        }
    }
}

impl Stream for TimeoutBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                // Empty chunks carry no byte: they neither count as the first byte nor as
                // activity.
                if !chunk.is_empty() {
                    match *this.idle {
                        Some(idle) => {
                            let now = Instant::now();
                            *this.last_chunk = Some(now);
                            // Armed once, at the first chunk; later chunks only move the
                            // deadline the timer is checked against when it fires.
                            if !matches!(*this.phase, Phase::Idle(_)) {
                                let at = deadline(now, idle);
                                match this.chunk_timer.as_mut().as_pin_mut() {
                                    Some(timer) => timer.reset(at),
                                    None => this.chunk_timer.set(Some(sleep_until(at))),
                                }
                                *this.phase = Phase::Idle(idle);
                            }
                        }
                        None => {
                            this.chunk_timer.set(None);
                            *this.phase = Phase::Off;
                        }
                    }
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(None) => {
                *this.inner = None;
                this.chunk_timer.set(None);
                this.total_timer.set(None);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Pending => {}
        }
        let mut fired = None;
        while let Some(mut timer) = this.chunk_timer.as_mut().as_pin_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            fired = match *this.phase {
                Phase::First(due) => Some(due.error(*this.id)),
                Phase::Idle(limit) => {
                    let due = this.last_chunk.map(|last| deadline(last, limit));
                    match due {
                        // A chunk came since the timer was set: not idle yet.
                        Some(due) if Instant::now() < due => {
                            timer.reset(due);
                            continue;
                        }
                        _ => Some(idle_error(*this.id, limit)),
                    }
                }
                Phase::Off => None,
            };
            break;
        }
        if fired.is_none()
            && let Some(timer) = this.total_timer.as_mut().as_pin_mut()
            && timer.poll(cx).is_ready()
        {
            fired = Some(Error::new(
                ErrorKind::Timeout,
                format!(
                    "request {}: stream not finished within {:?}",
                    this.id, this.total_limit
                ),
            ));
        }
        match fired {
            Some(error) => {
                *this.inner = None;
                this.chunk_timer.set(None);
                this.total_timer.set(None);
                Poll::Ready(Some(Err(error)))
            }
            None => Poll::Pending,
        }
    }
}
