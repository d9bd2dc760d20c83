//! The dispatch loop: keeps `concurrency` requests in flight, hands outcomes to the writer,
//! integrates the in-flight count, and carries out shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use volley::core::{ErrorKind, Request};

use super::BatchOptions;
use super::progress::Progress;
use super::record::{Outcome, OutcomeRecord};
use super::send::{Finished, execute};
use super::writer;
use volley::Client;

/// One line for the runner, in input order.
pub(super) struct Item {
    /// Position among the lines that get an outcome this run.
    pub(super) seq: u64,
    pub(super) line: u64,
    pub(super) work: Work,
}

/// What to do with a line.
pub(super) enum Work {
    /// Send the request.
    Send { custom_id: String, request: Request },
    /// Write this record (an invalid line).
    Record(OutcomeRecord),
}

/// The state of the dispatch loop.
pub(super) struct Loop<'a> {
    client: Client,
    options: &'a BatchOptions,
    progress: &'a Progress,
    items: mpsc::Receiver<Item>,
    record_tx: mpsc::Sender<writer::Message>,
    /// Ordered mode: the state of the writer's reorder buffer.
    released: watch::Receiver<writer::Window>,
    tasks: JoinSet<(u64, Finished)>,
    /// The requests in flight (`tasks.len()`, tracked to integrate it before it changes).
    in_flight: usize,
    /// Items taken from the reader (the next item's `seq`).
    received: u64,
    /// Requests that made at least one attempt (cancelled ones are assumed to have).
    attempted: u64,
    /// Requests cancelled in flight when the grace period ended.
    cancelled: u64,
    /// Requests the client's cache answered.
    cached: u64,
    errors_by_code: BTreeMap<String, u64>,
    /// The integral of the in-flight count over time, in request-seconds.
    area: f64,
    last_change: Instant,
    interrupted: bool,
    /// Set by a request that ended in HTTP 401, or in a 403 as [`Loop::refusal`] says: no new
    /// line is taken.
    credentials_rejected: Option<String>,
    /// The lines' outcomes, in input order: what the 403 and 404 rules see (see
    /// [`Walls`]).
    walls: Walls,
    /// Set when the first [`NOT_FOUND_IN_A_ROW`] outcomes of the run all were HTTP 404: no
    /// new line is taken.
    nothing_found: Option<String>,
    /// Set by a request that ended in a 429 saying the account's quota is used up: no new
    /// line is taken.
    quota_exhausted: Option<String>,
    /// Set by a request the client could not send because of its own settings
    /// (`ErrorKind::Config`): no new line is taken.
    cannot_send: Option<String>,
    writer_failed: bool,
}

/// What the loop counted.
pub(super) struct Tally {
    pub(super) attempted: u64,
    pub(super) cancelled: u64,
    pub(super) cached: u64,
    pub(super) errors_by_code: BTreeMap<String, u64>,
    /// The integral of the in-flight count over time, in request-seconds.
    pub(super) in_flight_area: f64,
    pub(super) interrupted: bool,
    pub(super) credentials_rejected: Option<String>,
    pub(super) quota_exhausted: Option<String>,
    pub(super) nothing_found: Option<String>,
    pub(super) cannot_send: Option<String>,
}

