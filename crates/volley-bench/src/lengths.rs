//! [`Lengths`]: how long prompts and outputs are, request by request.

use std::fmt;
use std::str::FromStr;

use volley::core::{Error, ErrorKind};

use super::rng::Rng;

/// The largest length a [`Lengths`] may yield, in tokens.
pub const MAX_LENGTH: u32 = 1_000_000;

/// A distribution of lengths in tokens: of prompts (`--prompt-tokens`) or of outputs
/// (`max_tokens`, `--output-tokens`). Every value is at least 1.
///
/// # String form (`FromStr`, for the CLI)
///
/// | text | meaning |
/// |---|---|
/// | `64`, `fixed:64` | always 64 |
/// | `16..512`, `uniform:16..512` | uniform between 16 and 512, both included |
/// | `lognormal:256,64` | log-normal with mean 256 and standard deviation 64 (of the lengths, not of their logarithm), rounded and kept within `1..=mean + 6·sd` |
///
/// ```
/// use volley_bench::Lengths;
///
/// assert_eq!("64".parse::<Lengths>().unwrap(), Lengths::Fixed(64));
/// assert_eq!("16..512".parse::<Lengths>().unwrap(), Lengths::Uniform { min: 16, max: 512 });
/// assert_eq!("uniform:16..512".parse::<Lengths>().unwrap().to_string(), "uniform:16..512");
/// assert_eq!("lognormal:256,64".parse::<Lengths>().unwrap().bounds(), (1, 640));
/// assert!("0".parse::<Lengths>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lengths {
    /// Always this many tokens.
    Fixed(u32),
    /// Uniformly between `min` and `max` tokens, both included.
    Uniform {
        /// The fewest tokens.
        min: u32,
        /// The most tokens; not below `min`.
        max: u32,
    },
    /// Log-normal with this mean and standard deviation (of the lengths themselves), rounded to
    /// whole tokens and kept within [`Lengths::bounds`].
    LogNormal {
        /// The mean length.
        mean: f64,
        /// The standard deviation of the lengths.
        std_dev: f64,
    },
}

impl Lengths {
    /// The smallest and the largest length this distribution can yield (to size a mock's
    /// output, say).
    pub fn bounds(&self) -> (u32, u32) {
        match *self {
            Lengths::Fixed(n) => (n, n),
            Lengths::Uniform { min, max } => (min, max.max(min)),
            Lengths::LogNormal { mean, std_dev } => {
                let high = (mean + 6.0 * std_dev).ceil();
                // The float-to-int cast saturates; NaN (rejected by `validate`) becomes 0.
                (1, (high as u32).clamp(1, MAX_LENGTH))
            }
        }
    }

    /// Checks that every length is in `1..=MAX_LENGTH` and the parameters make sense; `what`
    /// names the setting in the error.
    pub(crate) fn validate(&self, what: &str) -> Result<(), Error> {
        match self.problem() {
            Some(detail) => Err(Error::new(ErrorKind::Config, format!("{what}: {detail}"))),
            None => Ok(()),
        }
    }

    /// What is wrong with these parameters, if anything.
    fn problem(&self) -> Option<String> {
        match *self {
            Lengths::Fixed(n) if !(1..=MAX_LENGTH).contains(&n) => {
                Some(format!("{n} is not in 1..={MAX_LENGTH}"))
            }
            Lengths::Uniform { min, max } if min == 0 || max > MAX_LENGTH || min > max => Some(
                format!("{min}..{max} is not a range within 1..={MAX_LENGTH}"),
            ),
            Lengths::LogNormal { mean, std_dev }
                if !(mean.is_finite() && std_dev.is_finite())
                    || mean < 1.0
                    || std_dev < 0.0
                    || mean > f64::from(MAX_LENGTH) =>
            {
                Some(format!(
                    "a lognormal mean of {mean} and deviation of {std_dev}: the mean must be \
                     in 1..={MAX_LENGTH} and the deviation not negative"
                ))
            }
            _ => None,
        }
    }

    /// Draws one length.
    pub(crate) fn sample(&self, rng: &mut Rng) -> u32 {
        match *self {
            Lengths::Fixed(n) => n,
            Lengths::Uniform { min, max } => rng.range_inclusive(min, max),
            Lengths::LogNormal { mean, std_dev } => {
                let (low, high) = self.bounds();
                if std_dev == 0.0 {
                    return (mean.round() as u32).clamp(low, high);
                }
                // The parameters of the underlying normal that give this mean and deviation.
                let sigma2 = (1.0 + (std_dev / mean).powi(2)).ln();
                let mu = mean.ln() - sigma2 / 2.0;
                let x = (mu + sigma2.sqrt() * rng.standard_normal()).exp();
                (x.round() as u32).clamp(low, high)
            }
        }
    }
}

