//! Opening the output and errors files: repairing a torn tail and collecting the outcomes
//! already recorded. Blocking: run it on a blocking thread.

use std::borrow::Cow;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;
use volley::core::{Error, ErrorKind};

use super::held;
use super::keys::{KeySet, Keys};
use super::writer::io_error;
use crate::Format;

/// The outcomes an earlier run recorded, by key: a line whose key is here is skipped.
#[derive(Debug, Default)]
pub(crate) struct Done {
    ok: KeySet,
    failed: KeySet,
}

impl Done {
    /// Notes the outcome of a record. The last record of a key is its outcome: a failure
    /// sent again (with `retry_failed`) has a later record that replaces the earlier one.
    fn record(&mut self, record: &Recorded<'_>, keys: &Keys) {
        let key = match record.line {
            Some(line) => keys.line(line),
            None => keys.custom_id(record.custom_id.as_deref().unwrap_or_default()),
        };
        if record.failed {
            self.ok.remove(&key);
            self.failed.insert(key);
        } else {
            self.failed.remove(&key);
            self.ok.insert(key);
        }
    }

    /// Removes `key` (each line is read once, so the set shrinks as the input is read) and
    /// says whether its recorded outcome was a failure; `None` when it has none.
    pub(crate) fn take(&mut self, key: u64) -> Option<bool> {
        if self.ok.remove(&key) {
            Some(false)
        } else if self.failed.remove(&key) {
            Some(true)
        } else {
            None
        }
    }
}

/// The output file, open for appending, and what it already holds.
pub(crate) struct Resumed {
    pub(crate) file: File,
    pub(crate) done: Done,
    /// Records found.
    pub(crate) records: u64,
    /// Bytes of a torn or garbage tail that were cut off.
    pub(crate) repaired_bytes: u64,
    /// The format of the first record, when there is one.
    pub(crate) format: Option<Format>,
    /// Records of an ordered run's holding file that the output lacks, in input order, each
    /// with whether it failed; [`settle_held`] appends them. Counted in `records` and `done`.
    pub(crate) recovered: Vec<(Vec<u8>, bool)>,
}

