//! A file that whole records are appended to, cut back to its last whole record when a write
//! fails part-way (a full disk, a file size limit), so that it always ends on a whole record.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use volley::core::{Error, ErrorKind};

/// A file and its path, shared with the thread that `fsync`s it.
#[derive(Debug)]
pub(crate) struct Target {
    file: File,
    path: PathBuf,
}

impl Target {
    /// `fsync`s the file's data (and the size, which appending changes).
    pub(crate) fn sync(&self) -> Result<(), Error> {
        self.file
            .sync_data()
            .map_err(|e| io_error("syncing", &self.path, e))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The writing end of a [`Target`]: appends and remembers how long the file is.
#[derive(Debug)]
pub(crate) struct Sink {
    target: Arc<Target>,
    /// The file's length: where the next write lands.
    len: u64,
}

impl Sink {
    /// A sink appending to `file`, open for writing at its end.
    pub(crate) fn new(file: File, path: PathBuf) -> Result<Sink, Error> {
        let len = file
            .metadata()
            .map_err(|e| io_error("reading", &path, e))?
            .len();
        Ok(Sink {
            target: Arc::new(Target { file, path }),
            len,
        })
    }

    /// Writes `bytes`, whole records each ending in a newline, with as few `write(2)` calls
    /// as the kernel allows. When one fails, the records written whole stay, a record cut
    /// short is cut off (best effort: a resumed run cuts it too), and the error names the file.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut written = 0;
        while written < bytes.len() {
            match (&self.target.file).write(&bytes[written..]) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(self.cut_back(bytes, written, e));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.cut_back(bytes, written, e)),
            }
        }
        self.len += written as u64;
        Ok(())
    }

    /// The file, for `fsync`.
    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The file's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// After `written` bytes of `bytes` went out and then `e`: cuts the file back to the end
    /// of the last whole record written.
    fn cut_back(&mut self, bytes: &[u8], written: usize, e: std::io::Error) -> Error {
        let whole = bytes[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < written {
            // Shrinking needs no room, so it works on a full disk too.
            if let Err(cut) = self.target.file.set_len(self.len + whole as u64) {
                tracing::warn!(path = %self.target.path.display(), "cutting back a torn record: {cut}");
            }
        }
        self.len += whole as u64;
        io_error("writing outcomes to", &self.target.path, e)
    }
}

/// `<doing> <path>: <e>`, for example `writing outcomes to out.jsonl: No space left on device`.
pub(crate) fn io_error(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("{doing} {}: {e}", path.display()),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_whole_records_and_cuts_the_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let mut sink = Sink::new(file, path.clone()).unwrap();
        assert_eq!(sink.len(), 4);
        sink.append(b"one\ntwo\n").unwrap();
        assert_eq!(sink.len(), 12);

        // A write that stopped inside "four", as on a full disk: "three" stays, "fo" goes.
        let bytes = b"three\nfour\n";
        (&sink.target.file).write_all(&bytes[..8]).unwrap();
        let err = sink.cut_back(bytes, 8, std::io::Error::other("disk full"));
        assert!(
            err.to_string().contains(&format!(
                "writing outcomes to {}: disk full",
                path.display()
            )),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old\none\ntwo\nthree\n"
        );
        assert_eq!(sink.len(), 18);
        sink.target().sync().unwrap();
    }

    #[test]
    fn a_full_disk_is_an_error_naming_the_file() {
        let path = PathBuf::from("/dev/full");
        let Ok(file) = std::fs::OpenOptions::new().append(true).open(&path) else {
            return; // Not Linux: nothing to write to that is always full.
        };
        let mut sink = Sink {
            target: Arc::new(Target { file, path }),
            len: 0,
        };
        let err = sink.append(b"a record\n").unwrap_err();
        assert!(
            err.to_string().contains("writing outcomes to /dev/full: "),
            "{err}"
        );
        assert_eq!(sink.len(), 0);
    }
}
