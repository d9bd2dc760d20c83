//! [`Ramp`]: a concurrency that grows (or shrinks) linearly, then holds; the arithmetic of its
//! steps, and its flag grammar.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use volley::core::{Error, ErrorKind};

use volley::MAX_CONCURRENCY;
use volley::core::duration::parse_duration;

/// A concurrency ramp: from `from` to `to` in equal steps over `over`, then held at `to`.
///
/// # String form (`FromStr`, for the CLI)
///
/// `FROM..TO over DURATION`, the duration as [`parse_duration`] reads it:
///
/// ```
/// use std::time::Duration;
/// use volley_bench::Ramp;
///
/// let ramp: Ramp = "1..1024 over 30s".parse().unwrap();
/// assert_eq!(ramp, Ramp { from: 1, to: 1024, over: Duration::from_secs(30) });
/// assert_eq!(ramp.to_string(), "1..1024 over 30s");
/// assert!("1..1024".parse::<Ramp>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// The concurrency at the start (may be 0).
    pub from: usize,
    /// The concurrency at the end of the ramp, held afterwards.
    pub to: usize,
    /// How long the ramp takes.
    pub over: Duration,
}

impl Ramp {
    /// Checks the largest concurrency and the duration.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let top = self.from.max(self.to);
        if !(1..=MAX_CONCURRENCY).contains(&top) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the ramp's largest concurrency {top} is not in 1..={MAX_CONCURRENCY}"),
            ));
        }
        if self.over.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "the ramp's duration must be longer than zero",
            ));
        }
        Ok(())
    }

    /// Steps taken after `elapsed`: `|to − from| × elapsed / over`, rounded down, at most
    /// `|to − from|`. Integer arithmetic, so [`Ramp::step_at`] times land exactly.
    pub(crate) fn steps_at(&self, elapsed: Duration) -> usize {
        let span = self.from.abs_diff(self.to) as u128;
        let over = self.over.as_nanos().max(1);
        let steps = span * elapsed.as_nanos().min(over) / over;
        // `steps <= span`, which came from a `usize`.
        steps as usize
    }

    /// The target concurrency after `elapsed`.
    pub(crate) fn target_at(&self, elapsed: Duration) -> usize {
        let steps = self.steps_at(elapsed);
        if self.to >= self.from {
            self.from + steps
        } else {
            self.from - steps
        }
    }

    /// When step number `step` (1-based) is due: the first time [`Ramp::steps_at`] reaches
    /// it; `None` past the last step.
    pub(crate) fn step_at(&self, step: usize) -> Option<Duration> {
        let span = self.from.abs_diff(self.to) as u128;
        if step == 0 || step as u128 > span {
            return None;
        }
        let over = self.over.as_nanos().max(1);
        // The smallest t with span × t / over >= step: ceil(step × over / span).
        let nanos = (step as u128 * over).div_ceil(span);
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// The mean of the linear (unrounded) target over `[start, end]`, for the timeline.
    pub(crate) fn mean_target(&self, start: Duration, end: Duration) -> f64 {
        let over = self.over.as_secs_f64();
        let (from, to) = (self.from as f64, self.to as f64);
        let slope = (to - from) / over;
        // The integral of the target from 0 to t.
        let integral = |t: f64| {
            if t <= over {
                from * t + slope * t * t / 2.0
            } else {
                from * over + slope * over * over / 2.0 + to * (t - over)
            }
        };
        let (a, b) = (start.as_secs_f64(), end.as_secs_f64());
        if b <= a {
            return from + slope * a.min(over);
        }
        (integral(b) - integral(a)) / (b - a)
    }
}

impl fmt::Display for Ramp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{} over ", self.from, self.to)?;
        let ms = self.over.as_millis();
        if self.over.subsec_nanos() == 0 {
            write!(f, "{}s", self.over.as_secs())
        } else if Duration::from_millis(ms as u64) == self.over {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}us", self.over.as_micros())
        }
    }
}

impl FromStr for Ramp {
    type Err = Error;

    fn from_str(input: &str) -> Result<Ramp, Error> {
        let bad = |detail: String| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid ramp {input:?}: {detail}; expected FROM..TO over DURATION, e.g. \
                     \"1..1024 over 30s\""
                ),
            )
        };
        let (range, over) = input
            .split_once(" over ")
            .ok_or_else(|| bad("no \" over \" duration".to_owned()))?;
        let (from, to) = range
            .trim()
            .split_once("..")
            .ok_or_else(|| bad(format!("{:?} is not a range FROM..TO", range.trim())))?;
        let count = |text: &str| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("{:?} is not a whole number", text.trim())))
        };
        let ramp = Ramp {
            from: count(from)?,
            to: count(to.strip_prefix('=').unwrap_or(to))?,
            over: parse_duration(over).map_err(|e| bad(e.to_string()))?,
        };
        ramp.validate().map_err(|e| bad(e.to_string()))?;
        Ok(ramp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_parse_and_print() {
        let ramp: Ramp = " 0..=100 over 1m ".parse().unwrap();
        assert_eq!(
            (ramp.from, ramp.to, ramp.over),
            (0, 100, Duration::from_secs(60))
        );
        let ramp: Ramp = "10..2 over 1500ms".parse().unwrap();
        assert_eq!(ramp.to_string(), "10..2 over 1500ms");
        for bad in [
            "1..10",
            "1..10 over",
            "1..10 over soon",
            "a..10 over 1s",
            "10 over 1s",
            "0..0 over 1s",
            "1..10 over 0s",
        ] {
            let err = bad.parse::<Ramp>().unwrap_err();
            assert!(
                err.to_string().contains("expected FROM..TO over"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ramp_targets_step_linearly_and_hold() {
        let ramp = Ramp {
            from: 1,
            to: 5,
            over: Duration::from_secs(4),
        };
        let at = |ms| ramp.target_at(Duration::from_millis(ms));
        assert_eq!(
            [at(0), at(999), at(1000), at(2500), at(4000), at(9000)],
            [1, 1, 2, 3, 5, 5]
        );
        for step in 1..=4 {
            let due = ramp.step_at(step).unwrap();
            assert_eq!(ramp.steps_at(due), step);
            assert_eq!(ramp.steps_at(due - Duration::from_nanos(1)), step - 1);
        }
        assert_eq!(ramp.step_at(5), None);
        assert_eq!(ramp.step_at(0), None);

        let down = Ramp {
            from: 4,
            to: 2,
            over: Duration::from_secs(2),
        };
        assert_eq!(down.target_at(Duration::from_millis(1500)), 3);
        assert_eq!(down.target_at(Duration::from_secs(3)), 2);

        // Linear mean: 1 → 5 over 4 s is 2 on average over the first 2 s, 5 after the ramp.
        let mean = ramp.mean_target(Duration::ZERO, Duration::from_secs(2));
        assert!((mean - 2.0).abs() < 1e-9, "{mean}");
        let held = ramp.mean_target(Duration::from_secs(5), Duration::from_secs(6));
        assert!((held - 5.0).abs() < 1e-9, "{held}");
        // Across the end of the ramp: 3 s..5 s is (4.5 + 5) / 2.
        let across = ramp.mean_target(Duration::from_secs(3), Duration::from_secs(5));
        assert!((across - 4.75).abs() < 1e-9, "{across}");
    }
}
