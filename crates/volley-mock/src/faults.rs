//! Fault injection: which failures the mock produces, how often, and how a test forces one.

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

/// One kind of injected failure. Faults are exclusive: a request gets at most one.
///
/// | kind | what the client sees |
/// |---|---|
/// | `RateLimit` | `429` with `Retry-After` (whole seconds, rounded up), `retry-after-ms` and an OpenAI `rate_limit_exceeded` error body; sent at once, without latency |
/// | `ServerError` | `500` with an OpenAI `server_error` body, after the normal latency |
/// | `Unavailable` | `503` with an OpenAI error body (and `Retry-After` when configured), at once |
/// | `Reset` | no response: on HTTP/1 the TCP connection is reset (RST, `SO_LINGER` 0); on HTTP/2 the stream is reset (`RST_STREAM`), other streams live on |
/// | `Stall` | no response for [`MockConfig::stall_duration`], then the connection (HTTP/1) or stream (HTTP/2) is closed |
/// | `Cut` | a `200` whose body stops half way with a transport error: a stream after about half its events, a JSON body after half its `content-length` |
/// | `Malformed` | a `200` whose JSON is invalid: a truncated body (with a matching `content-length`), or for a stream one `data:` line of truncated JSON (the stream then ends normally) |
///
/// [`MockConfig::stall_duration`]: crate::MockConfig::stall_duration
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `429 Too Many Requests`.
    RateLimit,
    /// `500 Internal Server Error`.
    ServerError,
    /// `503 Service Unavailable`.
    Unavailable,
    /// The connection (or HTTP/2 stream) is reset before any response.
    Reset,
    /// No answer for a long (bounded) time.
    Stall,
    /// The response body is cut half way.
    Cut,
    /// The response body is invalid JSON.
    Malformed,
}

impl FaultKind {
    /// Every kind, in the order the cumulative probabilities of [`Faults`] are laid out.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::RateLimit,
        FaultKind::ServerError,
        FaultKind::Unavailable,
        FaultKind::Reset,
        FaultKind::Stall,
        FaultKind::Cut,
        FaultKind::Malformed,
    ];

    /// The kind's name in statistics: `rate_limit`, `server_error`, `unavailable`, `reset`,
    /// `stall`, `cut`, `malformed`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::RateLimit => "rate_limit",
            FaultKind::ServerError => "server_error",
            FaultKind::Unavailable => "unavailable",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Cut => "cut",
            FaultKind::Malformed => "malformed",
        }
    }

    /// The kind's short form, as written in [`FAULT_HEADER`](crate::FAULT_HEADER) and in the
    /// [`Faults`] grammar: `429`, `500`, `503`, `reset`, `stall`, `cut`, `malformed`.
    pub fn short_name(self) -> &'static str {
        match self {
            FaultKind::RateLimit => "429",
            FaultKind::ServerError => "500",
            FaultKind::Unavailable => "503",
            other => other.name(),
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    /// Writes the short form (`429`, `reset`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for FaultKind {
    type Err = ConfigError;

    /// Reads either form: `429` or `rate_limit`, `500` or `server_error`, `503` or
    /// `unavailable`, `reset`, `stall`, `cut`, `malformed` (case-insensitive).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        // Anthropic's overload status names the same fault: the Messages API answers `503`
        // faults as `529 overloaded_error`.
        let s = if s == "529" || s.eq_ignore_ascii_case("overloaded") {
            "503"
        } else {
            s
        };
        FaultKind::ALL
            .into_iter()
            .find(|k| s.eq_ignore_ascii_case(k.short_name()) || s.eq_ignore_ascii_case(k.name()))
            .ok_or_else(|| {
                ConfigError::new(format!(
                    "unknown fault {input:?}: expected 429, 500, 503, reset, stall, cut or malformed"
                ))
            })
    }
}

