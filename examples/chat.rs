//! One chat completion against the in-process mock server (no key, no network).
//!
//! `cargo run -p volley-examples --example chat`
//!
//! Against a real API, drop the mock and use `Client::from_env()` with `OPENAI_API_KEY` set.

use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = MockServer::start(MockConfig::default()).await?;
    let client = Client::builder().base_url(server.url()).build()?;

    let request = ChatCompletionRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Say hello"),
        ],
    );
    let reply = client.chat(&request).await?;
    println!("{}", reply.text().unwrap_or_default());
    if let Some(usage) = reply.usage {
        println!("({} tokens)", usage.total_tokens);
    }
    server.shutdown().await;
    Ok(())
}
