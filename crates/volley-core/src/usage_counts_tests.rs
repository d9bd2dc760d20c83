//! The hand reader against serde: it reads the shapes providers send, gives up on the rest,
//! and never answers differently from serde.

use serde::de::DeserializeOwned;

use super::*;
use crate::{anthropic, openai};

/// What serde reads from `object` (as `usage_scan::object_at` asks it).
fn by_serde<T: DeserializeOwned>(object: &[u8]) -> Option<T> {
    let mut de = serde_json::Deserializer::from_slice(object);
    T::deserialize(&mut de).ok()
}

/// Usage objects as providers send them, and odd but valid ones.
const SEEDS: &[&str] = &[
    r#"{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}"#,
    r#"{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
    r#"{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":503,"service_tier":"standard"}"#,
    r#"{ "prompt_tokens" : 5 ,
        "completion_tokens":	7, "cost": 0.00012, "is_byok": false, "x": [1, -2.5e-3, true, null, "s", {"a": []}], "total_tokens":12 }"#,
    r#"{"input_tokens":null,"output_tokens":3,"server_tool_use":{"web_search_requests":0}}"#,
    r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0}"#,
    r#"{}"#,
    r#"{"total_tokens":3}trailing, not read"#,
    // A repeated key that is not a count, a count's name inside a nested object, a null
    // count (refused for OpenAI, `None` for Anthropic), a count repeated after a null.
    r#"{"x":1,"x":"y","output_tokens":4,"details":{"prompt_tokens":5,"input_tokens":6}}"#,
    r#"{"prompt_tokens":null,"completion_tokens":2}"#,
    r#"{"cache_read_input_tokens":null,"cache_read_input_tokens":3}"#,
];

/// Bytes a mutation puts in: JSON's punctuation, digits, escapes, its whitespace and two
/// that are not JSON's (vertical tab, form feed), controls, non-ASCII.
const INSERTS: &[u8] = b"{}[]:,\"\\-+.eE019 \t\n\r\x0b\x0cnulltrue\x00\x1f\x7f\xc3\xff";

/// Every seed, cut at every length, with every byte replaced by (and every gap given) each of
/// `INSERTS`: tens of thousands of objects, valid and not.
fn variants() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for seed in SEEDS {
        let seed = seed.as_bytes();
        for end in 0..=seed.len() {
            all.push(seed[..end].to_vec());
        }
        for at in 0..seed.len() {
            for &byte in INSERTS {
                let mut replaced = seed.to_vec();
                replaced[at] = byte;
                all.push(replaced);
                let mut inserted = seed.to_vec();
                inserted.insert(at, byte);
                all.push(inserted);
            }
        }
    }
    all
}

#[test]
fn the_fast_reader_agrees_with_serde_wherever_it_answers() {
    let mut answered = 0;
    let variants = variants();
    for object in &variants {
        if let Some(fast) = counts::<openai::UsageCounts>(object) {
            answered += 1;
            let serde = by_serde::<openai::UsageCounts>(object);
            assert_eq!(Some(fast), serde, "{}", String::from_utf8_lossy(object));
        }
        if let Some(fast) = counts::<anthropic::UsageCounts>(object) {
            let serde = by_serde::<anthropic::UsageCounts>(object);
            assert_eq!(Some(fast), serde, "{}", String::from_utf8_lossy(object));
        }
    }
    // Most variants are still valid objects the reader takes (a changed digit, a space).
    assert!(
        answered > variants.len() / 10,
        "{answered} of {}",
        variants.len()
    );
}

