//! The usage scanners the middleware runs over every streamed answer, on a stream of about
//! 1 MiB fed in 1 KiB chunks: OpenAI (a usage chunk at the end) and Anthropic (usage in
//! `message_start` and `message_delta`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STREAM_BYTES: usize = 1 << 20;
const CHUNK_BYTES: usize = 1024;

fn openai_stream() -> Vec<u8> {
    let mut out = String::new();
    while out.len() < STREAM_BYTES {
        out += "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":\
                [{\"index\":0,\"delta\":{\"content\":\" hello\"},\"finish_reason\":null}]}\n\n";
    }
    out += "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\
            \"completion_tokens\":900,\"total_tokens\":912}}\n\ndata: [DONE]\n\n";
    out.into_bytes()
}

fn anthropic_stream() -> Vec<u8> {
    let mut out = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\
         \"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    );
    while out.len() < STREAM_BYTES {
        out += "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
                \"delta\":{\"type\":\"text_delta\",\"text\":\" hello\"}}\n\n";
    }
    out += "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\
            \"usage\":{\"output_tokens\":900}}\n\nevent: message_stop\n\
            data: {\"type\":\"message_stop\"}\n\n";
    out.into_bytes()
}

fn usage_scan(c: &mut Criterion) {
    let openai = openai_stream();
    let anthropic = anthropic_stream();
    let mut group = c.benchmark_group("usage_scan_1mib_chunks_1kib");
    group.throughput(Throughput::Bytes(openai.len() as u64));
    group.bench_function("openai", |b| {
        b.iter(|| {
            let mut scanner = volley_core::openai::UsageScanner::new();
            for chunk in openai.chunks(CHUNK_BYTES) {
                scanner.feed(black_box(chunk));
            }
            black_box(scanner.finish())
        })
    });
    group.throughput(Throughput::Bytes(anthropic.len() as u64));
    group.bench_function("anthropic", |b| {
        b.iter(|| {
            let mut scanner = volley_core::anthropic::UsageScanner::new();
            for chunk in anthropic.chunks(CHUNK_BYTES) {
                scanner.feed(black_box(chunk));
            }
            black_box(scanner.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, usage_scan);
criterion_main!(benches);
