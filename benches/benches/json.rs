//! JSON cost of the OpenAI dialect per call: encoding a typical chat request (three messages),
//! decoding a typical chat completion response and a typical streaming chunk. The decoded
//! types keep unknown fields (`#[serde(flatten)]`), which this measures too. Besides, the
//! check `Client::chat` makes before decoding an answer, that it is no error object
//! (`Dialect::is_error_reply`): on a typical answer, and on one whose text says "error".

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use volley_core::Dialect;
use volley_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage,
};

/// A response as OpenAI sends it: one choice, a refusal and annotations field, usage details.
const RESPONSE: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The capital of France is Paris. It is known for the Eiffel Tower, the Louvre and its cafés, and it has been the country's political and cultural centre for centuries.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

/// A content chunk of a stream, byte for byte as OpenAI sends it (without `data: `).
const CHUNK: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_fc9f1d7035","choices":[{"index":0,"delta":{"content":" Paris"},"logprobs":null,"finish_reason":null}]}"#;

fn request() -> ChatCompletionRequest {
    let mut req = ChatCompletionRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are a helpful assistant. Answer in two sentences at most."),
            ChatMessage::user("What is the capital of France, and what is it known for?"),
            ChatMessage::assistant("Paris. It is known for the Eiffel Tower and the Louvre."),
        ],
    );
    req.max_completion_tokens = Some(256);
    req.temperature = Some(0.7);
    req
}

fn json(c: &mut Criterion) {
    let mut group = c.benchmark_group("openai_json");
    group.throughput(Throughput::Elements(1));

    let req = request();
    group.bench_function("encode_chat_request", |b| {
        b.iter(|| serde_json::to_vec(black_box(&req)).expect("a request serialises"))
    });

    let response = RESPONSE.as_bytes();
    group.bench_function("decode_chat_response", |b| {
        b.iter(|| {
            serde_json::from_slice::<ChatCompletionResponse>(black_box(response))
                .expect("the sample parses")
        })
    });

    group.bench_function("is_error_reply", |b| {
        b.iter(|| assert!(!Dialect::OpenAi.is_error_reply(black_box(response))))
    });
    // The word anywhere sends the check to a parse of the top level.
    let mentions = RESPONSE.replace("cafés", "error messages");
    group.bench_function("is_error_reply_of_an_answer_saying_error", |b| {
        b.iter(|| assert!(!Dialect::OpenAi.is_error_reply(black_box(mentions.as_bytes()))))
    });

    let chunk = CHUNK.as_bytes();
    group.bench_function("decode_chat_chunk", |b| {
        b.iter(|| {
            serde_json::from_slice::<ChatCompletionChunk>(black_box(chunk))
                .expect("the sample parses")
        })
    });

    group.finish();
}

criterion_group!(benches, json);
criterion_main!(benches);
