//! Not an API: the writer alone, for `benches/benches/writer.rs` (feature `__bench`).

use std::path::Path;

use tokio::sync::{mpsc, watch};
use volley::core::Error;

use super::record::OutcomeRecord;
use super::writer::{self, Files, Window, WriterConfig, io_error};
use super::{Fsync, held};

/// Writes `records` (each with its sequence number) to `output` (and failures to `errors`)
/// through the writer, as the dispatch loop feeds it (a channel of `queue` records), and
/// returns once every record is written and synced.
pub async fn write(
    output: &Path,
    errors: Option<&Path>,
    ordered: bool,
    fsync: Fsync,
    queue: usize,
    records: impl IntoIterator<Item = (u64, OutcomeRecord)>,
) -> Result<(), Error> {
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io_error("opening", path, e))
    };
    let held = if ordered {
        let path = held::path_for(output);
        let file = held::create(&path).map_err(|e| io_error("creating", &path, e))?;
        Some((file, path))
    } else {
        None
    };
    let files = Files {
        output: open(output)?,
        output_path: output.to_owned(),
        errors: match errors {
            Some(path) => Some((open(path)?, path.to_owned())),
            None => None,
        },
        held,
    };
    let config = WriterConfig {
        ordered,
        fsync,
        nonce: 1,
        format: crate::Format::default(),
    };
    let (tx, rx) = mpsc::channel(queue);
    let (released, _window) = watch::channel(Window::default());
    let writer = writer::spawn(files, config, rx, released);
    for message in records {
        if tx.send(message).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