/// Opens (or creates) the output file, cuts off a torn last line and collects the keys of
/// the recorded outcomes, those of an ordered run's holding file included (see [`Resumed`]).
///
/// A file whose first line is not an outcome record is refused rather than touched (it may
/// be the input given as the output by mistake), as is a file with a non-record line before
/// the last record. Complete lines that are not records at the very end (the zeros a power
/// cut can leave) are cut off with the torn line.
pub(crate) fn open_output(path: &Path, keys: &Keys) -> Result<Resumed, Error> {
    let created = !path.exists();
    let held_path = held::path_for(path);
    // A run creates its output before it holds anything back, so a holding file without its
    // output was left by a run whose output was then moved or deleted: its outcomes belong to
    // that output, and merged into a new one they would answer lines of another run.
    if created && held_path.exists() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} holds outcomes of an interrupted ordered run, but its output file {} is \
                 gone; put the output back to resume that run, or delete {} to start afresh",
                held_path.display(),
                path.display(),
                held_path.display()
            ),
        ));
    }
    let file = open(path, "output")?;
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Config,
            format!("resuming from the output file {}: {e}", path.display()),
        )
        .with_source(e)
    };
    let len = file.metadata().map_err(io)?.len();
    // Read once the lock is ours: no other run is writing the holding file.
    let mut pending =
        held::Pending::read(&held_path).map_err(|e| io_error("reading", &held_path, e))?;
    let mut done = Done::default();
    let mut records = 0u64;
    // The end of the last record, and the first non-record line after it, if any.
    let mut good_end = 0u64;
    let mut first_bad: Option<u64> = None;
    // Only what was there at open: nothing else may append (the lock), but a file that grew
    // anyway must not make the scan run on.
    let mut reader = BufReader::with_capacity(1 << 20, (&file).take(len));
    let mut format = None;
    let (mut pos, mut number) = (0u64, 0u64);
    let mut buf = Vec::new();
    // A whole record at the very end without its line end, which is added below.
    let mut unterminated = false;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        let line = match buf.strip_suffix(b"\n") {
            Some(line) => line,
            // A last line without its line end: a whole record (the writer was stopped just
            // before the line end, or a tool rewrote the file without a final one) is kept, its
            // answer paid for; a record cut shorter is no JSON object and is cut off below.
            None if parse_record(&buf).is_some() => {
                unterminated = true;
                &buf[..]
            }
            None => {
                // Refuse a one-line file that is not ours.
                if records == 0 && first_bad.is_none() && !looks_torn(&buf) {
                    return Err(foreign(path));
                }
                break;
            }
        };
        number += 1;
        match parse_record(line) {
            Some(record) => {
                if let Some(bad) = first_bad {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "the output file {} has a line that is not an outcome record \
                             (line {bad}) before line {number}; fix or move the file",
                            path.display()
                        ),
                    ));
                }
                if let Some(pending) = &mut pending
                    && let Some(id) = held::record_id(&buf)
                {
                    pending.seen(id);
                }
                format.get_or_insert(record.format);
                done.record(&record, keys);
                records += 1;
                good_end = pos;
            }
            None if records == 0 && buf.iter().any(|&b| b != 0 && b != b'\n') => {
                return Err(foreign(path));
            }
            None => {
                first_bad.get_or_insert(number);
            }
        }
    }
    drop(reader);
    // The scan read at most `len` bytes, so `good_end <= len`; checked all the same.
    let repaired_bytes = len.saturating_sub(good_end);
    if repaired_bytes > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes = repaired_bytes,
            "cutting off a torn or damaged tail of the output file"
        );
        file.set_len(good_end).map_err(io)?;
        file.sync_all().map_err(io)?;
    } else if unterminated && good_end == len {
        // The last record is kept: it gets its line end before anything is appended.
        tracing::warn!(
            path = %path.display(),
            "the output file's last record had no line end; adding it"
        );
        (&file).write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    if created {
        sync_parent(path);
    }
    let mut recovered = Vec::new();
    if let Some(pending) = pending {
        for bytes in pending
            .into_missing()
            .map_err(|e| io_error("reading", &held_path, e))?
        {
            // Written by the writer, so a record; checked all the same.
            if let Some(record) = parse_record(&bytes[..bytes.len().saturating_sub(1)]) {
                format.get_or_insert(record.format);
                done.record(&record, keys);
                records += 1;
                let failed = record.failed;
                recovered.push((bytes, failed));
            }
        }
    }
    Ok(Resumed {
        file,
        done,
        records,
        repaired_bytes,
        recovered,
        format,
    })
}

/// Moves what [`open_output`] recovered from a holding file to the end of the output (its
/// failures to the errors file first, so that it never misses one the output has), syncs
/// both, and deletes the holding file. A crash half-way leaves the holding file, and the
/// next resume finds in the output what was already moved.
pub(crate) fn settle_held(
    output: &Path,
    resumed: &mut Resumed,
    errors: Option<(&File, &Path)>,
) -> Result<(), Error> {
    let held_path = held::path_for(output);
    let recovered = std::mem::take(&mut resumed.recovered);
    if !recovered.is_empty() {
        tracing::info!(
            path = %held_path.display(),
            records = recovered.len(),
            "moving outcomes held back by an interrupted ordered run to the output"
        );
        let append = |mut file: &File, path: &Path, failed_only: bool| {
            let mut bytes = Vec::new();
            for (record, failed) in &recovered {
                if *failed || !failed_only {
                    bytes.extend_from_slice(record);
                }
            }
            file.write_all(&bytes)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("writing outcomes to", path, e))
        };
        if let Some((file, path)) = errors {
            append(file, path, true)?;
        }
        append(&resumed.file, output, false)?;
    }
    held::remove(&held_path).map_err(|e| io_error("removing", &held_path, e))
}

