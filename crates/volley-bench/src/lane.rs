//! A lane of the driver: one task that keeps many requests going at once (in a
//! `FuturesUnordered`) and owns the [`Recorder`] they write to.
//!
//! The driver runs a few lanes per runtime worker and spreads the load over them. A lane's
//! requests are polled by its one task, so its recorder's mutex is never contended: taking it
//! is an uncontended atomic swap, once per finished request and once per 32 stream chunks.
//! There is no global lock and no per-request task on the hot path, and memory stays bounded
//! at 10 000 requests in flight (a recorder per request would not be).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::Method;
use http::uri::PathAndQuery;
use tokio::sync::{mpsc, watch};
use volley::core::openai::CHAT_COMPLETIONS_PATH;
use volley::core::sse::EventStream;
use volley::core::{BodyStream, Dialect, ErrorKind, Request, Response, anthropic};

use super::body::Bodies;
use super::lengths::Lengths;
use super::recorder::{ErrorLabel, Outcome, Recorder};
use super::rng::Rng;
use super::shared::{Control, Shared};
use super::target::Sender;

/// What the slots of a lane's closed loop share. The slots are polled by the lane's one
/// task, so the atomics are never contended; they are atomics (and the generator a mutex)
/// only because the lane's future must be `Send`.
struct Slots {
    /// The lengths of the requests the slots send.
    rng: Mutex<Rng>,
    /// This lane's share of the target concurrency.
    quota: AtomicUsize,
    /// Slots alive.
    running: AtomicUsize,
    /// No slot starts another request.
    stopping: AtomicBool,
}

/// How long the rest of a stream's body may take to end after its last event (as the
/// facade's `ChatStream` waits): a terminator written just after it arrives within a
/// millisecond or two.
const DRAIN_FOR: Duration = Duration::from_millis(20);

/// Inter-token gaps a stream buffers before it writes them to the recorder.
const GAP_BUFFER: usize = 32;

/// One open-loop arrival, with its lengths drawn by the pacer (so they follow the seed
/// whatever lane takes it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub(crate) prompt: u32,
    pub(crate) output: u32,
    /// When it was due. Its request's latency and time to first token count from here, not
    /// from when a lane sent it: a load generator that falls behind its schedule shows that
    /// in the figures instead of hiding it (coordinated omission, as wrk2 corrects it).
    pub(crate) due: Instant,
}

/// A lane and what it needs; `T` sends its requests.
pub(crate) struct Lane<T> {
    pub(crate) index: usize,
    pub(crate) lanes: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) target: T,
    pub(crate) bodies: Arc<Bodies>,
    pub(crate) stream: bool,
    pub(crate) dialect: Dialect,
    /// The dialect's endpoint, parsed once ([`endpoint`]).
    pub(crate) path: PathAndQuery,
    pub(crate) prompt: Lengths,
    pub(crate) output: Lengths,
    /// Closed loop: the run's request budget.
    pub(crate) requests: Option<u64>,
    /// Closed loop: no request starts at or after this.
    pub(crate) deadline: Option<Instant>,
    /// The run's start: timeline times are measured from it.
    pub(crate) start: Instant,
    pub(crate) recorder: Mutex<Recorder>,
}

impl<T: Sender> Lane<T> {
    /// The closed loop (and ramp): keeps this lane's share of the target concurrency in
    /// flight, starting a request whenever one finishes, until the budget, the deadline or a
    /// stop; then lets the requests in flight finish.
    ///
    /// Each request in flight belongs to a *slot*: a future that sends the next request as
    /// soon as its last one finished, in the same poll, so a finished request's turnaround
    /// is one step and costs no allocation, no new future to move and no trip through the
    /// lane's loop. The lane adds slots when the target grows; a slot ends when there are
    /// more slots than the target, or at the stop.
    pub(crate) async fn closed(self, rng: Rng, mut control: watch::Receiver<Control>) -> Recorder {
        let state = Slots {
            rng: Mutex::new(rng),
            quota: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        };
        let mut slots = FuturesUnordered::new();
        // Until the control's sender is gone.
        let mut listening = true;
        loop {
            let Control {
                target,
                stop,
                cancel,
            } = *control.borrow_and_update();
            if cancel {
                // The requests in flight are dropped below, each counted as unfinished.
                break;
            }
            if stop {
                state.stopping.store(true, Relaxed);
            }
            let quota = share(target, self.lanes, self.index);
            state.quota.store(quota, Relaxed);
            while !state.stopping.load(Relaxed) && state.running.load(Relaxed) < quota {
                state.running.fetch_add(1, Relaxed);
                slots.push(self.slot(&state));
            }
            let stopping = state.stopping.load(Relaxed);
            if slots.is_empty() {
                // Stopped with nothing in flight: done. Otherwise the lane has no share of the
                // target now (a ramp that starts low): wait for it to grow.
                if stopping || control.changed().await.is_err() {
                    break;
                }
                continue;
            }
            tokio::select! {
                Some(()) = slots.next(), if !slots.is_empty() => {}
                // Still listened to after a stop, for a cancel.
                changed = control.changed(), if listening => {
                    if changed.is_err() {
                        listening = false;
                        state.stopping.store(true, Relaxed);
                    }
                }
                else => break,
            }
        }
        drop(slots);
        self.into_recorder()
    }

