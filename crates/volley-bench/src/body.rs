//! Request bodies, built before the run: one per distinct prompt length, cloned per call.
//!
//! With a fixed output length every body is complete ahead of time and a request costs a
//! reference-count increment. With varying output lengths each body is its prebuilt head (all
//! but `max_tokens`) plus the number, copied into one new buffer per request: a memcpy of the
//! prompt, still cheaper than serialising.

use bytes::{BufMut, Bytes, BytesMut};
use volley::core::{Dialect, Error, ErrorKind};

use super::lengths::Lengths;

/// Bytes of prompt text per token: the mock counts `ceil(bytes / 4)` tokens, and English text
/// averages about four bytes per token with OpenAI's encodings.
const BYTES_PER_TOKEN: usize = 4;

/// The most memory the prebuilt bodies may take.
const MAX_PREBUILT_BYTES: usize = 256 << 20;

/// Filler words of three letters and a space: four bytes, about one token each.
const WORDS: [&str; 16] = [
    "the ", "cat ", "sat ", "on ", "mat ", "and ", "saw ", "a ", "red ", "fox ", "run ", "far ",
    "to ", "big ", "old ", "elm ",
];

/// What every body of a run holds besides its model, prompt and output length.
#[derive(Debug, Clone)]
pub(crate) struct BodyShape {
    /// The field that asks for the output length (`max_tokens`, `max_completion_tokens`).
    pub(crate) max_tokens_field: &'static str,
    /// OpenAI streams: ask for the usage chunk (`stream_options.include_usage`).
    pub(crate) stream_usage: bool,
    /// More members, as JSON text: `"name":value,` each.
    pub(crate) extra: String,
}

impl Default for BodyShape {
    fn default() -> BodyShape {
        BodyShape {
            max_tokens_field: "max_tokens",
            stream_usage: true,
            extra: String::new(),
        }
    }
}

/// The prebuilt bodies of a run.
#[derive(Debug)]
pub(crate) struct Bodies {
    /// The shortest prompt length; `by_prompt[i]` is for `min_prompt + i` tokens.
    min_prompt: u32,
    by_prompt: Vec<Bytes>,
    /// `Some(n)` when every request asks for `n` output tokens: `by_prompt` holds whole bodies.
    fixed_output: Option<u32>,
}

impl Bodies {
    /// Builds the bodies for every prompt length `prompt` can yield.
    ///
    /// # Errors
    /// `Config` when they would take more than 256 MiB (a very wide prompt range).
    pub(crate) fn build(
        model: &str,
        stream: bool,
        dialect: Dialect,
        prompt: &Lengths,
        output: &Lengths,
        shape: &BodyShape,
    ) -> Result<Bodies, Error> {
        let (low, high) = prompt.bounds();
        let count = (high - low) as usize + 1;
        // The prompts' text alone, summed over every length.
        let text = (low as usize + high as usize) * count / 2 * BYTES_PER_TOKEN;
        if text > MAX_PREBUILT_BYTES {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "prompt lengths {prompt} need {} MiB of prebuilt request bodies, more than \
                     the {} MiB allowed; narrow the range",
                    text >> 20,
                    MAX_PREBUILT_BYTES >> 20
                ),
            ));
        }
        let fixed_output = match output.bounds() {
            (a, b) if a == b => Some(a),
            _ => None,
        };
        let model = serde_json::to_string(model).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "serialising the model name").with_source(e)
        })?;
        let mut filler = String::with_capacity(high as usize * BYTES_PER_TOKEN);
        for i in 0..high as usize {
            filler.push_str(WORDS[i % WORDS.len()]);
            // Words shorter than four bytes are padded so each stays one token's worth.
            while filler.len() < (i + 1) * BYTES_PER_TOKEN {
                filler.push(' ');
            }
        }
        let by_prompt = (low..=high)
            .map(|tokens| {
                let text = &filler[..tokens as usize * BYTES_PER_TOKEN];
                let mut body = format!(
                    r#"{{"model":{model},"messages":[{{"role":"user","content":"{text}"}}],"#
                );
                body.push_str(&shape.extra);
                match (stream, dialect) {
                    (false, _) => {}
                    // Anthropic streams always carry their usage (in `message_delta`).
                    (true, Dialect::Anthropic) => body.push_str(r#""stream":true,"#),
                    (true, _) if !shape.stream_usage => body.push_str(r#""stream":true,"#),
                    (true, _) => {
                        body.push_str(r#""stream":true,"stream_options":{"include_usage":true},"#)
                    }
                }
                body.push('"');
                body.push_str(shape.max_tokens_field);
                body.push_str("\":");
                if let Some(n) = fixed_output {
                    body.push_str(&n.to_string());
                    body.push('}');
                }
                Bytes::from(body)
            })
            .collect();
        Ok(Bodies {
            min_prompt: low,
            by_prompt,
            fixed_output,
        })
    }

    /// The body of a request with a prompt of `prompt` tokens asking for `output` tokens.
    /// Lengths come from the distributions the bodies were built for.
    pub(crate) fn body(&self, prompt: u32, output: u32) -> Bytes {
        let index = prompt.saturating_sub(self.min_prompt) as usize;
        let head = &self.by_prompt[index.min(self.by_prompt.len() - 1)];
        if self.fixed_output.is_some() {
            return head.clone();
        }
        let mut body = BytesMut::with_capacity(head.len() + 11);
        body.put_slice(head);
        body.put_slice(itoa_u32(output).as_bytes());
        body.put_u8(b'}');
        body.freeze()
    }
}

/// A `u32` in decimal, on the stack.
fn itoa_u32(mut n: u32) -> Digits {
    let mut buf = [0u8; 10];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, at }
}

