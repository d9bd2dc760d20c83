//! Property tests: random event streams, encoded with random line ends, comments, unknown
//! fields and invalid UTF-8, then split at random bytes, decode to what a straightforward model
//! of the standard's rules says.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{Decoder, Event};

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Lf,
    CrLf,
    Cr,
}

#[derive(Debug, Clone)]
enum Kind {
    Data,
    Event,
    Id,
    Retry,
    Comment,
    Unknown(&'static str),
}

/// One non-blank line.
#[derive(Debug, Clone)]
struct Line {
    kind: Kind,
    value: Vec<u8>,
    /// Whether the value is preceded by the optional space (forced when it starts with one).
    space: bool,
    /// Whether the line has a colon (forced unless the value is empty).
    colon: bool,
    end: End,
}

#[derive(Debug, Clone)]
struct Block {
    lines: Vec<Line>,
    /// The line end of the blank line that dispatches the block.
    end: End,
}

#[derive(Debug, Clone)]
struct Stream {
    bom: bool,
    blocks: Vec<Block>,
    /// Lines of a block that is never finished by a blank line.
    trailing: Vec<Line>,
    /// A last line that never gets its line end.
    tail: Option<Line>,
}

/// What an event should decode to: type, data, id, retry.
type Expected = (String, String, String, Option<Duration>);

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Lf), Just(End::CrLf), Just(End::Cr)]
}

/// Value bytes: ASCII, separators, multi-byte characters (to be split), invalid sequences and
/// NUL, never a line end.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        4 => prop::sample::select(&b"abcXYZ09{}[]\","[..]).prop_map(|b| vec![b]),
        1 => prop::sample::select(vec![
            &b" "[..],
            b":",
            b": ",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            "\u{FEFF}".as_bytes(),
            b"\xFF",
            b"\xE2\x82",
            b"\xC3",
            b"\0",
            b"[DONE]",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(atom, 0..8).prop_map(|atoms| atoms.concat())
}

fn retry_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[0-9]{1,6}".prop_map(String::into_bytes),
        Just(b"99999999999999999999999".to_vec()),
        value(),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    let kind_and_value = prop_oneof![
        6 => value().prop_map(|v| (Kind::Data, v)),
        2 => value().prop_map(|v| (Kind::Event, v)),
        2 => value().prop_map(|v| (Kind::Id, v)),
        2 => retry_value().prop_map(|v| (Kind::Retry, v)),
        2 => value().prop_map(|v| (Kind::Comment, v)),
        1 => (prop::sample::select(vec!["foo", "Data", "dat", "datas", "ID", "event "]), value())
            .prop_map(|(name, v)| (Kind::Unknown(name), v)),
    ];
    (kind_and_value, any::<bool>(), any::<bool>(), end()).prop_map(
        |((kind, value), space, colon, end)| Line {
            space: space || value.first() == Some(&b' '),
            colon: colon || !value.is_empty() || matches!(kind, Kind::Comment),
            kind,
            value,
            end,
        },
    )
}

fn stream() -> impl Strategy<Value = Stream> {
    let block =
        (prop::collection::vec(line(), 0..5), end()).prop_map(|(lines, end)| Block { lines, end });
    (
        any::<bool>(),
        prop::collection::vec(block, 0..8),
        prop::collection::vec(line(), 0..3),
        prop::option::of(line()),
    )
        .prop_map(|(bom, blocks, trailing, tail)| Stream {
            bom,
            blocks,
            trailing,
            tail,
        })
}

fn content(line: &Line) -> Vec<u8> {
    let name: &[u8] = match line.kind {
        Kind::Data => b"data",
        Kind::Event => b"event",
        Kind::Id => b"id",
        Kind::Retry => b"retry",
        Kind::Comment => b"",
        Kind::Unknown(name) => name.as_bytes(),
    };
    let mut out = name.to_vec();
    if line.colon {
        out.push(b':');
        if line.space {
            out.push(b' ');
        }
        out.extend_from_slice(&line.value);
    }
    out
}

