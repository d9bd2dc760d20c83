//! The usage scanners the middleware runs over every streamed answer, on a stream of about
//! 1 MiB fed in 1 KiB chunks: OpenAI (a usage chunk at the end) and Anthropic (usage in
//! `message_start` and `message_delta`); and the scan of one complete answer, which every
//! non-streamed response gets (`usage_per_answer`).

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

/// A chat completion as OpenAI sends it, usage details included.
const ANSWER: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

/// A Messages API answer as Anthropic sends it, cache counts and service tier included.
const ANTHROPIC_ANSWER: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":503,"service_tier":"standard"}}"#;

/// A chat completion with only the three counts, as volley-mock, nginx's fixed answer and
/// many compatible servers send it.
const PLAIN_ANSWER: &str = r#"{"id":"chatcmpl-nginx","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

fn usage_per_answer(c: &mut Criterion) {
    use volley_core::{Body, Dialect, RequestId, Response, Timings};
    let response = || {
        Response::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Body::Full(bytes::Bytes::from_static(ANSWER.as_bytes())),
            Timings::start(),
            RequestId::next(),
        )
    };
    let mut group = c.benchmark_group("usage_per_answer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("openai_scan", |b| {
        b.iter(|| {
            black_box(volley_core::openai::usage_in_body(black_box(
                ANSWER.as_bytes(),
            )))
        })
    });
    group.bench_function("openai_scan_plain", |b| {
        b.iter(|| {
            black_box(volley_core::openai::usage_in_body(black_box(
                PLAIN_ANSWER.as_bytes(),
            )))
        })
    });
    group.bench_function("anthropic_scan", |b| {
        b.iter(|| {
            black_box(volley_core::anthropic::usage_in_body(black_box(
                ANTHROPIC_ANSWER.as_bytes(),
            )))
        })
    });
    // Three readers of one answer (the metrics layer, a tokens-per-minute limit, the
    // caller): each scanning the body, or sharing `Response::usage`'s one scan.
    group.bench_function("three_readers_scanning", |b| {
        b.iter_batched(
            response,
            |r| {
                let Body::Full(body) = r.body() else {
                    unreachable!()
                };
                for _ in 0..3 {
                    black_box(Dialect::OpenAi.usage_in_body(black_box(body)));
                }
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("three_readers_sharing", |b| {
        b.iter_batched(
            response,
            |r| {
                for _ in 0..3 {
                    black_box(black_box(&r).usage(Dialect::OpenAi));
                }
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, usage_scan, usage_per_answer);
criterion_main!(benches);
