//! The one duration grammar of every user-facing setting: flags, `VOLLEY_*` variables,
//! `volley.toml` keys and the mock's latency models all read durations with
//! [`parse_duration`] and write them back with [`HumanDuration`].
//!
//! ```text
//! duration  := component+ | number          a bare number is seconds
//! component := number unit                  "1m30s" = "90s"; spaces between parts are allowed
//! number    := digits ["." digits] | "." digits
//! unit      := "ns" | "us" | "µs" | "ms" | "s" | "m" | "min" | "h"
//! ```
//!
//! Leading and trailing whitespace is ignored. Negative values, signs, exponents, `NaN`, `inf`,
//! an empty string and anything longer than [`Duration::MAX`] are refused with a
//! [`DurationError`] that says what was wrong and shows the grammar. Fractions are exact to the
//! nanosecond (rounded to the nearest one), so whatever [`HumanDuration`] writes reads back as
//! the same [`Duration`].
//!
//! Providers' rate-limit headers (`x-ratelimit-reset-*`) use Go's duration format, read by
//! [`headers::parse_duration`](crate::headers::parse_duration): a different grammar on
//! purpose (a malformed header reads as absent instead of failing), not for user input.
//!
//! ```
//! use std::time::Duration;
//! use volley_core::duration::{HumanDuration, parse_duration};
//!
//! assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
//! assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30)); // bare number: seconds
//! assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
//! assert!(parse_duration("-1s").is_err());
//! assert_eq!(HumanDuration(Duration::from_millis(1500)).to_string(), "1500ms");
//! assert_eq!(HumanDuration(Duration::from_secs(120)).to_string(), "2m");
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The grammar in one line, for help texts and error messages.
pub const GRAMMAR: &str = "a number with an optional unit (ns, us, ms, s, m, h), \
                           e.g. \"30s\", \"250ms\", \"1m30s\"; a bare number is seconds";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration of the grammar above (module docs): `"30s"`, `"250ms"`, `"1.5s"`,
/// `"1m30s"`, `"2h"`, `"500us"`; a bare number is seconds (`"30"`, `"0.5"`, `"0"`).
///
/// ```
/// use std::time::Duration;
/// use volley_core::duration::parse_duration;
///
/// assert_eq!(parse_duration(" 1.5s ").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
/// let err = parse_duration("3 parsecs").unwrap_err();
/// assert!(err.to_string().contains("unknown unit \"parsecs\""));
/// ```
///
/// # Errors
/// A [`DurationError`] naming the input, what was wrong with it, and the grammar.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |problem| DurationError {
        input: input.to_owned(),
        problem,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(error(Problem::Empty));
    }
    if s.starts_with('-') {
        return Err(error(Problem::Negative));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    let mut first = true;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let digits = Decimal::parse(number).ok_or_else(|| error(Problem::NotANumber))?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos = match unit {
            // A lone number is seconds; a number without a unit inside "1m30" is a mistake.
            "" if first && after.is_empty() => NANOS_PER_SEC,
            "" => return Err(error(Problem::MissingUnit(number.to_owned()))),
            "ns" => 1,
            // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU look alike; take both.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" | "min" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            other => return Err(error(Problem::UnknownUnit(other.to_owned()))),
        };
        total = digits
            .nanos(unit_nanos)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| error(Problem::TooLarge))?;
        rest = after.trim_start();
        first = false;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| error(Problem::TooLarge))?;
    // The remainder of a division by 10^9 is below 10^9: it fits u32.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// A duration that displays in the grammar [`parse_duration`] reads, exactly: in the largest
/// unit that divides it (`"0"`, `"2h"`, `"90s"`, `"1500ms"`, `"3us"`, `"7ns"`).
///
/// It also parses ([`FromStr`]) and, as a string, serialises and deserialises (serde), so a
/// settings struct can hold it directly; deserialising also takes a non-negative number of
/// seconds (`timeout = 30` in TOML).
///
/// ```
/// use std::time::Duration;
/// use volley_core::duration::HumanDuration;
///
/// let d: HumanDuration = "1m30s".parse().unwrap();
/// assert_eq!(d.0, Duration::from_secs(90));
/// assert_eq!(d.to_string(), "90s");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let (count, unit) = [
            (3_600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ]
        .into_iter()
        .find(|(per_unit, _)| nanos.is_multiple_of(*per_unit))
        .map_or((nanos, "ns"), |(per_unit, unit)| (nanos / per_unit, unit));
        if count == 0 {
            f.write_str("0")
        } else {
            write!(f, "{count}{unit}")
        }
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(HumanDuration)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HumanDurationVisitor)
    }
}

