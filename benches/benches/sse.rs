//! Decoding throughput of the SSE decoder on a realistic OpenAI chat-completion stream of about
//! 1 MiB, fed as one `Bytes` and in 1 KiB chunks the way a network delivers it.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use volley_core::sse::Decoder;

/// Target size of the generated stream.
const STREAM_BYTES: usize = 1 << 20;
/// Chunk size for the network-like variant.
const CHUNK_BYTES: usize = 1024;

/// Builds one long streamed completion: a role chunk, content chunks of varied tokens (JSON
/// escaping included), a finish chunk and the `[DONE]` sentinel. Returns it with its event
/// count.
fn openai_stream() -> (Bytes, usize) {
    const TOKENS: &[&str] = &[
        "Hello", "!", " How", " can", " I", " help", " you", " today", "?", "\n\n", " The",
        " answer", " is", " \"42\"", ",", " of", " course", ".", " Über", " naïve", " café", " 🚀",
        " fn", " main", "()", " {", "\n   ", " println", "!(\"", "hi", "\");", " }",
    ];
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-9Xq7MZ2pUvVnR1c3bY8dK4tA0fLe\",\"object\":\"chat.completion.chunk\",\
             \"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\
             \"fp_44709d6fcb\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\
             \"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut out = chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    );
    let mut events = 1;
    let mut i = 0;
    while out.len() < STREAM_BYTES {
        let content = serde_json::to_string(TOKENS[i % TOKENS.len()]).expect("a str serialises");
        out += &chunk(&format!("{{\"content\":{content}}}"), "null");
        events += 1;
        i += 1;
    }
    out += &chunk("{}", "\"stop\"");
    out += "data: [DONE]\n\n";
    (Bytes::from(out), events + 2)
}

/// Decodes every event of `chunks` and returns how many there were.
fn decode(chunks: &[Bytes]) -> usize {
    let mut decoder = Decoder::new();
    let mut events = 0;
    for chunk in chunks {
        decoder.feed(chunk.clone());
        while let Some(event) = decoder.next_event().expect("the stream is valid") {
            black_box(event.data());
            events += 1;
        }
    }
    events
}

fn bench_sse(c: &mut Criterion) {
    let (stream, events) = openai_stream();
    let whole = vec![stream.clone()];
    let chunked: Vec<Bytes> = (0..stream.len())
        .step_by(CHUNK_BYTES)
        .map(|start| stream.slice(start..stream.len().min(start + CHUNK_BYTES)))
        .collect();
    assert_eq!(decode(&whole), events);
    assert_eq!(decode(&chunked), events);

    let mut group = c.benchmark_group("sse_openai_1mib");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("one_bytes", |b| b.iter(|| decode(black_box(&whole))));
    group.bench_function("chunks_1kib", |b| b.iter(|| decode(black_box(&chunked))));
    group.finish();
}

criterion_group!(benches, bench_sse);
criterion_main!(benches);