/// Opens (or creates) the errors file and cuts off a torn last line. It is not the source of
/// truth, so nothing is read from it.
pub(crate) fn open_errors(path: &Path) -> Result<File, Error> {
    let created = !path.exists();
    let mut file = open(path, "errors")?;
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Config,
            format!("resuming from the errors file {}: {e}", path.display()),
        )
        .with_source(e)
    };
    let len = file.metadata().map_err(io)?.len();
    if len > 0 {
        // The first line starts as a record of ours does, or is zeros (a power cut): anything
        // else is someone's file, refused rather than cut.
        let mut first = vec![0u8; (len as usize).min(RECORD_START.len())];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut first).map_err(io)?;
        if !looks_torn(&first) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the errors file {} exists and is not a batch errors file",
                    path.display()
                ),
            ));
        }
        let keep = end_of_last_line(&mut file, len).map_err(io)?;
        if keep < len {
            file.set_len(keep).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
    }
    if created {
        sync_parent(path);
    }
    Ok(file)
}

/// What a line of the output says, when it is an outcome record.
struct Recorded<'a> {
    custom_id: Option<Cow<'a, str>>,
    line: Option<u64>,
    failed: bool,
    /// Anthropic's records have a `result`, OpenAI's a `response` and an `error`.
    format: Format,
}

fn parse_record(line: &[u8]) -> Option<Recorded<'_>> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        id: Option<IgnoredAny>,
        #[serde(borrow, default)]
        custom_id: Option<Cow<'a, str>>,
        #[serde(default)]
        line: Option<u64>,
        #[serde(default)]
        response: Option<ResponseProbe>,
        #[serde(default)]
        error: Option<IgnoredAny>,
        /// The Anthropic Message Batches format's outcome.
        #[serde(borrow, default)]
        result: Option<ResultProbe<'a>>,
    }
    #[derive(Deserialize)]
    struct ResponseProbe {
        status_code: u16,
    }
    #[derive(Deserialize)]
    struct ResultProbe<'a> {
        #[serde(borrow)]
        r#type: Cow<'a, str>,
    }
    let probe: Probe<'_> = serde_json::from_slice(line).ok()?;
    probe.id?;
    if probe.custom_id.is_none() && probe.line.is_none() {
        return None;
    }
    let failed = match (&probe.response, &probe.error, &probe.result) {
        (_, Some(_), _) => true,
        (Some(response), None, _) => !(200..300).contains(&response.status_code),
        (None, None, Some(result)) => result.r#type != "succeeded",
        (None, None, None) => return None,
    };
    Some(Recorded {
        custom_id: probe.custom_id,
        line: probe.line,
        failed,
        format: if probe.result.is_some() {
            Format::Anthropic
        } else {
            Format::OpenAi
        },
    })
}

/// How every record this writer writes starts: a file whose first line does not is not ours.
const RECORD_START: &[u8] = br#"{"id":"batch_req_"#;

/// Whether an unterminated first line can be the start of a record cut short (or zeros): it
/// starts as every record of ours does (`{"id":"batch_req_`), not merely as any JSON object
/// with an `id` (`curl`'s saved answer, `{"id":"msg_01..`, is no torn record of ours).
fn looks_torn(tail: &[u8]) -> bool {
    let n = tail.len().min(RECORD_START.len());
    tail[..n] == RECORD_START[..n] || tail.iter().all(|&b| b == 0)
}

/// Options that create a file readable by its owner only and never follow a symbolic link
/// (on Unix; elsewhere the defaults).
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options
}

fn foreign(path: &Path) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the output file {} exists and is not a batch output file (its first line is not \
             an outcome record); choose another output path",
            path.display()
        ),
    )
}

