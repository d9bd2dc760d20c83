//! A streamed chat completion, printed as it arrives, from the in-process mock server.
//!
//! `cargo run -p volley-examples --example stream`

use std::io::Write;

use futures_util::StreamExt;
use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = MockServer::start(MockConfig::default()).await?;
    let client = Client::builder().base_url(server.url()).build()?;

    let request = ChatCompletionRequest::new("gpt-4o-mini", vec![ChatMessage::user("Count")]);
    let mut chunks = client.chat_stream(request).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if let Some(text) = chunk.delta_text() {
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        if let Some(usage) = chunk.usage {
            println!("\n({} completion tokens)", usage.completion_tokens);
        }
    }
    server.shutdown().await;
    Ok(())
}
