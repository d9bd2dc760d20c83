//! Exact token counts with OpenAI's BPE encodings (feature `tiktoken`).
//!
//! **CPU-heavy: keep it off async runtime threads.** Loading an encoding takes 75–150 ms in a
//! release build (once per process, on first use; much longer unoptimised), and counting costs
//! 50–75 ns per byte of text (half a millisecond for a 10 kB prompt), so a large prompt counted
//! on a runtime thread stalls every other task on it. Count in `tokio::task::spawn_blocking` (or a thread of your own), or use the
//! [estimates](super) on hot paths.
//!
//! Chat and embeddings requests are counted with the same rules as the estimates (message
//! framing, tool definitions, flat image charges); only the text is counted exactly.
//!
//! ```
//! use volley_core::tokens::exact::{Encoding, Tokenizer};
//!
//! let tokenizer = Tokenizer::for_model("gpt-4o-mini")?;
//! assert_eq!(tokenizer.encoding(), Encoding::O200kBase);
//! assert_eq!(tokenizer.count_text("hello world"), 2);
//! # Ok::<(), volley_core::Error>(())
//! ```

use std::fmt;
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::{chat_prompt_tokens, completion_budget, embeddings_tokens};
use crate::openai::{ChatCompletionRequest, EmbeddingsRequest};
use crate::{Error, ErrorKind};

/// An OpenAI BPE encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// `cl100k_base`: GPT-4, GPT-3.5 and the `text-embedding-*` models.
    Cl100kBase,
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5 and the o-series reasoning models.
    O200kBase,
}

