//! Reading the input: lines with a size cap, validation, duplicate `custom_id`s, and
//! [`validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use volley::core::{Error, ErrorKind};

use super::format::Format;
use super::keys::{KeyCounts, KeySet, Keys};
use super::parse::{InvalidLine, ParsedLine, foreign_format, parse_line};
use super::record::{Outcome, OutcomeRecord};

/// Where the requests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A JSONL file.
    Path(PathBuf),
    /// Standard input (its total is unknown to the progress counters).
    Stdin,
}

impl Input {
    /// `-` is standard input, anything else a path: the command-line convention.
    pub fn from_arg(arg: impl Into<PathBuf>) -> Input {
        let path = arg.into();
        if path.as_os_str() == "-" {
            Input::Stdin
        } else {
            Input::Path(path)
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Path(path) => write!(f, "{}", path.display()),
            Input::Stdin => f.write_str("standard input"),
        }
    }
}

/// What [`validate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Non-blank lines.
    pub lines: u64,
    /// Lines that are valid requests.
    pub valid: u64,
    /// The records the first [`MAX_REPORTED_INVALID`] invalid lines would get (all
    /// [`Outcome::Invalid`]), in input order.
    pub invalid: Vec<OutcomeRecord>,
    /// How many lines are invalid, all of them counted.
    pub invalid_count: u64,
    /// The endpoint paths of the valid lines, with how many lines name each (at most
    /// [`MAX_DISTINCT`] paths are kept).
    pub paths: BTreeMap<String, u64>,
    /// The models of the valid lines, with how many lines name each (at most
    /// [`MAX_DISTINCT`] models are kept; lines without one are not counted).
    pub models: BTreeMap<String, u64>,
    /// The size of the input file in bytes (0 for standard input).
    pub bytes: u64,
}

/// How many distinct paths or models a [`ValidationReport`] keeps.
pub const MAX_DISTINCT: usize = 100;

impl ValidationReport {
    /// What would keep the file from going to the provider's own batch service unchanged, as
    /// sentences: OpenAI's Batch API takes one endpoint and one model per file, at most
    /// 50 000 requests and 200 MB, and no Azure path (`/chat/completions` without `/v1`);
    /// Anthropic's Message Batches at most 100 000 requests and 256 MB. Volley itself sends
    /// such files as they are.
    pub fn portability_notes(&self, format: Format) -> Vec<String> {
        let mut notes = Vec::new();
        let list = |map: &BTreeMap<String, u64>| {
            let mut names: Vec<&str> = map.keys().map(String::as_str).take(5).collect();
            if map.len() > 5 {
                names.push("...");
            }
            names.join(", ")
        };
        let (max_lines, max_bytes, service) = match format {
            Format::OpenAi => (50_000, 200 * 1024 * 1024, "OpenAI's Batch API"),
            Format::Anthropic => (100_000, 256 * 1024 * 1024, "Anthropic's Message Batches"),
        };
        if format == Format::OpenAi {
            if self.paths.len() > 1 {
                notes.push(format!(
                    "the lines go to {} endpoints ({}): {service} takes one per file",
                    self.paths.len(),
                    list(&self.paths)
                ));
            }
            if self.models.len() > 1 {
                notes.push(format!(
                    "the lines name {} models ({}): {service} takes one per file",
                    self.models.len(),
                    list(&self.models)
                ));
            }
            if self.paths.keys().any(|p| !p.starts_with("/v1/")) {
                notes.push(format!(
                    "some lines use Azure's paths without /v1, which {service} refuses"
                ));
            }
        }
        if self.lines > max_lines {
            notes.push(format!(
                "{} lines: {service} takes at most {max_lines} per file",
                self.lines
            ));
        }
        if self.bytes > max_bytes {
            notes.push(format!(
                "{} MB: {service} takes at most {} MB per file",
                self.bytes / (1024 * 1024),
                max_bytes / (1024 * 1024)
            ));
        }
        notes
    }
}

/// How many invalid lines a [`ValidationReport`] lists.
pub const MAX_REPORTED_INVALID: usize = 1_000;

/// Checks every line of `input` as [`BatchRunner::run`](super::BatchRunner::run) would
/// (JSON, fields, URL, duplicate `custom_id`s, UTF-8, lines over `max_line_bytes`) and sends
/// nothing.
///
/// # Errors
/// `InvalidInput` when the input cannot be opened or read.
pub async fn validate(input: Input, max_line_bytes: usize) -> Result<ValidationReport, Error> {
    validate_format(input, max_line_bytes, Format::OpenAi).await
}

