//! Provider-style rate limits: requests and tokens per minute, enforced with token buckets and
//! reported in OpenAI's `x-ratelimit-*` headers.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::ConfigError;

/// Requests and tokens per minute the server enforces, like a provider. The default enforces
/// nothing.
///
/// Each limit is a token bucket that refills continuously at `limit / 60` per second and holds
/// at most its burst, by default one second's worth (`limit / 60`, at least 1). A request costs
/// one request and `prompt_tokens + completion_tokens` tokens, both as the response reports
/// them (the mock knows the length of its answer when the request arrives, so it charges what
/// the request really uses, as settled by the provider, rather than its `max_tokens`).
/// Embeddings cost their input tokens, `GET /models` no tokens.
///
/// A request goes through when every bucket holds its cost; it is charged in every bucket at
/// once. A cost above a bucket's burst (but within the per-minute limit) goes through when that
/// bucket is full and leaves it in debt. Anything else gets a `429` (`rate_limit_exceeded`,
/// type `requests` or `tokens`) with `Retry-After` / `retry-after-ms` set to when the request
/// would fit, and is not charged. A cost above the per-minute limit gets a `429` saying the
/// request is too large, without `Retry-After`. Every API response carries
/// `x-ratelimit-limit-*` (the per-minute limit), `x-ratelimit-remaining-*` (what the bucket
/// holds, rounded down) and `x-ratelimit-reset-*` (time until the bucket is full, as a Go
/// duration such as `20ms`, `1.5s` or `6m0s`, rounded up to the millisecond) for each limit
/// configured.
///
/// # String form (`FromStr`, for the CLI)
///
/// A comma-separated list of `rpm=N`, `tpm=N`, `burst_requests=N`, `burst_tokens=N`; `""` or
/// `"none"` is no limit:
///
/// ```
/// use volley_mock::RateLimits;
///
/// let limits: RateLimits = "rpm=1200,tpm=100000".parse().unwrap();
/// assert_eq!(limits.rpm, Some(1200));
/// assert_eq!(limits.tpm, Some(100_000));
/// assert!("rpm=0".parse::<RateLimits>().is_err());
/// assert!("none".parse::<RateLimits>().unwrap().is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Requests per minute. Default `None`: not limited.
    pub rpm: Option<u32>,
    /// Tokens per minute. Default `None`: not limited.
    pub tpm: Option<u64>,
    /// The request bucket's capacity. Default `None`: one second's worth, `rpm / 60` (at least
    /// 1).
    pub burst_requests: Option<u32>,
    /// The token bucket's capacity. Default `None`: one second's worth, `tpm / 60` (at least
    /// 1).
    pub burst_tokens: Option<u64>,
}

impl RateLimits {
    /// No limit at all.
    pub const NONE: RateLimits = RateLimits {
        rpm: None,
        tpm: None,
        burst_requests: None,
        burst_tokens: None,
    };

    /// Whether nothing is limited.
    pub fn is_none(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.spec(Dimension::Requests)?;
        self.spec(Dimension::Tokens)?;
        Ok(())
    }

    /// The bucket of `dimension`, or `None` when it is not limited.
    fn spec(&self, dimension: Dimension) -> Result<Option<Spec>, ConfigError> {
        let (limit, burst) = match dimension {
            Dimension::Requests => (self.rpm.map(u64::from), self.burst_requests.map(u64::from)),
            Dimension::Tokens => (self.tpm, self.burst_tokens),
        };
        let name = dimension.short();
        let Some(limit) = limit else {
            return match burst {
                Some(_) => Err(ConfigError::new(format!(
                    "rate limits: burst_{} is set without {name}",
                    dimension.name()
                ))),
                None => Ok(None),
            };
        };
        if limit == 0 {
            return Err(ConfigError::new(format!(
                "rate limits: {name} must be at least 1"
            )));
        }
        let capacity = burst.unwrap_or((limit / 60).max(1));
        if capacity == 0 {
            return Err(ConfigError::new(format!(
                "rate limits: burst_{} must be at least 1",
                dimension.name()
            )));
        }
        Ok(Some(Spec {
            limit,
            capacity: capacity as f64,
            per_second: limit as f64 / 60.0,
        }))
    }
}