impl Encoding {
    /// The encoding a model uses. `ft:` fine-tune names and `provider/` prefixes are looked
    /// through. Models this crate does not know get `o200k_base`, the encoding of current
    /// OpenAI models (for other vendors' models any OpenAI encoding is an approximation).
    pub fn for_model(model: &str) -> Encoding {
        // "ft:gpt-4o-mini-2024-07-18:org::id" names its base model first.
        let model = model
            .strip_prefix("ft:")
            .map_or(model, |rest| rest.split(':').next().unwrap_or(rest));
        // "openai/gpt-4" (routers, gateways).
        let model = model.rsplit('/').next().unwrap_or(model);
        let starts = |prefix: &str| {
            model
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        let o200k_gpt4 = starts("gpt-4o") || starts("gpt-4.1") || starts("gpt-4.5");
        let cl100k = (starts("gpt-4") && !o200k_gpt4)
            || starts("gpt-3.5")
            || starts("gpt-35")
            || starts("text-embedding-")
            || starts("davinci-002")
            || starts("babbage-002");
        if cl100k {
            Encoding::Cl100kBase
        } else {
            Encoding::O200kBase
        }
    }

    /// The encoding's name (`"o200k_base"`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts tokens exactly in one [`Encoding`]. Cheap to copy; every copy shares the one
/// process-wide table of its encoding.
#[derive(Clone, Copy)]
pub struct Tokenizer {
    encoding: Encoding,
    bpe: &'static CoreBPE,
}

impl Tokenizer {
    /// The tokenizer for `encoding`, loading it on first use (75–150 ms in a release build,
    /// once per process; concurrent first callers wait for the one load).
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if the encoding's embedded tables fail to load,
    /// which indicates a broken build rather than bad input.
    pub fn new(encoding: Encoding) -> Result<Tokenizer, Error> {
        static CL100K_BASE: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
        static O200K_BASE: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
        let loaded = match encoding {
            Encoding::Cl100kBase => {
                CL100K_BASE.get_or_init(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string()))
            }
            Encoding::O200kBase => {
                O200K_BASE.get_or_init(|| tiktoken_rs::o200k_base().map_err(|e| e.to_string()))
            }
        };
        match loaded {
            Ok(bpe) => Ok(Tokenizer { encoding, bpe }),
            Err(e) => Err(Error::new(
                ErrorKind::Config,
                format!("loading the {encoding} token encoding failed: {e}"),
            )),
        }
    }

    /// The tokenizer for the encoding `model` uses (see [`Encoding::for_model`]).
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn for_model(model: &str) -> Result<Tokenizer, Error> {
        Tokenizer::new(Encoding::for_model(model))
    }

    /// The encoding this tokenizer counts in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The exact number of tokens of `text`. Special-token markers such as `<|endoftext|>`
    /// count as ordinary text, as the API treats them in user content.
    pub fn count_text(&self, text: &str) -> u32 {
        u32::try_from(self.bpe.encode_ordinary(text).len()).unwrap_or(u32::MAX)
    }

    /// The prompt tokens of a chat request, counted like
    /// [`estimate_chat`](super::estimate_chat) but with exact text counts.
    pub fn count_chat(&self, req: &ChatCompletionRequest) -> u32 {
        chat_prompt_tokens(req, |text| self.count_text(text))
    }

    /// The prompt tokens plus the completion budget, like
    /// [`estimate_request_cost`](super::estimate_request_cost).
    pub fn count_request_cost(&self, req: &ChatCompletionRequest) -> u32 {
        self.count_chat(req).saturating_add(completion_budget(req))
    }

    /// The input tokens of an embeddings request.
    pub fn count_embeddings(&self, req: &EmbeddingsRequest) -> u32 {
        embeddings_tokens(req, |text| self.count_text(text))
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ChatMessage;
    use crate::tokens::tests::SAMPLES;

    fn cl100k() -> Tokenizer {
        Tokenizer::new(Encoding::Cl100kBase).expect("embedded tables load")
    }

    fn o200k() -> Tokenizer {
        Tokenizer::new(Encoding::O200kBase).expect("embedded tables load")
    }

    #[test]
    fn known_counts() {
        assert_eq!(cl100k().count_text("hello world"), 2);
        assert_eq!(o200k().count_text("hello world"), 2);
        assert_eq!(cl100k().count_text(""), 0);
        // Special tokens in text are plain text: "<|endoftext|>" is several tokens.
        assert!(cl100k().count_text("<|endoftext|>") > 1);
    }

    #[test]
    fn the_estimate_samples_carry_true_counts() {
        let (cl, o2) = (cl100k(), o200k());
        for &(text, in_cl100k, in_o200k, _, _) in SAMPLES {
            assert_eq!(cl.count_text(text), in_cl100k, "cl100k {text:?}");
            assert_eq!(o2.count_text(text), in_o200k, "o200k {text:?}");
        }
    }

    #[test]
    fn chat_matches_tiktoken_rs() {
        let req = ChatCompletionRequest::new(
            "gpt-4",
            vec![
                ChatMessage::system("You are a helpful assistant that only speaks French."),
                ChatMessage {
                    name: Some("example_user".to_owned()),
                    ..ChatMessage::user("Hello, how are you?")
                },
                ChatMessage::assistant("Parlez-vous francais?"),
            ],
        );
        let reference: Vec<tiktoken_rs::ChatCompletionRequestMessage> = req
            .messages
            .iter()
            .map(|m| tiktoken_rs::ChatCompletionRequestMessage {
                role: m.role.as_str().to_owned(),
                content: m.text().map(str::to_owned),
                name: m.name.clone(),
                ..Default::default()
            })
            .collect();
        let want = tiktoken_rs::num_tokens_from_messages("gpt-4", &reference).unwrap();
        let tokenizer = Tokenizer::for_model(&req.model).unwrap();
        assert_eq!(tokenizer.count_chat(&req) as usize, want);
        assert_eq!(
            tokenizer.count_request_cost(&req),
            tokenizer.count_chat(&req) + super::super::DEFAULT_COMPLETION_TOKENS
        );
    }

    #[test]
    fn embeddings() {
        let req = EmbeddingsRequest::new(
            "text-embedding-3-small",
            vec!["hello world".to_owned(), "Hello, world!".to_owned()],
        );
        assert_eq!(
            Tokenizer::for_model(&req.model)
                .unwrap()
                .count_embeddings(&req),
            6
        );
    }

    #[test]
    fn encodings_for_models() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "chatgpt-4o-latest",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5-mini",
            "o1",
            "o3-mini",
            "o4-mini-2025-04-16",
            "ft:gpt-4o-mini-2024-07-18:org::abc",
            "openai/gpt-4o",
            "llama-3.1-8b",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::O200kBase, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-32k-0613",
            "GPT-4",
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "text-embedding-3-small",
            "text-embedding-ada-002",
            "ft:gpt-3.5-turbo-0125:org::x",
            "openai/gpt-4-turbo",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::Cl100kBase, "{model}");
        }
        assert_eq!(Encoding::O200kBase.to_string(), "o200k_base");
        assert_eq!(
            format!("{:?}", o200k()),
            "Tokenizer { encoding: O200kBase, .. }"
        );
    }
}