/// The probability of each fault, decided once per request with the server's seeded RNG.
///
/// Each field is a probability in `[0, 1]` and their sum must not exceed 1: one uniform draw
/// picks at most one fault, with the kinds laid out one after the other in the order of
/// [`FaultKind::ALL`]. The default injects nothing.
///
/// # String form (`FromStr`, for the CLI)
///
/// A comma-separated list of `kind=probability`, kinds written as in [`FaultKind`]'s `FromStr`
/// (`429`, `500`, `503`, `reset`, `stall`, `cut`, `malformed`, or their long names); `""` or
/// `"none"` is no fault:
///
/// ```
/// use volley_mock::Faults;
///
/// let faults: Faults = "429=0.3,500=0.1,503=0.05,reset=0.01,stall=0.01,cut=0.02,malformed=0.01"
///     .parse()
///     .unwrap();
/// assert_eq!(faults.rate_limit, 0.3);
/// assert!("429=0.7,500=0.7".parse::<Faults>().is_err()); // sums to more than 1
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Probability of a `429` ([`FaultKind::RateLimit`]). Default 0.
    pub rate_limit: f64,
    /// Probability of a `500` ([`FaultKind::ServerError`]). Default 0.
    pub server_error: f64,
    /// Probability of a `503` ([`FaultKind::Unavailable`]). Default 0.
    pub unavailable: f64,
    /// Probability of a connection reset ([`FaultKind::Reset`]). Default 0.
    pub reset: f64,
    /// Probability of a stall ([`FaultKind::Stall`]). Default 0.
    pub stall: f64,
    /// Probability of a body cut half way ([`FaultKind::Cut`]). Default 0.
    pub cut: f64,
    /// Probability of invalid JSON ([`FaultKind::Malformed`]). Default 0.
    pub malformed: f64,
}

impl Faults {
    /// No faults at all.
    pub const NONE: Faults = Faults {
        rate_limit: 0.0,
        server_error: 0.0,
        unavailable: 0.0,
        reset: 0.0,
        stall: 0.0,
        cut: 0.0,
        malformed: 0.0,
    };

    /// The probability of `kind`.
    pub fn probability(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::RateLimit => self.rate_limit,
            FaultKind::ServerError => self.server_error,
            FaultKind::Unavailable => self.unavailable,
            FaultKind::Reset => self.reset,
            FaultKind::Stall => self.stall,
            FaultKind::Cut => self.cut,
            FaultKind::Malformed => self.malformed,
        }
    }

    /// Sets the probability of `kind`, returning the updated value (for chaining in tests).
    #[must_use]
    pub fn with(mut self, kind: FaultKind, probability: f64) -> Self {
        *self.probability_mut(kind) = probability;
        self
    }

    /// Whether no fault can ever be injected.
    pub fn is_none(&self) -> bool {
        FaultKind::ALL.iter().all(|&k| self.probability(k) == 0.0)
    }

    /// Picks the fault for one uniform draw `u` in `[0, 1)`.
    pub(crate) fn pick(&self, u: f64) -> Option<FaultKind> {
        let mut cumulative = 0.0;
        for kind in FaultKind::ALL {
            let p = self.probability(kind);
            cumulative += p;
            if p > 0.0 && u < cumulative {
                return Some(kind);
            }
        }
        None
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut total = 0.0;
        for kind in FaultKind::ALL {
            let p = self.probability(kind);
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError::new(format!(
                    "fault {}: probability {p} is not in [0, 1]",
                    kind.short_name()
                )));
            }
            total += p;
        }
        // A little slack for decimal inputs such as 0.1 + 0.2 + 0.7.
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::new(format!(
                "fault probabilities sum to {total}, more than 1 (faults are exclusive per request)"
            )));
        }
        Ok(())
    }

    fn probability_mut(&mut self, kind: FaultKind) -> &mut f64 {
        match kind {
            FaultKind::RateLimit => &mut self.rate_limit,
            FaultKind::ServerError => &mut self.server_error,
            FaultKind::Unavailable => &mut self.unavailable,
            FaultKind::Reset => &mut self.reset,
            FaultKind::Stall => &mut self.stall,
            FaultKind::Cut => &mut self.cut,
            FaultKind::Malformed => &mut self.malformed,
        }
    }
}

