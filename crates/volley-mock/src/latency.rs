//! Latency models, written in the one duration grammar of [`volley_core::duration`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use volley_core::duration::{HumanDuration, parse_duration};

use crate::ConfigError;

/// The longest latency a model ever yields: samples from a heavy-tailed model are capped here so
/// that a single unlucky draw cannot park a request for days.
const MAX_SAMPLE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the mock waits before answering (or between two streamed tokens).
///
/// Each request draws its own value from the model with the server's seeded RNG, so a run is
/// reproducible for a given arrival order.
///
/// # String form (`FromStr`, for the CLI)
///
/// ```text
/// latency  := duration                      Fixed,     e.g. "0", "250ms", "1.5s"
///           | "fixed:" duration             Fixed,     e.g. "fixed:1s"
///           | "uniform:" duration ".." duration
///                                           Uniform,   e.g. "uniform:100ms..2s" (min <= max)
///           | "lognormal:" duration "," sigma
///                                           LogNormal, e.g. "lognormal:500ms,0.6" (sigma >= 0)
///           | "bimodal:" duration "," duration "," share
///                                           Bimodal,   e.g. "bimodal:100ms,2s,0.05" (0 <= share <= 1)
/// duration := volley_core::duration's     e.g. "250ms", "1.5s", "1m30s"; "30" is seconds
/// ```
///
/// `Display` writes the same grammar back, so a value round-trips through its string form.
///
/// ```
/// use std::time::Duration;
/// use volley_mock::Latency;
///
/// assert_eq!("250ms".parse::<Latency>().unwrap(), Latency::Fixed(Duration::from_millis(250)));
/// let uniform: Latency = "uniform:100ms..2s".parse().unwrap();
/// assert_eq!(uniform.to_string(), "uniform:100ms..2s");
/// assert!("lognormal:500ms".parse::<Latency>().is_err()); // the sigma is missing
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always the same duration.
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max`, both included.
    Uniform {
        /// The shortest latency.
        min: Duration,
        /// The longest latency; must not be below `min`.
        max: Duration,
    },
    /// Log-normally distributed: `median · e^(sigma · Z)` with `Z` standard normal, so half the
    /// samples are below `median` and `sigma` sets the tail (0.5–1.0 looks like real LLM APIs).
    LogNormal {
        /// The median latency.
        median: Duration,
        /// The shape: the standard deviation of the latency's natural logarithm; `>= 0`.
        sigma: f64,
    },
    /// Two modes: most requests take `fast`, a share `slow_share` of them takes `slow` (the
    /// tail that hedging is for: a replica stuck behind a long prompt, a cold cache).
    Bimodal {
        /// The usual latency.
        fast: Duration,
        /// The latency of the slow requests.
        slow: Duration,
        /// The share of requests that are slow, from 0 to 1.
        slow_share: f64,
    },
}

impl Latency {
    /// No latency at all.
    pub const ZERO: Latency = Latency::Fixed(Duration::ZERO);

    /// Whether every sample of this model is zero (nothing to wait for).
    pub fn is_zero(&self) -> bool {
        match *self {
            Latency::Fixed(d) => d.is_zero(),
            Latency::Uniform { max, .. } => max.is_zero(),
            Latency::LogNormal { median, .. } => median.is_zero(),
            Latency::Bimodal { fast, slow, .. } => fast.is_zero() && slow.is_zero(),
        }
    }

    /// Draws one latency.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                if max <= min {
                    return min;
                }
                let lo = duration_nanos(min);
                let hi = duration_nanos(max);
                Duration::from_nanos(rng.random_range(lo..=hi))
            }
            Latency::LogNormal { median, sigma } => {
                if median.is_zero() || sigma == 0.0 {
                    return median;
                }
                // `median · e^(sigma·Z)` is exactly LogNormal(ln median, sigma), without building
                // (and validating) a distribution object per request.
                let z: f64 = StandardNormal.sample(rng);
                let secs = median.as_secs_f64() * (sigma * z).exp();
                Duration::try_from_secs_f64(secs)
                    .unwrap_or(MAX_SAMPLE)
                    .min(MAX_SAMPLE)
            }
            Latency::Bimodal {
                fast,
                slow,
                slow_share,
            } => {
                if slow_share > 0.0 && rng.random::<f64>() < slow_share {
                    slow
                } else {
                    fast
                }
            }
        }
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), ConfigError> {
        // No duration above a day: far beyond any test, and a deadline of now + it never
        // overflows the clock.
        let durations = match *self {
            Latency::Fixed(d) => [d, d],
            Latency::Uniform { min, max } => [min, max],
            Latency::LogNormal { median, .. } => [median, median],
            Latency::Bimodal { fast, slow, .. } => [fast, slow],
        };
        if let Some(long) = durations.into_iter().find(|d| *d > MAX_SAMPLE) {
            return Err(ConfigError::new(format!(
                "{what}: {} is longer than the longest latency the mock takes, {}",
                HumanDuration(long),
                HumanDuration(MAX_SAMPLE)
            )));
        }
        match *self {
            Latency::Fixed(_) => Ok(()),
            Latency::Uniform { min, max } if min > max => Err(ConfigError::new(format!(
                "{what}: uniform latency has min {} above max {}",
                HumanDuration(min),
                HumanDuration(max)
            ))),
            Latency::Uniform { .. } => Ok(()),
            Latency::LogNormal { sigma, .. } if !(sigma.is_finite() && sigma >= 0.0) => {
                Err(ConfigError::new(format!(
                    "{what}: lognormal sigma must be a finite number >= 0, got {sigma}"
                )))
            }
            Latency::LogNormal { .. } => Ok(()),
            Latency::Bimodal { slow_share, .. } if !(0.0..=1.0).contains(&slow_share) => {
                Err(ConfigError::new(format!(
                    "{what}: bimodal share of slow requests must be between 0 and 1, got {slow_share}"
                )))
            }
            Latency::Bimodal { .. } => Ok(()),
        }
    }
}

impl Default for Latency {
    /// [`Latency::ZERO`].
    fn default() -> Self {
        Latency::ZERO
    }
}

impl From<Duration> for Latency {
    fn from(d: Duration) -> Self {
        Latency::Fixed(d)
    }
}

impl FromStr for Latency {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let Some((model, args)) = s.split_once(':') else {
            let latency = Latency::Fixed(parse_duration(s)?);
            latency.validate(&format!("invalid latency {input:?}"))?;
            return Ok(latency);
        };
        let latency = match model.trim().to_ascii_lowercase().as_str() {
            "fixed" => Latency::Fixed(parse_duration(args)?),
            "uniform" => {
                let (min, max) = args.split_once("..").ok_or_else(|| {
                    ConfigError::new(format!(
                        "invalid latency {input:?}: uniform expects MIN..MAX, e.g. \"uniform:100ms..2s\""
                    ))
                })?;
                Latency::Uniform {
                    min: parse_duration(min)?,
                    max: parse_duration(max)?,
                }
            }
            "lognormal" | "log-normal" => {
                let (median, sigma) = args.split_once(',').ok_or_else(|| {
                    ConfigError::new(format!(
                        "invalid latency {input:?}: lognormal expects MEDIAN,SIGMA, e.g. \"lognormal:500ms,0.6\""
                    ))
                })?;
                let sigma = sigma.trim();
                let sigma = sigma
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        ConfigError::new(format!(
                            "invalid latency {input:?}: sigma {sigma:?} is not a number >= 0"
                        ))
                    })?;
                Latency::LogNormal {
                    median: parse_duration(median)?,
                    sigma,
                }
            }
            "bimodal" => {
                let parts: Vec<&str> = args.split(',').collect();
                let [fast, slow, share] = parts[..] else {
                    return Err(ConfigError::new(format!(
                        "invalid latency {input:?}: bimodal expects FAST,SLOW,SHARE, e.g. \"bimodal:100ms,2s,0.05\""
                    )));
                };
                let share = share.trim();
                let slow_share = share
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=1.0).contains(s))
                    .ok_or_else(|| {
                        ConfigError::new(format!(
                            "invalid latency {input:?}: share {share:?} is not a number from 0 to 1"
                        ))
                    })?;
                Latency::Bimodal {
                    fast: parse_duration(fast)?,
                    slow: parse_duration(slow)?,
                    slow_share,
                }
            }
            other => {
                return Err(ConfigError::new(format!(
                    "invalid latency {input:?}: unknown model {other:?}, expected a duration \
                     (\"250ms\"), \"fixed:D\", \"uniform:MIN..MAX\", \"lognormal:MEDIAN,SIGMA\" \
                     or \"bimodal:FAST,SLOW,SHARE\""
                )));
            }
        };
        latency.validate(&format!("invalid latency {input:?}"))?;
        Ok(latency)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Latency::Fixed(d) => write!(f, "{}", HumanDuration(d)),
            Latency::Uniform { min, max } => {
                write!(f, "uniform:{}..{}", HumanDuration(min), HumanDuration(max))
            }
            Latency::LogNormal { median, sigma } => {
                write!(f, "lognormal:{},{sigma}", HumanDuration(median))
            }
            Latency::Bimodal {
                fast,
                slow,
                slow_share,
            } => write!(
                f,
                "bimodal:{},{},{slow_share}",
                HumanDuration(fast),
                HumanDuration(slow)
            ),
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_latency_models() {
        assert_eq!("0".parse::<Latency>().unwrap(), Latency::ZERO);
        assert_eq!("250ms".parse::<Latency>().unwrap(), Latency::Fixed(ms(250)));
        assert_eq!("1s".parse::<Latency>().unwrap(), Latency::Fixed(ms(1000)));
        // volley_core's grammar: a bare number is seconds.
        assert_eq!("2".parse::<Latency>().unwrap(), Latency::Fixed(ms(2000)));
        assert_eq!(
            "uniform:0.1..2".parse::<Latency>().unwrap(),
            Latency::Uniform {
                min: ms(100),
                max: ms(2000)
            }
        );
        assert_eq!(
            "fixed:1s".parse::<Latency>().unwrap(),
            Latency::Fixed(ms(1000))
        );
        assert_eq!(
            "uniform:100ms..2s".parse::<Latency>().unwrap(),
            Latency::Uniform {
                min: ms(100),
                max: ms(2000)
            }
        );
        assert_eq!(
            "LogNormal: 500ms , 0.6".parse::<Latency>().unwrap(),
            Latency::LogNormal {
                median: ms(500),
                sigma: 0.6
            }
        );
    }

    #[test]
    fn rejects_bad_latency_models() {
        for (input, needle) in [
            ("gauss:1s", "unknown model"),
            ("uniform:1s", "MIN..MAX"),
            ("uniform:2s..1s", "above max"),
            ("lognormal:1s", "MEDIAN,SIGMA"),
            ("lognormal:1s,-1", "not a number >= 0"),
            ("lognormal:1s,NaN", "not a number >= 0"),
            ("fixed:soon", "invalid duration"),
            ("bimodal:1s,2s", "FAST,SLOW,SHARE"),
            ("bimodal:1s,2s,1.5", "from 0 to 1"),
            ("bimodal:1s,2s,-0.1", "from 0 to 1"),
            // Longer than a day, however written: refused, never a deadline that overflows.
            ("10000000000000000000", "longer than the longest"),
            ("25h", "longer than the longest"),
            ("fixed:100000h", "longer than the longest"),
            ("uniform:1s..100000h", "longer than the longest"),
            ("lognormal:100000h,0.5", "longer than the longest"),
            ("bimodal:1s,100000h,0.5", "longer than the longest"),
        ] {
            let err = input.parse::<Latency>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "0",
            "250ms",
            "1500ms",
            "uniform:100ms..2s",
            "lognormal:500ms,0.6",
            "bimodal:100ms,2s,0.05",
            "7ns",
            "3us",
        ] {
            let latency: Latency = input.parse().unwrap();
            assert_eq!(latency.to_string(), input);
            assert_eq!(latency.to_string().parse::<Latency>().unwrap(), latency);
        }
    }

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let latency = Latency::Uniform {
            min: ms(100),
            max: ms(200),
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let d = latency.sample(&mut rng);
            assert!((ms(100)..=ms(200)).contains(&d), "{d:?}");
            lo = lo.min(d);
            hi = hi.max(d);
        }
        // Over 10 000 draws both ends of the range are approached closely.
        assert!(lo < ms(101) && hi > ms(199), "{lo:?} {hi:?}");
    }

    #[test]
    fn lognormal_median_and_spread_are_right() {
        let latency = Latency::LogNormal {
            median: ms(500),
            sigma: 0.6,
        };
        let mut rng = SmallRng::seed_from_u64(42);
        let mut samples: Vec<f64> = (0..20_001)
            .map(|_| latency.sample(&mut rng).as_secs_f64())
            .collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        assert!((0.48..0.52).contains(&median), "median {median}");
        // The 84th percentile of a log-normal sits at median · e^sigma.
        let p84 = samples[samples.len() * 8413 / 10_000];
        let expected = 0.5 * 0.6f64.exp();
        assert!(
            (p84 / expected - 1.0).abs() < 0.05,
            "p84 {p84} vs {expected}"
        );
    }

    #[test]
    fn bimodal_takes_the_slow_mode_at_its_share() {
        let latency: Latency = "bimodal:100ms,2s,0.05".parse().unwrap();
        let mut rng = SmallRng::seed_from_u64(9);
        let n = 20_000;
        let mut slow = 0;
        for _ in 0..n {
            let d = latency.sample(&mut rng);
            assert!(d == ms(100) || d == ms(2000), "{d:?}");
            slow += usize::from(d == ms(2000));
        }
        // 5 % of 20 000 is 1 000; the binomial's sd is about 31.
        assert!((850..1150).contains(&slow), "{slow} slow of {n}");
    }

    #[test]
    fn degenerate_models_are_constant() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(Latency::Fixed(ms(3)).sample(&mut rng), ms(3));
        assert_eq!(
            Latency::Uniform {
                min: ms(3),
                max: ms(3)
            }
            .sample(&mut rng),
            ms(3)
        );
        assert_eq!(
            Latency::LogNormal {
                median: ms(3),
                sigma: 0.0
            }
            .sample(&mut rng),
            ms(3)
        );
        assert!(Latency::ZERO.is_zero());
        assert!(
            !Latency::Uniform {
                min: ms(0),
                max: ms(1)
            }
            .is_zero()
        );
    }

    proptest::proptest! {
        #[test]
        fn uniform_samples_stay_in_range(lo in 0u64..1 << 40, width in 0u64..1 << 40, seed in proptest::prelude::any::<u64>()) {
            let (min, max) = (Duration::from_nanos(lo), Duration::from_nanos(lo + width));
            let latency = Latency::Uniform { min, max };
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..100 {
                let d = latency.sample(&mut rng);
                proptest::prop_assert!(min <= d && d <= max);
            }
        }

        #[test]
        fn parsing_never_panics(input in ".{0,40}") {
            let _ = input.parse::<Latency>();
        }
    }

    #[test]
    fn huge_lognormal_draws_are_capped() {
        let latency = Latency::LogNormal {
            median: Duration::from_secs(3600),
            sigma: 50.0,
        };
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..1000 {
            assert!(latency.sample(&mut rng) <= MAX_SAMPLE);
        }
    }
}
