//! `volley chat`: one chat completion (or, with `--provider anthropic`, one Messages call),
//! printed.

mod messages;

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use volley::Client;
use volley::openai::{ChatCompletionRequest, ChatMessage};
use volley_mock::{MockConfig, MockServer};

use crate::config::{
    self, Attempts, AttemptsFlags, Balancing, BalancingFlags, Connection, ConnectionFlags, Layers,
    SourceArgs, UsageError,
};

/// The model `chat` asks when none is given.
const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Send one chat completion (with --provider anthropic, one Messages call) and print the reply.
///
/// The API key is read from the environment (OPENAI_API_KEY, or the variable named by
/// --api-key-env), never from the command line; a server on this machine (localhost, 127.x,
/// ::1) is called without one when none is set. The base URL includes /v1, as in the OpenAI
/// convention; /chat/completions is appended to it.
///
/// With --provider anthropic it calls Anthropic's Messages API (/messages): the key from
/// ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN, the base URL from ANTHROPIC_BASE_URL (without
/// /v1, as the SDK reads it) below a profile's, and max_tokens 1024 unless given.
///
/// Settings come from flags, then VOLLEY_<NAME> variables (VOLLEY_BASE_URL, VOLLEY_TIMEOUT,
/// ...), then the volley.toml profile (--profile NAME for [profile.NAME], else [default]), then
/// OPENAI_BASE_URL, then defaults; --print-config shows each value and where it came from.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The user message.
    #[arg(required_unless_present = "print_config")]
    prompt: Option<String>,
    /// The model to ask [default: gpt-4o-mini; with --provider anthropic,
    /// claude-sonnet-4-5].
    #[arg(long, short)]
    model: Option<String>,
    /// Print the reply as it arrives (server-sent events).
    #[arg(long)]
    stream: bool,
    /// A system message sent before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// The most tokens the reply may use (`max_completion_tokens`, which reasoning models
    /// require; Anthropic's `max_tokens`, 1024 when neither is given).
    #[arg(long)]
    max_completion_tokens: Option<u32>,
    /// The legacy `max_tokens` limit, for servers that only know it.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature. With --provider anthropic only for anthropic-version 2023-06-01
    /// (--anthropic-version, or --anthropic-auth x-api-key): 2026-10-21 refuses it.
    #[arg(long)]
    temperature: Option<f32>,
    /// Answer from an in-process mock server instead of a real API (no key needed).
    #[arg(long, conflicts_with = "base_url")]
    mock: bool,
    /// Print the token usage to stderr after the reply.
    #[arg(long)]
    usage: bool,
    #[command(flatten)]
    connection: ConnectionFlags,
    #[command(flatten)]
    attempts: AttemptsFlags,
    #[command(flatten)]
    balancing: BalancingFlags,
    #[command(flatten)]
    sources: SourceArgs,
}

/// The most of a streamed refusal kept for the error message.
const MAX_REFUSAL_BYTES: usize = 4096;

/// The model's text as it is written to standard output: on a terminal, its control
/// characters escaped ([`crate::terminal_safe`]: a model's output can hold escape sequences,
/// which would set the clipboard or the window title, or rewrite what the user reads); into a
/// pipe or a file, as it is.
fn answer_text(text: &str, terminal: bool) -> std::borrow::Cow<'_, str> {
    if !terminal {
        return std::borrow::Cow::Borrowed(text);
    }
    // A CRLF line end is a line end, not a carriage return to escape.
    if text.contains("\r\n") {
        return std::borrow::Cow::Owned(
            crate::terminal_safe(&text.replace("\r\n", "\n")).into_owned(),
        );
    }
    crate::terminal_safe(text)
}