impl<'a> Loop<'a> {
    pub(super) fn new(
        client: Client,
        options: &'a BatchOptions,
        progress: &'a Progress,
        items: mpsc::Receiver<Item>,
        record_tx: mpsc::Sender<writer::Message>,
        released: watch::Receiver<writer::Window>,
    ) -> Loop<'a> {
        Loop {
            client,
            options,
            progress,
            items,
            record_tx,
            released,
            tasks: JoinSet::new(),
            in_flight: 0,
            received: 0,
            attempted: 0,
            cancelled: 0,
            cached: 0,
            errors_by_code: BTreeMap::new(),
            area: 0.0,
            last_change: Instant::now(),
            interrupted: false,
            credentials_rejected: None,
            walls: Walls::default(),
            nothing_found: None,
            quota_exhausted: None,
            cannot_send: None,
            writer_failed: false,
        }
    }

    /// Runs until the input is done and every request has its outcome, or until `shutdown`
    /// and its grace period are over (`abort` ends the grace period at once), or the writer
    /// fails. Dropping the result closes the channel to the writer.
    pub(super) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        abort: impl Future<Output = ()>,
    ) -> Tally {
        self.dispatch_all(shutdown, abort).await;
        Tally {
            attempted: self.attempted,
            cancelled: self.cancelled,
            cached: self.cached,
            errors_by_code: self.errors_by_code,
            in_flight_area: self.area,
            interrupted: self.interrupted,
            credentials_rejected: self.credentials_rejected,
            quota_exhausted: self.quota_exhausted,
            nothing_found: self.nothing_found,
            cannot_send: self.cannot_send,
        }
    }

    async fn dispatch_all(
        &mut self,
        shutdown: impl Future<Output = ()>,
        abort: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut abort = std::pin::pin!(abort);
        let mut aborted = false;
        let mut reading = true;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let stopping = !reading
                || deadline.is_some()
                || self.credentials_rejected.is_some()
                || self.quota_exhausted.is_some()
                || self.nothing_found.is_some()
                || self.cannot_send.is_some();
            if (stopping && self.tasks.is_empty()) || self.writer_failed {
                break;
            }
            let window_open = !self.options.ordered || {
                let window = *self.released.borrow();
                self.received
                    < window
                        .released
                        .saturating_add(self.options.reorder_window as u64)
                    && window.held_bytes < self.options.reorder_max_bytes as u64
            };
            let can_take = !stopping && self.tasks.len() < self.options.concurrency && window_open;
            tokio::select! {
                biased;
                () = &mut shutdown, if deadline.is_none() => {
                    // Lines still to read, or requests cancelled below, have no outcome yet.
                    self.interrupted = reading;
                    deadline = Some(tokio::time::Instant::now() + self.options.grace);
                    self.items.close();
                }
                () = &mut abort, if !aborted => {
                    // The grace period, begun or not, ends now: the next turn cancels what is
                    // in flight, and the records of what finished are written as usual.
                    aborted = true;
                    self.interrupted |= reading;
                    deadline = Some(tokio::time::Instant::now());
                    self.items.close();
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.interrupted = true;
                    self.tasks.abort_all();
                    // Cancelled tasks leave no record; drain them (and any that just finished).
                    while let Some(joined) = self.tasks.join_next().await {
                        self.set_in_flight(self.in_flight - 1);
                        match joined {
                            Ok((seq, finished)) => self.finish(seq, finished).await,
                            // It was in flight: count it as having made its attempt.
                            Err(_) => {
                                self.attempted += 1;
                                self.cancelled += 1;
                            }
                        }
                    }
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.set_in_flight(self.in_flight - 1);
                    let (seq, finished) =
                        joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    self.finish(seq, finished).await;
                }
                item = self.items.recv(), if can_take => match item {
                    Some(item) => self.dispatch(item).await,
                    None => reading = false,
                },
                changed = self.released.changed(), if !window_open => {
                    // The writer only drops its end when it fails.
                    self.writer_failed |= changed.is_err();
                }
                () = self.record_tx.closed() => {
                    // A write failed: stop at once. Requests in flight are cancelled (they
                    // have no record and are sent again on resume); `run` reports the error.
                    self.writer_failed = true;
                    self.tasks.abort_all();
                }
            }
        }
    }

    async fn dispatch(&mut self, item: Item) {
        self.received += 1;
        match item.work {
            Work::Record(record) => {
                Progress::add(&self.progress.invalid, 1);
                self.count_error(&record);
                // An invalid line says nothing about the key or the URL.
                let _ = self.walls.observe(item.seq, Seen::Neither);
                self.write(item.seq, record).await;
            }
            Work::Send { custom_id, request } => {
                Progress::add(&self.progress.sent, 1);
                self.tasks.spawn(execute(
                    self.client.clone(),
                    item.seq,
                    item.line,
                    custom_id,
                    request,
                ));
                self.set_in_flight(self.in_flight + 1);
            }
        }
    }

    async fn finish(&mut self, seq: u64, finished: Finished) {
        let (refusal, nothing_found) = match self.walls.observe(seq, Seen::of(&finished)) {
            Some(Wall::Forbidden(why)) => (Some(why), None),
            Some(Wall::NotFound(why)) => (None, Some(why)),
            None => (rejected_credentials(&finished.record), None),
        };
        if self.options.stop_on_auth_failure
            && self.credentials_rejected.is_none()
            && self.quota_exhausted.is_none()
            && self.nothing_found.is_none()
            && self.cannot_send.is_none()
        {
            if let Some(why) = cannot_send(&finished.record) {
                tracing::error!("{why}; no new line is taken");
                self.cannot_send = Some(why);
                self.items.close();
            } else if let Some(why) = nothing_found {
                tracing::error!("{why}; no new line is taken");
                self.nothing_found = Some(why);
                self.items.close();
            } else if let Some(why) = refusal {
                tracing::error!("{why}; no new line is taken");
                self.credentials_rejected = Some(why);
                // The reader stops at its next line; what it queued stays unsent.
                self.items.close();
            } else if let Some(why) = quota_exhausted(&finished.record) {
                tracing::error!("{why}; no new line is taken");
                self.quota_exhausted = Some(why);
                self.items.close();
            }
        }
        let counter = if finished.record.is_success() {
            &self.progress.succeeded
        } else {
            self.count_error(&finished.record);
            &self.progress.failed
        };
        Progress::add(counter, 1);
        Progress::add(&self.progress.tokens_in, finished.tokens_in);
        Progress::add(&self.progress.tokens_out, finished.tokens_out);
        self.attempted += u64::from(finished.attempted);
        if finished.cached {
            self.cached += 1;
            Progress::add(&self.progress.cached, 1);
        }
        self.write(seq, finished.record).await;
    }

    fn count_error(&mut self, record: &OutcomeRecord) {
        if let Some(code) = record.error_code() {
            *self.errors_by_code.entry(code).or_default() += 1;
        }
    }

    async fn write(&mut self, seq: u64, record: OutcomeRecord) {
        if self.record_tx.send((seq, record)).await.is_err() {
            // The writer ended on an I/O error; `run` reports it.
            self.writer_failed = true;
            self.tasks.abort_all();
        }
    }

    /// Changes the in-flight count, adding the area under the old count since its last
    /// change to the integral.
    fn set_in_flight(&mut self, in_flight: usize) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_change).as_secs_f64();
        self.area += self.in_flight as f64 * dt;
        self.last_change = now;
        self.in_flight = in_flight;
        self.progress
            .in_flight
            .store(in_flight as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many lines in a row (in input order) ending in HTTP 403, with no success from the
/// provider among them, stop a run (see [`Walls`]).
pub(crate) const FORBIDDEN_IN_A_ROW: u32 = 16;

/// How many HTTP 404s, as the outcomes of the run's first lines, stop it (see [`Walls`]).
pub(crate) const NOT_FOUND_IN_A_ROW: u32 = 16;

/// `HTTP 401: <the provider's message>` when `record` is a 401: the credentials were refused,
/// and every other line would fail the same way. The message is read as
/// [`ApiError`](volley::ApiError) reads it, cleaned of control characters (a terminal escape
/// from a hostile server would reach the user's terminal) and bounded.
fn rejected_credentials(record: &OutcomeRecord) -> Option<String> {
    match &record.outcome {
        Outcome::Response {
            status_code: 401,
            body,
            ..
        } => Some(format!("HTTP 401: {}", message_of(body))),
        _ => None,
    }
}

/// The provider's message in an error body, as [`ApiError`](volley::ApiError) reads it.
fn message_of(body: &[u8]) -> String {
    volley::ApiError::from_body(body)
        .map(|api| api.message)
        .unwrap_or_else(|| "no message".to_owned())
}

/// What a line's outcome tells the 403 and 404 rules.
#[derive(Debug)]
enum Seen {
    /// A success from the provider (not the cache): the key works.
    Success,
    /// An HTTP 403 that does not flag its input, with `HTTP 403: <message>`.
    Forbidden(String),
    /// An HTTP 404, with `HTTP 404: <message>`.
    NotFound(String),
    /// Any other failure.
    Failure,
    /// A line that says nothing either way: invalid, answered from the cache, or a 403 that
    /// flags its input (a moderation filter's refusal of that input alone).
    Neither,
}

impl Seen {
    fn of(finished: &Finished) -> Seen {
        match &finished.record.outcome {
            _ if finished.cached => Seen::Neither,
            Outcome::Response {
                status_code: 403,
                body,
                ..
            } if volley::ApiError::flags_the_input(body) => Seen::Neither,
            Outcome::Response {
                status_code: 403,
                body,
                ..
            } => Seen::Forbidden(format!("HTTP 403: {}", message_of(body))),
            Outcome::Response {
                status_code: 404,
                body,
                ..
            } => Seen::NotFound(format!("HTTP 404: {}", message_of(body))),
            _ if finished.record.is_success() => Seen::Success,
            _ => Seen::Failure,
        }
    }
}

/// The most outcomes [`Walls`] holds back behind lines still in flight (a few MiB).
const MAX_WAITING: usize = 1 << 16;

/// A rule's reason to stop the run.
#[derive(Debug, PartialEq, Eq)]
enum Wall {
    /// [`FORBIDDEN_IN_A_ROW`] lines in a row ended in 403 with no success among them: a key
    /// without access, or revoked or blocked mid-run, or a model the project may not use on
    /// every line. A lone 403 fails its line only.
    Forbidden(String),
    /// The run's first [`NOT_FOUND_IN_A_ROW`] lines all ended in 404: a base URL without its
    /// `/v1`, or a wrong `url` or `model` on every line. Once another outcome came first, 404s
    /// fail their own lines only.
    NotFound(String),
}

/// The outcomes of the lines in input order, for the 403 and 404 rules. Answers come back in
/// any order (a refusal in milliseconds, a success in seconds), so counting them as they
/// arrive would make a few fast refusals among slow successes look like a wall; the rules
/// read them by line instead, as each line's outcome and every one before it are known.
#[derive(Debug, Default)]
struct Walls {
    /// The first line whose outcome is not known yet.
    next: u64,
    /// Outcomes of later lines, waiting for the ones before them: a line still in flight
    /// (a slow answer, a stall until its timeout) holds back every line after it, up to
    /// [`MAX_WAITING`].
    waiting: std::collections::HashMap<u64, Seen>,
    /// 403s in a row so far.
    forbidden: u32,
    /// 404s among the first lines.
    not_found: u32,
    /// Whether a line ended otherwise than in 404 before: the 404 rule is over.
    other_first: bool,
}

impl Walls {
    /// Notes line `seq`'s outcome; a reason to stop once the lines before it are known.
    fn observe(&mut self, seq: u64, seen: Seen) -> Option<Wall> {
        if seq < self.next {
            // A line passed over while it was in flight (see below).
            return None;
        }
        self.waiting.insert(seq, seen);
        if self.waiting.len() > MAX_WAITING {
            // Memory stays bounded at any rate: the lines still missing before the earliest
            // one known are passed over, as if they told neither rule anything.
            if let Some(&first) = self.waiting.keys().min() {
                self.next = first;
            }
        }
        let mut wall = None;
        while let Some(seen) = self.waiting.remove(&self.next) {
            self.next += 1;
            match seen {
                Seen::Neither => {}
                Seen::NotFound(why) => {
                    if !self.other_first {
                        self.not_found += 1;
                        if self.not_found == NOT_FOUND_IN_A_ROW {
                            wall = wall.or(Some(Wall::NotFound(why)));
                        }
                    }
                }
                Seen::Forbidden(why) => {
                    self.other_first = true;
                    self.forbidden += 1;
                    if self.forbidden == FORBIDDEN_IN_A_ROW {
                        wall = wall.or(Some(Wall::Forbidden(why)));
                    }
                }
                Seen::Success => {
                    self.other_first = true;
                    self.forbidden = 0;
                }
                Seen::Failure => self.other_first = true,
            }
        }
        wall
    }
}

/// `HTTP 429: <the provider's message>` when `record` says the account's quota or credit is
/// used up (OpenAI's `insufficient_quota`, a Google per-day quota): no wait within the run
/// restores it, so every later line would fail the same way.
fn quota_exhausted(record: &OutcomeRecord) -> Option<String> {
    let Outcome::Response {
        status_code: 429,
        body,
        ..
    } = &record.outcome
    else {
        return None;
    };
    let api = volley::ApiError::from_body(body).filter(volley::ApiError::is_quota_exhausted)?;
    Some(format!("HTTP 429: {}", api.message))
}

/// What the client said when it could not send `record`'s request because of its own
/// settings (`ErrorKind::Config`: for example a SOCKS5 proxy refusing the password in its
/// URL, or the shared rate limiter's Redis refusing its password or script), or when the
/// HTTP proxy refused it (407): every other line would fail the same way. The record's
/// message, without its `line N: ` prefix.
fn cannot_send(record: &OutcomeRecord) -> Option<String> {
    match &record.outcome {
        Outcome::Error { code, message } if code == ErrorKind::Config.as_str() => {
            let message = message
                .split_once(": ")
                .map_or(message.as_str(), |(_, m)| m);
            Some(message.to_owned())
        }
        Outcome::Response {
            status_code: 407,
            body,
            ..
        } => Some(format!("HTTP 407: {}", message_of(body))),
        _ => None,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> Seen {
        Seen::Forbidden("HTTP 403: no".into())
    }

    fn not_found() -> Seen {
        Seen::NotFound("HTTP 404: no".into())
    }

    /// Every tenth line is forbidden, and their refusals come back first, long before the
    /// successes: read by line, that is no wall.
    #[test]
    fn fast_refusals_before_slow_successes_are_no_wall() {
        let mut walls = Walls::default();
        for seq in (0..200).filter(|n| n % 10 == 0) {
            assert_eq!(walls.observe(seq, forbidden()), None);
        }
        for seq in (0..200).filter(|n| n % 10 != 0) {
            assert_eq!(walls.observe(seq, Seen::Success), None);
        }
        assert_eq!(walls.next, 200);
    }

    /// 16 forbidden lines in a row are a wall, in whatever order their answers came, once
    /// the lines before them are known; a success among them starts the count again, and a
    /// flagged input (neither) does not.
    #[test]
    fn sixteen_forbidden_lines_in_a_row_are_a_wall() {
        let mut walls = Walls::default();
        assert_eq!(walls.observe(0, Seen::Success), None);
        for seq in (2..17).rev() {
            assert_eq!(walls.observe(seq, forbidden()), None);
        }
        assert_eq!(walls.observe(17, Seen::Neither), None);
        // Line 1 completes the row 1..=16 (17 is neither).
        assert_eq!(
            walls.observe(1, forbidden()),
            Some(Wall::Forbidden("HTTP 403: no".into()))
        );

        let mut walls = Walls::default();
        for seq in 0..15 {
            assert_eq!(walls.observe(seq, forbidden()), None);
        }
        assert_eq!(walls.observe(15, Seen::Success), None);
        for seq in 16..31 {
            assert_eq!(walls.observe(seq, forbidden()), None);
        }
    }

    /// A line that never finishes (stalled) holds back at most `MAX_WAITING` outcomes: then
    /// the rules pass over it and go on.
    #[test]
    fn a_stalled_line_holds_back_a_bounded_number_of_outcomes() {
        let mut walls = Walls::default();
        let last = MAX_WAITING as u64 + 100;
        for seq in 1..=last {
            assert_eq!(walls.observe(seq, Seen::Success), None);
            assert!(walls.waiting.len() <= MAX_WAITING);
        }
        assert!(walls.next > 1, "passed over the stalled line 0");
        // When it ends at last, it is not kept.
        assert_eq!(walls.observe(0, forbidden()), None);
        assert!(walls.waiting.is_empty());
        for seq in last + 1..last + 16 {
            assert_eq!(walls.observe(seq, forbidden()), None);
        }
        assert!(walls.observe(last + 16, forbidden()).is_some());
    }

    /// The first 16 lines all 404 is a wall; any other outcome among them ends the rule.
    #[test]
    fn sixteen_first_lines_not_found_are_a_wall() {
        let mut walls = Walls::default();
        for seq in (1..16).rev() {
            assert_eq!(walls.observe(seq, not_found()), None);
        }
        assert_eq!(
            walls.observe(0, not_found()),
            Some(Wall::NotFound("HTTP 404: no".into()))
        );

        let mut walls = Walls::default();
        assert_eq!(walls.observe(0, Seen::Neither), None);
        assert_eq!(walls.observe(1, Seen::Failure), None);
        for seq in 2..40 {
            assert_eq!(walls.observe(seq, not_found()), None);
        }
    }

    /// A client that cannot send (its own settings, or the HTTP proxy's 407) stops the run;
    /// other errors and HTTP statuses do not.
    #[test]
    fn only_the_clients_own_settings_or_a_proxys_refusal_cannot_send() {
        let record = |outcome| OutcomeRecord {
            line: 7,
            custom_id: Some("r7".into()),
            outcome,
        };
        let error = |code: &str| {
            record(Outcome::Error {
                code: code.into(),
                message: "line 7: the proxy rejected the user name and password: no".into(),
            })
        };
        assert_eq!(
            cannot_send(&error("config")).as_deref(),
            Some("the proxy rejected the user name and password: no")
        );
        assert_eq!(cannot_send(&error("connect")), None);
        let response = |status_code| {
            record(Outcome::Response {
                status_code,
                request_id: String::new(),
                body: bytes::Bytes::from_static(
                    br#"{"error":{"message":"the proxy requires authentication"}}"#,
                ),
            })
        };
        assert_eq!(
            cannot_send(&response(407)).as_deref(),
            Some("HTTP 407: the proxy requires authentication")
        );
        assert_eq!(cannot_send(&response(400)), None);
    }
}
