//! The batch writer alone (no network): how many outcome records per second it formats,
//! writes and syncs, fed through its channel as the dispatch loop feeds it. The issue's goal
//! is at least 100 000 records per second, well above what a zero-latency run at concurrency
//! 1 024 produces. Records are a typical chat completion (about 600 bytes), one in ten a
//! failure (also written to the errors file).
//!
//! Scenarios: completion order with `fsync` every 200 ms (the default), every write
//! (`--fsync always`), and ordered mode with records arriving out of order within windows of
//! 64 (each waits in the reorder buffer and the holding file).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use volley_batch::{Fsync, Outcome, OutcomeRecord};

const RECORDS: u64 = 100_000;

const BODY: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris. It is known for the Eiffel Tower, the Louvre and its cafes.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

/// `RECORDS` records; with `shuffle`, sequence numbers reversed within blocks of 64.
fn records(shuffle: bool) -> Vec<(u64, OutcomeRecord)> {
    let body = Bytes::from_static(BODY.as_bytes());
    (0..RECORDS)
        .map(|i| {
            let seq = if shuffle {
                (i / 64) * 64 + 63 - i % 64
            } else {
                i
            };
            let status_code = if seq % 10 == 9 { 500 } else { 200 };
            let record = OutcomeRecord {
                line: seq + 1,
                custom_id: Some(format!("request-{seq:08}")),
                outcome: Outcome::Response {
                    status_code,
                    request_id: "req_7a1c9e0f55d44e2b".into(),
                    body: body.clone(),
                },
            };
            (seq, record)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    let scenarios = [
        ("interval", Fsync::default(), false),
        ("always", Fsync::Always, false),
        ("ordered", Fsync::default(), true),
    ];
    for (name, fsync, ordered) in scenarios {
        let template = records(ordered);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (tempfile::tempdir().unwrap(), template.clone()),
                |(dir, records)| {
                    let (out, errors) =
                        (dir.path().join("out.jsonl"), dir.path().join("err.jsonl"));
                    // The channel of a run at concurrency 512.
                    rt.block_on(volley_batch::__bench::write(
                        &out,
                        Some(&errors),
                        ordered,
                        fsync,
                        1_024,
                        records,
                    ))
                    .unwrap();
                    black_box(dir)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
