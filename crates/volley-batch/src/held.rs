//! The holding file of ordered mode: every outcome that has to wait for the ones before it is
//! written here at once, so a crash cannot lose it while it waits. The writer appends to it;
//! a resumed run moves what the output lacks to the output ([`Pending`]) and deletes it.
//!
//! One entry per line: the input line number, a space, and the record exactly as it will be
//! written to the output (newline included). Records are recognised in the output by their
//! `id`, unique across runs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The holding file of the output `output`: its name with `.held` appended.
pub(crate) fn path_for(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".held");
    PathBuf::from(name)
}

/// Appends the entry of `record` (one line, newline included) of input line `line`.
pub(crate) fn push_entry(out: &mut Vec<u8>, line: u64, record: &[u8]) {
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "{line} ");
    out.extend_from_slice(record);
}

/// The `id` of a record line, which the writer writes first and without escapes.
pub(crate) fn record_id(record: &[u8]) -> Option<&[u8]> {
    let rest = record.strip_prefix(br#"{"id":""#)?;
    let end = memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The entries of a holding file left by a run that did not end cleanly, by record id, until
/// the output has been read: the ones the output lacks are then recovered.
pub(crate) struct Pending {
    file: File,
    entries: HashMap<Box<[u8]>, Entry>,
}

struct Entry {
    line: u64,
    /// Where the record (without the line number) starts in the holding file, and its length.
    offset: u64,
    len: usize,
}

impl Pending {
    /// Reads the holding file at `path`: `None` when there is none. A torn last entry (a
    /// crash mid-write) and lines that are not entries are left out. Blocking.
    pub(crate) fn read(path: &Path) -> std::io::Result<Option<Pending>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut entries = HashMap::new();
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        let (mut pos, mut buf) = (0u64, Vec::new());
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            let start = pos;
            pos += n as u64;
            let Some(space) = memchr(b' ', &buf) else {
                continue;
            };
            let line = std::str::from_utf8(&buf[..space])
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            let record = &buf[space + 1..];
            if let (Some(line), Some(id)) = (line, record_id(record)) {
                let entry = Entry {
                    line,
                    offset: start + space as u64 + 1,
                    len: record.len(),
                };
                entries.insert(Box::from(id), entry);
            }
        }
        drop(reader);
        Ok(Some(Pending { file, entries }))
    }

    /// Notes that the output holds the record `id`: it is not recovered.
    pub(crate) fn seen(&mut self, id: &[u8]) {
        if !self.entries.is_empty() {
            self.entries.remove(id);
        }
    }

    /// The records the output lacks, each one line, in input order. Blocking.
    pub(crate) fn into_missing(mut self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut entries: Vec<Entry> = self.entries.into_values().collect();
        entries.sort_by_key(|e| (e.line, e.offset));
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut record = vec![0; entry.len];
            self.file.seek(SeekFrom::Start(entry.offset))?;
            self.file.read_exact(&mut record)?;
            records.push(record);
        }
        Ok(records)
    }
}

/// Deletes the holding file of a run that ended, if any. Its records are all in the output by
/// then, so losing the deletion to a crash only leaves records a resume finds present.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces the holding file at `path` with one holding `entries`, atomically (a crash leaves
/// the old file or the new one), and returns the new one, open for appending. Blocking.
pub(crate) fn rewrite(path: &Path, entries: &[u8]) -> std::io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let new = PathBuf::from(name);
    let mut file = crate::resume::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&new)?;
    file.write_all(entries)?;
    file.sync_data()?;
    std::fs::rename(&new, path)?;
    if let Ok(dir) = File::open(crate::resume::parent_dir(path)) {
        // Best effort: a lost rename leaves the old file, whose extra records are in the
        // output and found there on resume.
        let _ = dir.sync_all();
    }
    Ok(file)
}

/// Creates an empty holding file at `path` for a new ordered run. Blocking.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    let file = crate::resume::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // The records it will hold are synced as they are written; its directory entry must be
    // durable too, or a power cut could take the file and those answers with it.
    crate::resume::sync_parent(path);
    Ok(file)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, custom_id: &str) -> Vec<u8> {
        format!("{{\"id\":\"{id}\",\"custom_id\":\"{custom_id}\",\"response\":null,\"error\":{{\"code\":\"x\",\"message\":\"m\"}}}}\n").into_bytes()
    }

    #[test]
    fn entries_round_trip_and_only_missing_records_come_back_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("out.jsonl"));
        assert!(path.to_str().unwrap().ends_with("out.jsonl.held"));
        assert!(
            Pending::read(&path).unwrap().is_none(),
            "no file, nothing held"
        );

        let mut bytes = Vec::new();
        push_entry(&mut bytes, 30, &record("r3", "c"));
        push_entry(&mut bytes, 10, &record("r1", "a"));
        push_entry(&mut bytes, 20, &record("r2", "b"));
        push_entry(&mut bytes, 0, &record("r0", "z"));
        bytes.extend_from_slice(b"garbage line\n");
        bytes.extend_from_slice(b"12 {\"id\":\"torn");
        std::fs::write(&path, &bytes).unwrap();

        let mut pending = Pending::read(&path).unwrap().unwrap();
        pending.seen(b"r2");
        pending.seen(b"unknown");
        let missing = pending.into_missing().unwrap();
        assert_eq!(
            missing,
            [record("r0", "z"), record("r1", "a"), record("r3", "c")]
        );

        let file = rewrite(&path, &bytes[..20]).unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), &bytes[..20]);
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_holding_file_that_cannot_be_read_is_an_error_not_an_absent_one() {
        // Taken for absent, its records would be lost: a new run truncates the file.
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("out.jsonl"));
        std::os::unix::fs::symlink(&path, &path).unwrap();
        assert!(
            Pending::read(&path).is_err(),
            "a link to itself cannot be opened"
        );
    }

    #[test]
    fn record_ids_are_read_from_the_start_of_the_line() {
        assert_eq!(
            record_id(&record("batch_req_1", "a")),
            Some(&b"batch_req_1"[..])
        );
        assert_eq!(record_id(b"{\"custom_id\":\"a\"}"), None);
        assert_eq!(record_id(b"{\"id\":\"no end"), None);
    }
}