/// Opens (or creates) a regular file for reading and appending and takes its exclusive lock,
/// which it keeps until the file is closed at the end of the run.
///
/// The file holds answers someone paid for: on Unix it is created `0600` (an existing file
/// keeps its mode), and a symbolic link is refused rather than followed (`O_NOFOLLOW`), so a
/// link planted where the output will go cannot redirect the answers, or the appends, to
/// another file.
fn open(path: &Path, what: &str) -> Result<File, Error> {
    let not_regular = || {
        Error::new(
            ErrorKind::Config,
            format!(
                "the {what} file {} is not a regular file (outcomes cannot be read back from \
                 a pipe, a terminal or a device on resume); give a file path",
                path.display()
            ),
        )
    };
    let io = |doing: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Config,
            format!("{doing} the {what} file {}: {e}", path.display()),
        )
        .with_source(e)
    };
    let symlink = || {
        Error::new(
            ErrorKind::Config,
            format!(
                "the {what} file {} is a symbolic link; refusing to follow it (a link could \
                 send the answers to another file). Give the path of the file itself",
                path.display()
            ),
        )
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(symlink());
    }
    // Checked before opening as well: opening a FIFO may block until a writer comes.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(not_regular());
    }
    let file = private_options()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            // A link put there between the check and the open: `O_NOFOLLOW` said no.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                symlink()
            } else {
                io("opening", e)
            }
        })?;
    if !file.metadata().map_err(|e| io("reading", e))?.is_file() {
        return Err(not_regular());
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "another run is writing {}; wait for it to end or choose another {what} \
                     file",
                    path.display()
                ),
            ));
        }
        Err(TryLockError::Error(e)) if can_go_on_unlocked(&e) => {
            tracing::warn!(
                path = %path.display(),
                "the file system cannot lock the {what} file: nothing stops a second run on \
                 it, which would send the same lines again"
            );
        }
        Err(TryLockError::Error(e)) => return Err(io("locking", e)),
    }
    Ok(file)
}

/// Whether a run may go on without the lock after locking failed with `e`: only when the file
/// system has no locks, as before locking existed.
fn can_go_on_unlocked(e: &std::io::Error) -> bool {
    // An NFS mount without its lock service says ENOLCK ("No locks available"), which the
    // standard library does not read as `Unsupported`.
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ENOLCK) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

