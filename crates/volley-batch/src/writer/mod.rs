//! The writer: one blocking thread that hands every outcome to the operating system as soon as
//! it exists, `fsync`s as [`Fsync`] says, and keeps ordered mode's reorder buffer and holding
//! file. See [Durability and resume](crate#durability-and-resume).
//!
//! The thread blocks on the channel for one record, then takes every record already queued
//! (up to [`MAX_BATCH_BYTES`]), formats them and writes them with one `write(2)` per file.
//! There is no timer and no batch size to wait for: under load the records that arrive during
//! one write go out together in the next, so the writer keeps up with any rate the disk can
//! take, and an outcome waits for about one write at most.

mod order;
mod sink;
mod sync;

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use volley::core::Error;

use super::record::OutcomeRecord;
use super::{Format, Fsync, held};
use order::Reorder;
use sink::Sink;
use sync::Syncer;

pub(crate) use sink::io_error;

/// The most bytes formatted before they are written: one write per this much at most, so
/// that a backlog goes out in pieces and memory stays bounded.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// A holding file is rewritten when it is larger than this and than [`COMPACT_RATIO`] times
/// the entries it still needs.
const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
const COMPACT_RATIO: u64 = 4;

/// The files records go to.
pub(crate) struct Files {
    pub(crate) output: File,
    pub(crate) output_path: PathBuf,
    pub(crate) errors: Option<(File, PathBuf)>,
    /// Ordered mode's holding file, new and empty.
    pub(crate) held: Option<(File, PathBuf)>,
}

/// How the writer orders and syncs.
pub(crate) struct WriterConfig {
    pub(crate) ordered: bool,
    pub(crate) fsync: Fsync,
    /// Record ids are `batch_req_<nonce><counter>`, unique across runs.
    pub(crate) nonce: u64,
    /// The format records are written in.
    pub(crate) format: Format,
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

/// Starts the writer on a blocking thread. It takes records from `records` until that closes,
/// writes them (in sequence order when `ordered`, publishing in `released` the state of the
/// reorder buffer), syncs every file and ends. A write or `fsync` error ends it at once with
/// that error, closing `records`, which the dispatch loop watches.
pub(crate) fn spawn(
    files: Files,
    config: WriterConfig,
    records: mpsc::Receiver<Message>,
    released: watch::Sender<Window>,
) -> JoinHandle<Result<(), Error>> {
    tokio::task::spawn_blocking(move || {
        let mut writer = Writer::open(files, config)?;
        let result = writer.pump(records, &released);
        // Nothing already written is lost, even when a write failed: sync it all.
        let ended = writer.end(result.is_ok());
        result.and(ended)
    })
}

/// The state of the writer thread.
struct Writer {
    output: Sink,
    errors: Option<Sink>,
    held: Option<Sink>,
    /// Formatted records not yet written, one buffer per file.
    out_buf: Vec<u8>,
    err_buf: Vec<u8>,
    held_buf: Vec<u8>,
    reorder: Option<Reorder>,
    syncer: Option<Syncer>,
    next_id: u64,
    nonce: u64,
    format: Format,
}

impl Writer {
    fn open(files: Files, config: WriterConfig) -> Result<Writer, Error> {
        let syncer = match config.fsync {
            Fsync::Interval(every) => Some(Syncer::start(every)?),
            Fsync::Always => None,
        };
        let sink = |(file, path): (File, PathBuf)| Sink::new(file, path);
        Ok(Writer {
            output: Sink::new(files.output, files.output_path)?,
            errors: files.errors.map(sink).transpose()?,
            held: files.held.map(sink).transpose()?,
            out_buf: Vec::new(),
            err_buf: Vec::new(),
            held_buf: Vec::new(),
            reorder: config.ordered.then(Reorder::default),
            syncer,
            next_id: 0,
            nonce: config.nonce,
            format: config.format,
        })
    }

    /// Writes every record until the channel closes or a write fails.
    fn pump(
        &mut self,
        mut records: mpsc::Receiver<Message>,
        released: &watch::Sender<Window>,
    ) -> Result<(), Error> {
        while let Some(message) = records.blocking_recv() {
            self.accept(message);
            self.gather(&mut records);
            if let Err(e) = self.write() {
                // The dispatch loop sees the channel close and stops the run at once.
                records.close();
                return Err(e);
            }
            if let Some(reorder) = &self.reorder {
                released.send_replace(reorder.window());
            }
        }
        // An interrupted run leaves gaps: write what waits in sequence order.
        if let Some(reorder) = &mut self.reorder {
            let (out_buf, err_buf) = (&mut self.out_buf, &mut self.err_buf);
            let has_errors = self.errors.is_some();
            reorder.release_all(|bytes, failed| {
                release(out_buf, err_buf, has_errors, bytes, failed);
            });
        }
        self.write()
    }

