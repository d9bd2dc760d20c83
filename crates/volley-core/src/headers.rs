//! Reading providers' rate-limit headers: how long to wait (`retry-after-ms`, `Retry-After`)
//! and how much quota is left (`x-ratelimit-*`).
//!
//! Everything here is a pure function of a [`HeaderMap`] (and, for HTTP dates, the current
//! time passed in): no clock is read, nothing allocates, and a malformed header reads as
//! absent rather than as an error, because a server's odd header must never fail a request.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use volley_core::headers::{RateLimitInfo, retry_after};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "2".parse().unwrap());
//! headers.insert("x-ratelimit-remaining-tokens", "1500".parse().unwrap());
//! headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
//!
//! assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(2)));
//! let info = RateLimitInfo::from_headers(&headers);
//! assert_eq!(info.remaining_tokens, Some(1500));
//! assert_eq!(info.reset_tokens, Some(Duration::from_secs(360)));
//! ```

use std::time::{Duration, SystemTime};

use http::header::{DATE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

// Built at compile time, so a lookup hashes a static name and allocates nothing.
static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

const NANOS_PER_MS: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// How long the server asked us to wait before trying again, if it said so.
///
/// `retry-after-ms` (milliseconds, possibly fractional: `"1500.5"`; sent by Azure OpenAI, and
/// read first by OpenAI's own SDKs) takes precedence. Otherwise `Retry-After` is read as non-negative seconds (`"2"`, `"0.5"`)
/// or as an HTTP date, measured from the response's `Date` (the server's clock, so a skewed
/// local clock changes nothing), or from `now` without one; a date in the past gives
/// [`Duration::ZERO`].
/// Malformed or negative values read as absent, and a malformed `retry-after-ms` falls back to
/// `Retry-After`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(wait) = headers
        .get(&RETRY_AFTER_MS)
        .and_then(header_str)
        .and_then(|s| parse_decimal(s, NANOS_PER_MS))
    {
        return Some(wait);
    }
    let value = header_str(headers.get(RETRY_AFTER)?)?;
    if let Some(wait) = parse_decimal(value, NANOS_PER_SEC) {
        return Some(wait);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    // The date is on the server's clock, as its `Date` is (RFC 9110, 6.6.1 and 10.2.3): the
    // wait is the one between them, whatever this machine's clock says. Without a `Date`,
    // from `now`.
    let from = headers
        .get(DATE)
        .and_then(header_str)
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    Some(date.duration_since(from).unwrap_or(Duration::ZERO))
}

/// Parses a Go-style duration, the format OpenAI uses in `x-ratelimit-reset-*` headers:
/// `"1s"`, `"6m0s"`, `"20ms"`, `"1h2m3.5s"`, `"2m59.56s"`, `"100us"` / `"100µs"`, `"5ns"`.
///
/// Each component is a non-negative decimal number followed by a unit (`h`, `m`, `s`, `ms`,
/// `us`, `µs`, `μs`, `ns`). A plain number with no unit is seconds (`"12"`, `"1.5"`), as some
/// other providers send. Returns `None` for an empty string, a sign, an unknown or missing
/// unit, or a total that does not fit a [`Duration`]. Digits finer than a nanosecond are
/// truncated.
///
/// This reads what a *server* sent, where a malformed value must read as absent. Durations
/// typed by a *user* (flags, settings) use [`crate::duration::parse_duration`] instead, which
/// explains its errors.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if let Some(plain) = parse_decimal(s, NANOS_PER_SEC) {
        return Some(plain);
    }
    let mut rest = s.as_bytes();
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos = match unit {
            b"h" => 3_600 * NANOS_PER_SEC,
            b"m" => 60 * NANOS_PER_SEC,
            b"s" => NANOS_PER_SEC,
            b"ms" => NANOS_PER_MS,
            // "µs" in UTF-8 with U+00B5 MICRO SIGN or U+03BC GREEK SMALL LETTER MU, as Go
            // accepts both.
            b"us" | b"\xC2\xB5s" | b"\xCE\xBCs" => 1_000,
            b"ns" => 1,
            _ => return None,
        };
        total = total.checked_add(decimal_nanos(number, unit_nanos)?)?;
        rest = after;
    }
    nanos_to_duration(total)
}

