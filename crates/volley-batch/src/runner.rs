//! [`BatchRunner`]: sets up the reader, the dispatch loop and the writer, and sums up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use volley::core::{Error, ErrorKind};

use super::dispatch::{Item, Loop, Work};
use super::input::{Input, LineSource, count_lines, invalid_record};
use super::keys::Keys;
use super::progress::Progress;
use super::resume::{self, Done};
use super::writer::{self, Files, WriterConfig, io_error};
use super::{BatchOptions, Fsync, Summary, held};
use volley::Client;

/// Runs a batch file through a [`Client`]; see the [module docs](super).
#[derive(Debug)]
pub struct BatchRunner {
    client: Client,
    input: Input,
    options: BatchOptions,
    progress: Arc<Progress>,
}

impl BatchRunner {
    /// A runner that sends the lines of `input` through `client` (its retry, limits, timeouts
    /// and cache apply to every request). Nothing happens until [`run`](Self::run).
    pub fn new(client: Client, input: Input, options: BatchOptions) -> BatchRunner {
        let progress = Arc::new(Progress::new(client.clone()));
        BatchRunner {
            client,
            input,
            options,
            progress,
        }
    }

    /// The live counters of this runner, for a progress bar.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// Runs the batch to the end of the input, or until `shutdown` completes (then requests
    /// in flight get [`BatchOptions::grace`] to finish and the summary says `interrupted`).
    /// Resumes from the output file when it exists.
    ///
    /// # Errors
    /// `InvalidInput` when the input cannot be opened or read, `Config` for invalid options
    /// or an output or errors file that cannot be opened, is not a regular file, is locked by
    /// another run, is not a batch output file, or cannot be written. Failed requests are not
    /// errors of the run: they are records. [`Progress::started`] tells errors found before
    /// anything was sent (the files) from errors of the run itself (reading, writing).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<Summary, Error> {
        self.run_with_abort(shutdown, std::future::pending()).await
    }

    /// As [`run`](Self::run), and when `abort` completes (a second Ctrl-C, say) the grace
    /// period ends at once: no new line is taken, requests in flight are cancelled (they have
    /// no record and are sent again on resume), and the outcomes already received are still
    /// written, and synced as [`BatchOptions::fsync`] says, before this returns. The summary
    /// then says `interrupted`.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_with_abort(
        self,
        shutdown: impl Future<Output = ()> + Send,
        abort: impl Future<Output = ()> + Send,
    ) -> Result<Summary, Error> {
        let BatchRunner {
            client,
            input,
            options,
            progress,
        } = self;
        check(&options)?;
        let keys = Keys::new();
        let mut source =
            LineSource::open(&input, options.max_line_bytes, keys.clone(), options.format).await?;
        source.check_format().await?;
        let (files, done) = open_files(&input, &options, &keys).await?;

        let stop_counting = Arc::new(AtomicBool::new(false));
        // Counting reads the input a second time: only a regular file can be read twice (a
        // pipe or FIFO would hand half its lines to the counter).
        if let Input::Path(path) = &input
            && std::fs::metadata(path).is_ok_and(|m| m.is_file())
        {
            let (path, stop, progress) = (path.clone(), stop_counting.clone(), progress.clone());
            tokio::task::spawn_blocking(move || {
                if let Some(total) = count_lines(path, stop) {
                    progress.set_total_lines(total);
                }
            });
        }
        progress.start_attempts();
        progress.set_started();
        // The run's wall time is the sending's: the resume scan before it (a million recorded
        // lines read to send a thousand) would make the rate and the mean in flight look low.
        let started = Instant::now();

        // A short queue: each item holds a whole line (up to `max_line_bytes`), so its length
        // bounds memory; the requests in flight are the real buffer.
        let (item_tx, items) = mpsc::channel(options.concurrency.clamp(1, MAX_QUEUED_LINES));
        let reader = tokio::spawn(feed(
            source,
            done,
            item_tx,
            progress.clone(),
            options.retry_failed,
        ));
        let (record_tx, record_rx) = mpsc::channel(options.concurrency.saturating_mul(2).max(64));
        let (released_tx, released) = watch::channel(writer::Window::default());
        let config = WriterConfig {
            ordered: options.ordered,
            fsync: options.fsync,
            nonce: keys.nonce(),
            format: options.format,
        };
        let writer = writer::spawn(files, config, record_rx, released_tx);

        let tally = Loop::new(client, &options, &progress, items, record_tx, released)
            .run(shutdown, abort)
            .await;
        let wall = started.elapsed();

        // The loop has dropped its end of the channel: the writer writes what is left, flushes
        // and ends.
        stop_counting.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.abort();
        let written = writer.await;
        let read = reader.await;
        written.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        match read {
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => {}
        }

        let snapshot = progress.snapshot();
        let attempts = progress.attempts();
        Ok(Summary {
            lines: snapshot.read,
            skipped: snapshot.skipped,
            skipped_failed: Progress::get(&progress.skipped_failed),
            succeeded: snapshot.succeeded,
            failed: snapshot.failed,
            invalid: snapshot.invalid,
            attempts,
            retries: attempts.saturating_sub(tally.attempted),
            cached: tally.cached,
            tokens_in: snapshot.tokens_in,
            tokens_out: snapshot.tokens_out,
            wall,
            mean_in_flight: if wall.is_zero() {
                0.0
            } else {
                tally.in_flight_area / wall.as_secs_f64()
            },
            interrupted: tally.interrupted,
            cancelled: tally.cancelled,
            credentials_rejected: tally.credentials_rejected,
            quota_exhausted: tally.quota_exhausted,
            nothing_found: tally.nothing_found,
            cannot_send: tally.cannot_send,
            errors_by_code: tally.errors_by_code,
        })
    }
}