    /// Formats a record into the buffers (or the reorder buffer).
    fn accept(&mut self, (seq, record): Message) {
        let (nonce, id) = (self.nonce, self.next_id);
        self.next_id += 1;
        let write_id = |out: &mut Vec<u8>| {
            // Writing to a `Vec` cannot fail.
            let _ = write!(out, "batch_req_{nonce:016x}{id:08x}");
        };
        let failed = !record.is_success();
        let has_errors = self.errors.is_some();
        match &mut self.reorder {
            None => {
                let start = self.out_buf.len();
                record.write_json(self.format, write_id, &mut self.out_buf);
                if has_errors && failed {
                    self.err_buf.extend_from_slice(&self.out_buf[start..]);
                }
            }
            Some(reorder) => {
                let approx = record.approx_bytes();
                let mut bytes = Vec::with_capacity(approx as usize);
                record.write_json(self.format, write_id, &mut bytes);
                let (out_buf, err_buf) = (&mut self.out_buf, &mut self.err_buf);
                reorder.accept(seq, record.line, bytes, failed, approx, |bytes, failed| {
                    release(out_buf, err_buf, has_errors, bytes, failed);
                });
            }
        }
    }

    /// Takes the records already queued, without waiting, until [`MAX_BATCH_BYTES`] are
    /// formatted: those that arrived during a write go out together in the next one, and a
    /// backlog goes out in pieces.
    fn gather(&mut self, records: &mut mpsc::Receiver<Message>) {
        while self.buffered() < MAX_BATCH_BYTES {
            match records.try_recv() {
                Ok(message) => self.accept(message),
                Err(_) => break,
            }
        }
    }

    fn buffered(&self) -> usize {
        self.out_buf.len() + self.err_buf.len()
    }

