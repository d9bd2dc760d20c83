//! The one task that writes outcome records: batching, `fsync` off the runtime threads, and
//! the reorder window of ordered mode.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use volley::core::{Error, ErrorKind};

use super::record::OutcomeRecord;

/// Above this many buffered bytes the writer stops taking records until its flush is done,
/// so a slow disk slows the run down instead of filling memory.
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// The files records go to.
pub(crate) struct Files {
    pub(crate) output: File,
    pub(crate) output_path: PathBuf,
    pub(crate) errors: Option<(File, PathBuf)>,
}

/// How the writer batches and orders.
pub(crate) struct WriterConfig {
    pub(crate) ordered: bool,
    pub(crate) flush_interval: Duration,
    pub(crate) flush_records: usize,
    /// Record ids are `batch_req_<nonce><counter>`, unique across runs.
    pub(crate) nonce: u64,
}

/// A record and its position among the lines that get one this run (for ordered mode).
pub(crate) type Message = (u64, OutcomeRecord);

/// Ordered mode: the state of the reorder buffer, published to the dispatch loop, which
/// takes no new line while the window is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// How many records were released in order.
    pub(crate) released: u64,
    /// The approximate size of the records held back.
    pub(crate) held_bytes: u64,
}

/// Starts the writer. It takes records from `records` until that closes, writes them (in
/// sequence order when `ordered`, publishing in `released` the state of the reorder buffer),
/// flushes, and ends; an I/O error ends it early with that error.
pub(crate) fn spawn(
    files: Files,
    config: WriterConfig,
    records: mpsc::Receiver<Message>,
    released: watch::Sender<Window>,
) -> JoinHandle<Result<(), Error>> {
    tokio::spawn(run(files, config, records, released))
}

/// Buffered lines for the two files.
#[derive(Default)]
struct Batch {
    output: Vec<u8>,
    errors: Vec<u8>,
}

type Flush = JoinHandle<(Files, Batch, Result<(), Error>)>;

async fn run(
    files: Files,
    config: WriterConfig,
    mut records: mpsc::Receiver<Message>,
    released: watch::Sender<Window>,
) -> Result<(), Error> {
    let has_errors_file = files.errors.is_some();
    let mut files = Some(files);
    let mut spare = Some(Batch::default());
    let mut state = State {
        batch: Batch::default(),
        pending: 0,
        oldest: None,
        next_id: 0,
        nonce: config.nonce,
        has_errors_file,
        reorder: BTreeMap::new(),
        held_bytes: 0,
        next_seq: 0,
    };
    let mut flushing: Option<Flush> = None;
    let mut open = true;
    loop {
        let due = state.pending >= config.flush_records
            || !open
            || state
                .oldest
                .is_some_and(|t| t.elapsed() >= config.flush_interval);
        if flushing.is_none() && state.pending > 0 && due {
            let mut batch = std::mem::replace(&mut state.batch, spare.take().unwrap_or_default());
            // Files are taken only while a flush runs, and none runs here.
            let mut f = files.take().expect("the files are back when no flush runs");
            flushing = Some(tokio::task::spawn_blocking(move || {
                let result = write_batch(&mut f, &batch);
                batch.output.clear();
                batch.errors.clear();
                (f, batch, result)
            }));
            state.pending = 0;
            state.oldest = None;
        }
        if !open && flushing.is_none() && state.pending == 0 {
            return Ok(());
        }
        let deadline = state.oldest.map(|t| t + config.flush_interval);
        let room = state.batch.output.len() + state.batch.errors.len() < MAX_BUFFERED;
        tokio::select! {
            done = async { flushing.as_mut().expect("guarded by is_some").await },
                if flushing.is_some() =>
            {
                flushing = None;
                let (f, batch, result) = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                files = Some(f);
                spare = Some(batch);
                result?;
            }
            message = records.recv(), if open && room => match message {
                Some((seq, record)) => state.accept(seq, record, config.ordered, &released),
                None => {
                    open = false;
                    // Interrupted runs leave gaps: write what is left in sequence order.
                    for record in std::mem::take(&mut state.reorder).into_values() {
                        state.append(&record);
                    }
                }
            },
            () = sleep_until(deadline), if deadline.is_some() && flushing.is_none() => {}
        }
    }
}

struct State {
    batch: Batch,
    /// Records in `batch`.
    pending: usize,
    /// When the oldest record in `batch` arrived.
    oldest: Option<Instant>,
    next_id: u64,
    nonce: u64,
    has_errors_file: bool,
    reorder: BTreeMap<u64, OutcomeRecord>,
    /// The approximate size of the records in `reorder`.
    held_bytes: u64,
    next_seq: u64,
}

impl State {
    fn accept(
        &mut self,
        seq: u64,
        record: OutcomeRecord,
        ordered: bool,
        released: &watch::Sender<Window>,
    ) {
        if !ordered {
            self.append(&record);
            return;
        }
        self.held_bytes += record.approx_bytes();
        self.reorder.insert(seq, record);
        while let Some(record) = self.reorder.remove(&self.next_seq) {
            self.held_bytes -= record.approx_bytes();
            self.append(&record);
            self.next_seq += 1;
        }
        released.send_replace(Window {
            released: self.next_seq,
            held_bytes: self.held_bytes,
        });
    }

    fn append(&mut self, record: &OutcomeRecord) {
        let start = self.batch.output.len();
        let (nonce, id) = (self.nonce, self.next_id);
        record.write_json(
            |out| {
                // Writing to a `Vec` cannot fail.
                let _ = write!(out, "batch_req_{nonce:016x}{id:08x}");
            },
            &mut self.batch.output,
        );
        if self.has_errors_file && !record.is_success() {
            let Batch { output, errors } = &mut self.batch;
            errors.extend_from_slice(&output[start..]);
        }
        self.next_id += 1;
        self.pending += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }
}

/// Appends and syncs a batch: the errors file first, so that a crash between the two can
/// leave an error recorded twice (it is sent again) but never missing from the errors file.
fn write_batch(files: &mut Files, batch: &Batch) -> Result<(), Error> {
    if let Some((file, path)) = &mut files.errors
        && !batch.errors.is_empty()
    {
        append(file, &batch.errors).map_err(|e| write_error(path, e))?;
    }
    append(&mut files.output, &batch.output).map_err(|e| write_error(&files.output_path, e))
}

fn append(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_data()
}

fn write_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("writing outcomes to {}: {e}", path.display()),
    )
    .with_source(e)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;

    fn record(line: u64, body: usize) -> OutcomeRecord {
        OutcomeRecord {
            line,
            custom_id: Some(format!("id-{line}")),
            outcome: Outcome::Response {
                status_code: 200,
                request_id: String::new(),
                body: bytes::Bytes::from(vec![b'1'; body]),
            },
        }
    }

    #[test]
    fn the_reorder_buffer_publishes_what_it_holds() {
        let mut state = State {
            batch: Batch::default(),
            pending: 0,
            oldest: None,
            next_id: 0,
            nonce: 1,
            has_errors_file: false,
            reorder: BTreeMap::new(),
            held_bytes: 0,
            next_seq: 0,
        };
        let (tx, rx) = watch::channel(Window::default());
        state.accept(2, record(3, 1000), true, &tx);
        state.accept(1, record(2, 500), true, &tx);
        let held = *rx.borrow();
        assert_eq!(held.released, 0);
        assert!(held.held_bytes >= 1500, "{held:?}");
        state.accept(0, record(1, 10), true, &tx);
        assert_eq!(
            *rx.borrow(),
            Window {
                released: 3,
                held_bytes: 0
            }
        );
        assert_eq!(state.pending, 3);
    }
}
