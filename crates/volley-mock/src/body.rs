//! The response body: a whole JSON document, or an SSE stream paced by one reusable timer.
//!
//! Both carry the request's in-flight guard and drop it as they produce their last frame, so a
//! request counts as in flight until its response is complete (before the client can observe
//! the end, which keeps the statistics exact for tests).

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use rand::rngs::SmallRng;
use tokio::time::{Instant, Sleep};

use crate::Latency;
use crate::openai::write_usage;
use crate::shared::{Guard, Shared};

/// How long a cut body waits between its last data and the abort. hyper drops buffered but
/// unflushed data when a body fails, so without a pause the client would see no data at all
/// rather than a body cut half way.
const CUT_DELAY: Duration = Duration::from_millis(10);

/// Why the mock ended a connection, stream or body without a complete response.
#[derive(Debug)]
pub(crate) enum Abort {
    /// The `reset` fault.
    Reset,
    /// The `stall` fault ran its course.
    Stall,
    /// The `cut` fault.
    Cut,
    /// The request body could not be read: the client went away.
    RequestBody,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Abort::Reset => "mock fault: connection reset",
            Abort::Stall => "mock fault: stalled request closed",
            Abort::Cut => "mock fault: body cut",
            Abort::RequestBody => "request body failed",
        })
    }
}

impl std::error::Error for Abort {}

/// A response body of the mock.
pub(crate) struct MockBody {
    state: State,
    guard: Option<Guard>,
    /// The request's id in the journal, recorded as answered when the body completes.
    journaled: Option<Box<str>>,
}

enum State {
    Done,
    /// One frame; with `then_abort` the body errors after it (a cut), having announced
    /// `declared` bytes.
    Full {
        data: Bytes,
        declared: u64,
        then_abort: bool,
    },
    Abort(Pin<Box<Sleep>>),
    Stream(Box<SseStream>),
}

impl MockBody {
    /// A complete body.
    pub(crate) fn full(data: Bytes, guard: Option<Guard>) -> Self {
        let declared = data.len() as u64;
        Self {
            state: State::Full {
                data,
                declared,
                then_abort: false,
            },
            guard,
            journaled: None,
        }
    }

    /// The first half of `data`, then an error, with `data`'s full length announced.
    pub(crate) fn cut(data: Bytes, guard: Option<Guard>) -> Self {
        let declared = data.len() as u64;
        Self {
            state: State::Full {
                data: data.slice(..data.len() / 2),
                declared,
                then_abort: true,
            },
            guard,
            journaled: None,
        }
    }

    /// A server-sent-events stream.
    pub(crate) fn stream(stream: SseStream, guard: Guard) -> Self {
        Self {
            state: State::Stream(Box::new(stream)),
            guard: Some(guard),
            journaled: None,
        }
    }

    /// Records the request `id` in the journal as answered once this body is complete (not
    /// when it is cut).
    pub(crate) fn journaled(mut self, id: Option<Box<str>>) -> Self {
        self.journaled = id;
        self
    }