    /// Writes the buffers: the holding file first (a record waiting there is what a crash
    /// would lose), then the errors file (so it never misses a record the output has), then
    /// the output. Then syncs, or marks the files for the `fsync` thread. When the holding or
    /// the errors file fails, the output's records are still written (they are answers paid
    /// for, and the output is the source of truth), then the first error stops the run.
    fn write(&mut self) -> Result<(), Error> {
        if let Some(reorder) = &mut self.reorder {
            reorder.spill(&mut self.held_buf);
        }
        let files = [
            (self.held.as_mut(), &mut self.held_buf),
            (self.errors.as_mut(), &mut self.err_buf),
            (Some(&mut self.output), &mut self.out_buf),
        ];
        let mut failed = None;
        for (sink, buf) in files {
            let Some(sink) = sink else { continue };
            if buf.is_empty() {
                continue;
            }
            if let Err(e) = sink.append(buf) {
                failed.get_or_insert(e);
                continue;
            }
            buf.clear();
            if buf.capacity() > 2 * MAX_BATCH_BYTES {
                // One huge record must not keep its buffer for the rest of the run.
                buf.shrink_to(MAX_BATCH_BYTES);
            }
            match &self.syncer {
                Some(syncer) => syncer.mark(sink.target()),
                None => {
                    if let Err(e) = sink.target().sync() {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_error) {
            return Err(e);
        }
        self.compact_held()
    }

    /// Rewrites the holding file with only the records that still wait, when it has grown
    /// well beyond them.
    fn compact_held(&mut self) -> Result<(), Error> {
        let (Some(held), Some(reorder)) = (&self.held, &mut self.reorder) else {
            return Ok(());
        };
        if !worth_compacting(held.len(), reorder.live_bytes()) {
            return Ok(());
        }
        // The released records must be durable in the output before their copies go.
        self.output.target().sync()?;
        let path = held.target().path().to_owned();
        let mut bytes = Vec::new();
        reorder.rewrite(&mut bytes);
        let new = held::rewrite(&path, &bytes).map_err(|e| io_error("rewriting", &path, e))?;
        self.held = Some(Sink::new(new, path)?);
        Ok(())
    }

    /// Stops the `fsync` thread and syncs every file; after a clean end, deletes the holding
    /// file, whose records are all in the output then.
    fn end(self, clean: bool) -> Result<(), Error> {
        let stopped = self.syncer.map_or(Ok(()), Syncer::stop);
        let mut synced = Ok(());
        for sink in [self.held.as_ref(), self.errors.as_ref(), Some(&self.output)]
            .into_iter()
            .flatten()
        {
            synced = synced.and(sink.target().sync());
        }
        stopped.and(synced)?;
        let all_out = self.reorder.as_ref().is_none_or(Reorder::is_empty);
        if let Some(held) = &self.held
            && clean
            && all_out
        {
            let path = held.target().path();
            held::remove(path).map_err(|e| io_error("removing", path, e))?;
        }
        Ok(())
    }
}

/// Whether a holding file of `len` bytes is worth rewriting when the entries it still needs
/// take `live` bytes: when it is larger than [`COMPACT_MIN_BYTES`] and than [`COMPACT_RATIO`]
/// times `live`.
fn worth_compacting(len: u64, live: u64) -> bool {
    len >= COMPACT_MIN_BYTES && len >= COMPACT_RATIO * live
}

/// Appends a released record to the output buffer, and to the errors buffer when it failed.
fn release(out: &mut Vec<u8>, errors: &mut Vec<u8>, has_errors: bool, bytes: &[u8], failed: bool) {
    out.extend_from_slice(bytes);
    if has_errors && failed {
        errors.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::record::Outcome;

    fn message(line: u64, body_bytes: usize) -> Message {
        let record = OutcomeRecord {
            line,
            custom_id: Some(format!("c{line}")),
            outcome: Outcome::Response {
                status_code: 200,
                request_id: String::new(),
                body: Bytes::from("1".repeat(body_bytes)),
            },
        };
        (line, record)
    }

    #[test]
    fn queued_records_go_out_together_up_to_the_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let files = Files {
            output: File::create(&path).unwrap(),
            output_path: path,
            errors: None,
            held: None,
        };
        let config = WriterConfig {
            ordered: false,
            fsync: Fsync::Always,
            nonce: 1,
            format: Format::OpenAi,
        };
        let mut writer = Writer::open(files, config).unwrap();
        let (tx, mut rx) = mpsc::channel(16);

        for line in 1..=3 {
            tx.try_send(message(line, 10)).unwrap();
        }
        writer.gather(&mut rx);
        assert!(rx.is_empty(), "small records queued are taken at once");
        assert_eq!(writer.out_buf.iter().filter(|&&b| b == b'\n').count(), 3);
        writer.write().unwrap();

        // A backlog larger than a batch: a batch takes what fills it and leaves the rest.
        let record_bytes = MAX_BATCH_BYTES / 3;
        for line in 4..=9 {
            tx.try_send(message(line, record_bytes)).unwrap();
        }
        writer.gather(&mut rx);
        let taken = writer.out_buf.len();
        assert!(taken >= MAX_BATCH_BYTES, "{taken}");
        assert!(taken < MAX_BATCH_BYTES + record_bytes + 1024, "{taken}");
        assert!(!rx.is_empty(), "the rest waits for the next batch");
    }

    #[test]
    fn a_holding_file_is_rewritten_once_large_and_mostly_released() {
        let (min, ratio) = (COMPACT_MIN_BYTES, COMPACT_RATIO);
        assert!(!worth_compacting(min / 2, 0), "small: left alone");
        assert!(worth_compacting(min * 2, 0), "large, all released");
        assert!(
            worth_compacting(min * ratio * 2, min),
            "large, mostly released"
        );
        assert!(!worth_compacting(min * 2, min), "large, but still needed");
    }

    /// Ordered mode: 70 records of 1 MiB wait for the first in the holding file (past
    /// [`COMPACT_MIN_BYTES`]); when it comes, all are released, and the holding file, holding
    /// nothing still needed, is rewritten small. Without the rewrite it would keep growing.
    #[test]
    fn a_holding_file_of_released_records_is_rewritten_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let held_path = held::path_for(&path);
        let files = Files {
            output: File::create(&path).unwrap(),
            output_path: path.clone(),
            errors: None,
            held: Some((File::create(&held_path).unwrap(), held_path.clone())),
        };
        let config = WriterConfig {
            ordered: true,
            fsync: Fsync::Always,
            nonce: 1,
            format: Format::OpenAi,
        };
        let mut writer = Writer::open(files, config).unwrap();
        for seq in 1..=70u64 {
            writer.accept(message(seq, 1 << 20));
            writer.write().unwrap();
        }
        let waiting = std::fs::metadata(&held_path).unwrap().len();
        assert!(waiting > COMPACT_MIN_BYTES, "{waiting} bytes held");
        let (_, first) = message(1, 10);
        writer.accept((0, first));
        writer.write().unwrap();
        let after = std::fs::metadata(&held_path).unwrap().len();
        assert!(after < 1024, "{after} bytes still held");
        let out = std::fs::read(&path).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 71);
    }
}
