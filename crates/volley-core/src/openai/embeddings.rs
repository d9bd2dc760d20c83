//! Embeddings: the request, the response and the base64 vector encoding.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Extra, Usage};
use crate::{Error, ErrorKind};

/// A `POST /embeddings` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model to use (`"text-embedding-3-small"`).
    pub model: String,
    /// What to embed: one or more texts, or pre-tokenised input.
    pub input: EmbeddingInput,
    /// `"float"` (the default) or `"base64"` (smaller on the wire; see
    /// [`EmbeddingVector::to_f32`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// The number of dimensions to return, for models that support shortening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// An end-user identifier for abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingsRequest {
    /// A request to embed `input` with `model` and every optional parameter unset.
    pub fn new(model: impl Into<String>, input: impl Into<EmbeddingInput>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            model: model.into(),
            input: input.into(),
            encoding_format: None,
            dimensions: None,
            user: None,
            extra: Extra::new(),
        }
    }
}

/// The `input` of an embeddings request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts, one embedding each.
    Texts(Vec<String>),
    /// One pre-tokenised input.
    Tokens(Vec<u32>),
    /// Several pre-tokenised inputs.
    TokenBatches(Vec<Vec<u32>>),
}

impl From<String> for EmbeddingInput {
    fn from(text: String) -> EmbeddingInput {
        EmbeddingInput::Text(text)
    }
}

impl From<&str> for EmbeddingInput {
    fn from(text: &str) -> EmbeddingInput {
        EmbeddingInput::Text(text.to_owned())
    }
}

impl From<Vec<String>> for EmbeddingInput {
    fn from(texts: Vec<String>) -> EmbeddingInput {
        EmbeddingInput::Texts(texts)
    }
}