fn encode(stream: &Stream) -> Vec<u8> {
    let mut out = Vec::new();
    if stream.bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut after_cr = false;
    let mut push = |out: &mut Vec<u8>, content: &[u8], end: Option<End>| {
        out.extend_from_slice(content);
        // A blank line ended by LF right after a CR would merge into one CRLF line end.
        let end = match end {
            Some(End::Lf) if after_cr && content.is_empty() => Some(End::CrLf),
            other => other,
        };
        out.extend_from_slice(match end {
            Some(End::Lf) => b"\n",
            Some(End::CrLf) => b"\r\n",
            Some(End::Cr) => b"\r",
            None => b"",
        });
        after_cr = end == Some(End::Cr);
    };
    for block in &stream.blocks {
        for line in &block.lines {
            push(&mut out, &content(line), Some(line.end));
        }
        push(&mut out, b"", Some(block.end));
    }
    for line in &stream.trailing {
        push(&mut out, &content(line), Some(line.end));
    }
    if let Some(line) = &stream.tail {
        push(&mut out, &content(line), None);
    }
    out
}

/// The standard's rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    data: Option<Vec<u8>>,
    event_type: Vec<u8>,
    retry: Option<Duration>,
    id_buffer: Vec<u8>,
    last_event_id: Vec<u8>,
    reconnection_time: Option<Duration>,
}

impl Model {
    fn apply(&mut self, line: &Line) {
        let value = line.value.clone();
        match line.kind {
            Kind::Data => {
                self.data = Some(match self.data.take() {
                    None => value,
                    Some(data) => [data, b"\n".to_vec(), value].concat(),
                });
            }
            Kind::Event => self.event_type = value,
            Kind::Id if !value.contains(&0) => self.id_buffer = value,
            Kind::Retry if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = std::str::from_utf8(&value)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(millis));
                self.reconnection_time = self.retry;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<Expected> {
        self.last_event_id = self.id_buffer.clone();
        let retry = self.retry.take();
        let event_type = std::mem::take(&mut self.event_type);
        let data = self.data.take()?;
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let event_type = if event_type.is_empty() {
            "message".to_owned()
        } else {
            lossy(&event_type)
        };
        Some((event_type, lossy(&data), lossy(&self.last_event_id), retry))
    }
}

/// The expected events, last event ID and reconnection time.
fn expected(stream: &Stream) -> (Vec<Expected>, String, Option<Duration>) {
    let mut model = Model::default();
    let mut events = Vec::new();
    for block in &stream.blocks {
        block.lines.iter().for_each(|line| model.apply(line));
        events.extend(model.dispatch());
    }
    stream.trailing.iter().for_each(|line| model.apply(line));
    let last_event_id = String::from_utf8_lossy(&model.last_event_id).into_owned();
    (events, last_event_id, model.reconnection_time)
}

fn summary(event: &Event) -> Expected {
    (
        event.event_type().to_owned(),
        event.data().to_owned(),
        event.id().to_owned(),
        event.retry(),
    )
}

/// Decodes `chunks`; with `drain_each`, events are taken after every chunk, otherwise all
/// chunks are fed first.
fn decode<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    drain_each: bool,
) -> (Vec<Expected>, String, Option<Duration>) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut drain = |decoder: &mut Decoder| {
        while let Some(event) = decoder.next_event().expect("no cap is reached") {
            events.push(summary(&event));
        }
    };
    for chunk in chunks {
        decoder.feed(Bytes::copy_from_slice(chunk));
        if drain_each {
            drain(&mut decoder);
        }
    }
    drain(&mut decoder);
    let last_event_id = decoder.last_event_id().to_owned();
    (events, last_event_id, decoder.reconnection_time())
}

fn split_at<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks
}

proptest! {
    #[test]
    fn decoding_matches_the_model_however_the_input_is_split(
        stream in stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let input = encode(&stream);
        let expected = expected(&stream);

        let whole = decode([&input[..]], true);
        prop_assert_eq!(&whole, &expected);

        let chunks = split_at(&input, &cuts);
        prop_assert_eq!(&decode(chunks.iter().copied(), true), &expected);
        prop_assert_eq!(&decode(chunks.iter().copied(), false), &expected);
        prop_assert_eq!(&decode(input.chunks(1), true), &expected);
    }

    #[test]
    fn feed_slice_matches_feed(
        stream in stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let input = encode(&stream);
        let chunks = split_at(&input, &cuts);
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        for chunk in &chunks {
            decoder.feed_slice(chunk);
            while let Some(event) = decoder.next_event().expect("no cap is reached") {
                events.push(event);
            }
        }
        let mut whole = Decoder::new();
        whole.feed(Bytes::from(input.clone()));
        for event in events {
            prop_assert_eq!(Some(event), whole.next_event().unwrap());
        }
        prop_assert_eq!(whole.next_event().unwrap(), None);
    }
}