/// The rate-limit state a provider reported on a response, from the `x-ratelimit-*` headers
/// OpenAI (and many compatible providers) send, or Anthropic's `anthropic-ratelimit-*` (see
/// [`Dialect::rate_limits`](crate::Dialect::rate_limits)). Fields are `None` when the header
/// is absent or malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// `x-ratelimit-limit-requests`: requests allowed per window.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-limit-tokens`: tokens allowed per window.
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-requests`: requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`: tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`: time until the request quota is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`: time until the token quota is full again.
    pub reset_tokens: Option<Duration>,
    /// Input tokens allowed per window, limited apart from the total (Anthropic's ITPM,
    /// `anthropic-ratelimit-input-tokens-limit`); OpenAI states none.
    pub limit_input_tokens: Option<u64>,
    /// Input tokens left in the current window.
    pub remaining_input_tokens: Option<u64>,
    /// Time until the input-token quota is full again.
    pub reset_input_tokens: Option<Duration>,
    /// Output tokens allowed per window (Anthropic's OTPM,
    /// `anthropic-ratelimit-output-tokens-limit`); OpenAI states none.
    pub limit_output_tokens: Option<u64>,
    /// Output tokens left in the current window.
    pub remaining_output_tokens: Option<u64>,
    /// Time until the output-token quota is full again.
    pub reset_output_tokens: Option<Duration>,
    /// The provider states every limit per minute (Anthropic's are), so there is no window
    /// to infer from the resets: [`RateLimitInfo::quotas`] leaves them out.
    pub limits_per_minute: bool,
}

impl RateLimitInfo {
    /// Reads the six `x-ratelimit-*` headers. Cheap enough for every response: six lookups
    /// by static name, no allocation.
    pub fn from_headers(headers: &HeaderMap) -> RateLimitInfo {
        let count =
            |name: &HeaderName| -> Option<u64> { header_str(headers.get(name)?)?.parse().ok() };
        let duration = |name: &HeaderName| parse_duration(header_str(headers.get(name)?)?);
        RateLimitInfo {
            limit_requests: count(&LIMIT_REQUESTS),
            limit_tokens: count(&LIMIT_TOKENS),
            remaining_requests: count(&REMAINING_REQUESTS),
            remaining_tokens: count(&REMAINING_TOKENS),
            reset_requests: duration(&RESET_REQUESTS),
            reset_tokens: duration(&RESET_TOKENS),
            ..RateLimitInfo::default()
        }
    }

    /// Whether no rate-limit header was found.
    pub fn is_empty(&self) -> bool {
        RateLimitInfo {
            limits_per_minute: false,
            ..*self
        } == RateLimitInfo::default()
    }

    /// `(limit, remaining, reset)` of each quota, in the order requests, tokens, input
    /// tokens, output tokens: what a rate limiter learns from, one quota at a time. Without
    /// the resets when the limits are stated per minute ([`RateLimitInfo::limits_per_minute`]):
    /// a window inferred from them could only be wrong.
    pub fn quotas(&self) -> [(Option<u64>, Option<u64>, Option<Duration>); 4] {
        if self.limits_per_minute {
            let mut per_minute = RateLimitInfo {
                limits_per_minute: false,
                ..*self
            }
            .quotas();
            for quota in &mut per_minute {
                quota.2 = None;
            }
            return per_minute;
        }
        [
            (
                self.limit_requests,
                self.remaining_requests,
                self.reset_requests,
            ),
            (self.limit_tokens, self.remaining_tokens, self.reset_tokens),
            (
                self.limit_input_tokens,
                self.remaining_input_tokens,
                self.reset_input_tokens,
            ),
            (
                self.limit_output_tokens,
                self.remaining_output_tokens,
                self.reset_output_tokens,
            ),
        ]
    }
}

/// Request headers that say who is calling or carry a secret: their values are hashed into
/// a client's [`CredentialId`](crate::cache_key::CredentialId) (from its default headers) and
/// into every [`CacheKey`](crate::cache_key::CacheKey) (from the request's own), so cached
/// answers never cross accounts, and they are scrubbed from error bodies that echo them.
///
/// Names are lower case, as [`http::HeaderName`] keeps them.
pub const CREDENTIAL_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "cookie",
    "ocp-apim-subscription-key",
];

