//! [`Fsync`]: when written outcomes are made durable against a power cut.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::DEFAULT_FSYNC_INTERVAL;

/// When the outcome files are `fsync`ed. Outcomes are written (`write(2)`) as soon as they
/// exist either way, which is all a crash of the process needs; `fsync` is for a crash of the
/// machine. See [Durability and resume](crate#durability-and-resume).
///
/// Parsed from and shown as `always` or `interval` (an `interval` parsed from text is the
/// default interval, [`DEFAULT_FSYNC_INTERVAL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fsync {
    /// After every write, before the next one: an outcome is on stable storage within one
    /// write and one `fsync` of its answer. Outcomes that arrive during an `fsync` share the
    /// next one, so the cost is one `fsync` per write, not per outcome.
    Always,
    /// At most once per interval, on a thread of its own while writing goes on: a power cut
    /// loses at most the outcomes written in the last interval.
    Interval(Duration),
}

impl Default for Fsync {
    /// [`Fsync::Interval`] of [`DEFAULT_FSYNC_INTERVAL`] (200 ms).
    fn default() -> Fsync {
        Fsync::Interval(DEFAULT_FSYNC_INTERVAL)
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Interval(_) => "interval",
        })
    }
}

/// The error of parsing an [`Fsync`] that is neither `always` nor `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFsyncError(String);

impl fmt::Display for ParseFsyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fsync mode `{}`: expected `always` or `interval`",
            self.0
        )
    }
}

impl std::error::Error for ParseFsyncError {}

impl FromStr for Fsync {
    type Err = ParseFsyncError;

    fn from_str(s: &str) -> Result<Fsync, ParseFsyncError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::default()),
            _ => Err(ParseFsyncError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_both_modes() {
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!(" Interval ".parse(), Ok(Fsync::default()));
        assert_eq!(Fsync::default(), Fsync::Interval(DEFAULT_FSYNC_INTERVAL));
        for mode in [Fsync::Always, Fsync::default()] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
        }
        let err = "sometimes".parse::<Fsync>().unwrap_err();
        assert!(err.to_string().contains("`always` or `interval`"), "{err}");
    }
}