/// An embeddings response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `"list"` from OpenAI.
    #[serde(default)]
    pub object: String,
    /// One embedding per input, each with the `index` of its input.
    #[serde(default)]
    pub data: Vec<Embedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Token counts (prompt and total only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One embedding of an [`EmbeddingsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `"embedding"` from OpenAI.
    #[serde(default)]
    pub object: String,
    /// The position of the input this embedding is for.
    #[serde(default)]
    pub index: u32,
    /// The vector, as floats or base64.
    pub embedding: EmbeddingVector,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An embedding vector as sent: a JSON array of floats, or (with
/// `"encoding_format": "base64"`) the base64 of its little-endian `f32`s.
///
/// Floats are held as `f32`, the precision the models produce: the JSON decimals OpenAI sends
/// carry more digits than an `f32` has, so writing a vector back gives shorter decimals of
/// the same `f32` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// The vector as floats.
    Float(Vec<f32>),
    /// The base64 of the vector's little-endian `f32`s.
    Base64(String),
}

impl EmbeddingVector {
    /// The vector as floats, decoding base64 when needed.
    ///
    /// # Errors
    /// A [`BodyDecode`](ErrorKind::BodyDecode) error when the base64 is invalid or does not
    /// hold a whole number of `f32`s.
    pub fn to_f32(&self) -> Result<Cow<'_, [f32]>, Error> {
        match self {
            EmbeddingVector::Float(values) => Ok(Cow::Borrowed(values)),
            EmbeddingVector::Base64(text) => decode_f32_le(text).map(Cow::Owned),
        }
    }

    /// Like [`to_f32`](Self::to_f32), without copying a float vector.
    ///
    /// # Errors
    /// As for [`to_f32`](Self::to_f32).
    pub fn into_f32(self) -> Result<Vec<f32>, Error> {
        match self {
            EmbeddingVector::Float(values) => Ok(values),
            EmbeddingVector::Base64(text) => decode_f32_le(&text),
        }
    }
}

/// Decodes standard base64 (padding optional) of little-endian `f32`s.
fn decode_f32_le(text: &str) -> Result<Vec<f32>, Error> {
    let bytes = decode_base64(text.as_bytes()).ok_or_else(|| {
        Error::new(
            ErrorKind::BodyDecode,
            "embedding: invalid base64 in the vector",
        )
    })?;
    if bytes.len() % 4 != 0 {
        return Err(Error::new(
            ErrorKind::BodyDecode,
            format!(
                "embedding: {} bytes of base64 are not a whole number of f32s",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Decodes standard base64 (RFC 4648 alphabet, `=` padding optional). `None` on any byte
/// outside the alphabet or an impossible length.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let input = match input {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => input,
    };
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut chunks = input.chunks_exact(4);
    for chunk in &mut chunks {
        let n = (sextet(chunk[0])? << 18)
            | (sextet(chunk[1])? << 12)
            | (sextet(chunk[2])? << 6)
            | sextet(chunk[3])?;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    match *chunks.remainder() {
        [] => {}
        [a, b] => {
            let n = (sextet(a)? << 18) | (sextet(b)? << 12);
            out.push((n >> 16) as u8);
        }
        [a, b, c] => {
            let n = (sextet(a)? << 18) | (sextet(b)? << 12) | (sextet(c)? << 6);
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]);
        }
        // A remainder of one was rejected above.
        _ => return None,
    }
    Some(out)
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::test_util::assert_round_trip;
    use proptest::prelude::*;

    #[test]
    fn float_response_round_trip() {
        let resp: EmbeddingsResponse = assert_round_trip(
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25,0.0023064255],"x_emb":1}],
                "model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5},"x_top":[]}"#,
        );
        let vector = resp.data[0].embedding.to_f32().unwrap();
        assert_eq!(&vector[..], &[0.5, -0.25, 0.002_306_425_5]);
        assert!(matches!(vector, Cow::Borrowed(_)));
        assert_eq!(resp.usage.unwrap().prompt_tokens, 5);
    }

    #[test]
    fn base64_response() {
        let resp: EmbeddingsResponse = assert_round_trip(
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAAPwAAgL6CqPs3"},
                {"object":"embedding","index":1,"embedding":"AACAPwAAAMA="}],"model":"text-embedding-3-large",
                "usage":{"prompt_tokens":4,"total_tokens":4}}"#,
        );
        assert_eq!(
            resp.data[0].embedding.to_f32().unwrap().as_ref(),
            &[0.5, -0.25, 3.0e-5]
        );
        assert_eq!(
            resp.data[1].embedding.clone().into_f32().unwrap(),
            vec![1.0, -2.0]
        );
    }

    #[test]
    fn base64_errors() {
        for bad in ["AACAPwAAAM", "AAC!PwAA", "A", "AADA", "AAAA AAA", "AA=A"] {
            let err = EmbeddingVector::Base64(bad.to_owned())
                .to_f32()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BodyDecode, "{bad}");
        }
        assert_eq!(
            EmbeddingVector::Base64(String::new())
                .to_f32()
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn base64_padding_is_optional() {
        assert_eq!(decode_base64(b"AADAPw==").unwrap(), [0, 0, 0xC0, 0x3F]);
        assert_eq!(decode_base64(b"AADAPw").unwrap(), [0, 0, 0xC0, 0x3F]);
        assert_eq!(decode_base64(b"TWE=").unwrap(), b"Ma");
        assert_eq!(decode_base64(b"TWFu").unwrap(), b"Man");
    }

    #[test]
    fn request_inputs() {
        for (json, input) in [
            (r#""hi""#, EmbeddingInput::from("hi")),
            (
                r#"["a","b"]"#,
                EmbeddingInput::from(vec!["a".to_owned(), "b".to_owned()]),
            ),
            (r#"[1,2,3]"#, EmbeddingInput::Tokens(vec![1, 2, 3])),
            (
                r#"[[1],[2,3]]"#,
                EmbeddingInput::TokenBatches(vec![vec![1], vec![2, 3]]),
            ),
        ] {
            let req: EmbeddingsRequest = assert_round_trip(&format!(
                r#"{{"model":"text-embedding-3-small","input":{json},"encoding_format":"base64","dimensions":256,"x":1}}"#
            ));
            assert_eq!(req.input, input);
            assert_eq!(req.dimensions, Some(256));
        }
        let req = EmbeddingsRequest::new("m", "text");
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"m","input":"text"}"#
        );
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn base64_vectors_decode_to_their_floats(values in prop::collection::vec(any::<f32>(), 0..64)) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let decoded = EmbeddingVector::Base64(encode_base64(&bytes)).into_f32().unwrap();
            let back: Vec<u32> = decoded.iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn base64_bytes_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let text = encode_base64(&bytes);
            prop_assert_eq!(decode_base64(text.as_bytes()).unwrap(), bytes.clone());
            prop_assert_eq!(decode_base64(text.trim_end_matches('=').as_bytes()).unwrap(), bytes);
        }

        #[test]
        fn base64_never_panics(text in ".{0,40}") {
            let _ = EmbeddingVector::Base64(text).to_f32();
        }
    }
}