/// Why [`parse_duration`] refused its input. `Display` names the input, the problem and the
/// accepted grammar, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    problem: Problem,
}

impl DurationError {
    /// The text that did not parse, as it was given (untrimmed).
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: ", self.input)?;
        match &self.problem {
            Problem::Empty => f.write_str("it is empty")?,
            Problem::Negative => f.write_str("a duration cannot be negative")?,
            Problem::NotANumber => f.write_str("not a non-negative decimal number")?,
            Problem::MissingUnit(number) => write!(f, "the unit after {number:?} is missing")?,
            Problem::UnknownUnit(unit) => write!(f, "unknown unit {unit:?}")?,
            Problem::TooLarge => f.write_str("too large")?,
        }
        write!(f, "; expected {GRAMMAR}")
    }
}

impl std::error::Error for DurationError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Empty,
    Negative,
    NotANumber,
    MissingUnit(String),
    UnknownUnit(String),
    TooLarge,
}

/// A validated decimal: ASCII digits with at most one `.` and at least one digit.
struct Decimal<'a> {
    whole: &'a str,
    fraction: &'a str,
}

impl<'a> Decimal<'a> {
    fn parse(number: &'a str) -> Option<Self> {
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let has_digits = !whole.is_empty() || !fraction.is_empty();
        let valid = has_digits && !fraction.contains('.');
        valid.then_some(Decimal { whole, fraction })
    }

