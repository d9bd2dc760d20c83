//! Server capacity: a hard limit on requests in flight (answered `503` beyond it) and a
//! latency that grows past a knee, as a GPU server batching requests does.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ConfigError;

/// How much load the server takes. The default takes any load at unchanged latency.
///
/// - `max_in_flight`: at most this many API requests in flight at once (counted from arrival
///   until the response body is finished); one arriving beyond it gets a `503` at once,
///   without the configured latency (and with `Retry-After` when
///   [`unavailable_retry_after`](crate::MockConfig::unavailable_retry_after) is set). It is
///   counted in `responses_by_status["503"]`, not among the injected faults.
/// - `knee`: processor sharing past `K` requests in flight: a request that arrives with `n`
///   in flight (itself included) takes `latency × n / K` when `n > K`, its drawn latency
///   otherwise. Throughput stops growing at `K` and latency grows instead, so the best
///   concurrency is `K`.
///
/// # String form (`FromStr`, for the CLI)
///
/// A comma-separated list of `max=N` and `knee=K`; `""` or `"none"` is no limit:
///
/// ```
/// use volley_mock::Capacity;
///
/// let capacity: Capacity = "max=64,knee=32".parse().unwrap();
/// assert_eq!(capacity.max_in_flight, Some(64));
/// assert_eq!(capacity.knee, Some(32));
/// assert_eq!(capacity.to_string(), "max=64,knee=32");
/// assert!("knee=0".parse::<Capacity>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// The most API requests in flight; more get a `503`. Default `None`: no limit.
    pub max_in_flight: Option<u64>,
    /// Past this many requests in flight latency grows in proportion. Default `None`: no
    /// knee.
    pub knee: Option<u64>,
}

impl Capacity {
    /// No limit and no knee.
    pub const UNLIMITED: Capacity = Capacity {
        max_in_flight: None,
        knee: None,
    };

    /// Whether a request arriving with `in_flight` requests in flight (itself included) is
    /// taken.
    pub(crate) fn admits(&self, in_flight: u64) -> bool {
        self.max_in_flight.is_none_or(|max| in_flight <= max)
    }

    /// The latency of a request drawn as `latency` that arrives with `in_flight` in flight.
    pub(crate) fn stretch(&self, latency: Duration, in_flight: u64) -> Duration {
        match self.knee {
            Some(knee) if in_flight > knee => {
                let factor = in_flight as f64 / knee as f64;
                // Saturating: a long latency times a large factor must not panic.
                Duration::try_from_secs_f64(latency.as_secs_f64() * factor).unwrap_or(Duration::MAX)
            }
            _ => latency,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == Some(0) {
            return Err(ConfigError::new("capacity: max must be at least 1"));
        }
        if self.knee == Some(0) {
            return Err(ConfigError::new("capacity: knee must be at least 1"));
        }
        Ok(())
    }
}

impl FromStr for Capacity {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut capacity = Capacity::UNLIMITED;
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed == "none" {
            return Ok(capacity);
        }
        for part in trimmed.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                ConfigError::new(format!(
                    "invalid capacity {input:?}: expected \"max=N\" and/or \"knee=K\""
                ))
            })?;
            let n: u64 = value.trim().parse().map_err(|_| {
                ConfigError::new(format!(
                    "invalid capacity {input:?}: {:?} is not a whole number",
                    value.trim()
                ))
            })?;
            match key.trim() {
                "max" => capacity.max_in_flight = Some(n),
                "knee" => capacity.knee = Some(n),
                other => {
                    return Err(ConfigError::new(format!(
                        "invalid capacity {input:?}: unknown key {other:?}; expected max or knee"
                    )));
                }
            }
        }
        capacity.validate()?;
        Ok(capacity)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.max_in_flight, self.knee) {
            (None, None) => f.write_str("none"),
            (Some(max), None) => write!(f, "max={max}"),
            (None, Some(knee)) => write!(f, "knee={knee}"),
            (Some(max), Some(knee)) => write!(f, "max={max},knee={knee}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knee_stretches_latency_in_proportion() {
        let capacity = Capacity {
            knee: Some(32),
            ..Capacity::UNLIMITED
        };
        let base = Duration::from_millis(200);
        assert_eq!(capacity.stretch(base, 1), base);
        assert_eq!(capacity.stretch(base, 32), base);
        assert_eq!(capacity.stretch(base, 64), base * 2);
        assert_eq!(capacity.stretch(base, 48), Duration::from_millis(300));
        assert!(capacity.admits(1_000_000));
    }

    #[test]
    fn the_hard_limit_admits_up_to_max() {
        let capacity: Capacity = "max=64".parse().unwrap();
        assert!(capacity.admits(64));
        assert!(!capacity.admits(65));
        assert_eq!(
            capacity.stretch(Duration::from_secs(1), 64),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        for (input, needle) in [
            ("max", "expected"),
            ("max=x", "not a whole number"),
            ("size=3", "unknown key"),
            ("max=0", "at least 1"),
        ] {
            let err = input.parse::<Capacity>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        assert_eq!("none".parse::<Capacity>().unwrap(), Capacity::UNLIMITED);
        assert_eq!(Capacity::UNLIMITED.to_string(), "none");
    }
}