/// Words of a header's name (between `-` or `_`) that mark it as carrying a secret though it
/// is not one of the [`CREDENTIAL_HEADERS`]: a gateway's own key (`helicone-auth`,
/// `cf-aig-authorization`, `x-portkey-api-key`), a token, a signature. Whole words only:
/// `x-portkey-trace-id` holds "key" inside a word, and is no credential.
const CREDENTIAL_NAME_WORDS: [&str; 14] = [
    "auth",
    "authorization",
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "cookie",
    "signature",
    "sig",
    "credential",
    "credentials",
    "bearer",
];

/// Names that look like a credential's but carry none: an idempotency key is new on every
/// request (hashed into the cache key, it would make every request a miss).
const NOT_CREDENTIALS: [&str; 2] = ["idempotency-key", "x-idempotency-key"];

/// Whether a request header named `name` carries a secret or says who is calling: one of the
/// [`CREDENTIAL_HEADERS`], or any other with a word such as `auth`, `key`, `token`, `secret`,
/// `password`, `cookie` or `signature` in its name (an idempotency key aside). Such headers
/// are scrubbed from error bodies that echo them and hashed into the credential id and cache
/// key.
pub fn is_credential_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    CREDENTIAL_HEADERS.contains(&name)
        || (!NOT_CREDENTIALS.contains(&name)
            && name
                .split(['-', '_'])
                .any(|word| CREDENTIAL_NAME_WORDS.contains(&word)))
}

/// Whether a request header is a credential that is not one of the [`CREDENTIAL_HEADERS`]:
/// named like one ([`is_credential_header`]), or with a value marked sensitive
/// ([`HeaderValue::set_sensitive`]). Those are hashed after the listed ones, in name order.
pub fn is_other_credential(name: &HeaderName, value: &HeaderValue) -> bool {
    !CREDENTIAL_HEADERS.contains(&name.as_str())
        && (value.is_sensitive() || is_credential_header(name))
}

/// The header's value as trimmed text, or `None` when it is not visible ASCII.
fn header_str(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok().map(str::trim)
}

/// Parses a non-negative decimal (`"12"`, `"1.5"`, `".5"`, `"3."`) counted in units of
/// `unit_nanos` nanoseconds. No sign, exponent, `inf` or `NaN`, unlike `f64::from_str`.
fn parse_decimal(s: &str, unit_nanos: u64) -> Option<Duration> {
    nanos_to_duration(decimal_nanos(s.as_bytes(), unit_nanos)?)
}