    /// One slot of the closed loop: a request after another until the budget, the deadline
    /// or the stop, or until the lane has more slots than its share of the target.
    async fn slot(&self, state: &Slots) {
        loop {
            if state.stopping.load(Relaxed) {
                return;
            }
            if state.running.load(Relaxed) > state.quota.load(Relaxed) {
                // The target shrank: this slot is one too many.
                state.running.fetch_sub(1, Relaxed);
                return;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                state.stopping.store(true, Relaxed);
                return;
            }
            if !self.shared.take(self.requests) {
                // The budget is spent for every lane: tell them all, so that lanes with no
                // share of the target (a shrinking ramp), waiting only for a control change,
                // wake and end too.
                self.shared.control.send_modify(|c| c.stop = true);
                state.stopping.store(true, Relaxed);
                return;
            }
            let (prompt, output) = {
                let mut rng = state.rng.lock().unwrap_or_else(PoisonError::into_inner);
                (self.prompt.sample(&mut rng), self.output.sample(&mut rng))
            };
            self.shared.enter();
            self.request(now, prompt, output).await;
        }
    }

    /// The open loop: starts a request for every arrival the pacer sends, until it hangs up;
    /// then lets the requests in flight finish, unless the run is cancelled.
    pub(crate) async fn open(
        self,
        mut arrivals: mpsc::UnboundedReceiver<Arrival>,
        mut control: watch::Receiver<Control>,
    ) -> Recorder {
        let mut requests = FuturesUnordered::new();
        let mut open = true;
        let mut listening = true;
        // Arrivals still queued at a cancel: counted in flight by the pacer, never sent.
        let mut queued = 0;
        loop {
            tokio::select! {
                arrival = arrivals.recv(), if open => match arrival {
                    Some(a) => {
                        // Never after now (a clock that fired early).
                        let now = Instant::now();
                        requests.push(self.request(a.due.min(now), a.prompt, a.output));
                        while let Ok(a) = arrivals.try_recv() {
                            requests.push(self.request(a.due.min(now), a.prompt, a.output));
                        }
                    }
                    None => open = false,
                },
                Some(()) = requests.next(), if !requests.is_empty() => {}
                // Only while there is something to cancel: with nothing in flight and no
                // arrival to come, the loop ends.
                changed = control.changed(), if listening && (open || !requests.is_empty()) => {
                    if changed.is_err() {
                        listening = false;
                    } else if control.borrow_and_update().cancel {
                        // The requests in flight are dropped below, each counted as
                        // unfinished; the arrivals not yet taken are counted here.
                        arrivals.close();
                        while arrivals.try_recv().is_ok() {
                            queued += 1;
                        }
                        break;
                    }
                }
                else => break,
            }
        }
        drop(requests);
        self.shared.cancelled(queued);
        let mut recorder = self.into_recorder();
        recorder.unfinished += queued as u64;
        recorder
    }