impl FromStr for RateLimits {
    type Err = ConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let mut limits = RateLimits::NONE;
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(limits);
        }
        for item in s.split(',') {
            let bad = |why: &str| {
                ConfigError::new(format!(
                    "invalid rate limits {input:?}: {:?} {why}; expected e.g. \
                     \"rpm=1200,tpm=100000,burst_requests=20,burst_tokens=2000\"",
                    item.trim()
                ))
            };
            let (key, value) = item.split_once('=').ok_or_else(|| bad("is not KEY=N"))?;
            let value: u64 = value
                .trim()
                .parse()
                .map_err(|_| bad("is not a whole number"))?;
            let small = || u32::try_from(value).map_err(|_| bad("is too large"));
            let slot_taken = match key.trim().to_ascii_lowercase().as_str() {
                "rpm" => limits.rpm.replace(small()?).is_some(),
                "tpm" => limits.tpm.replace(value).is_some(),
                "burst_requests" => limits.burst_requests.replace(small()?).is_some(),
                "burst_tokens" => limits.burst_tokens.replace(value).is_some(),
                _ => return Err(bad("has an unknown key")),
            };
            if slot_taken {
                return Err(bad("is given twice"));
            }
        }
        limits
            .validate()
            .map_err(|e| ConfigError::new(format!("invalid rate limits {input:?}: {e}")))?;
        Ok(limits)
    }
}

impl fmt::Display for RateLimits {
    /// Writes the string form (`none` when nothing is limited).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = [
            ("rpm", self.rpm.map(u64::from)),
            ("tpm", self.tpm),
            ("burst_requests", self.burst_requests.map(u64::from)),
            ("burst_tokens", self.burst_tokens),
        ];
        let mut first = true;
        for (key, value) in items {
            if let Some(value) = value {
                f.write_str(if first { "" } else { "," })?;
                write!(f, "{key}={value}")?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dimension {
    Requests,
    Tokens,
}

impl Dimension {
    fn name(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Dimension::Requests => "rpm",
            Dimension::Tokens => "tpm",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    limit: u64,
    capacity: f64,
    per_second: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, spec: &Spec, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * spec.per_second).min(spec.capacity);
        self.updated = self.updated.max(now);
    }
}

/// The server's buckets. One mutex guards both, so a request is checked and charged in both
/// at once; it is held for a few float operations, never across an await.
pub(crate) struct Limiter {
    specs: [Option<Spec>; 2],
    buckets: Mutex<[Bucket; 2]>,
    limit_values: [Option<HeaderValue>; 2],
}

/// Why a request was refused.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) dimension: Dimension,
    /// When the request would fit; `None` when it never will (larger than a minute's limit).
    pub(crate) retry_after: Option<Duration>,
    pub(crate) message: String,
}

static NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

const DIMENSIONS: [Dimension; 2] = [Dimension::Requests, Dimension::Tokens];

impl Limiter {
    /// The limiter for `limits`, or `None` when nothing is limited. `limits` is valid.
    pub(crate) fn new(limits: &RateLimits, now: Instant) -> Option<Limiter> {
        if limits.is_none() {
            return None;
        }
        // `MockConfig::validate` ran before the server was built.
        let spec = |d| limits.spec(d).ok().flatten();
        let specs = DIMENSIONS.map(spec);
        let bucket = |s: &Option<Spec>| Bucket {
            level: s.map_or(0.0, |s| s.capacity),
            updated: now,
        };
        Some(Limiter {
            buckets: Mutex::new([bucket(&specs[0]), bucket(&specs[1])]),
            limit_values: specs.map(|s| s.map(|s| HeaderValue::from(s.limit))),
            specs,
        })
    }