/// The value of the decimal `digits` in nanoseconds, for a unit of `unit_nanos`, exactly up to
/// truncation below one nanosecond. `None` if it is not a decimal or overflows.
fn decimal_nanos(digits: &[u8], unit_nanos: u64) -> Option<u128> {
    let (int, frac) = match memchr::memchr(b'.', digits) {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[..0]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let unit = u128::from(unit_nanos);
    let mut nanos: u128 = 0;
    for &d in int {
        if !d.is_ascii_digit() {
            return None;
        }
        nanos = nanos
            .checked_mul(10)?
            .checked_add(u128::from(d - b'0') * unit)?;
        // Stop well before u128 overflow; the caller rejects anything this large anyway.
        if nanos > u128::from(u64::MAX) * u128::from(NANOS_PER_SEC) {
            return None;
        }
    }
    // Fractions are exact to 18 digits (numerator below 10^18, times a unit of at most an
    // hour in nanoseconds, fits u128); further digits are below a nanosecond and dropped.
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for (i, &d) in frac.iter().enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        if i < 18 {
            numerator = numerator * 10 + u128::from(d - b'0');
            denominator *= 10;
        }
    }
    nanos.checked_add(numerator * unit / denominator)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let per_sec = u128::from(NANOS_PER_SEC);
    let secs = u64::try_from(nanos / per_sec).ok()?;
    // The remainder is below 10^9, so it fits a u32.
    Some(Duration::new(secs, (nanos % per_sec) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotas_list_limit_remaining_and_reset_in_dimension_order() {
        let s = Duration::from_secs;
        let info = RateLimitInfo {
            limit_requests: Some(1),
            remaining_requests: Some(2),
            reset_requests: Some(s(3)),
            limit_tokens: Some(4),
            remaining_tokens: Some(5),
            reset_tokens: Some(s(6)),
            limit_input_tokens: Some(7),
            remaining_input_tokens: Some(8),
            reset_input_tokens: Some(s(9)),
            limit_output_tokens: Some(10),
            remaining_output_tokens: Some(11),
            reset_output_tokens: Some(s(12)),
            limits_per_minute: false,
        };
        assert_eq!(
            info.quotas(),
            [
                (Some(1), Some(2), Some(s(3))),
                (Some(4), Some(5), Some(s(6))),
                (Some(7), Some(8), Some(s(9))),
                (Some(10), Some(11), Some(s(12))),
            ]
        );
        assert_eq!(RateLimitInfo::default().quotas(), [(None, None, None); 4]);
        let per_minute = RateLimitInfo {
            limits_per_minute: true,
            ..info
        };
        assert_eq!(
            per_minute.quotas(),
            [
                (Some(1), Some(2), None),
                (Some(4), Some(5), None),
                (Some(7), Some(8), None),
                (Some(10), Some(11), None),
            ]
        );
    }

    #[test]
    fn credential_headers_are_recognised_whatever_their_case() {
        for name in CREDENTIAL_HEADERS {
            let upper = HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap();
            assert!(is_credential_header(&upper), "{name}");
        }
        for name in [
            "content-type",
            "x-request-id",
            "user-agent",
            "accept",
            "idempotency-key",
            "anthropic-version",
            "x-client-request-id",
            // "key" inside a word is no credential.
            "x-portkey-trace-id",
            "x-portkey-cache-force-refresh",
            "keep-alive",
            "x-monkey",
        ] {
            let name = HeaderName::from_static(name);
            assert!(!is_credential_header(&name), "{name}");
        }
        // Gateways' own credentials, by their names.
        for name in [
            "helicone-auth",
            "cf-aig-authorization",
            "x-portkey-api-key",
            "x-goog-user-token",
            "x-amz-security-token",
            "x-signature",
            "x-auth-token",
            "x_api_key",
        ] {
            let name = HeaderName::from_static(name);
            assert!(is_credential_header(&name), "{name}");
            assert!(is_other_credential(&name, &HeaderValue::from_static("v")));
        }
        // Any value marked sensitive, whatever its name.
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        assert!(is_other_credential(
            &HeaderName::from_static("x-tenant"),
            &secret
        ));
        assert!(!is_other_credential(
            &HeaderName::from_static("x-tenant"),
            &HeaderValue::from_static("s")
        ));
        assert!(!is_other_credential(
            &HeaderName::from_static("authorization"),
            &secret
        ));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retry_after_ms_takes_precedence() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "1500.5"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_micros(1_500_500)));
        let h = headers(&[("retry-after-ms", "20")]);
        assert_eq!(retry_after(&h, now), Some(ms(20)));
        // A broken retry-after-ms falls back to Retry-After.
        let h = headers(&[("retry-after-ms", "soon"), ("retry-after", "3")]);
        assert_eq!(retry_after(&h, now), Some(ms(3000)));
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        for (value, want) in [
            ("0", ms(0)),
            ("2", ms(2000)),
            (" 7 ", ms(7000)),
            ("0.25", ms(250)),
            ("1.5", ms(1500)),
        ] {
            let h = headers(&[("retry-after", value)]);
            assert_eq!(retry_after(&h, now), Some(want), "{value}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]);
        assert_eq!(retry_after(&h, now), Some(ms(30_000)));
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]);
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO), "past dates");
    }

    /// A date is measured from the server's `Date`, not this machine's clock: a local clock
    /// two minutes slow or fast reads the same 30 s.
    #[test]
    fn retry_after_date_is_measured_on_the_server_s_clock() {
        let server = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = headers(&[
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
        ]);
        for skew in [-120, 0, 120] {
            let now = server.checked_add(Duration::from_secs(180)).unwrap()
                - Duration::from_secs((180 - skew) as u64);
            assert_eq!(retry_after(&h, now), Some(ms(30_000)), "skew {skew} s");
        }
        // A `Date` that is no date is passed over: the wait is from `now`.
        let h = headers(&[
            ("date", "yesterday"),
            ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
        ]);
        assert_eq!(retry_after(&h, server), Some(ms(30_000)));
    }

    #[test]
    fn retry_after_garbage_is_none() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        for value in ["-1", "soon", "1e3", "inf", "NaN", "+5", "", "1.2.3", "0x10"] {
            let h = headers(&[("retry-after", value)]);
            assert_eq!(retry_after(&h, now), None, "{value:?}");
            let h = headers(&[("retry-after-ms", value)]);
            assert_eq!(retry_after(&h, now), None, "ms {value:?}");
        }
        let h = headers(&[("retry-after", "18446744073709551616")]);
        assert_eq!(
            retry_after(&h, now),
            None,
            "more seconds than a Duration holds"
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff2").unwrap());
        assert_eq!(retry_after(&h, now), None, "non-ASCII");
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("1s", ms(1000)),
            ("6m0s", ms(360_000)),
            ("20ms", ms(20)),
            ("1h2m3.5s", ms(3_723_500)),
            ("0.5s", ms(500)),
            ("2m59.56s", ms(179_560)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("100μs", Duration::from_micros(100)),
            ("5ns", Duration::from_nanos(5)),
            ("0s", Duration::ZERO),
            ("12", ms(12_000)),
            ("1.5", ms(1500)),
            (".5s", ms(500)),
            ("1.5h", ms(5_400_000)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            ("1m1m", ms(120_000)),
        ] {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
    }

    #[test]
    fn go_duration_rejects() {
        for text in [
            "",
            "-1s",
            "+1s",
            "s",
            "1x",
            "1 s",
            "1s ",
            "1..5s",
            ".s",
            "1sec",
            "ms",
            "1d",
            "99999999999999999999h",
            "18446744073709551616",
        ] {
            if text == "1" {
                continue;
            }
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn rate_limit_info() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-limit-tokens", "30000000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-remaining-tokens", "29999976"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-reset-tokens", "0s"),
        ]);
        assert_eq!(
            RateLimitInfo::from_headers(&h),
            RateLimitInfo {
                limit_requests: Some(10_000),
                limit_tokens: Some(30_000_000),
                remaining_requests: Some(9_999),
                remaining_tokens: Some(29_999_976),
                reset_requests: Some(ms(6)),
                reset_tokens: Some(Duration::ZERO),
                ..RateLimitInfo::default()
            }
        );
        assert!(!RateLimitInfo::from_headers(&h).is_empty());
    }

    #[test]
    fn rate_limit_info_partial_and_malformed() {
        assert!(RateLimitInfo::from_headers(&HeaderMap::new()).is_empty());
        let h = headers(&[
            ("x-ratelimit-remaining-tokens", "-5"),
            ("x-ratelimit-reset-tokens", "soon"),
            ("x-ratelimit-limit-requests", "60"),
        ]);
        let info = RateLimitInfo::from_headers(&h);
        assert_eq!(
            info,
            RateLimitInfo {
                limit_requests: Some(60),
                ..RateLimitInfo::default()
            }
        );
    }

    proptest! {
        #[test]
        fn go_durations_round_trip(
            h in 0u64..10_000,
            m in 0u64..60,
            s in 0u64..60,
            milli in 0u64..1000,
            shape in 0u8..4,
        ) {
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + milli);
            // The shapes Go's Duration::String produces, plus a millisecond suffix.
            let text = match shape {
                0 => format!("{h}h{m}m{s}.{milli:03}s"),
                1 => format!("{h}h{m}m{s}s{milli}ms"),
                2 => format!("{}m{s}.{milli:03}s", h * 60 + m),
                _ => format!("{}.{milli:03}s", (h * 60 + m) * 60 + s),
            };
            prop_assert_eq!(parse_duration(&text), Some(want), "{}", text);
        }

        #[test]
        fn go_duration_never_panics(text in ".{0,32}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn go_duration_near_miss_never_panics(text in "[0-9.hmsuµn+-]{0,24}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn retry_after_seconds_matches_integers(n in 0u64..=u64::MAX) {
            let h = headers(&[("retry-after", &n.to_string())]);
            prop_assert_eq!(retry_after(&h, SystemTime::UNIX_EPOCH), Some(Duration::from_secs(n)));
        }
    }
}