/// [`validate`] for a file in `format`.
///
/// # Errors
/// `InvalidInput` when the input cannot be opened or read, or its first line is in the other
/// format.
pub async fn validate_format(
    input: Input,
    max_line_bytes: usize,
    format: Format,
) -> Result<ValidationReport, Error> {
    let mut source = LineSource::open(&input, max_line_bytes, Keys::new(), format).await?;
    let mut report = ValidationReport::default();
    if let Input::Path(path) = &input {
        report.bytes = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
    }
    while let Some(line) = source.next().await? {
        report.lines += 1;
        match line.parsed {
            Ok(parsed) => {
                report.valid += 1;
                let count = |map: &mut BTreeMap<String, u64>, name: &str| {
                    if let Some(n) = map.get_mut(name) {
                        *n += 1;
                    } else if map.len() < MAX_DISTINCT {
                        map.insert(name.to_owned(), 1);
                    }
                };
                count(&mut report.paths, parsed.url());
                if let Some(model) = parsed.model() {
                    count(&mut report.models, &model);
                }
            }
            Err(invalid) => {
                report.invalid_count += 1;
                if report.invalid.len() < MAX_REPORTED_INVALID {
                    report.invalid.push(invalid_record(line.line, invalid));
                }
            }
        }
    }
    Ok(report)
}

/// The record of an invalid line.
pub(crate) fn invalid_record(line: u64, invalid: InvalidLine) -> OutcomeRecord {
    OutcomeRecord {
        line,
        custom_id: invalid.custom_id,
        outcome: Outcome::Invalid {
            code: invalid.code,
            message: invalid.message,
        },
    }
}

/// One non-blank input line, checked.
pub(crate) struct SourceLine {
    pub(crate) line: u64,
    /// The key a recorded outcome of this line is found under: the `custom_id`'s for a valid
    /// line, the line number's for an invalid one.
    pub(crate) key: u64,
    /// For an invalid line that names a `custom_id` no earlier line has: that id's key. A
    /// line edited into an invalid one after its outcome was recorded keeps that outcome.
    pub(crate) named: Option<u64>,
    pub(crate) parsed: Result<ParsedLine, InvalidLine>,
}

/// The checked lines of an input, in order, in bounded memory.
pub(crate) struct LineSource {
    reader: LineReader,
    keys: Keys,
    /// Keys of every `custom_id` seen so far, valid line or not: ids must be unique.
    seen: KeySet,
    /// How many times each sampled request (by path and body) has been read so far: the
    /// next identical line is that repetition ([`ParsedLine::repeat`]).
    repeats: KeyCounts,
    buf: Vec<u8>,
    format: Format,
    /// The first line, read ahead by [`check_format`](Self::check_format).
    ahead: Option<SourceLine>,
    /// Whether a non-blank line has been read.
    started: bool,
}

