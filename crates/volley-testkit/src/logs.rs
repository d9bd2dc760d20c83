//! Logs a test reads back: a `tracing` subscriber that writes plain text into a buffer.

use std::sync::{Arc, Mutex};

/// What a [`capture`] subscriber wrote, for the test to read.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .expect("a writer panicked while holding the logs");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("a writer panicked while holding the logs")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs on this thread, until the returned guard is dropped, a subscriber that writes
/// every event up to `level`, with its spans and fields, as plain text (no colours) into the
/// returned buffer. Events on other threads are not captured: run the code under test on a
/// current-thread runtime, which keeps its tasks (hyper's connection tasks included) here.
pub fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