    /// One request, from `started` to its last byte; the caller has counted it in flight.
    async fn request(&self, started: Instant, prompt: u32, output: u32) {
        let counters = self.shared.lane(self.index);
        counters.started.fetch_add(1, Relaxed);
        // Counts the request out as unfinished if it is dropped before its end (a cancel).
        let mut pending = Pending {
            lane: self,
            started,
            finished: false,
        };
        // Numbered while the refusal rule is undecided (the run's first requests).
        let seq = self.shared.failures.number();
        let request = Request::new(Method::POST, self.path.clone())
            .with_body(self.bodies.body(prompt, output))
            .with_dialect(self.dialect);
        // The rest of a stream whose body had not ended at its last event.
        let mut rest = None;
        let (outcome, message) = match self.target.send(request).await {
            Ok(response) if self.stream => self.read_stream(response, started, &mut rest).await,
            Ok(response) => read_plain(response, self.dialect).await,
            Err(error) => (
                Outcome::Failed(ErrorLabel::of(&error)),
                Some(error.to_string()),
            ),
        };
        let ended = Instant::now();
        self.shared.leave();
        pending.finished = true;
        let failed = match outcome {
            Outcome::Failed(label) => {
                counters.failed.fetch_add(1, Relaxed);
                // A server's message may echo the key: scrubbed before it is kept (only the
                // first of each kind is).
                let message = message
                    .filter(|_| self.shared.failures.wants_example(label))
                    .map(|m| self.target.scrub(&m));
                self.shared.failures.failed(label, message.as_deref());
                Some(label)
            }
            Outcome::Ok { .. } => None,
        };
        if self.shared.failures.ended(seq, failed) {
            // The server refuses what is sent: nothing more is.
            self.shared.control.send_modify(|c| c.stop = true);
        }
        counters.finished.fetch_add(1, Relaxed);
        self.recorder()
            .finish(self.nanos(started), self.nanos(ended), outcome);
        // After the request's figures are taken: read the rest of its body (uvicorn, vLLM's
        // server, ends a chunked body in a write of its own after the last event), so that
        // its connection goes back to the pool.
        if let Some(mut rest) = rest {
            let _ = tokio::time::timeout(DRAIN_FOR, async { while rest.next().await.is_some() {} })
                .await;
        }
    }

    /// Reads an event stream to `[DONE]` (Anthropic: `message_stop`): content chunks
    /// (Anthropic: `content_block_delta` events) counted and timed as they arrive (one clock
    /// read each), usage from the last chunk that carries it (Anthropic: `message_delta`).
    /// A failure comes with what the server or the client said, when anything. A stream whose
    /// body had not ended at its last event is left in `rest`, to be read to its end.
    async fn read_stream(
        &self,
        response: Response,
        started: Instant,
        rest: &mut Option<EventStream<BodyStream>>,
    ) -> (Outcome, Option<String>) {
        if !response.is_stream() {
            // A server that ignored `stream: true`, or a gateway's 200 with a JSON error.
            let label = ErrorLabel::Kind(ErrorKind::BodyDecode.as_str());
            let message = match response.bytes().await {
                Ok(body) => volley::ApiError::from_body(&body).map_or_else(
                    || "the answer to a streaming request is not an event stream".to_owned(),
                    |api| api.message,
                ),
                Err(error) => error.to_string(),
            };
            return (Outcome::Failed(label), Some(message));
        }
        let mut events = response.events();
        let mut gaps = Gaps::default();
        let mut first = None;
        let mut last: Option<Instant> = None;
        let mut usage = None;
        let mut done = false;
        // The last event came before the body's end.
        let mut unended = false;
        let failure = loop {
            let event = match events.next().await {
                // llama.cpp's server ends a stream that failed with an `error: {..}` line,
                // which is no event: the decoder kept it aside.
                None => match events.decoder().error_field() {
                    Some(field) => {
                        let message = volley::ApiError::from_body(field).map(|api| api.message);
                        break Some((ErrorLabel::Kind(ErrorKind::StreamBroken.as_str()), message));
                    }
                    None => break None,
                },
                Some(Err(error)) => break Some((ErrorLabel::of(&error), Some(error.to_string()))),
                Some(Ok(event)) => event,
            };
            let anthropic = self.dialect == Dialect::Anthropic;
            if event.is_done() || (anthropic && event.event_type() == "message_stop") {
                done = true;
                // Look once more without waiting: when the body's end is already here, the
                // connection goes back to the pool; when it is not, the caller reads the rest.
                unended = !matches!(events.next().now_or_never(), Some(None));
                break None;
            }
            let data = event.data();
            if event.event_type() == "error" || self.dialect.is_error_reply(data.as_bytes()) {
                let message = volley::ApiError::from_body(data.as_bytes()).map(|api| api.message);
                break Some((ErrorLabel::Kind(ErrorKind::StreamBroken.as_str()), message));
            }
            let content = if anthropic {
                match event.event_type() {
                    // A thinking block's closing signature is not output, nor the empty
                    // `partial_json` that opens a tool_use block (as an OpenAI tool call's
                    // empty `arguments` is not).
                    "content_block_delta" => {
                        !data.contains("\"signature_delta\"")
                            && !data.contains("\"partial_json\":\"\"")
                    }
                    "message_delta" => {
                        usage = anthropic::usage_in_body(data.as_bytes())
                            .and_then(|u| u.output_tokens)
                            .or(usage);
                        false
                    }
                    _ => false,
                }
            } else {
                if let Some(u) = volley::core::openai::usage_in_body(data.as_bytes()) {
                    usage = Some(u.completion_tokens);
                }
                has_content(data)
            };
            if content {
                let now = Instant::now();
                match last {
                    Some(previous) => {
                        if gaps.push(now.saturating_duration_since(previous)) {
                            self.flush(&mut gaps);
                        }
                    }
                    None => first = Some(now),
                }
                gaps.chunks += 1;
                last = Some(now);
            }
        };
        self.flush(&mut gaps);
        if unended {
            *rest = Some(events);
        }
        let chunks = gaps.total;
        match failure {
            Some((label, message)) => (Outcome::Failed(label), message),
            // Without `[DONE]`, only a usage chunk shows the stream was finished.
            None if !done && usage.is_none() => (
                Outcome::Failed(ErrorLabel::Kind(ErrorKind::StreamBroken.as_str())),
                Some("the event stream ended before its last event".to_owned()),
            ),
            None => (
                Outcome::Ok {
                    output_tokens: usage.unwrap_or(chunks),
                    ttft: first.map(|f: Instant| f.saturating_duration_since(started)),
                },
                None,
            ),
        }
    }

