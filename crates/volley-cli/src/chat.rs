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
    /// The API's base URL, /v1 included [default: $OPENAI_BASE_URL, else
    /// https://api.openai.com/v1].
    #[arg(long)]
    base_url: Option<String>,
    /// The environment variable that holds the API key.
    #[arg(long, default_value = "OPENAI_API_KEY", value_name = "NAME")]
    api_key_env: String,
    /// The most tokens the reply may use (`max_completion_tokens`, which reasoning models
    /// require).
    #[arg(long)]
    max_completion_tokens: Option<u32>,
    /// The legacy `max_tokens` limit, for servers that only know it.
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
    /// The deadline of one attempt (e.g. 30s, 2m).
    #[arg(long, default_value = "10m", value_parser = crate::mock::parse_duration)]
    timeout: std::time::Duration,
    /// How many times a failed attempt is retried (429, 5xx, connection failures).
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
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
        None => args
            .base_url
            .clone()
            .or_else(|| non_empty_env(volley::BASE_URL_ENV))
            .unwrap_or_else(|| volley::transport::DEFAULT_BASE_URL.to_owned()),
    };
    // The mock needs no key, and a real one must not be sent to it.
    let key = if mock.is_some() {
        None
    } else {
        non_empty_env(&args.api_key_env)
    };
    if key.is_none() && mock.is_none() {
        bail!(
            "no API key: set {} (or name another variable with --api-key-env), or use --mock",
            args.api_key_env
        );
    }
    let mut builder = Client::builder()
        .base_url(base_url)
        .allow_plain_http(args.allow_plain_http)
        .timeout(args.timeout)
        .retries(args.max_retries);
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
    request.max_completion_tokens = args.max_completion_tokens;
    request.temperature = args.temperature;

    let mut stdout = std::io::stdout().lock();
    let mut finish_reason = None;
    let mut refusal = String::new();
    if args.stream {
        let mut chunks = client.chat_stream(request).await?;
        let mut usage = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let Some(text) = chunk.delta_text() {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            for choice in &chunk.choices {
                if let Some(r) = &choice.delta.refusal {
                    refusal.push_str(r);
                }
                if choice.finish_reason.is_some() {
                    finish_reason.clone_from(&choice.finish_reason);
                }
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
        if let Some(choice) = reply.choices.first() {
            finish_reason.clone_from(&choice.finish_reason);
            if let Some(r) = &choice.message.refusal {
                refusal.push_str(r);
            }
        }
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
    if !refusal.is_empty() {
        bail!("the model refused: {refusal}");
    }
    match finish_reason.as_deref() {
        Some("length") => eprintln!("volley: the reply was cut at the token limit"),
        Some("content_filter") => bail!("the reply was stopped by the provider's content filter"),
        Some("tool_calls") => eprintln!("volley: the model asked for a tool call instead"),
        _ => {}
    }
    Ok(())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