    /// The value in nanoseconds for a unit of `unit_nanos`, rounded to the nearest nanosecond;
    /// `None` when it overflows.
    fn nanos(&self, unit_nanos: u128) -> Option<u128> {
        let mut whole: u128 = 0;
        for d in self.whole.bytes() {
            whole = whole.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
        }
        // Digits beyond the 18th are below a nanosecond for every unit (an hour is 3.6·10^12
        // ns), and 18 digits times an hour in nanoseconds fit u128 with room to spare.
        let fraction = &self.fraction[..self.fraction.len().min(18)];
        let mut numerator: u128 = 0;
        let mut scale: u128 = 1;
        for d in fraction.bytes() {
            numerator = numerator * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        whole
            .checked_mul(unit_nanos)?
            .checked_add((numerator * unit_nanos + scale / 2) / scale)
    }
}

struct HumanDurationVisitor;

impl serde::de::Visitor<'_> for HumanDurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration: {GRAMMAR}")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
        Ok(HumanDuration(Duration::from_secs(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
        u64::try_from(v)
            .map(|secs| HumanDuration(Duration::from_secs(secs)))
            .map_err(|_| {
                E::custom(format!(
                    "invalid duration {v}: a duration cannot be negative"
                ))
            })
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
        Duration::try_from_secs_f64(v)
            .map(HumanDuration)
            .map_err(|_| {
                E::custom(format!(
                    "invalid duration {v}: expected a finite, non-negative number of seconds"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_unit_and_form() {
        for (input, want) in [
            ("0", Duration::ZERO),
            ("0.0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("7ns", Duration::from_nanos(7)),
            ("500us", Duration::from_micros(500)),
            ("500µs", Duration::from_micros(500)),
            ("500\u{3bc}s", Duration::from_micros(500)),
            ("20ms", ms(20)),
            ("1.5s", ms(1500)),
            (" 1.5s ", ms(1500)),
            ("1.1s", ms(1100)),
            (".5s", ms(500)),
            ("3.s", Duration::from_secs(3)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("250 ms", ms(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3.5s", ms(3_723_500)),
            ("1m 30s", Duration::from_secs(90)),
            ("2m59.56s", ms(179_560)),
        ] {
            assert_eq!(parse_duration(input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("0.5").unwrap(), ms(500));
        assert_eq!(parse_duration(" 12 ").unwrap(), Duration::from_secs(12));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("0.000000001").unwrap(),
            Duration::from_nanos(1)
        );
    }

    #[test]
    fn fractions_round_to_the_nearest_nanosecond() {
        assert_eq!(parse_duration("1.4ns").unwrap(), Duration::from_nanos(1));
        assert_eq!(parse_duration("1.5ns").unwrap(), Duration::from_nanos(2));
        assert_eq!(
            parse_duration("0.1234567891234567891234s").unwrap(),
            Duration::from_nanos(123_456_789)
        );
    }

    #[test]
    fn refuses_bad_input_and_says_why() {
        for (input, needle) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("-1s", "cannot be negative"),
            ("-0", "cannot be negative"),
            ("+1s", "not a non-negative decimal number"),
            ("ms", "not a non-negative decimal number"),
            ("NaN", "not a non-negative decimal number"),
            ("inf", "not a non-negative decimal number"),
            ("ten seconds", "not a non-negative decimal number"),
            (".s", "not a non-negative decimal number"),
            ("1.2.3s", "not a non-negative decimal number"),
            ("1m30", "the unit after \"30\" is missing"),
            ("1 2", "the unit after \"1\" is missing"),
            ("3 parsecs", "unknown unit \"parsecs\""),
            ("1x", "unknown unit \"x\""),
            ("1e3ms", "unknown unit \"e\""),
            ("1S", "unknown unit \"S\""),
            ("99999999999999999999999h", "too large"),
            ("18446744073709551616s", "too large"),
            ("5124095576030432h", "too large"),
        ] {
            let err = parse_duration(input).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle), "{input:?}: {text}");
            assert!(
                text.starts_with(&format!("invalid duration {input:?}: ")),
                "{text}"
            );
            assert!(text.ends_with(GRAMMAR), "{text}");
            assert_eq!(err.input(), input);
        }
    }

    #[test]
    fn the_longest_duration_parses() {
        let max = format!("{}.999999999s", u64::MAX);
        assert_eq!(parse_duration(&max).unwrap(), Duration::MAX);
        assert_eq!(
            parse_duration(&HumanDuration(Duration::MAX).to_string()).unwrap(),
            Duration::MAX
        );
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        for (d, want) in [
            (Duration::ZERO, "0"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "90s"),
            (ms(1500), "1500ms"),
            (Duration::from_micros(3), "3us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
        ] {
            assert_eq!(HumanDuration(d).to_string(), want);
        }
    }

    #[test]
    fn serde_takes_strings_and_seconds() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Settings {
            timeout: HumanDuration,
        }
        let read = |json: &str| serde_json::from_str::<Settings>(json).map(|s| s.timeout.0);
        assert_eq!(
            read(r#"{"timeout":"1m30s"}"#).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(read(r#"{"timeout":30}"#).unwrap(), Duration::from_secs(30));
        assert_eq!(read(r#"{"timeout":0.25}"#).unwrap(), ms(250));
        assert!(read(r#"{"timeout":-1}"#).is_err());
        assert!(read(r#"{"timeout":-0.5}"#).is_err());
        let err = read(r#"{"timeout":"soon"}"#).unwrap_err().to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        let written = serde_json::to_string(&Settings {
            timeout: HumanDuration(ms(250)),
        })
        .unwrap();
        assert_eq!(written, r#"{"timeout":"250ms"}"#);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&HumanDuration(d).to_string()).unwrap(), d);
        }

        #[test]
        fn small_durations_round_trip(nanos in any::<u64>()) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&HumanDuration(d).to_string()).unwrap(), d);
        }

        #[test]
        fn bare_numbers_are_seconds(whole in 0u64..1 << 40, millis in 0u64..1000) {
            let text = format!("{whole}.{millis:03}");
            prop_assert_eq!(
                parse_duration(&text).unwrap(),
                Duration::from_secs(whole) + Duration::from_millis(millis)
            );
        }

        #[test]
        fn parsing_never_panics(input in ".{0,40}") {
            let _ = parse_duration(&input);
        }
    }
}