    /// Writes buffered chunk counts and gaps to the recorder and the live counters.
    fn flush(&self, gaps: &mut Gaps) {
        if gaps.chunks == 0 && gaps.len == 0 {
            return;
        }
        self.recorder().chunks(gaps.chunks, &gaps.ns[..gaps.len]);
        self.shared
            .lane(self.index)
            .chunks
            .fetch_add(gaps.chunks, Relaxed);
        gaps.total += gaps.chunks;
        gaps.chunks = 0;
        gaps.len = 0;
    }

    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        // A poisoned recorder only means a panic elsewhere in this lane; its counts stand.
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn into_recorder(self) -> Recorder {
        self.recorder
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request of a lane until its end. Dropped before it (the run cancelled), it counts the
/// request out of those in flight and as unfinished, with its time on the in-flight timeline
/// up to the cancel.
struct Pending<'a, T: Sender> {
    lane: &'a Lane<T>,
    started: Instant,
    finished: bool,
}

impl<T: Sender> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let lane = self.lane;
        lane.shared.leave();
        let (start_ns, end_ns) = (lane.nanos(self.started), lane.nanos(Instant::now()));
        let mut recorder = lane.recorder();
        recorder.unfinished += 1;
        recorder.timeline.start(start_ns);
        recorder.timeline.cancel(end_ns);
        recorder.last_end_ns = recorder.last_end_ns.max(end_ns);
    }
}

/// The path a dialect's requests go to, parsed once per lane rather than per request.
pub(crate) fn endpoint(dialect: Dialect) -> PathAndQuery {
    PathAndQuery::from_static(match dialect {
        Dialect::Anthropic => anthropic::MESSAGES_PATH,
        _ => CHAT_COMPLETIONS_PATH,
    })
}

/// Reads a whole body; output tokens from its usage, found by a scan, not a parse.
async fn read_plain(response: Response, dialect: Dialect) -> (Outcome, Option<String>) {
    // The metrics layer has usually scanned a complete body already: its scan is reused.
    let usage = (!response.is_stream()).then(|| response.usage(dialect));
    match response.bytes().await {
        // A 200 whose body is an error object (some gateways do this).
        Ok(body) if dialect.is_error_reply(&body) => (
            Outcome::Failed(ErrorLabel::Kind(ErrorKind::BodyDecode.as_str())),
            volley::ApiError::from_body(&body).map(|api| api.message),
        ),
        Ok(body) => (
            Outcome::Ok {
                output_tokens: usage
                    .unwrap_or_else(|| dialect.usage_in_body(&body))
                    .map_or(0, |u| u.output),
                ttft: None,
            },
            None,
        ),
        Err(error) => (
            Outcome::Failed(ErrorLabel::of(&error)),
            Some(error.to_string()),
        ),
    }
}

/// Lane `index`'s share of `target` requests over `lanes` lanes: the first `target % lanes`
/// lanes take one more.
pub(crate) fn share(target: usize, lanes: usize, index: usize) -> usize {
    target / lanes + usize::from(index < target % lanes)
}