struct Digits {
    buf: [u8; 10],
    at: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn fixed_outputs_are_prebuilt_whole() {
        let bodies = Bodies::build(
            "m\"x",
            false,
            Dialect::OpenAi,
            &Lengths::Fixed(3),
            &Lengths::Fixed(7),
            &BodyShape::default(),
        )
        .unwrap();
        let body = bodies.body(3, 7);
        let v = json(&body);
        assert_eq!(v["model"], "m\"x");
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["messages"][0]["content"].as_str().unwrap().len(), 12);
        assert!(v.get("stream").is_none());
        // The same allocation every time.
        assert_eq!(bodies.body(3, 7).as_ptr(), body.as_ptr());
    }

    #[test]
    fn varying_lengths_splice_max_tokens() {
        let bodies = Bodies::build(
            "m",
            true,
            Dialect::OpenAi,
            &Lengths::Uniform { min: 2, max: 40 },
            &Lengths::Uniform { min: 1, max: 5000 },
            &BodyShape::default(),
        )
        .unwrap();
        for (prompt, output) in [(2, 1), (17, 4096), (40, 5000)] {
            let v = json(&bodies.body(prompt, output));
            assert_eq!(v["max_tokens"], output);
            assert_eq!(v["stream"], true);
            assert_eq!(v["stream_options"]["include_usage"], true);
            let content = v["messages"][0]["content"].as_str().unwrap();
            assert_eq!(content.len(), prompt as usize * BYTES_PER_TOKEN);
        }
    }

    #[test]
    fn anthropic_streams_ask_for_no_stream_options() {
        let bodies = Bodies::build(
            "claude",
            true,
            Dialect::Anthropic,
            &Lengths::Fixed(4),
            &Lengths::Fixed(9),
            &BodyShape::default(),
        )
        .unwrap();
        let v = json(&bodies.body(4, 9));
        assert_eq!(
            (v["stream"].as_bool(), v["max_tokens"].as_u64()),
            (Some(true), Some(9))
        );
        assert!(v.get("stream_options").is_none());
        let request: volley::core::anthropic::MessagesRequest = serde_json::from_value(v).unwrap();
        assert_eq!(request.model, "claude");
    }

    #[test]
    fn huge_prompt_ranges_are_refused() {
        let err = Bodies::build(
            "m",
            false,
            Dialect::OpenAi,
            &Lengths::Uniform {
                min: 1,
                max: 1_000_000,
            },
            &Lengths::Fixed(1),
            &BodyShape::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("narrow the range"), "{err}");
    }

    /// The output length under another name, more members, and a stream without usage.
    #[test]
    fn the_shape_names_the_output_field_and_adds_members() {
        let shape = BodyShape {
            max_tokens_field: "max_completion_tokens",
            stream_usage: false,
            extra: r#""ignore_eos":true,"temperature":0,"#.to_owned(),
        };
        for output in [Lengths::Fixed(9), Lengths::Uniform { min: 1, max: 20 }] {
            let bodies = Bodies::build(
                "m",
                true,
                Dialect::OpenAi,
                &Lengths::Fixed(4),
                &output,
                &shape,
            )
            .unwrap();
            let v = json(&bodies.body(4, 9));
            assert_eq!(v["max_completion_tokens"], 9, "{v}");
            assert!(v.get("max_tokens").is_none() && v.get("stream_options").is_none());
            assert_eq!(
                (v["ignore_eos"].as_bool(), v["temperature"].as_u64()),
                (Some(true), Some(0))
            );
            assert_eq!(v["stream"], true);
        }
    }

    #[test]
    fn decimal_digits() {
        for n in [0, 7, 10, 4096, u32::MAX] {
            assert_eq!(itoa_u32(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