impl FromStr for Faults {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let mut faults = Faults::NONE;
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(faults);
        }
        let mut seen = [false; FaultKind::ALL.len()];
        for item in s.split(',') {
            let (kind, p) = item.split_once('=').ok_or_else(|| {
                ConfigError::new(format!(
                    "invalid faults {input:?}: {:?} is not KIND=PROBABILITY, e.g. \"429=0.3\"",
                    item.trim()
                ))
            })?;
            let kind: FaultKind = kind
                .parse()
                .map_err(|e| ConfigError::new(format!("invalid faults {input:?}: {e}")))?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(ConfigError::new(format!(
                    "invalid faults {input:?}: {} is given twice",
                    kind.short_name()
                )));
            }
            let p = p.trim();
            let p = p
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=1.0).contains(v))
                .ok_or_else(|| {
                    ConfigError::new(format!(
                        "invalid faults {input:?}: probability {p:?} of {} is not a number in [0, 1]",
                        kind.short_name()
                    ))
                })?;
            *faults.probability_mut(kind) = p;
        }
        faults
            .validate()
            .map_err(|e| ConfigError::new(format!("invalid faults {input:?}: {e}")))?;
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    /// Writes the string form, listing only the non-zero probabilities (`none` when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in FaultKind::ALL {
            let p = self.probability(kind);
            if p > 0.0 {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{}={p}", kind.short_name())?;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_example() {
        let faults: Faults =
            "429=0.3,500=0.1,503=0.05,reset=0.01,stall=0.01,cut=0.02,malformed=0.01"
                .parse()
                .unwrap();
        assert_eq!(
            faults,
            Faults {
                rate_limit: 0.3,
                server_error: 0.1,
                unavailable: 0.05,
                reset: 0.01,
                stall: 0.01,
                cut: 0.02,
                malformed: 0.01,
            }
        );
        assert_eq!(faults.to_string().parse::<Faults>().unwrap(), faults);
    }

    #[test]
    fn accepts_long_names_spaces_and_none() {
        let faults: Faults = " rate_limit = 0.5 , Server_Error=0.25 ".parse().unwrap();
        assert_eq!(
            faults,
            Faults::NONE
                .with(FaultKind::RateLimit, 0.5)
                .with(FaultKind::ServerError, 0.25)
        );
        assert_eq!("".parse::<Faults>().unwrap(), Faults::NONE);
        assert_eq!("none".parse::<Faults>().unwrap(), Faults::NONE);
        assert_eq!(Faults::NONE.to_string(), "none");
        assert!(Faults::default().is_none());
        assert!(!faults.is_none());
    }

    #[test]
    fn rejects_bad_faults() {
        for (input, needle) in [
            ("429", "KIND=PROBABILITY"),
            ("418=0.1", "unknown fault"),
            ("429=1.5", "not a number in [0, 1]"),
            ("429=-0.1", "not a number in [0, 1]"),
            ("429=lots", "not a number in [0, 1]"),
            ("429=0.1,rate_limit=0.2", "given twice"),
            ("429=0.6,500=0.6", "more than 1"),
        ] {
            let err = input.parse::<Faults>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn fault_kinds_parse_both_forms() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.short_name().parse::<FaultKind>().unwrap(), kind);
            assert_eq!(kind.name().parse::<FaultKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.short_name());
        }
        assert!("teapot".parse::<FaultKind>().is_err());
    }

    #[test]
    fn pick_lays_out_cumulative_probabilities() {
        let faults: Faults = "429=0.25,reset=0.25,malformed=0.5".parse().unwrap();
        assert_eq!(faults.pick(0.0), Some(FaultKind::RateLimit));
        assert_eq!(faults.pick(0.2499), Some(FaultKind::RateLimit));
        assert_eq!(faults.pick(0.25), Some(FaultKind::Reset));
        assert_eq!(faults.pick(0.5), Some(FaultKind::Malformed));
        assert_eq!(faults.pick(0.9999), Some(FaultKind::Malformed));
        let some: Faults = "500=0.1".parse().unwrap();
        assert_eq!(some.pick(0.05), Some(FaultKind::ServerError));
        assert_eq!(some.pick(0.1), None);
        assert_eq!(Faults::NONE.pick(0.0), None);
    }
}