/// The most input lines queued ahead of the dispatch loop.
const MAX_QUEUED_LINES: usize = 64;

/// The reader task: checked lines, minus those already recorded, into the queue. With
/// `retry_failed`, a valid line whose recorded outcome is a failure is sent again.
async fn feed(
    mut source: LineSource,
    mut done: Done,
    items: mpsc::Sender<Item>,
    progress: Arc<Progress>,
    retry_failed: bool,
) -> Result<(), Error> {
    let mut seq = 0;
    while let Some(line) = source.next().await? {
        Progress::add(&progress.read, 1);
        let recorded = done
            .take(line.key)
            .or_else(|| line.named.and_then(|id| done.take(id)));
        if let Some(failed) = recorded {
            // An invalid line (keyed by its number) would only fail the same way again.
            let resend = failed && retry_failed && line.parsed.is_ok();
            if !resend {
                Progress::add(&progress.skipped, 1);
                Progress::add(&progress.skipped_failed, u64::from(failed));
                continue;
            }
        }
        let work = match line.parsed {
            Ok(parsed) => {
                let (custom_id, request) = parsed.into_request(line.line);
                Work::Send { custom_id, request }
            }
            Err(invalid) => Work::Record(invalid_record(line.line, invalid)),
        };
        let item = Item {
            seq,
            line: line.line,
            work,
        };
        if items.send(item).await.is_err() {
            break; // Shutting down.
        }
        seq += 1;
    }
    Ok(())
}

fn check(options: &BatchOptions) -> Result<(), Error> {
    let positive = [
        ("concurrency", options.concurrency),
        ("reorder_window", options.reorder_window),
        ("reorder_max_bytes", options.reorder_max_bytes),
        ("max_line_bytes", options.max_line_bytes),
    ];
    for (name, value) in positive {
        if value == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!("batch option {name} must be at least 1"),
            ));
        }
    }
    for path in [Some(&options.output), options.errors.as_ref()]
        .into_iter()
        .flatten()
    {
        if path.as_os_str() == "-" {
            return Err(Error::new(
                ErrorKind::Config,
                "`-` cannot be the output or errors file: outcomes go to a file the run can \
                 read back on resume; give a file path",
            ));
        }
    }
    if options.fsync == Fsync::Interval(Duration::ZERO) {
        return Err(Error::new(
            ErrorKind::Config,
            "batch option fsync: an fsync interval must be above zero (or use Fsync::Always)",
        ));
    }
    Ok(())
}

/// Opens the output (resuming from it) and errors files on a blocking thread, after checking
/// that neither is the input and that they differ.
async fn open_files(
    input: &Input,
    options: &BatchOptions,
    keys: &Keys,
) -> Result<(Files, Done), Error> {
    let (output_path, errors_path, keys) =
        (options.output.clone(), options.errors.clone(), keys.clone());
    let ordered = options.ordered;
    let format = options.format;
    let input_path = match input {
        Input::Path(path) => Some(path.clone()),
        Input::Stdin => None,
    };
    tokio::task::spawn_blocking(move || {
        let mut pairs = vec![(&output_path, errors_path.as_ref(), "the errors file")];
        for path in [Some(&output_path), errors_path.as_ref()]
            .into_iter()
            .flatten()
        {
            pairs.push((path, input_path.as_ref(), "the input"));
        }
        for (path, other, what) in pairs {
            if let Some(other) = other
                && same_file(path, other)
            {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{} cannot also be {what}", path.display()),
                ));
            }
        }
        let mut resumed = resume::open_output(&output_path, &keys)?;
        // Records of both formats in one file would be misread by either SDK's reader.
        if let Some(found) = resumed.format
            && found != format
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the output file {} holds records in {}; this run writes {}: choose \
                     another output file, or the provider of the run that wrote it",
                    output_path.display(),
                    found.describe(),
                    format.describe()
                ),
            ));
        }
        if resumed.records > 0 || resumed.repaired_bytes > 0 {
            tracing::info!(
                path = %output_path.display(),
                records = resumed.records,
                repaired_bytes = resumed.repaired_bytes,
                "resuming from the existing output file"
            );
        }
        let errors = match errors_path {
            Some(path) => Some((resume::open_errors(&path)?, path)),
            None => None,
        };
        let errors_ref = errors.as_ref().map(|(file, path)| (file, path.as_path()));
        resume::settle_held(&output_path, &mut resumed, errors_ref)?;
        let held = if ordered {
            let path = held::path_for(&output_path);
            let file = held::create(&path).map_err(|e| io_error("creating", &path, e))?;
            Some((file, path))
        } else {
            None
        };
        let files = Files {
            output: resumed.file,
            output_path,
            errors,
            held,
        };
        Ok((files, resumed.done))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Whether two paths name the same file: equal as written, or once resolved when both exist.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}