/// A model's refusal as the error message (on stderr, not the answer) shows it: control
/// characters (a terminal escape sequence among them) become spaces, and it is cut after
/// 1 024 characters.
fn shown_refusal(text: &str) -> String {
    text.chars()
        .take(1024)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The `anthropic-version` a request with `temperature` would be sent with, when that version
/// refuses it: 2026-10-21 and later took out temperature, top_p and top_k (HTTP 400 whatever
/// the value). Versions are dates, so they compare as text.
fn refuses_temperature(connection: &Connection, temperature: Option<f32>) -> Option<String> {
    temperature?;
    let version = connection
        .anthropic_version
        .clone()
        .unwrap_or_else(|| connection.anthropic_auth.0.default_version().to_owned());
    (version.as_str() >= volley::core::anthropic::API_VERSION).then_some(version)
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let layers = Layers::load(
        &args.sources,
        &[&args.connection, &args.attempts, &args.balancing],
        Default::default(),
    )?;
    let connection: Connection = layers.extract()?;
    let attempts: Attempts = layers.extract()?;
    let balancing: Balancing = layers.extract()?;
    if args.sources.print_config {
        let mut rows = config::connection_rows(&layers, &connection, args.mock);
        rows.extend(layers.rows(&attempts));
        rows.extend(layers.rows(&balancing));
        print!("{}", layers.render(&rows));
        return Ok(());
    }
    layers.check_destination(args.mock)?;
    let prompt = args
        .prompt
        .clone()
        .expect("clap requires the prompt unless --print-config");
    if connection.provider.0 == volley::Provider::Anthropic
        && let Some(version) = refuses_temperature(&connection, args.temperature)
    {
        return Err(UsageError(format!(
            "--temperature: Anthropic's API version {version} refuses temperature with HTTP 400, \
             even at its default; pass --anthropic-version 2023-06-01 (or --anthropic-auth \
             x-api-key, which sends that version) to set one, or leave --temperature out"
        ))
        .into());
    }
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
    // The mock needs no key, and a real one must not be sent to it.
    let (base_url, credential) = match &mock {
        Some(server) => (server.url(), None),
        None => {
            let endpoint = config::endpoint(&layers, &connection)?;
            if let Some(note) = endpoint.keyless_note() {
                say!("volley: {note}");
            }
            (endpoint.base_url, Some(endpoint.credential))
        }
    };
    // A timeout of 0 turns it off.
    let timeout = Some(attempts.timeout.0).filter(|t| !t.is_zero());
    let mut builder = config::apply_endpoints(
        Client::builder(),
        &layers,
        &connection,
        base_url,
        mock.is_some(),
    )?
    .allow_plain_http(connection.allow_plain_http)
    .timeout(timeout)
    .retry_policy(
        volley::middleware::retry::Policy::builder()
            .max_retries(attempts.max_retries)
            .give_up_after(attempts.give_up_after.0)
            .classifier(attempts.retry_on.classifier())
            .build()?,
    );
    if args.stream {
        // A stream is bounded whole, as `bench` bounds it, not only to its first chunk: a
        // server that stalls after it (or drips keep-alive comments) would hold the reply for
        // the idle limit's 120 s at every pause, and for up to 30 minutes in all.
        builder = builder.stream_timeout(timeout);
    }
    if let Some(credential) = credential {
        builder = config::with_credential(builder, credential);
    }
    builder = config::apply_network(builder, &connection, mock.is_some())?;
    builder = balancing.apply(builder);
    // A setting the client refuses is the user's to fix, as in `run` and `bench` (exit 2).
    let client = builder.build().map_err(|e| match e.kind() {
        volley::ErrorKind::Config => anyhow::Error::new(UsageError(format!("{e}"))),
        _ => anyhow::Error::new(e),
    })?;

    if connection.provider.0 == volley::Provider::Anthropic {
        let result = messages::ask(&client, &args, prompt).await;
        if let Some(server) = mock {
            server.shutdown().await;
        }
        return result;
    }

    let mut messages = Vec::with_capacity(2);
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    messages.push(ChatMessage::user(prompt));
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let mut request = ChatCompletionRequest::new(model, messages);
    request.max_tokens = args.max_tokens;
    request.max_completion_tokens = args.max_completion_tokens;
    request.temperature = args.temperature;

    let mut stdout = std::io::stdout().lock();
    let terminal = std::io::IsTerminal::is_terminal(&stdout);
    let mut finish_reason = None;
    let mut refusal = String::new();
    // Whether the reply held a choice at all: a gateway that filtered the answer out may send
    // a 200 without one, which would otherwise print an empty line and succeed.
    let mut any_choice = false;
    if args.stream {
        let mut chunks = client.chat_stream(request).await?;
        let mut usage = None;
        let mut printed = false;
        while let Some(chunk) = chunks.next().await {
            let chunk = item_or_end_line(chunk, printed, &mut stdout)?;
            if let Some(text) = chunk.delta_text() {
                printed |= !text.is_empty();
                stdout.write_all(answer_text(text, terminal).as_bytes())?;
                stdout.flush()?;
            }
            any_choice |= !chunk.choices.is_empty();
            for choice in &chunk.choices {
                if let Some(r) = &choice.delta.refusal
                    && refusal.len() < MAX_REFUSAL_BYTES
                {
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
            say!(
                "usage: {} prompt + {} completion = {} tokens",
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens
            );
        }
    } else {
        let reply = client.chat(&request).await?;
        let text = reply.text().unwrap_or_default();
        writeln!(stdout, "{}", answer_text(text, terminal))?;
        any_choice = !reply.choices.is_empty();
        if let Some(choice) = reply.choices.first() {
            finish_reason.clone_from(&choice.finish_reason);
            if let Some(r) = &choice.message.refusal {
                refusal.push_str(r);
            }
        }
        if args.usage
            && let Some(u) = &reply.usage
        {
            say!(
                "usage: {} prompt + {} completion = {} tokens",
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens
            );
        }
    }
    if let Some(server) = mock {
        server.shutdown().await;
    }
    if !refusal.is_empty() {
        bail!("the model refused: {}", shown_refusal(&refusal));
    }
    if !any_choice {
        bail!("the reply held no choice: the server sent no answer");
    }
    match finish_reason.as_deref() {
        Some("length") => say!("volley: the reply was cut at the token limit"),
        Some("content_filter") => bail!("the reply was stopped by the provider's content filter"),
        Some("tool_calls") => say!("volley: the model asked for a tool call instead"),
        _ => {}
    }
    Ok(())
}

/// A stream's next item; on its error, the text printed so far (`printed`) is ended with a new
/// line first, so that the error goes to stderr on a line of its own, not after the text.
fn item_or_end_line<T>(
    item: Result<T, volley::Error>,
    printed: bool,
    stdout: &mut impl Write,
) -> anyhow::Result<T> {
    item.or_else(|error| {
        if printed {
            writeln!(stdout)?;
        }
        Err(error.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a terminal the model's escape sequences are shown, not obeyed; into a pipe the
    /// text is the model's, byte for byte.
    #[test]
    fn answers_reach_a_terminal_without_their_escape_sequences() {
        let hostile = "ok \u{1b}]52;c;cHduZWQ=\u{7}\u{1b}]0;title\u{7} done\nline 2\tend";
        let shown = answer_text(hostile, true);
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown:?}"
        );
        assert!(
            shown.starts_with("ok ") && shown.ends_with(" done\nline 2\tend"),
            "{shown}"
        );
        assert_eq!(answer_text(hostile, false), hostile);
        // CRLF line ends read as line ends; a lone CR and bidirectional overrides are shown.
        assert_eq!(answer_text("a\r\nb", true), "a\nb");
        let tricky = answer_text("x\ry \u{202e}cba", true);
        assert!(
            !tricky.contains('\r') && !tricky.contains('\u{202e}'),
            "{tricky:?}"
        );
    }

    #[test]
    fn refusals_are_shown_without_control_characters_and_bounded() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2JI can't help\r\nwith that";
        let shown = shown_refusal(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("I can't help"), "{shown}");
        assert_eq!(shown_refusal(&"x".repeat(5000)).chars().count(), 1024);
    }
}
