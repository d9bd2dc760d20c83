//! The crate's one error type: a configuration string that does not parse, or a value that is
//! out of range.

use std::fmt;

/// An invalid mock configuration: a CLI string that does not parse (a [`Latency`], [`Faults`],
/// [`OutputTokens`], [`FaultKind`] or a duration) or a [`MockConfig`] value out of range.
///
/// The message names the offending input and what was expected, so the CLI can print it as is.
///
/// [`Latency`]: crate::Latency
/// [`Faults`]: crate::Faults
/// [`OutputTokens`]: crate::OutputTokens
/// [`FaultKind`]: crate::FaultKind
/// [`MockConfig`]: crate::MockConfig
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<volley_core::duration::DurationError> for ConfigError {
    fn from(err: volley_core::duration::DurationError) -> Self {
        ConfigError::new(err.to_string())
    }
}

impl From<ConfigError> for std::io::Error {
    fn from(err: ConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}