/// The offset just after the last newline of a file of `len` bytes (0 when it has none),
/// reading backwards from the end.
fn end_of_last_line(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Makes a new file's directory entry durable. Best effort: not every platform can sync a
/// directory.
pub(crate) fn sync_parent(path: &Path) {
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
}

/// The directory that holds the entry of `path`: `.` for a bare file name, whose parent is
/// the empty path, which cannot be opened.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn answer_files_are_private_and_links_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        drop(open(&out, "output").unwrap());
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");

        // A link planted where the output goes, pointing at a file of someone else's choosing.
        let target = dir.path().join("elsewhere.jsonl");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("linked.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open(&link, "errors").unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(err.to_string().contains("errors file"), "{err}");
        // A dangling link would otherwise create its target.
        let dangling = dir.path().join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.path().join("created-by-link"), &dangling).unwrap();
        assert!(open(&dangling, "output").is_err());
        assert!(!dir.path().join("created-by-link").exists());
    }

    const OK: &str = r#"{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"","body":{}},"error":null}"#;
    const BAD: &str = r#"{"id":"batch_req_2","custom_id":null,"response":null,"error":{"code":"invalid_json","message":"line 2: x"},"line":2}"#;
    const FAILED: &str = r#"{"id":"batch_req_3","custom_id":"c","response":{"status_code":500,"request_id":"","body":{}},"error":null}"#;

    fn resume(content: &[u8]) -> (Result<Resumed, Error>, Vec<u8>, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, content).unwrap();
        let keys = Keys::new();
        let result = open_output(&path, &keys);
        (result, std::fs::read(&path).unwrap(), keys)
    }

    #[test]
    fn records_are_collected_and_a_torn_tail_cut() {
        let good = format!("{OK}\n{BAD}\n{FAILED}\n");
        let torn = format!("{good}{{\"id\":\"batch_req_4\",\"cust");
        let (result, after, keys) = resume(torn.as_bytes());
        let mut resumed = result.unwrap();
        assert_eq!(after, good.as_bytes());
        assert_eq!(resumed.records, 3);
        assert_eq!(resumed.repaired_bytes, (torn.len() - good.len()) as u64);
        assert_eq!(resumed.done.take(keys.custom_id("a")), Some(false));
        assert_eq!(resumed.done.take(keys.custom_id("a")), None, "taken once");
        assert_eq!(resumed.done.take(keys.line(2)), Some(true));
        assert_eq!(resumed.done.take(keys.custom_id("c")), Some(true));
        assert_eq!(resumed.done.take(keys.custom_id("zz")), None);
    }

    #[test]
    fn a_whole_last_record_without_its_line_end_is_kept_and_ended() {
        // A tool that writes no final line end, or a writer stopped just before it: the
        // record is an answer paid for.
        let unended = format!("{OK}\n{FAILED}");
        let (result, after, keys) = resume(unended.as_bytes());
        let mut resumed = result.unwrap();
        assert_eq!(resumed.records, 2);
        assert_eq!(resumed.repaired_bytes, 0);
        assert_eq!(after, format!("{OK}\n{FAILED}\n").as_bytes());
        assert_eq!(resumed.done.take(keys.custom_id("c")), Some(true));
        // A file of that one record alone is ours too.
        let (result, after, _) = resume(OK.as_bytes());
        assert_eq!(result.unwrap().records, 1);
        assert_eq!(after, format!("{OK}\n").as_bytes());
        // After a line that is no record, it is refused like a whole line would be.
        let (result, _, _) = resume(format!("{OK}\nnot a record\n{OK}").as_bytes());
        assert!(result.err().unwrap().to_string().contains("line 2"));
    }

    #[test]
    fn zeros_at_the_end_are_cut_and_foreign_files_refused() {
        let zeros = format!("{OK}\n\0\0\0\n\0\0");
        let (result, after, _) = resume(zeros.as_bytes());
        assert_eq!(result.unwrap().records, 1);
        assert_eq!(after, format!("{OK}\n").as_bytes());

        let input = br#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}}"#;
        for content in [&input[..], &[input, &b"\n"[..]].concat(), b"hello"] {
            let (result, after, _) = resume(content);
            let err = result.err().expect("a foreign file is refused");
            assert!(err.to_string().contains("not a batch output file"), "{err}");
            assert_eq!(after, content, "and left alone");
        }

        let middle = format!("{OK}\nnot a record\n{OK}\n");
        let (result, _, _) = resume(middle.as_bytes());
        assert!(result.err().unwrap().to_string().contains("line 2"));

        let (result, after, _) = resume(b"{\"id\":\"batch_r");
        assert_eq!(result.unwrap().records, 0);
        assert!(after.is_empty());
    }

    #[test]
    fn a_first_line_of_zeros_is_a_torn_tail_not_a_foreign_file() {
        // A crash can leave a file of zeros (its length grew, its data did not land): cut,
        // not refused.
        let (result, after, _) = resume(b"\0\0\0\0\n");
        assert_eq!(result.unwrap().records, 0);
        assert!(after.is_empty(), "{after:?}");
    }

    #[test]
    fn an_errors_file_loses_a_torn_line_longer_than_a_read() {
        // The torn last line is longer than the 64 KiB read backwards at a time.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("errors.jsonl");
        let kept = format!("{FAILED}\n");
        let torn = "x".repeat(200 * 1024);
        std::fs::write(&path, format!("{kept}{torn}")).unwrap();
        drop(open_errors(&path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), kept.as_bytes());
    }

    #[test]
    fn the_last_record_of_an_id_is_its_outcome() {
        let retried_ok = FAILED
            .replace("500", "200")
            .replace("batch_req_3", "batch_req_4");
        let content = format!("{FAILED}\n{retried_ok}\n");
        let (result, _, keys) = resume(content.as_bytes());
        let mut resumed = result.unwrap();
        assert_eq!(resumed.records, 2);
        assert_eq!(resumed.done.take(keys.custom_id("c")), Some(false));
        assert_eq!(resumed.done.take(keys.custom_id("c")), None, "one outcome");
    }

    #[test]
    fn held_records_the_output_lacks_are_recovered_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, format!("{OK}\n")).unwrap();
        let mut held = Vec::new();
        held::push_entry(&mut held, 1, format!("{OK}\n").as_bytes());
        held::push_entry(&mut held, 3, format!("{FAILED}\n").as_bytes());
        std::fs::write(held::path_for(&path), held).unwrap();

        let keys = Keys::new();
        let mut resumed = open_output(&path, &keys).unwrap();
        assert_eq!(
            resumed.recovered,
            [(format!("{FAILED}\n").into_bytes(), true)]
        );
        assert_eq!(
            resumed.records, 2,
            "the output's record and the recovered one"
        );
        assert_eq!(resumed.done.take(keys.custom_id("c")), Some(true));
    }

    /// An output still empty whose records are all in the holding file (an ordered run
    /// stopped before its first line was done) has the holding file's format, so that a
    /// resume in the other format is refused before they are moved over.
    #[test]
    fn held_records_give_an_empty_output_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"").unwrap();
        let mut held = Vec::new();
        held::push_entry(&mut held, 2, format!("{OK}\n").as_bytes());
        std::fs::write(held::path_for(&path), held).unwrap();
        let resumed = open_output(&path, &Keys::new()).unwrap();
        assert_eq!(resumed.format, Some(Format::OpenAi));
        assert_eq!(resumed.recovered.len(), 1);
    }

    #[test]
    fn a_holding_file_without_its_output_is_refused_and_nothing_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut held = Vec::new();
        held::push_entry(&mut held, 1, format!("{OK}\n").as_bytes());
        std::fs::write(held::path_for(&path), held).unwrap();
        let err = open_output(&path, &Keys::new()).err().expect("refused");
        let message = err.to_string();
        assert!(message.contains("interrupted ordered run"), "{message}");
        assert!(message.contains("out.jsonl.held"), "{message}");
        assert!(!path.exists(), "no output is created");
        // Once the holding file is gone, a new run starts.
        std::fs::remove_file(held::path_for(&path)).unwrap();
        assert_eq!(open_output(&path, &Keys::new()).unwrap().records, 0);
    }

    #[test]
    fn a_file_is_synced_through_the_directory_that_holds_it() {
        assert_eq!(parent_dir(Path::new("runs/out.jsonl")), Path::new("runs"));
        assert_eq!(parent_dir(Path::new("/out.jsonl")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("out.jsonl")), Path::new("."));
    }

    #[test]
    fn only_a_file_system_without_locks_lets_a_run_go_on_unlocked() {
        use std::io::ErrorKind::{PermissionDenied, Unsupported};
        assert!(can_go_on_unlocked(&Unsupported.into()));
        assert!(!can_go_on_unlocked(&PermissionDenied.into()));
        assert!(!can_go_on_unlocked(&std::io::Error::other("no lock")));
        #[cfg(unix)]
        assert!(can_go_on_unlocked(&std::io::Error::from_raw_os_error(
            libc::ENOLCK
        )));
    }

    #[test]
    fn a_second_opener_is_refused_and_so_are_files_that_are_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, format!("{OK}\n")).unwrap();
        let keys = Keys::new();
        let first = open_output(&path, &keys).unwrap();
        let err = open_output(&path, &keys).err().expect("locked");
        assert!(err.to_string().contains("another run is writing"), "{err}");
        assert!(open_errors(&path).is_err(), "one lock for both kinds");
        drop(first);
        open_output(&path, &keys).unwrap();

        let err = open_output(dir.path(), &keys).err().expect("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn the_errors_file_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("errors.jsonl");
        std::fs::write(&path, format!("{BAD}\n{{\"id\":")).unwrap();
        open_errors(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{BAD}\n"));
        std::fs::write(&path, "plain text\n").unwrap();
        assert!(open_errors(&path).is_err());
    }

    #[test]
    fn message_batches_results_are_recognised() {
        let ok =
            br#"{"id":"batch_req_1","custom_id":"a","result":{"type":"succeeded","message":{}}}"#;
        let bad = br#"{"id":"batch_req_2","custom_id":"b","result":{"type":"errored","error":{}}}"#;
        let invalid = br#"{"id":"batch_req_3","custom_id":null,"result":{"type":"errored","error":{}},"line":7}"#;
        let ok = parse_record(ok).unwrap();
        assert!(!ok.failed && ok.custom_id.as_deref() == Some("a"));
        assert!(parse_record(bad).unwrap().failed);
        let invalid = parse_record(invalid).unwrap();
        assert!(invalid.failed && invalid.line == Some(7));
        assert!(parse_record(br#"{"id":"x","custom_id":"a"}"#).is_none());
    }
}