    /// Charges `tokens` and one request if every bucket holds them (or is full, for a cost
    /// above its burst); otherwise says why not and charges nothing.
    pub(crate) fn admit(&self, tokens: u64, model: &str, now: Instant) -> Result<(), Rejection> {
        let costs = [1, tokens];
        let mut buckets = self.lock();
        let mut refusal: Option<Rejection> = None;
        for (i, dimension) in DIMENSIONS.into_iter().enumerate() {
            let Some(spec) = &self.specs[i] else { continue };
            let bucket = &mut buckets[i];
            bucket.refill(spec, now);
            let cost = costs[i];
            let (kind, unit) = match dimension {
                Dimension::Requests => ("requests per min (RPM)", "requests"),
                Dimension::Tokens => ("tokens per min (TPM)", "tokens"),
            };
            if cost > spec.limit {
                return Err(Rejection {
                    dimension,
                    retry_after: None,
                    message: format!(
                        "Request too large for {model} on {kind}: Limit {}, Requested {cost}. \
                         The input or output {unit} must be reduced in order to run \
                         successfully. (mock)",
                        spec.limit
                    ),
                });
            }
            let need = (cost as f64).min(spec.capacity);
            if bucket.level >= need {
                continue;
            }
            let wait = Duration::from_secs_f64((need - bucket.level) / spec.per_second);
            if refusal
                .as_ref()
                .is_some_and(|r| r.retry_after >= Some(wait))
            {
                continue;
            }
            refusal = Some(Rejection {
                dimension,
                retry_after: Some(wait),
                message: format!(
                    "Rate limit reached for {model} on {kind}: Limit {}, Remaining {}, \
                     Requested {cost}. Please try again in {}. (mock)",
                    spec.limit,
                    bucket.level.max(0.0).floor(),
                    go_duration(wait)
                ),
            });
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for (i, bucket) in buckets.iter_mut().enumerate() {
            if self.specs[i].is_some() {
                bucket.level -= costs[i] as f64;
            }
        }
        Ok(())
    }

    /// Writes the `x-ratelimit-*` headers for the state at `now`.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap, now: Instant) {
        let mut buckets = self.lock();
        for (i, names) in NAMES.iter().enumerate() {
            let (Some(spec), Some(limit)) = (&self.specs[i], &self.limit_values[i]) else {
                continue;
            };
            let bucket = &mut buckets[i];
            bucket.refill(spec, now);
            let remaining = bucket.level.max(0.0).floor() as u64;
            let reset = Duration::from_secs_f64((spec.capacity - bucket.level) / spec.per_second);
            headers.insert(names[0].clone(), limit.clone());
            headers.insert(names[1].clone(), HeaderValue::from(remaining));
            // A Go duration is digits, letters and a dot: always a valid header value.
            let reset = HeaderValue::try_from(go_duration(reset)).expect("ASCII duration");
            headers.insert(names[2].clone(), reset);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; 2]> {
        // Plain numbers, each written in one statement: still good after a panic elsewhere.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leaves only the `x-ratelimit-remaining-*` headers, as Azure OpenAI sends its limits: no
/// `limit` and no `reset`, so a client cannot learn the limit from them.
pub(crate) fn keep_remaining_only(headers: &mut HeaderMap) {
    for names in &NAMES {
        headers.remove(&names[0]);
        headers.remove(&names[2]);
    }
}

/// `d` rounded up to the millisecond, as Go's `Duration.String` writes it: `0s`, `20ms`,
/// `1.5s`, `6m0s`, `1h2m3.5s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if h > 0 || m > 0 {
        out += &format!("{m}m");
    }
    out += &s.to_string();
    if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: &str, now: Instant) -> Limiter {
        Limiter::new(&limits.parse().unwrap(), now).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_and_prints() {
        let limits: RateLimits = " RPM = 1200 , tpm=100000,burst_tokens=5000"
            .parse()
            .unwrap();
        assert_eq!(
            limits,
            RateLimits {
                rpm: Some(1200),
                tpm: Some(100_000),
                burst_requests: None,
                burst_tokens: Some(5000),
            }
        );
        assert_eq!(limits.to_string(), "rpm=1200,tpm=100000,burst_tokens=5000");
        assert_eq!(limits.to_string().parse::<RateLimits>().unwrap(), limits);
        assert_eq!(RateLimits::NONE.to_string(), "none");
        assert_eq!("".parse::<RateLimits>().unwrap(), RateLimits::default());
        for (input, needle) in [
            ("rpm", "KEY=N"),
            ("rpm=x", "whole number"),
            ("rpm=5000000000", "too large"),
            ("qps=5", "unknown key"),
            ("rpm=1,rpm=2", "twice"),
            ("rpm=0", "at least 1"),
            ("burst_tokens=5", "without tpm"),
            ("tpm=10,burst_tokens=0", "at least 1"),
        ] {
            let err = input.parse::<RateLimits>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn buckets_refill_continuously_up_to_the_burst() {
        let t0 = Instant::now();
        // 600 RPM: 10 a second, burst 10.
        let l = limiter("rpm=600", t0);
        for _ in 0..10 {
            l.admit(0, "m", t0).unwrap();
        }
        let refused = l.admit(0, "m", t0).unwrap_err();
        assert_eq!(refused.dimension, Dimension::Requests);
        assert_eq!(refused.retry_after, Some(ms(100)));
        assert!(
            refused
                .message
                .contains("Limit 600, Remaining 0, Requested 1"),
            "{}",
            refused.message
        );
        l.admit(0, "m", t0 + ms(100)).unwrap();
        // An hour idle refills no more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            l.admit(0, "m", later).unwrap();
        }
        assert!(l.admit(0, "m", later).is_err());
    }

    #[test]
    fn tokens_allow_debt_above_the_burst_and_refuse_above_the_limit() {
        let t0 = Instant::now();
        // 6 000 TPM: 100 a second, burst 100.
        let l = limiter("tpm=6000", t0);
        l.admit(250, "m", t0).unwrap();
        let refused = l.admit(10, "m", t0).unwrap_err();
        assert_eq!(refused.dimension, Dimension::Tokens);
        // 150 of debt and 10 more: 1.6 s.
        assert_eq!(refused.retry_after, Some(ms(1600)));
        let huge = l
            .admit(6001, "gpt-x", t0 + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(huge.retry_after, None);
        assert!(
            huge.message.starts_with("Request too large for gpt-x"),
            "{}",
            huge.message
        );
    }

    #[test]
    fn a_refusal_charges_nothing_anywhere() {
        let t0 = Instant::now();
        let l = limiter("rpm=60,tpm=6000", t0);
        l.admit(100, "m", t0).unwrap();
        // Tokens are short (100 used of a burst of 100) and requests too (burst 1).
        let refused = l.admit(50, "m", t0 + ms(500)).unwrap_err();
        assert_eq!(refused.retry_after, Some(ms(500)), "the longer wait wins");
        let mut headers = HeaderMap::new();
        l.write_headers(&mut headers, t0 + ms(500));
        assert_eq!(headers["x-ratelimit-limit-requests"], "60");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(headers["x-ratelimit-reset-requests"], "500ms");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "6000");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "50");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "500ms");
        l.admit(50, "m", t0 + ms(1000)).unwrap();
    }

    #[test]
    fn go_durations() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (ms(20), "20ms"),
            (ms(999), "999ms"),
            (ms(1000), "1s"),
            (ms(1500), "1.5s"),
            (ms(179_560), "2m59.56s"),
            (ms(360_000), "6m0s"),
            (ms(3_723_500), "1h2m3.5s"),
            (ms(3_600_000), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), text, "{d:?}");
        }
    }
}
