//! The batch engine behind `volley run`: a JSONL file of requests in, exactly one recorded
//! outcome per line out, across crashes and restarts.
//!
//! # Input
//!
//! The [OpenAI Batch API] input format, so files move between Volley and the provider's batch
//! service unchanged: one JSON object per line,
//!
//! ```text
//! {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
//! ```
//!
//! `url` is one of `/v1/chat/completions`, `/v1/embeddings`, `/v1/completions`,
//! `/v1/responses`, `/v1/moderations`, `/v1/images/generations` and `/v1/images/edits` (with
//! a JSON body, as the Batch API takes it), resolved as the provider does: the client's base
//! URL includes `/v1` (`http://host/prefix/v1`), so the line's `/v1` is dropped and the rest
//! appended (`http://host/prefix/v1/chat/completions`). The `custom_id` is sent as
//! `X-Client-Request-Id` when it is printable ASCII of at most 512 bytes (OpenAI's rule), and
//! the line number becomes the request's [`RequestId`](volley::RequestId) in logs and errors.
//!
//! The input is read as a stream with a bounded queue in front of the requests, so a file of
//! ten million lines runs in bounded memory (what grows with the file is one 8-byte hash per
//! `custom_id`, about 16–19 bytes each in its hash set, see
//! [Duplicates and resume](#duplicates-and-resume)). Blank lines are skipped, and a UTF-8 byte
//! order mark at the start of the file is ignored. The `body` is sent byte for byte as the
//! line wrote it (key order, whitespace and the text of numbers are kept). A body with
//! `"stream": true` is an `invalid_field` line: a batch records whole responses, not streams.
//!
//! The input may be a regular file, a pipe or a FIFO (`<(…)`, `/dev/stdin`); only a regular
//! file is counted ahead for the progress total, since counting reads the input a second
//! time.
//!
//! # Output
//!
//! The OpenAI Batch output format, one line per input line, in completion order (or input
//! order with [`BatchOptions::ordered`]; then one slow request holds every later outcome
//! back, up to its timeout, and when the reorder window or its byte limit is full, reading
//! waits for it):
//!
//! ```text
//! {"id":"batch_req_…","custom_id":"req-1","response":{"status_code":200,"request_id":"…","body":{…}},"error":null}
//! {"id":"batch_req_…","custom_id":"req-2","response":{"status_code":400,"request_id":"…","body":{"error":{…}}},"error":null}
//! {"id":"batch_req_…","custom_id":"req-3","response":null,"error":{"code":"timeout","message":"line 3: …"}}
//! {"id":"batch_req_…","custom_id":null,"response":null,"error":{"code":"invalid_json","message":"line 4: …"},"line":4}
//! ```
//!
//! A final HTTP error (after retries) is a `response` with the provider's status and error
//! body, as OpenAI writes it. A failure without an HTTP response is an `error` whose `code` is
//! the [`ErrorKind`](volley::ErrorKind) name (`timeout`, `connection`, `invalid_input`, …) or,
//! for a 2xx reply that is not JSON, `body_decode`. A bad input line is an `error` with a code
//! from [`Outcome::Invalid`] (`invalid_json`, `missing_field`, `duplicate_custom_id`, …), a
//! message naming the line and the field, and an extra `"line"` member: such records are
//! keyed by line number rather than by `custom_id` (which may be missing, wrongly typed or a
//! duplicate), and `custom_id` is `null` when the line has no usable one, or when its id is a
//! duplicate (the message names it): the earlier line's outcome stays the only, and so the
//! last, record of that id for any reader that maps records by `custom_id`. Every record that
//! is not a 2xx response is also appended to [`BatchOptions::errors`] when set.
//!
//! Unlike OpenAI's batch service, whose output file holds the successful requests only (the
//! others are in its error file), the output holds every line's outcome, as vLLM's
//! `run-batch` writes it: it is the run's journal, which a resumed run reads to find what is
//! left. A script written for OpenAI's output file skips the records without a 2xx
//! `response` (`jq -c 'select(.response.status_code // 0 | . >= 200 and . < 300)'`). Record ids
//! are `batch_req_` followed by a random number drawn at the start of the run and a counter,
//! so they differ across runs.
//!
//! # Anthropic Message Batches
//!
//! With [`BatchOptions::format`] set to [`Format::Anthropic`], the files are in the format of
//! Anthropic's Message Batches API instead: each input line is
//!
//! ```text
//! {"custom_id": "req-1", "params": {"model": "...", "max_tokens": 1024, "messages": [...]}}
//! ```
//!
//! and its `params` (a Messages request, sent byte for byte, `"stream": true` refused) go to
//! `/messages` in the Anthropic dialect. Each outcome is a line of the results file:
//!
//! ```text
//! {"id":"batch_req_…","custom_id":"req-1","result":{"type":"succeeded","message":{…}}}
//! {"id":"batch_req_…","custom_id":"req-2","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"…"},"request_id":"req_…"}}}
//! {"id":"batch_req_…","custom_id":"req-3","result":{"type":"errored","error":{"type":"error","error":{"type":"timeout_error","message":"line 3: …","code":"timeout"},"request_id":null}}}
//! {"id":"batch_req_…","custom_id":null,"result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"line 4: …","code":"invalid_json"},"request_id":null}},"line":4}
//! ```
//!
//! `custom_id` and `result` are exactly the SDK's `MessageBatchIndividualResponse`; the record
//! `id` (first, as in the OpenAI format, which the resume scan and the holding file key on)
//! and an invalid line's `"line"` are extra members, which readers of that type ignore.
//! A final HTTP error keeps the provider's error response; a failure without one gets the
//! closest Anthropic error type and Volley's own code in `code`. Everything else (one outcome
//! per line, resume, [`BatchOptions::retry_failed`], the errors file, line-numbered input
//! errors) is as for the OpenAI format.
//!
//! # Durability and resume
//!
//! An answer that was paid for must not be paid for again. So each outcome is handed to the
//! operating system (`write(2)`) as soon as it exists, not held in a user-space batch: one
//! writer thread (never a runtime thread) takes every outcome that is queued, formats them and
//! writes them with one `write(2)`, then goes back for more. While it writes, the next
//! outcomes queue up and go out together in the next write, so the number of system calls
//! falls as the rate rises and an outcome waits at most about one write for its turn.
//! A `kill -9` cannot lose what was written; what arrived in the last moments before it
//! (still in the queue to the writer) is lost, and sent again on resume, as are the requests
//! in flight then (up to the concurrency): they were sent, and may have been billed, but
//! their answers never came. A graceful stop (Ctrl-C, SIGTERM) lets those finish for
//! [`BatchOptions::grace`]; only the ones still running after it are sent again.
//!
//! `fsync` is what protects the outcomes from a power cut or a kernel crash, and it is
//! batched (group commit) as [`BatchOptions::fsync`] says: with [`Fsync::Interval`] (the
//! default, every 200 ms) a second thread `fsync`s the files at most once per interval,
//! while the writer goes on writing, so a slow disk never holds an outcome back from
//! `write(2)`; a power cut loses at most the outcomes of the last interval (and the time one
//! `fsync` takes). With [`Fsync::Always`] the writer `fsync`s after every write, before it
//! writes again: an outcome is on stable storage within one write and one `fsync` of its
//! answer, at the cost of one `fsync` per write (outcomes that arrive during an `fsync` share
//! the next one). Every file is `fsync`ed at the end of a run, however it ends.
//!
//! When the output file already exists, [`BatchRunner::run`] first reads it: a torn last line
//! (a crash mid-write) is cut off (a whole record that only lacks its line end is kept and
//! ended, whether a crash or a tool left it so), and every line whose outcome is recorded is
//! skipped and counted in [`Summary::skipped`]. So after `kill -9` or a power cut, running the
//! same command again sends only what has no recorded outcome. **The guarantee**: no request
//! whose outcome was written is sent again after a crash of the process (after a crash of the
//! machine, after `fsync`); a request whose outcome was not yet written is sent again. The
//! errors file is not the source of truth: its torn tail is cut too, but after a crash it may
//! hold an error twice (it is written first, so it never misses one that the output has,
//! unless writing it fails: the output's records are still written, then the run stops).
//!
//! **Ordered mode** holds finished outcomes back until the ones before them are done, and
//! those are paid for too. So every outcome that has to wait is written at once to a holding
//! file next to the output (`<output>.held`, one `<line> <record>` per line) and later, in
//! its turn, to the output. A resumed run (in either mode) first moves the records of the
//! holding file that the output lacks to the end of the output, in input order, then deletes
//! it; a run that ends normally deletes it too. The holding file is rewritten when it grows
//! well beyond the outcomes it still holds, so it stays about the size of the reorder window.
//! A holding file whose output is gone (moved or deleted after a crash) is refused, not merged
//! into a new output: put the output back, or delete the holding file.
//!
//! **A write error** (a full disk, a file size limit, an I/O error) stops the run at once:
//! requests in flight are cancelled (they are sent again on resume) and the run fails with
//! an error naming the file. What was written stays; a record cut short by the error is cut
//! back to the last whole one, so the file ends on a whole record, and the same command
//! resumes once there is room. (Past a file size limit the kernel also sends SIGXFSZ, whose
//! default action kills the process: a program that wants the error catches or ignores it, as
//! the `volley` binary does.)
//!
//! The output and errors files must be regular files (or not exist yet): a pipe or a terminal
//! cannot be resumed from. A run holds an exclusive advisory lock (`flock`) on both while it
//! writes, so a second run on the same output fails at once instead of interleaving records.
//! Where the file system has no locks (an NFS mount without its lock service) the run goes on
//! unlocked, with a warning; an NFS mount with `nolock` or `local_lock` locks only on its own
//! machine, which nothing can tell. On such file systems, never start two runs on one
//! output: both would send the lines without an outcome, each paid for twice.
//!
//! **The last record for a `custom_id` is its outcome.** Normally there is one; with
//! [`BatchOptions::retry_failed`], a resumed run sends again the lines whose recorded outcome
//! is a failure (not an invalid line: resending cannot fix those) and appends their new
//! outcome, so the file then holds both records and the later one counts, for the resume scan
//! as for any reader of the file.
//!
//! # Stopping on rejected credentials
//!
//! With [`BatchOptions::stop_on_auth_failure`] (the default), a request that ends in HTTP 401
//! stops the run as a shutdown does (no new line is taken, requests in flight
//! finish): every other line would fail the same way. [`Summary::credentials_rejected`] says
//! why; fix the key and resume with [`BatchOptions::retry_failed`].
//!
//! An HTTP 403 may be about the key or about one line: OpenAI answers a model the project may
//! not use with 403 `model_not_found`, OpenRouter an input its moderation flagged with 403. So
//! a 403 stops the run only when 16 lines in a row (in input order, whatever order the answers
//! come back in) end in 403 with no success among them (a key without access, revoked, or
//! used from a blocked address; a forbidden model on every line); a 403 that flags its input
//! ([`volley::ApiError::flags_the_input`]) does not count.
//! Otherwise the line gets its 403 record and the run goes on. A 429 that says the
//! account's quota is used up (OpenAI's `insufficient_quota`, which no wait heals) stops it
//! the same way, and [`Summary::quota_exhausted`] says so. So do HTTP 404s for the run's first
//! 16 lines ([`Summary::nothing_found`]): the base URL lacks its `/v1`, or every line names a
//! wrong `url` or `model`. And so does a request the client cannot send because of its own
//! settings, an `ErrorKind::Config` error ([`Summary::cannot_send`]): the shared rate
//! limiter's Redis refusing its password or its ACL the limiter's script mid-run, failing
//! closed.
//!
//! # Duplicates and resume
//!
//! A resumed run matches lines with recorded outcomes by `custom_id` (an invalid line's by its
//! number), not by content: a line edited after its outcome was recorded keeps that outcome
//! and is not sent again. To send it again, give it a new `custom_id`.
//!
//! `custom_id`s must be unique within a file. A line that is not valid JSON claims the
//! `custom_id` it seems to give (the string after its first `"custom_id":`), so a later line
//! with the same id is a duplicate: once the broken line is fixed, the id's answer is its own.
//! A line longer than [`BatchOptions::max_line_bytes`] claims the id found so in its first
//! 4 KiB, or else the last one in its last 4 KiB (serde_json and other writers that sort keys
//! put `custom_id` after a long `body`).
//! Both the duplicate check and the set of recorded
//! outcomes hold 64-bit keyed hashes (SipHash with a per-process random key) instead of the
//! ids, to keep memory small: about 16–19 bytes per id in a `HashSet<u64>` (8 for the key,
//! one control byte, and the table's spare capacity). Two different ids collide with a probability of about
//! n²/2⁶⁵ for n ids: 3·10⁻⁸ for a million, 3·10⁻⁶ for ten million. A collision would make a
//! line look like a duplicate (or, on resume, like already done).
//!
//! # Shutdown
//!
//! When the future passed to [`BatchRunner::run`] completes (the CLI passes Ctrl-C and
//! SIGTERM), no new
//! line is taken, requests in flight get [`BatchOptions::grace`] to finish, the rest are
//! cancelled (they have no record and are sent again on resume), the records are flushed and
//! the [`Summary`] says `interrupted`. [`BatchRunner::run_with_abort`] takes a second future
//! that ends the grace period at once (the CLI passes a second Ctrl-C): what was in flight is
//! cancelled, and what had finished is still written.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use volley::Client;
//! use volley_batch::{BatchOptions, BatchRunner, Input};
//!
//! # async fn demo() -> Result<(), volley::Error> {
//! let client = Client::from_env()?;
//! let options = BatchOptions {
//!     errors: Some("errors.jsonl".into()),
//!     ..BatchOptions::new("out.jsonl")
//! };
//! let runner = BatchRunner::new(client, Input::Path("requests.jsonl".into()), options);
//! let progress = runner.progress(); // poll `progress.snapshot()` for a progress bar
//! // The CLI passes `tokio::signal::ctrl_c()`; a future that never completes runs to the end.
//! let summary = runner.run(std::future::pending()).await?;
//! println!("{} succeeded, {} failed", summary.succeeded, summary.failed);
//! # Ok(()) }
//! ```
//!
//! [OpenAI Batch API]: https://platform.openai.com/docs/guides/batch
#![deny(missing_docs)]