#[test]
fn the_shapes_providers_send_are_read_by_hand() {
    for seed in SEEDS {
        assert!(
            read(seed.as_bytes(), openai::UsageCounts::KEYS).is_some(),
            "{seed}"
        );
    }
    let usage = counts::<openai::UsageCounts>(SEEDS[1].as_bytes()).unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1117, 46, 1163)
    );
    let usage = counts::<openai::UsageCounts>(SEEDS[3].as_bytes()).unwrap();
    assert_eq!(usage.total_tokens, 12, "past a float, a bool and an array");
    let usage = counts::<anthropic::UsageCounts>(SEEDS[2].as_bytes()).unwrap();
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens
        ),
        (Some(2095), Some(503), Some(0))
    );
    let usage = counts::<anthropic::UsageCounts>(SEEDS[4].as_bytes()).unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (None, Some(3)));
}

#[test]
fn what_serde_must_judge_is_left_to_it() {
    for object in [
        // An escape in a key, a repeated count, a null count where a u64 is required.
        r#"{"prompt\u005ftokens":1}"#,
        r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
        r#"{"prompt_tokens":null}"#,
        // Counts that are not plain u64s.
        r#"{"prompt_tokens":01}"#,
        r#"{"prompt_tokens":1.0}"#,
        r#"{"prompt_tokens":1e3}"#,
        r#"{"prompt_tokens":-1}"#,
        r#"{"prompt_tokens":18446744073709551616}"#,
        r#"{"prompt_tokens":"1"}"#,
        // Not JSON, or cut short.
        r#"{"prompt_tokens":1,}"#,
        r#"{"prompt_tokens":1"#,
        r#"{"a":[1,]}"#,
        // Non-ASCII, and deeper than the reader goes.
        "{\"note\":\"caf\u{e9}\",\"prompt_tokens\":1}",
        r#"{"a":[[[[[[[[[1]]]]]]]]],"prompt_tokens":1}"#,
    ] {
        assert_eq!(
            counts::<openai::UsageCounts>(object.as_bytes()),
            None,
            "{object}"
        );
    }
    // serde then decides: the escaped key, the non-ASCII note and the deep one are fine, the
    // rest are not.
    for (object, serde) in [
        (r#"{"prompt\u005ftokens":1}"#, Some(1)),
        (r#"{"prompt_tokens":1,"prompt_tokens":2}"#, None),
        (r#"{"prompt_tokens":null}"#, None),
        (r#"{"prompt_tokens":01}"#, None),
        (r#"{"prompt_tokens":1.0}"#, None),
        (r#"{"prompt_tokens":1e3}"#, None),
        (r#"{"prompt_tokens":-1}"#, None),
        (r#"{"prompt_tokens":18446744073709551616}"#, None),
        (r#"{"prompt_tokens":"1"}"#, None),
        (r#"{"prompt_tokens":1,}"#, None),
        (r#"{"prompt_tokens":1"#, None),
        (r#"{"a":[1,]}"#, None),
        ("{\"note\":\"caf\u{e9}\",\"prompt_tokens\":1}", Some(1)),
        (r#"{"a":[[[[[[[[[1]]]]]]]]],"prompt_tokens":1}"#, Some(1)),
    ] {
        // Nothing after the object: a closing brace would complete the one cut short.
        let body = format!(r#"{{"usage":{object}"#);
        assert_eq!(
            crate::usage_scan::object_at::<openai::UsageCounts>(body.as_bytes(), 1)
                .map(|u| u.prompt_tokens),
            serde,
            "{object}"
        );
    }
}

#[test]
fn each_count_lands_in_its_own_field() {
    for (index, key) in openai::UsageCounts::KEYS.iter().enumerate() {
        let object = format!(r#"{{"{}":7}}"#, String::from_utf8_lossy(key));
        let fast = counts::<openai::UsageCounts>(object.as_bytes()).unwrap();
        assert_eq!(Some(fast), by_serde(object.as_bytes()), "{object}");
        let fields = [
            fast.prompt_tokens,
            fast.completion_tokens,
            fast.total_tokens,
        ];
        // The Responses API's `input_tokens` and `output_tokens` are prompt and completion.
        assert_eq!(fields[[0, 1, 2, 0, 1][index]], 7, "{object}");
        assert_eq!(fields.iter().sum::<u64>(), 7, "{object}");
    }
    for (index, key) in anthropic::UsageCounts::KEYS.iter().enumerate() {
        let object = format!(r#"{{"{}":7}}"#, String::from_utf8_lossy(key));
        let fast = counts::<anthropic::UsageCounts>(object.as_bytes()).unwrap();
        assert_eq!(Some(fast), by_serde(object.as_bytes()), "{object}");
        let fields = [
            fast.input_tokens,
            fast.cache_creation_input_tokens,
            fast.cache_read_input_tokens,
            fast.output_tokens,
        ];
        assert_eq!(fields[index], Some(7), "{object}");
        assert_eq!(fields.iter().flatten().count(), 1, "{object}");
    }
}

/// Keys a generated usage object may have: every count of both dialects, and others.
const GENERATED_KEYS: &[&str] = &[
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "cost",
    "service_tier",
];

/// Counts as providers write them.
const COUNTS: &[&str] = &["0", "7", "1163", "18446744073709551615"];

/// Values of the other keys: every kind of JSON value.
const OTHERS: &[&str] = &[
    "0",
    "-3",
    "1.5",
    "2e-3",
    "null",
    "true",
    "false",
    r#""standard""#,
    "[]",
    r#"[1, {"a": null}]"#,
    r#"{"cached_tokens": 0, "audio_tokens": 0}"#,
];

/// JSON's whitespace, as a generated object puts it around keys and values.
const SPACES: &[&str] = &["", " ", "\n", "\t", "\r\n  "];

/// A usage object of the plain shape: distinct keys, integer counts, any other values, any
/// whitespace.
fn plain_object() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let member = (
        proptest::sample::select(SPACES),
        proptest::sample::select(COUNTS),
        proptest::sample::select(OTHERS),
    );
    (
        proptest::sample::subsequence(GENERATED_KEYS, 0..=GENERATED_KEYS.len()),
        proptest::collection::vec(member, GENERATED_KEYS.len()),
    )
        .prop_map(|(keys, members)| {
            let members: Vec<String> = keys
                .iter()
                .zip(members)
                .map(|(key, (space, count, other))| {
                    let value = if key.ends_with("_tokens") {
                        count
                    } else {
                        other
                    };
                    format!(r#"{space}"{key}"{space}:{space}{value}{space}"#)
                })
                .collect();
            format!("{{{}}}", members.join(","))
        })
}

proptest::proptest! {
    #[test]
    fn plain_objects_are_read_by_hand_as_serde_reads_them(object in plain_object()) {
        let openai = counts::<openai::UsageCounts>(object.as_bytes());
        proptest::prop_assert!(openai.is_some(), "{}", object);
        proptest::prop_assert_eq!(openai, by_serde(object.as_bytes()), "{}", object);
        let anthropic = counts::<anthropic::UsageCounts>(object.as_bytes());
        proptest::prop_assert!(anthropic.is_some(), "{}", object);
        proptest::prop_assert_eq!(anthropic, by_serde(object.as_bytes()), "{}", object);
    }

    #[test]
    fn changed_objects_are_read_as_serde_reads_them_or_left_to_it(
        object in plain_object(),
        at in proptest::prelude::any::<proptest::sample::Index>(),
        byte in proptest::sample::select(INSERTS),
        replace in proptest::prelude::any::<bool>(),
    ) {
        let mut object = object.into_bytes();
        let at = at.index(object.len());
        if replace {
            object[at] = byte;
        } else {
            object.insert(at, byte);
        }
        if let Some(fast) = counts::<openai::UsageCounts>(&object) {
            proptest::prop_assert_eq!(Some(fast), by_serde(&object));
        }
        if let Some(fast) = counts::<anthropic::UsageCounts>(&object) {
            proptest::prop_assert_eq!(Some(fast), by_serde(&object));
        }
    }
}