impl LineSource {
    pub(crate) async fn open(
        input: &Input,
        max: usize,
        keys: Keys,
        format: Format,
    ) -> Result<LineSource, Error> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = match input {
            Input::Path(path) => {
                let fail = |what: &str, e: std::io::Error| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("{what} the input file {}: {e}", path.display()),
                    )
                    .with_source(e)
                };
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| fail("opening", e))?;
                let meta = file.metadata().await.map_err(|e| fail("reading", e))?;
                if meta.is_dir() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("the input {} is a directory", path.display()),
                    ));
                }
                Box::new(file)
            }
            Input::Stdin => Box::new(stdin().map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("opening standard input: {e}"),
                )
                .with_source(e)
            })?),
        };
        Ok(LineSource {
            reader: LineReader {
                inner: BufReader::with_capacity(256 * 1024, reader),
                max,
                line: 0,
                input: input.to_string(),
                tail: Vec::new(),
            },
            keys,
            seen: KeySet::default(),
            repeats: KeyCounts::default(),
            buf: Vec::new(),
            format,
            ahead: None,
            started: false,
        })
    }

    /// Reads the first non-blank line ahead, so that a file of the other format is refused
    /// before anything is sent or written.
    ///
    /// # Errors
    /// `InvalidInput` naming the line when it is in the other format; a read error.
    pub(crate) async fn check_format(&mut self) -> Result<(), Error> {
        if !self.started {
            self.ahead = self.next().await?;
        }
        Ok(())
    }

    /// The next non-blank line, `None` at the end of the input.
    pub(crate) async fn next(&mut self) -> Result<Option<SourceLine>, Error> {
        if let Some(line) = self.ahead.take() {
            return Ok(Some(line));
        }
        loop {
            let Some(read) = self.reader.next(&mut self.buf).await? else {
                return Ok(None);
            };
            let line = self.reader.line;
            let parsed = match read {
                Read::TooLong(len) => {
                    let mut invalid = InvalidLine::too_long(line, len, self.reader.max);
                    // As a line that is not JSON, it claims the id it seems to give (found in
                    // its first or last bytes): once the limit is raised, it is sent under it.
                    invalid.custom_id =
                        crate::parse::claimed_custom_id(&self.buf, &self.reader.tail);
                    Err(invalid)
                }
                Read::Line if self.buf.iter().all(u8::is_ascii_whitespace) => continue,
                Read::Line => {
                    if !self.started
                        && let Some(message) = foreign_format(line, &self.buf, self.format)
                    {
                        let message = format!("{}: {message}", self.reader.input);
                        return Err(Error::new(ErrorKind::InvalidInput, message));
                    }
                    parse_line(line, &self.buf, self.format)
                }
            };
            self.started = true;
            let (key, named, parsed) = match parsed {
                Ok(mut parsed) => {
                    let key = self.keys.custom_id(&parsed.custom_id);
                    if self.seen.insert(key) {
                        // A line repeated on purpose asks for another sample: numbered, so
                        // that a cache keys it apart (counted on resumed lines too, so the
                        // numbers are the same in every run of the file).
                        if let Some(canonical) = parsed.canonical.take() {
                            let request = self.keys.request((parsed.path(), &canonical));
                            let count = self.repeats.entry(request).or_insert(0);
                            parsed.repeat = *count;
                            *count = count.saturating_add(1);
                        }
                        (key, None, Ok(parsed))
                    } else {
                        let invalid = InvalidLine::duplicate(line, &parsed.custom_id);
                        (self.keys.line(line), None, Err(invalid))
                    }
                }
                Err(mut invalid) => {
                    let mut named = None;
                    if let Some(id) = &invalid.custom_id {
                        let id_key = self.keys.custom_id(id);
                        if self.seen.insert(id_key) {
                            named = Some(id_key);
                        } else {
                            // An earlier line has this id, and the last record of an id is
                            // its outcome: this line's record names none, as a duplicate's.
                            invalid.custom_id = None;
                        }
                    }
                    (self.keys.line(line), named, Err(invalid))
                }
            };
            return Ok(Some(SourceLine {
                line,
                key,
                named,
                parsed,
            }));
        }
    }
}

enum Read {
    /// A line is in the buffer (newline and a trailing `\r` removed).
    Line,
    /// The line was longer than the cap; it was skipped. Its length in bytes. The buffer
    /// holds its first [`CLAIM_BYTES`], [`LineReader::tail`] its last.
    TooLong(u64),
}

/// How much of the start and of the end of a line too long to read is kept, to find the
/// `custom_id` it claims: OpenAI's examples put it first, other writers last.
const CLAIM_BYTES: usize = 4 * 1024;

/// Reads lines of at most `max` bytes; a longer one is read through and dropped, never held
/// (but for its first and last [`CLAIM_BYTES`]).
struct LineReader {
    inner: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    max: usize,
    /// The number of the last line read, from 1.
    line: u64,
    /// The input's name, for errors.
    input: String,
    /// The last bytes of the last line read when it was too long.
    tail: Vec<u8>,
}

/// Appends `bytes` to `tail`, keeping its last [`CLAIM_BYTES`].
fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= CLAIM_BYTES {
        tail.clear();
        tail.extend_from_slice(&bytes[bytes.len() - CLAIM_BYTES..]);
        return;
    }
    let excess = (tail.len() + bytes.len()).saturating_sub(CLAIM_BYTES);
    tail.drain(..excess);
    tail.extend_from_slice(bytes);
}

impl LineReader {
    async fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Read>, Error> {
        buf.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        loop {
            let available = self.inner.fill_buf().await.map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("reading {} after line {}: {e}", self.input, self.line),
                )
                .with_source(e)
            })?;
            if available.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                break;
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(available.len());
            len += take as u64;
            let bytes = &available[..take];
            if !too_long && buf.len() + take > self.max {
                too_long = true;
                self.tail.clear();
                keep_tail(
                    &mut self.tail,
                    &buf[buf.len().saturating_sub(CLAIM_BYTES)..],
                );
                buf.truncate(CLAIM_BYTES);
            }
            if too_long {
                // Only the line's first and last bytes are kept.
                keep_tail(&mut self.tail, bytes);
                let room = CLAIM_BYTES.saturating_sub(buf.len());
                buf.extend_from_slice(&bytes[..take.min(room)]);
            } else {
                buf.extend_from_slice(bytes);
            }
            self.inner.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                break;
            }
        }
        self.line += 1;
        if too_long {
            return Ok(Some(Read::TooLong(len)));
        }
        if self.line == 1 && buf.starts_with(BOM) {
            buf.drain(..BOM.len());
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(Read::Line))
    }
}

