//! `volley chat`: one chat completion, printed.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

/// Send one chat completion and print the reply.
///
/// The API key is read from the environment (OPENAI_API_KEY, or the variable named by
/// --api-key-env), never from the command line. The base URL includes /v1, as in the OpenAI
/// convention; /chat/completions is appended to it.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The user message.
    prompt: String,
    /// The model to ask.
    #[arg(long, short, default_value = "gpt-4o-mini")]
    model: String,
    /// Print the reply as it arrives (server-sent events).
    #[arg(long)]
    stream: bool,
    /// A system message sent before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// The API's base URL, /v1 included.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    base_url: String,
    /// The environment variable that holds the API key.
    #[arg(long, default_value = "OPENAI_API_KEY", value_name = "NAME")]
    api_key_env: String,
    /// The most tokens the reply may use.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Answer from an in-process mock server instead of a real API (no key needed).
    #[arg(long)]
    mock: bool,
    /// Allow plain http:// to a host that is not loopback (the key would travel unencrypted).
    #[arg(long)]
    allow_plain_http: bool,
    /// Print the token usage to stderr after the reply.
    #[arg(long)]
    usage: bool,
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    // The mock lives as long as this function, so the call below can reach it.
    let mock = if args.mock {
        Some(
            MockServer::start(MockConfig::default())
                .await
                .context("starting the in-process mock server")?,
        )
    } else {
        None
    };
    let base_url = match &mock {
        Some(server) => server.url(),
        None => args.base_url.clone(),
    };
    let key = std::env::var(&args.api_key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    if key.is_none() && mock.is_none() {
        bail!(
            "no API key: set {} (or name another variable with --api-key-env), or use --mock",
            args.api_key_env
        );
    }
    let mut builder = Client::builder()
        .base_url(base_url)
        .allow_plain_http(args.allow_plain_http);
    if let Some(key) = key {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;

    let mut messages = Vec::with_capacity(2);
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    messages.push(ChatMessage::user(args.prompt.clone()));
    let mut request = ChatCompletionRequest::new(args.model.clone(), messages);
    request.max_tokens = args.max_tokens;
    request.temperature = args.temperature;

    let mut stdout = std::io::stdout().lock();
    if args.stream {
        let mut chunks = client.chat_stream(request).await?;
        let mut usage = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let Some(text) = chunk.delta_text() {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
        }
        writeln!(stdout)?;
        if args.usage
            && let Some(u) = usage
        {
            eprintln!(
                "usage: {} prompt + {} completion = {} tokens",
                u.prompt_tokens, u.completion_tokens, u.total_tokens
            );
        }
    } else {
        let reply = client.chat(&request).await?;
        writeln!(stdout, "{}", reply.text().unwrap_or_default())?;
        if args.usage
            && let Some(u) = &reply.usage
        {
            eprintln!(
                "usage: {} prompt + {} completion = {} tokens",
                u.prompt_tokens, u.completion_tokens, u.total_tokens
            );
        }
    }
    if let Some(server) = mock {
        server.shutdown().await;
    }
    Ok(())
}
