//! Token usage read cheaply from a response body or stream chunk.

use serde::Deserialize;

/// The two counts we need; every other field of the usage object is skipped unread.
#[derive(Deserialize)]
struct Counts {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// `(prompt_tokens, completion_tokens)` of the last `"usage": {...}` object in `bytes`.
///
/// Instead of parsing the whole body (an embeddings response can be megabytes of numbers),
/// this searches backwards for the key `"usage"` (OpenAI puts it last) and parses only the
/// object that follows. Inside a JSON string the quotes would be escaped, so the search cannot
/// match message text. Anything that is not an object with those counts (`"usage": null` in
/// the chunks before the last) gives `None`.
pub(crate) fn find(bytes: &[u8]) -> Option<(u64, u64)> {
    let at = memchr::memmem::rfind(bytes, b"\"usage\"")?;
    let rest = skip_ws(&bytes[at + 7..]);
    let rest = skip_ws(rest.strip_prefix(b":")?);
    if rest.first() != Some(&b'{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    let counts = Counts::deserialize(&mut de).ok()?;
    Some((counts.prompt_tokens, counts.completion_tokens))
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn usage_is_found_at_the_end_of_a_completion() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 99}"}}],"usage" : {"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        assert_eq!(find(body), Some((12, 5)));
    }

    #[test]
    fn stream_chunks_and_embeddings() {
        assert_eq!(
            find(br#"data: {"choices":[{"delta":{}}],"usage":null}"#),
            None
        );
        let chunk = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":16}}\n\ndata: [DONE]\n\n";
        assert_eq!(find(chunk), Some((3, 16)));
        assert_eq!(
            find(br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#),
            Some((8, 0))
        );
        assert_eq!(find(b"not json"), None);
        assert_eq!(find(br#"{"usage":{"prompt_tokens":"#), None);
        assert_eq!(find(br#"{"usage":"#), None);
    }
}