#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod __bench;
mod dispatch;
mod format;
mod fsync;
mod held;
mod input;
mod keys;
mod parse;
mod progress;
mod record;
mod results;
mod resume;
mod runner;
mod send;
mod summary;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use format::Format;
pub use fsync::{Fsync, ParseFsyncError};
pub use input::{
    Input, MAX_DISTINCT, MAX_REPORTED_INVALID, ValidationReport, validate, validate_format,
};
pub use progress::{Progress, ProgressSnapshot};
pub use record::{Outcome, OutcomeRecord};
pub use runner::BatchRunner;
pub use summary::Summary;

/// The default of [`BatchOptions::reorder_window`].
pub const DEFAULT_REORDER_WINDOW: usize = 10_000;
/// The default of [`BatchOptions::reorder_max_bytes`]: 256 MiB.
pub const DEFAULT_REORDER_MAX_BYTES: usize = 256 * 1024 * 1024;
/// The default of [`BatchOptions::max_line_bytes`]: 10 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 10 * 1024 * 1024;
/// The default of [`BatchOptions::concurrency`].
pub const DEFAULT_BATCH_CONCURRENCY: usize = 256;
/// The default of [`BatchOptions::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The `fsync` cadence of [`Fsync::Interval`] in [`BatchOptions::default`]: 200 ms.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(200);

