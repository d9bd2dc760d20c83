//! The batch writer's memory, bounded whatever the number of records: writes
//! `WRITER_RECORDS` records (default 1 000 000; `WRITER_ORDERED=1` for ordered mode, out of
//! order within blocks of 64) through the writer and prints the records per second and the
//! peak resident set (`VmHWM`) before and after. Run it with two sizes: the peak stays the
//! same.
//!
//! ```text
//! WRITER_RECORDS=200000 cargo bench -p volley-benches --bench writer_memory
//! WRITER_RECORDS=2000000 cargo bench -p volley-benches --bench writer_memory
//! ```

use std::time::Instant;

use bytes::Bytes;
use volley_batch::{Fsync, Outcome, OutcomeRecord};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // Settings come from the environment: `cargo bench` passes criterion's flags to every
    // bench, this one included.
    let n: u64 = std::env::var("WRITER_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ordered = std::env::var("WRITER_ORDERED").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let body = Bytes::from(vec![b'7'; 600]);
    let before = peak_rss_kib();
    let started = Instant::now();
    // Records are made as they are sent, as a run makes them: only the writer holds any.
    let records = (0..n).map(|i| {
        let seq = if ordered {
            (i / 64) * 64 + 63 - i % 64
        } else {
            i
        };
        let record = OutcomeRecord {
            line: seq + 1,
            custom_id: Some(format!("request-{seq:08}")),
            outcome: Outcome::Response {
                status_code: 200,
                request_id: String::new(),
                body: body.clone(),
            },
        };
        (seq, record)
    });
    rt.block_on(volley_batch::__bench::write(
        &out,
        None,
        ordered,
        Fsync::default(),
        1_024,
        records,
    ))
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&out).unwrap().len();
    println!(
        "writer{}: {n} records ({} MiB) in {secs:.3} s = {:.0} records/s; peak RSS {} KiB before, {} KiB after",
        if ordered { " (ordered)" } else { "" },
        bytes >> 20,
        n as f64 / secs,
        before,
        peak_rss_kib(),
    );
}
