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
//! `/v1/responses` and `/v1/moderations`, resolved as the provider does: the client's base
//! URL includes `/v1` (`http://host/prefix/v1`), so the line's `/v1` is dropped and the rest
//! appended (`http://host/prefix/v1/chat/completions`). The `custom_id` is sent as
//! `X-Client-Request-Id` when it is printable ASCII of at most 512 bytes (OpenAI's rule), and
//! the line number becomes the request's [`RequestId`](crate::RequestId) in logs and errors.
//!
//! The input is read as a stream with a bounded queue in front of the requests, so a file of
//! ten million lines runs in bounded memory (what grows with the file is one 8-byte hash per
//! `custom_id`, see [Duplicates and resume](#duplicates-and-resume)). Blank lines are skipped.
//! The `body` is sent re-serialised from the parsed line: the same JSON value, with object
//! members in sorted order and no insignificant whitespace.
//!
//! # Output
//!
//! The OpenAI Batch output format, one line per input line, in completion order (or input
//! order with [`BatchOptions::ordered`]):
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
//! the [`ErrorKind`](crate::ErrorKind) name (`timeout`, `connection`, `invalid_input`, …) or,
//! for a 2xx reply that is not JSON, `body_decode`. A bad input line is an `error` with a code
//! from [`Outcome::Invalid`] (`invalid_json`, `missing_field`, `duplicate_custom_id`, …), a
//! message naming the line and the field, and an extra `"line"` member: such records are
//! keyed by line number rather than by `custom_id` (which may be missing, wrongly typed or a
//! duplicate), and `custom_id` is `null` when the line has no usable one. Every record that
//! is not a 2xx response is also appended to [`BatchOptions::errors`] when set. Record ids
//! are `batch_req_` followed by a random number drawn at the start of the run and a counter,
//! so they differ across runs.
//!
//! # Durability and resume
//!
//! One writer task appends the records; it writes and `fsync`s them (on a blocking thread,
//! never a runtime thread) every [`BatchOptions::flush_records`] records or
//! [`BatchOptions::flush_interval`], whichever comes first, and at the end. When the output
//! file already exists, [`BatchRunner::run`] first reads it: a torn last line (a crash
//! mid-write) is cut off, and every line whose outcome is recorded is skipped and counted in
//! [`Summary::skipped`]. So after `kill -9` or a power cut, running the same command again
//! sends only what has no recorded outcome. **The guarantee**: no request whose outcome was
//! recorded (flushed) is sent again; a request whose outcome was not yet flushed is sent
//! again. The errors file is not the source of truth: its torn tail is cut too, but after a
//! crash it may hold an error twice (its flush goes first, so it never misses one that the
//! output has).
//!
//! # Duplicates and resume
//!
//! `custom_id`s must be unique within a file. Both the duplicate check and the set of recorded
//! outcomes hold 64-bit keyed hashes (SipHash with a per-process random key) instead of the
//! ids, to keep memory small. Two different ids collide with a probability of about
//! n²/2⁶⁵ for n ids: 3·10⁻⁸ for a million, 3·10⁻⁶ for ten million. A collision would make a
//! line look like a duplicate (or, on resume, like already done).
//!
//! # Shutdown
//!
//! When the future passed to [`BatchRunner::run`] completes (the CLI passes Ctrl-C), no new
//! line is taken, requests in flight get [`BatchOptions::grace`] to finish, the rest are
//! cancelled (they have no record and are sent again on resume), the records are flushed and
//! the [`Summary`] says `interrupted`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use volley::Client;
//! use volley::batch::{BatchOptions, BatchRunner, Input};
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

mod dispatch;
mod input;
mod keys;
mod parse;
mod progress;
mod record;
mod resume;
mod runner;
mod send;
mod summary;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use input::{Input, MAX_REPORTED_INVALID, ValidationReport, validate};
pub use progress::{Progress, ProgressSnapshot};
pub use record::{Outcome, OutcomeRecord};
pub use runner::BatchRunner;
pub use summary::Summary;

/// The default of [`BatchOptions::reorder_window`].
pub const DEFAULT_REORDER_WINDOW: usize = 10_000;
/// The default of [`BatchOptions::max_line_bytes`]: 10 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 10 * 1024 * 1024;
/// The default of [`BatchOptions::concurrency`].
pub const DEFAULT_BATCH_CONCURRENCY: usize = 256;
/// The default of [`BatchOptions::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// The default of [`BatchOptions::flush_interval`].
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The default of [`BatchOptions::flush_records`].
pub const DEFAULT_FLUSH_RECORDS: usize = 1_000;

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
    /// The longest time a finished outcome waits before it is written and `fsync`ed.
    /// Default: [`DEFAULT_FLUSH_INTERVAL`] (200 ms).
    pub flush_interval: Duration,
    /// Flush after this many outcomes even when [`flush_interval`](Self::flush_interval) has
    /// not passed. Default: [`DEFAULT_FLUSH_RECORDS`] (1 000).
    pub flush_records: usize,
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
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            concurrency: DEFAULT_BATCH_CONCURRENCY,
            grace: DEFAULT_GRACE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            flush_records: DEFAULT_FLUSH_RECORDS,
        }
    }
}