/// How a [`BatchRunner`] runs. Start from [`BatchOptions::new`] (or `Default`, whose `output`
/// is `batch_output.jsonl`) and set fields.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// The outcomes file (JSONL, OpenAI Batch output format). Created when missing; when it
    /// exists, the run resumes from it. Default: `batch_output.jsonl`.
    pub output: PathBuf,
    /// A second file that every outcome other than a 2xx response is also appended to.
    /// Default: none.
    pub errors: Option<PathBuf>,
    /// Write outcomes in input order (within [`reorder_window`](Self::reorder_window)).
    /// Across a resume, the lines sent by the later run come after the earlier run's.
    /// Default: `false` (written as they complete).
    pub ordered: bool,
    /// With [`ordered`](Self::ordered): how many lines a finished outcome may be ahead of the
    /// oldest unfinished one; when the window is full, reading waits. Default:
    /// [`DEFAULT_REORDER_WINDOW`] (10 000).
    pub reorder_window: usize,
    /// With [`ordered`](Self::ordered): the most bytes of finished outcomes held back; when
    /// they reach it, reading waits as for a full window. Default:
    /// [`DEFAULT_REORDER_MAX_BYTES`] (256 MiB).
    pub reorder_max_bytes: usize,
    /// On resume, send again the lines whose recorded outcome is a failure (an HTTP error or
    /// an error without a response; invalid lines are not resent) and append their new
    /// outcome, which then counts as theirs. Default: `false` (a recorded failure is final).
    pub retry_failed: bool,
    /// Stop taking new lines when a request ends in HTTP 401 or, as [Stopping on rejected
    /// credentials](crate#stopping-on-rejected-credentials) says, in a 403 (the credentials
    /// are wrong, so every line would fail), or in a 429 saying the account's quota is used up;
    /// requests in flight finish and [`Summary::credentials_rejected`] or
    /// [`Summary::quota_exhausted`] says why. Also stop when the run's first 16 lines all
    /// end in HTTP 404 ([`Summary::nothing_found`]: a base URL without its `/v1`, a wrong `url`
    /// or `model` on every line), and when the client cannot send a request because of its
    /// own settings ([`Summary::cannot_send`]). Default: `true`.
    pub stop_on_auth_failure: bool,
    /// The longest input line, newline excluded; longer lines are skipped without being held
    /// in memory and get a `line_too_long` record. Default: [`DEFAULT_MAX_LINE_BYTES`]
    /// (10 MiB).
    pub max_line_bytes: usize,
    /// How many requests the runner keeps in flight (each waits in the client's own limits
    /// too, so set the client's concurrency at least as high). Default:
    /// [`DEFAULT_BATCH_CONCURRENCY`] (256).
    pub concurrency: usize,
    /// On shutdown, how long requests in flight may take to finish before they are
    /// cancelled. Default: [`DEFAULT_GRACE`] (30 s).
    pub grace: Duration,
    /// When written outcomes are `fsync`ed (they are always written at once; see
    /// [Durability and resume](crate#durability-and-resume)). Default:
    /// [`Fsync::Interval`] of [`DEFAULT_FSYNC_INTERVAL`] (200 ms).
    pub fsync: Fsync,
    /// The format of the input and output files (see [Anthropic Message
    /// Batches](crate#anthropic-message-batches)); a file of the other format is refused at
    /// its first line. Default: [`Format::OpenAi`].
    pub format: Format,
}

impl BatchOptions {
    /// The defaults, writing outcomes to `output`.
    pub fn new(output: impl Into<PathBuf>) -> BatchOptions {
        BatchOptions {
            output: output.into(),
            ..BatchOptions::default()
        }
    }
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions {
            output: PathBuf::from("batch_output.jsonl"),
            errors: None,
            ordered: false,
            reorder_window: DEFAULT_REORDER_WINDOW,
            reorder_max_bytes: DEFAULT_REORDER_MAX_BYTES,
            retry_failed: false,
            stop_on_auth_failure: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            concurrency: DEFAULT_BATCH_CONCURRENCY,
            grace: DEFAULT_GRACE,
            fsync: Fsync::default(),
            format: Format::default(),
        }
    }
}