/// Keys whose non-empty string value is generated output, in the order they are looked for:
/// the answer (`content`), the reasoning of vLLM and llama.cpp (`reasoning_content`) and of
/// Ollama and OpenRouter (`reasoning`), a refusal, a tool call's `arguments`, and a content
/// part's `text` (Mistral's reasoning models stream their content as a list of parts,
/// `thinking` then `text`). A reasoning model's first tokens are its reasoning, and a tool
/// call's its arguments: each is the first token of its stream, as vLLM's own benchmark
/// counts them.
const OUTPUT_KEYS: [&str; 6] = [
    "\"content\"",
    "\"reasoning_content\"",
    "\"reasoning\"",
    "\"refusal\"",
    "\"arguments\"",
    "\"text\"",
];

/// Whether a chunk's JSON carries generated output: a non-empty string under one of
/// [`OUTPUT_KEYS`].
pub(crate) fn has_content(json: &str) -> bool {
    OUTPUT_KEYS.iter().any(|key| has_text_under(json, key))
}

/// Whether `key` (quoted) is followed by `:` and a string that does not close at once,
/// anywhere in `json`. A key inside a JSON string is escaped (`\"content\"`) and cannot
/// match; the same word as a value is not followed by `:` and is passed over, as is the key
/// over something else (`"content":null`, `"logprobs":{"content":[...]}`).
fn has_text_under(json: &str, key: &str) -> bool {
    let mut rest = json;
    while let Some(at) = rest.find(key) {
        rest = &rest[at + key.len()..];
        if let Some(value) = rest.trim_start().strip_prefix(':') {
            let value = value.trim_start();
            if value.starts_with('"') && !value[1..].starts_with('"') {
                return true;
            }
        }
    }
    false
}

/// Inter-token gaps not yet recorded, and chunk counts.
#[derive(Debug, Default)]
struct Gaps {
    ns: [u64; GAP_BUFFER],
    len: usize,
    /// Chunks not yet written to the counters.
    chunks: u64,
    /// Chunks written so far.
    total: u64,
}

impl Gaps {
    /// Buffers a gap; `true` when the buffer is full and must be flushed.
    fn push(&mut self, gap: Duration) -> bool {
        self.ns[self.len] = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
        self.len += 1;
        self.len == GAP_BUFFER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_found_only_when_non_empty() {
        let chunk = |delta: &str| {
            format!(
                r#"{{"id":"x","choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}"#
            )
        };
        assert!(has_content(&chunk(r#"{"content":"hi"}"#)));
        assert!(has_content(&chunk(
            r#"{"role":"assistant","content" : "a"}"#
        )));
        assert!(!has_content(&chunk(r#"{"role":"assistant","content":""}"#)));
        assert!(!has_content(&chunk(r#"{"content":null}"#)));
        assert!(!has_content(&chunk("{}")));
        assert!(!has_content(
            r#"{"choices":[],"usage":{"completion_tokens":3}}"#
        ));
        // Escaped inside a string, or a value: not the key.
        assert!(!has_content(&chunk(r#"{"name":"say \"content\":\"x\""}"#)));
        assert!(has_content(&chunk(r#"{"type":"content","content":"x"}"#)));
        assert!(!has_content(r#"{"content":"#));
        // Output that is not the answer: reasoning (vLLM and llama.cpp, Ollama and
        // OpenRouter), a refusal, a tool call's arguments; after a key that is not a string.
        assert!(has_content(&chunk(
            r#"{"content":null,"reasoning_content":"Let"}"#
        )));
        assert!(has_content(&chunk(
            r#"{"role":"assistant","reasoning":"Hm"}"#
        )));
        assert!(has_content(&chunk(r#"{"refusal":"I can't"}"#)));
        assert!(has_content(&chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]}"#
        )));
        assert!(!has_content(&chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}"#
        )));
        assert!(has_content(
            r#"{"choices":[{"logprobs":{"content":[]},"delta":{"content":"x"}}]}"#
        ));
        // Mistral's content parts, thinking first.
        assert!(has_content(&chunk(
            r#"{"content":[{"type":"thinking","thinking":[{"type":"text","text":"Okay"}]}]}"#
        )));
        assert!(!has_content(&chunk(
            r#"{"content":[{"type":"text","text":""}]}"#
        )));
    }

    #[test]
    fn shares_add_up_to_the_target() {
        for (target, lanes) in [(0, 3), (1, 3), (10, 3), (1024, 64), (5, 8)] {
            let shares: Vec<usize> = (0..lanes).map(|i| share(target, lanes, i)).collect();
            assert_eq!(shares.iter().sum::<usize>(), target);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }
}