impl fmt::Display for Lengths {
    /// The canonical string form: `fixed:64`, `uniform:16..512`, `lognormal:256,64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lengths::Fixed(n) => write!(f, "fixed:{n}"),
            Lengths::Uniform { min, max } => write!(f, "uniform:{min}..{max}"),
            Lengths::LogNormal { mean, std_dev } => write!(f, "lognormal:{mean},{std_dev}"),
        }
    }
}

impl FromStr for Lengths {
    type Err = Error;

    fn from_str(input: &str) -> Result<Lengths, Error> {
        let bad = |detail: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid lengths {input:?}: {detail}; expected N, A..B, fixed:N, \
                     uniform:A..B or lognormal:MEAN,SD (e.g. \"64\" or \"16..512\")"
                ),
            )
        };
        let s = input.trim();
        let (kind, spec) = match s.split_once(':') {
            Some((kind, spec)) => (Some(kind.trim()), spec.trim()),
            None => (None, s),
        };
        let int = |text: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| bad(&format!("{:?} is not a whole number", text.trim())))
        };
        let float = |text: &str| {
            text.trim()
                .parse::<f64>()
                .map_err(|_| bad(&format!("{:?} is not a number", text.trim())))
        };
        let lengths = match (kind, spec.split_once("..")) {
            (None | Some("fixed"), None) => Lengths::Fixed(int(spec)?),
            (None | Some("uniform"), Some((min, max))) => Lengths::Uniform {
                min: int(min)?,
                max: int(max.strip_prefix('=').unwrap_or(max))?,
            },
            (Some("lognormal"), None) => {
                let (mean, sd) = spec
                    .split_once(',')
                    .ok_or_else(|| bad("lognormal needs a mean and a deviation"))?;
                Lengths::LogNormal {
                    mean: float(mean)?,
                    std_dev: float(sd)?,
                }
            }
            (Some(kind @ ("fixed" | "lognormal")), Some(_)) => {
                return Err(bad(&format!("{kind} takes no range")));
            }
            (Some("uniform"), None) => return Err(bad("uniform needs a range A..B")),
            (Some(other), _) => return Err(bad(&format!("unknown distribution {other:?}"))),
        };
        match lengths.problem() {
            Some(detail) => Err(bad(&detail)),
            None => Ok(lengths),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("64", Lengths::Fixed(64)),
            (" fixed:8 ", Lengths::Fixed(8)),
            ("16..512", Lengths::Uniform { min: 16, max: 512 }),
            ("uniform:16..=512", Lengths::Uniform { min: 16, max: 512 }),
            ("uniform: 5 .. 5", Lengths::Uniform { min: 5, max: 5 }),
            (
                "lognormal:256,64",
                Lengths::LogNormal {
                    mean: 256.0,
                    std_dev: 64.0,
                },
            ),
        ];
        for (text, want) in cases {
            let got: Lengths = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(
                got.to_string().parse::<Lengths>().unwrap(),
                got,
                "round trip"
            );
        }
    }

    #[test]
    fn rejects_bad_input_with_a_clear_message() {
        for bad in [
            "",
            "0",
            "-3",
            "x",
            "512..16",
            "0..4",
            "fixed:1..2",
            "uniform:3",
            "gauss:1",
            "lognormal:5",
            "lognormal:0,1",
            "lognormal:10,-1",
            "2000000",
            "1..2000000",
        ] {
            let err = bad.parse::<Lengths>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(err.to_string().contains("expected N, A..B"), "{err}");
        }
    }

    #[test]
    fn samples_stay_within_bounds() {
        let mut rng = Rng::new(3);
        let uniform = Lengths::Uniform { min: 16, max: 20 };
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let n = uniform.sample(&mut rng);
            seen[(n - 16) as usize] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "every value of a small range is drawn"
        );

        let lognormal = Lengths::LogNormal {
            mean: 100.0,
            std_dev: 50.0,
        };
        let (low, high) = lognormal.bounds();
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let v = lognormal.sample(&mut rng);
            assert!((low..=high).contains(&v));
            sum += f64::from(v);
        }
        let mean = sum / f64::from(n);
        assert!((mean - 100.0).abs() < 3.0, "mean {mean}");
        assert_eq!(Lengths::Fixed(7).sample(&mut rng), 7);
    }
}