/// Counts the non-blank lines of a regular file on a blocking thread, for the progress
/// total (blank lines get no outcome, so they are not counted); gives up with `None` when
/// `stop` is set or the file cannot be read.
pub(crate) fn count_lines(path: PathBuf, stop: Arc<AtomicBool>) -> Option<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut chunk = vec![0u8; 1 << 20];
    // Whether the current line has a byte other than whitespace so far.
    let (mut lines, mut content, mut first) = (0u64, false, true);
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let mut bytes = &chunk[..n];
        if std::mem::take(&mut first) {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        for &b in bytes {
            if b == b'\n' {
                lines += u64::from(content);
                content = false;
            } else if !b.is_ascii_whitespace() {
                content = true;
            }
        }
    }
    Some(lines + u64::from(content))
}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Standard input as an async file: tokio's own `Stdin` needs its `io-std` feature, a file
/// over a duplicate of descriptor 0 does the same (reads on a blocking thread).
#[cfg(unix)]
fn stdin() -> std::io::Result<tokio::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
}

/// Standard input as an async file, over a duplicate of its handle.
#[cfg(windows)]
fn stdin() -> std::io::Result<tokio::fs::File> {
    use std::os::windows::io::AsHandle;
    let handle = std::io::stdin().as_handle().try_clone_to_owned()?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(handle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(data: &'static [u8], max: usize) -> Vec<String> {
        let mut reader = LineReader {
            inner: BufReader::with_capacity(4, Box::new(data)),
            max,
            line: 0,
            input: "test".into(),
            tail: Vec::new(),
        };
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(read) = reader.next(&mut buf).await.unwrap() {
            out.push(match read {
                Read::Line => String::from_utf8(buf.clone()).unwrap(),
                Read::TooLong(n) => format!("<{n}>"),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_are_capped_without_buffering() {
        assert_eq!(
            lines(b"ab\r\ncdefgh\n\nij", 5).await,
            ["ab", "<6>", "", "ij"]
        );
        assert_eq!(lines(b"abcde\n", 5).await, ["abcde"]);
        assert!(lines(b"", 5).await.is_empty());
        // A byte order mark is dropped from the first line only.
        assert_eq!(
            lines(b"\xEF\xBB\xBFab\n\xEF\xBB\xBFc\n", 10).await,
            ["ab", "\u{feff}c"]
        );
    }

    /// A line too long keeps its first and last `CLAIM_BYTES`, whatever the reads' sizes.
    #[tokio::test]
    async fn a_line_too_long_keeps_its_ends() {
        let line: Vec<u8> = (0..CLAIM_BYTES * 3 + 7)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut data = line.clone();
        data.extend_from_slice(b"\nnext\n");
        let data: &'static [u8] = data.leak();
        for (capacity, max) in [(4, 10), (1000, CLAIM_BYTES * 2), (1 << 16, 100)] {
            let mut reader = LineReader {
                inner: BufReader::with_capacity(capacity, Box::new(data)),
                max,
                line: 0,
                input: "test".into(),
                tail: Vec::new(),
            };
            let mut buf = Vec::new();
            let read = reader.next(&mut buf).await.unwrap().unwrap();
            assert!(matches!(read, Read::TooLong(n) if n == line.len() as u64));
            assert!(buf == line[..CLAIM_BYTES], "head, {capacity} {max}");
            let tail = &line[line.len() - CLAIM_BYTES..];
            assert!(reader.tail == tail, "tail, {capacity} {max}");
            assert!(matches!(
                reader.next(&mut buf).await.unwrap(),
                Some(Read::Line)
            ));
            assert_eq!(buf, b"next");
        }
    }

    #[test]
    fn counting_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let stop = Arc::new(AtomicBool::new(false));
        std::fs::write(&path, "a\nb\nc").unwrap();
        assert_eq!(count_lines(path.clone(), stop.clone()), Some(3));
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(count_lines(path.clone(), stop.clone()), Some(2));
        std::fs::write(&path, "").unwrap();
        assert_eq!(count_lines(path.clone(), stop.clone()), Some(0));
        // Blank lines get no outcome and are not counted; nor is a byte order mark.
        std::fs::write(&path, "a\n\n  \r\nb\n \t").unwrap();
        assert_eq!(count_lines(path.clone(), stop.clone()), Some(2));
        std::fs::write(&path, "\u{feff}\n\n").unwrap();
        assert_eq!(count_lines(path, stop), Some(0));
    }
}