    /// The last frame is out: the response is complete.
    fn complete(&mut self) {
        if let (Some(id), Some(guard)) = (self.journaled.take(), &self.guard) {
            guard.owner().answer(id);
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.state = State::Done;
        self.guard = None;
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Abort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abort>>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Done => Poll::Ready(None),
            State::Full {
                data, then_abort, ..
            } => {
                let abort = *then_abort;
                let data = std::mem::take(data);
                if abort {
                    this.state = State::Abort(Box::pin(tokio::time::sleep(CUT_DELAY)));
                } else {
                    this.complete();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            State::Abort(pause) => {
                ready!(pause.as_mut().poll(cx));
                this.finish();
                Poll::Ready(Some(Err(Abort::Cut)))
            }
            State::Stream(stream) => match ready!(stream.poll_event(cx)) {
                Event::Frame { data, last } => {
                    if last {
                        this.complete();
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Event::Cut => {
                    this.finish();
                    Poll::Ready(Some(Err(Abort::Cut)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Full { declared, .. } => SizeHint::with_exact(*declared),
            State::Abort(_) | State::Stream(_) => SizeHint::default(),
        }
    }
}

/// How a stream misbehaves, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFault {
    None,
    /// Stop with an error before this event.
    Cut,
    /// This event carries truncated JSON.
    Malformed,
}

/// The parameters of one stream.
pub(crate) struct StreamPlan {
    pub(crate) prefix: Vec<u8>,
    pub(crate) tokens: u32,
    pub(crate) finish_reason: &'static str,
    pub(crate) include_usage: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) ttft: Duration,
    pub(crate) inter_token: Latency,
    pub(crate) fault: StreamFault,
    /// The event format: OpenAI chunks, or Anthropic events (whose `prefix` is the
    /// `message_start` and `content_block_start` sent before the first delta).
    pub(crate) dialect: volley_core::Dialect,
    /// How many choices each OpenAI chunk carries (`n`), each with the same token; 1 for
    /// Anthropic.
    pub(crate) choices: u32,
}

/// An SSE chat-completion stream. Events are numbered: first the token chunks (at least one,
/// so a zero-token completion still sends its role and finish reason), then the usage chunk
/// when asked for, then `[DONE]`.
pub(crate) struct SseStream {
    shared: Arc<Shared>,
    plan: StreamPlan,
    rng: SmallRng,
    next: u32,
    /// The event that is cut or malformed, when the plan has a fault.
    fault_at: u32,
    deadline: Instant,
    /// When the stream was made (its request's body read), for the server-side TTFT.
    created: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Whether the pause before a cut has been scheduled.
    cutting: bool,
}

enum Event {
    Frame { data: Bytes, last: bool },
    Cut,
}

impl SseStream {
    pub(crate) fn new(shared: Arc<Shared>, plan: StreamPlan, rng: SmallRng) -> Self {
        let token_events = plan.tokens.max(1);
        let total = token_events + u32::from(plan.include_usage) + 1;
        let fault_at = match plan.fault {
            // About half way, never before the first event nor at `[DONE]`.
            StreamFault::Cut => (total / 2).clamp(1, total - 1),
            StreamFault::Malformed => token_events / 2,
            StreamFault::None => u32::MAX,
        };
        let now = Instant::now();
        let mut stream = Self {
            deadline: now + plan.ttft,
            created: now,
            shared,
            rng,
            next: 0,
            fault_at,
            timer: None,
            waiting: false,
            cutting: false,
            plan,
        };
        if !stream.plan.ttft.is_zero() {
            stream.arm();
        }
        stream
    }

    fn token_events(&self) -> u32 {
        self.plan.tokens.max(1)
    }

    fn total_events(&self) -> u32 {
        self.token_events() + u32::from(self.plan.include_usage) + 1
    }

    fn arm(&mut self) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(self.deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(self.deadline))),
        }
        self.waiting = true;
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if self.waiting {
                if let Some(timer) = &mut self.timer {
                    ready!(timer.as_mut().poll(cx));
                }
                self.waiting = false;
            }
            if self.plan.fault == StreamFault::Cut && self.next == self.fault_at {
                if self.cutting {
                    return Poll::Ready(Event::Cut);
                }
                self.cutting = true;
                self.deadline = Instant::now() + CUT_DELAY;
                self.arm();
                continue;
            }
            break;
        }
        let i = self.next;
        let data = self.render(i);
        self.next += 1;
        self.shared.counters.chunk_sent();
        if i == 0 {
            self.shared.counters.first_chunk(self.created.elapsed());
        }
        if self.next < self.token_events() {
            let gap = self.plan.inter_token.sample(&mut self.rng);
            if !gap.is_zero() {
                // Paced from the previous deadline, not from now, so slow polling does not
                // stretch the stream.
                self.deadline += gap;
                self.arm();
            }
        }
        let last = self.next == self.total_events();
        if last {
            self.shared.counters.stream_completed();
        }
        Poll::Ready(Event::Frame { data, last })
    }

    fn render(&self, i: u32) -> Bytes {
        let token_events = self.token_events();
        if self.plan.dialect == volley_core::Dialect::Anthropic {
            let token = if i < self.plan.tokens {
                self.shared.filler.token(i)
            } else {
                ""
            };
            let malformed = self.plan.fault == StreamFault::Malformed && i == self.fault_at;
            return crate::service::render_anthropic(&self.plan, token, i, token_events, malformed);
        }
        if i >= token_events + u32::from(self.plan.include_usage) {
            return Bytes::from_static(b"data: [DONE]\n\n");
        }
        let mut out = Vec::with_capacity(self.plan.prefix.len() + 128);
        out.extend_from_slice(&self.plan.prefix);
        if i == token_events {
            out.extend_from_slice(br#"],"usage":"#);
            write_usage(
                &mut out,
                self.plan.prompt_tokens,
                u64::from(self.plan.tokens) * u64::from(self.plan.choices.max(1)),
            );
            out.extend_from_slice(b"}\n\n");
            return out.into();
        }
        if self.plan.fault == StreamFault::Malformed && i == self.fault_at {
            out.extend_from_slice(b"{\"index\":0,\"delta\":{\"content\":\n\n");
            return out.into();
        }
        // Each of the `n` choices gets the same token in this chunk.
        for index in 0..self.plan.choices.max(1) {
            if index == 0 {
                out.extend_from_slice(br#"{"index":0"#);
            } else {
                let _ = write!(out, r#",{{"index":{index}"#);
            }
            out.extend_from_slice(if i == 0 {
                br#","delta":{"role":"assistant","content":""#.as_slice()
            } else {
                br#","delta":{"content":""#.as_slice()
            });
            if self.plan.tokens > 0 {
                out.extend_from_slice(self.shared.filler.token(i).as_bytes());
            }
            out.extend_from_slice(br#""},"logprobs":null,"finish_reason":"#);
            if i + 1 == token_events {
                out.push(b'"');
                out.extend_from_slice(self.plan.finish_reason.as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(b"null");
            }
            if index + 1 < self.plan.choices {
                out.push(b'}');
            }
        }
        out.extend_from_slice(if self.plan.include_usage {
            br#"}],"usage":null}"#.as_slice()
        } else {
            b"}]}".as_slice()
        });
        out.extend_from_slice(b"\n\n");
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockConfig;
    use crate::openai::chunk_prefix;
    use http_body_util::BodyExt as _;
    use rand::SeedableRng as _;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(MockConfig::default()))
    }

    fn guard(shared: &Arc<Shared>) -> Guard {
        shared.counters.request_started();
        Guard::new(shared.clone())
    }

    fn stream(
        shared: &Arc<Shared>,
        tokens: u32,
        ttft: Duration,
        inter_token: Latency,
        include_usage: bool,
        fault: StreamFault,
    ) -> MockBody {
        let plan = StreamPlan {
            prefix: chunk_prefix("chatcmpl-test", 1, "m"),
            tokens,
            finish_reason: "stop",
            include_usage,
            prompt_tokens: 2,
            ttft,
            inter_token,
            fault,
            dialect: volley_core::Dialect::OpenAi,
            choices: 1,
        };
        let sse = SseStream::new(shared.clone(), plan, SmallRng::seed_from_u64(1));
        MockBody::stream(sse, guard(shared))
    }

    /// Every frame with the (paused) time it arrived, and the final error if any.
    async fn drain(body: &mut MockBody) -> (Vec<(Duration, String)>, Option<Abort>) {
        let start = Instant::now();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    let data = frame.into_data().expect("data frames only");
                    frames.push((start.elapsed(), String::from_utf8(data.to_vec()).unwrap()));
                }
                Err(abort) => return (frames, Some(abort)),
            }
        }
        (frames, None)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn stream_is_paced_by_ttft_then_inter_token() {
        let shared = shared();
        let mut body = stream(
            &shared,
            4,
            ms(1000),
            Latency::Fixed(ms(100)),
            true,
            StreamFault::None,
        );
        assert_eq!(shared.counters.snapshot().in_flight, 1);
        let (frames, error) = drain(&mut body).await;
        assert!(error.is_none());
        let times: Vec<Duration> = frames.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            [ms(1000), ms(1100), ms(1200), ms(1300), ms(1300), ms(1300)]
        );
        for (_, event) in &frames[..5] {
            let json = event
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            serde_json::from_str::<serde_json::Value>(json).unwrap();
        }
        assert!(
            frames[0]
                .1
                .contains(r#""role":"assistant","content":"token0""#)
        );
        assert!(
            frames[3]
                .1
                .contains(r#""content":" token3"},"logprobs":null,"finish_reason":"stop""#)
        );
        assert!(frames[4].1.contains(
            r#""choices":[],"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6,"#
        ));
        assert_eq!(frames[5].1, "data: [DONE]\n\n");
        assert!(body.is_end_stream());
        let stats = shared.counters.snapshot();
        assert_eq!(
            (stats.in_flight, stats.streams_completed, stats.chunks_sent),
            (0, 1, 6)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_stays_in_flight_until_its_last_frame() {
        let shared = shared();
        let mut body = stream(
            &shared,
            2,
            Duration::ZERO,
            Latency::ZERO,
            false,
            StreamFault::None,
        );
        for _ in 0..2 {
            body.frame().await.unwrap().unwrap();
            assert_eq!(shared.counters.snapshot().in_flight, 1);
        }
        body.frame().await.unwrap().unwrap();
        assert_eq!(shared.counters.snapshot().in_flight, 0);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_tokens_still_send_role_and_finish_reason() {
        let shared = shared();
        let mut body = stream(
            &shared,
            0,
            Duration::ZERO,
            Latency::ZERO,
            false,
            StreamFault::None,
        );
        let (frames, _) = drain(&mut body).await;
        assert_eq!(frames.len(), 2);
        assert!(frames[0].1.contains(
            r#""delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"stop""#
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn cut_stream_stops_half_way_with_an_error() {
        let shared = shared();
        let mut body = stream(&shared, 4, ms(10), Latency::ZERO, true, StreamFault::Cut);
        let (frames, error) = drain(&mut body).await;
        // 6 events in all: 3 arrive, then the error; never [DONE].
        assert_eq!(frames.len(), 3);
        assert!(matches!(error, Some(Abort::Cut)));
        assert!(frames.iter().all(|(_, e)| !e.contains("[DONE]")));
        assert!(body.frame().await.is_none());
        let stats = shared.counters.snapshot();
        assert_eq!((stats.in_flight, stats.streams_completed), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_stream_has_one_invalid_event() {
        let shared = shared();
        let mut body = stream(
            &shared,
            6,
            Duration::ZERO,
            Latency::ZERO,
            false,
            StreamFault::Malformed,
        );
        let (frames, error) = drain(&mut body).await;
        assert!(error.is_none());
        assert_eq!(frames.len(), 7);
        let invalid: Vec<usize> = frames[..6]
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| {
                let json = e.strip_prefix("data: ").unwrap();
                serde_json::from_str::<serde_json::Value>(json.trim_end()).is_err()
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(invalid, [3]);
    }

    #[tokio::test]
    async fn cut_body_announces_the_full_length_and_errors_half_way() {
        let shared = shared();
        let mut body = MockBody::cut(Bytes::from_static(b"0123456789"), Some(guard(&shared)));
        assert_eq!(body.size_hint().exact(), Some(10));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"01234");
        assert!(matches!(body.frame().await, Some(Err(Abort::Cut))));
        assert!(body.frame().await.is_none());
        assert_eq!(shared.counters.snapshot().in_flight, 0);
    }

    #[tokio::test]
    async fn full_body_is_one_frame_of_known_length() {
        let shared = shared();
        let mut body = MockBody::full(Bytes::from_static(b"{}"), Some(guard(&shared)));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(!body.is_end_stream());
        assert_eq!(
            &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
            b"{}"
        );
        assert!(body.is_end_stream());
        assert_eq!(shared.counters.snapshot().in_flight, 0);
    }
}
