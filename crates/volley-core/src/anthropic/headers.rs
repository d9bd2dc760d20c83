//! Anthropic's rate-limit headers: `anthropic-ratelimit-{requests,tokens,input-tokens,
//! output-tokens}-{limit,remaining,reset}`, the reset an RFC 3339 time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName};

use crate::headers::RateLimitInfo;

/// The quota a provider reported for one kind of limit: how much per minute, how much is
/// left, and when it is full again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// The most per window.
    pub limit: Option<u64>,
    /// What is left of the window.
    pub remaining: Option<u64>,
    /// How long until the quota is full again.
    pub reset: Option<Duration>,
}

/// Everything the `anthropic-ratelimit-*` headers of a response say. Fields are empty when
/// a header is absent or malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnthropicRateLimits {
    /// `anthropic-ratelimit-requests-*`.
    pub requests: Quota,
    /// `anthropic-ratelimit-tokens-*`: the most restrictive token limit in effect.
    pub tokens: Quota,
    /// `anthropic-ratelimit-input-tokens-*` (ITPM).
    pub input_tokens: Quota,
    /// `anthropic-ratelimit-output-tokens-*` (OTPM).
    pub output_tokens: Quota,
}

static NAMES: [[HeaderName; 3]; 4] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-output-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
    ],
];

impl AnthropicRateLimits {
    /// Reads the twelve headers; resets are measured from `now` (a reset in the past is
    /// [`Duration::ZERO`]).
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> AnthropicRateLimits {
        let quota = |names: &[HeaderName; 3]| {
            let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
            Quota {
                limit: text(&names[0]).and_then(|s| s.trim().parse().ok()),
                remaining: text(&names[1]).and_then(|s| s.trim().parse().ok()),
                reset: text(&names[2])
                    .and_then(parse_rfc3339)
                    .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
            }
        };
        AnthropicRateLimits {
            requests: quota(&NAMES[0]),
            tokens: quota(&NAMES[1]),
            input_tokens: quota(&NAMES[2]),
            output_tokens: quota(&NAMES[3]),
        }
    }

    /// The quotas in the dialect-neutral shape the rate limiter learns from: requests, input
    /// tokens and output tokens, each its own limit.
    ///
    /// `anthropic-ratelimit-tokens-*` is "the most restrictive token limit in effect": its
    /// limit is the input- or the output-token limit, whichever binds, not a limit on input
    /// and output together. So when either of those is stated, the combined one is reported
    /// without its limit (its `remaining: 0` still says a token quota is used up); only a
    /// server that states nothing else (a gateway, volley-mock) has its combined limit
    /// learned as a total.
    pub fn info(&self) -> RateLimitInfo {
        let split = self.input_tokens.limit.is_some() || self.output_tokens.limit.is_some();
        RateLimitInfo {
            limit_requests: self.requests.limit,
            limit_tokens: self.tokens.limit.filter(|_| !split),
            remaining_requests: self.requests.remaining,
            remaining_tokens: self.tokens.remaining,
            reset_requests: self.requests.reset,
            reset_tokens: self.tokens.reset,
            limit_input_tokens: self.input_tokens.limit,
            remaining_input_tokens: self.input_tokens.remaining,
            reset_input_tokens: self.input_tokens.reset,
            limit_output_tokens: self.output_tokens.limit,
            remaining_output_tokens: self.output_tokens.remaining,
            reset_output_tokens: self.output_tokens.reset,
            // Anthropic's limits are all per minute (requests, input and output tokens), and
            // its resets are times of day in whole seconds, read against this machine's clock:
            // too coarse to tell a window by.
            limits_per_minute: true,
        }
    }
}

/// Parses an RFC 3339 time (`2025-06-01T12:00:30Z`, `…30.25Z`, `…30+02:00`); `None` for
/// anything else or a time before 1970.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(digits).ok()?.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:30Z"), at(1_709_208_030, 0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:30.25Z"),
            at(1_709_208_030, 250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:30+02:00"),
            at(1_709_208_030, 0)
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:00:30",
            "x024-02-29T12:00:30Z",
            "1969-12-31T23:59:59Z",
            "2024-02-29T12:00:30.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_read_as_quotas() {
        let now = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        let mut h = HeaderMap::new();
        h.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "49".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "2024-02-29T12:00:30Z".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-input-tokens-limit",
            "30000".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            "junk".parse().unwrap(),
        );
        let limits = AnthropicRateLimits::from_headers(&h, now);
        assert_eq!(
            limits.requests,
            Quota {
                limit: Some(50),
                remaining: Some(49),
                reset: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(limits.input_tokens.limit, Some(30_000));
        assert_eq!(limits.output_tokens, Quota::default());
        let info = limits.info();
        assert_eq!((info.limit_requests, info.limit_tokens), (Some(50), None));
        assert_eq!(info.limit_input_tokens, Some(30_000));
        assert_eq!(info.limit_output_tokens, None);
    }

    #[test]
    fn input_and_output_token_limits_are_learned_apart_from_the_combined_one() {
        let now = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        let h: HeaderMap = [
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            (
                "anthropic-ratelimit-requests-reset",
                "2024-02-29T12:00:00.015Z",
            ),
            ("anthropic-ratelimit-tokens-limit", "80000"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2024-02-29T12:00:02Z"),
            ("anthropic-ratelimit-input-tokens-limit", "400000"),
            ("anthropic-ratelimit-input-tokens-remaining", "399000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-02-29T12:00:00.150Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "80000"),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-02-29T12:00:02+00:00",
            ),
            ("retry-after", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap()))
        .collect();
        let info = AnthropicRateLimits::from_headers(&h, now).info();
        assert_eq!(
            info,
            RateLimitInfo {
                limit_requests: Some(4_000),
                remaining_requests: Some(3_999),
                reset_requests: Some(Duration::from_millis(15)),
                // The combined quota names no limit of its own here, only that one is empty.
                limit_tokens: None,
                remaining_tokens: Some(0),
                reset_tokens: Some(Duration::from_secs(2)),
                limit_input_tokens: Some(400_000),
                remaining_input_tokens: Some(399_000),
                reset_input_tokens: Some(Duration::from_millis(150)),
                limit_output_tokens: Some(80_000),
                remaining_output_tokens: Some(0),
                reset_output_tokens: Some(Duration::from_secs(2)),
                limits_per_minute: true,
            }
        );
        // Per minute, stated: the resets are no evidence of a window.
        assert_eq!(info.quotas()[0], (Some(4_000), Some(3_999), None));
        // No header: empty, though Anthropic's limits are per minute.
        assert!(
            AnthropicRateLimits::from_headers(&HeaderMap::new(), now)
                .info()
                .is_empty()
        );
        // A server that states only the combined quota (a gateway, volley-mock): learned as
        // the total.
        let combined: HeaderMap = [("anthropic-ratelimit-tokens-limit", "90000")]
            .into_iter()
            .map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap()))
            .collect();
        let info = AnthropicRateLimits::from_headers(&combined, now).info();
        assert_eq!(info.limit_tokens, Some(90_000));
    }
}
