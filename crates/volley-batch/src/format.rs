//! The two batch file formats: the provider's own batch service's, so files move between
//! Volley and it unchanged.

use std::fmt;

use volley::core::Dialect;

/// The format of a batch's input and output files.
///
/// | | input line | output line |
/// |---|---|---|
/// | [`OpenAi`](Format::OpenAi) | `{"custom_id", "method", "url", "body"}` | `{"id", "custom_id", "response", "error"}` |
/// | [`Anthropic`](Format::Anthropic) | `{"custom_id", "params"}` | `{"id", "custom_id", "result"}` |
///
/// A file of the other format is refused at its first line, before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Format {
    /// The [OpenAI Batch API] format (also Azure OpenAI's).
    ///
    /// [OpenAI Batch API]: https://platform.openai.com/docs/guides/batch
    #[default]
    OpenAi,
    /// Anthropic's [Message Batches] format: each line's `params` is a Messages request,
    /// sent to `/messages`; each outcome a `result` that `succeeded` (with the `message`) or
    /// `errored` (with the error response).
    ///
    /// [Message Batches]: https://docs.anthropic.com/en/docs/build-with-claude/batch-processing
    Anthropic,
}

impl Format {
    /// The format's name for messages: "the OpenAI Batch format".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Format::OpenAi => "the OpenAI Batch format",
            Format::Anthropic => "Anthropic's Message Batches format",
        }
    }

    /// The format of a provider's batch service, by the dialect it speaks.
    pub fn of_dialect(dialect: Dialect) -> Format {
        match dialect {
            Dialect::Anthropic => Format::Anthropic,
            _ => Format::OpenAi,
        }
    }

    /// The dialect the requests of this format are written in.
    pub fn dialect(self) -> Dialect {
        match self {
            Format::OpenAi => Dialect::OpenAi,
            Format::Anthropic => Dialect::Anthropic,
        }
    }

    /// What a line of this format looks like, for messages.
    pub(crate) fn shape(self) -> &'static str {
        match self {
            Format::OpenAi => {
                r#"the OpenAI Batch format, {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}"#
            }
            Format::Anthropic => {
                r#"the Anthropic Message Batches format, {"custom_id": ..., "params": {...}}"#
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OpenAi => "OpenAI Batch",
            Format::Anthropic => "Anthropic Message Batches",
        })
    }
}
