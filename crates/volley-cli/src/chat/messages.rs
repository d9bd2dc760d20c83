//! `volley chat --provider anthropic`: one call of Anthropic's Messages API, printed.

use std::io::Write;

use anyhow::bail;
use futures_util::StreamExt;
use volley::Client;
use volley::anthropic::{InputMessage, MessagesRequest, StreamEvent, SystemPrompt};

use super::ChatArgs;

/// The model asked when none is given.
const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The output budget when none is given: Anthropic requires one.
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Asks `prompt` as `args` say and prints the answer (as it arrives with `--stream`).
pub(super) async fn ask(client: &Client, args: &ChatArgs, prompt: String) -> anyhow::Result<()> {
    let mut request = MessagesRequest::new(
        args.model.as_deref().unwrap_or(DEFAULT_MODEL),
        args.max_completion_tokens
            .or(args.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        vec![InputMessage::user(prompt)],
    );
    request.system = args.system.clone().map(SystemPrompt::Text);
    request.temperature = args.temperature;

    let mut stdout = std::io::stdout().lock();
    let terminal = std::io::IsTerminal::is_terminal(&stdout);
    let (stop_reason, usage) = if args.stream {
        let mut events = client.messages_stream(&request).await?;
        let (mut stop_reason, mut input, mut output) = (None, 0, 0);
        let mut printed = false;
        while let Some(event) = events.next().await {
            let event = super::item_or_end_line(event, printed, &mut stdout)?;
            if let Some(text) = event.text_delta() {
                printed |= !text.is_empty();
                stdout.write_all(super::answer_text(text, terminal).as_bytes())?;
                stdout.flush()?;
            }
            match &event {
                StreamEvent::MessageStart(start) => input = start.message.usage.input_tokens,
                StreamEvent::MessageDelta(delta) => {
                    output = delta.usage.output_tokens;
                    if delta.delta.stop_reason.is_some() {
                        stop_reason.clone_from(&delta.delta.stop_reason);
                    }
                }
                _ => {}
            }
        }
        writeln!(stdout)?;
        (stop_reason, (input, output))
    } else {
        let message = client.messages(&request).await?;
        writeln!(stdout, "{}", super::answer_text(&message.text(), terminal))?;
        let usage = (message.usage.input_tokens, message.usage.output_tokens);
        (message.stop_reason, usage)
    };
    if args.usage {
        let (input, output) = usage;
        say!(
            "usage: {input} input + {output} output = {} tokens",
            input.saturating_add(output)
        );
    }
    match stop_reason.as_deref() {
        Some("max_tokens") => say!("volley: the reply was cut at the token limit"),
        Some("refusal") => bail!("the model refused to answer"),
        Some("tool_use") => say!("volley: the model asked for a tool call instead"),
        _ => {}
    }
    Ok(())
}
