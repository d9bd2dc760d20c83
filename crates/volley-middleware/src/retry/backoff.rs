//! Exponential backoff with full jitter, and the server's own idea of how long to wait.

use std::time::Duration;

use rand::Rng;
use volley_core::headers::RateLimitInfo;
use volley_core::{Error, ErrorKind};

/// The exponential part of the policy: the `n`-th retry (counting from 0) waits a uniformly
/// random time in `[0, min(cap, base·2^n)]` ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The upper bound of the wait before retry number `retry` (0 for the first retry):
    /// `min(cap, base·2^retry)`, without overflow for any `retry`.
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        // 2^31 already exceeds any useful multiplier; beyond it `checked_mul` would overflow.
        let factor = 1u32 << retry.min(31);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A random wait before retry number `retry`, drawn from `rng`.
    pub(crate) fn delay_with<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        // Nanosecond resolution; a ceiling beyond u64 nanoseconds (584 years) is clamped.
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }

    /// A random wait before retry number `retry`, from this thread's generator.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        crate::jitter::with_rng(|rng| self.delay_with(retry, rng))
    }

    /// How much a server's `wait` is stretched at most, at random, so that clients told the
    /// same time do not all come back at that instant: a fifth of it, at most the cap.
    pub(crate) fn spread(&self, wait: Duration) -> Duration {
        (wait / 5).min(self.cap)
    }
}

/// How long the server asked us to wait, and how firmly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerWait {
    /// `retry-after-ms` or `Retry-After`: an explicit instruction for this response.
    Explicit(Duration),
    /// Derived from `x-ratelimit-reset-*` on a 429: the time until a quota is full again,
    /// which is an upper bound of the time until one more request fits (OpenAI's is the time
    /// until the whole minute's quota is back), so the policy caps it at the backoff cap.
    Reset(Duration),
}

/// Reads the server's wait from an error: its `Retry-After` when it has one; otherwise, for a
/// 429, the reset time of the exhausted limit (remaining 0), or the larger of the two resets
/// when neither is known to be exhausted.
pub(crate) fn server_wait(error: &Error) -> Option<ServerWait> {
    if let Some(wait) = error.retry_after() {
        return Some(ServerWait::Explicit(wait));
    }
    if error.kind() != ErrorKind::RateLimited {
        return None;
    }
    let info = RateLimitInfo::from_headers(error.headers()?);
    let requests_out = info.remaining_requests == Some(0);
    let tokens_out = info.remaining_tokens == Some(0);
    let wait = match (requests_out, tokens_out) {
        (true, false) => info.reset_requests,
        (false, true) => info.reset_tokens,
        _ => info.reset_requests.max(info.reset_tokens),
    };
    wait.map(ServerWait::Reset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const DEFAULT: Backoff = Backoff {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(8),
    };

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let got: Vec<_> = (0..7).map(|n| DEFAULT.ceiling(n)).collect();
        assert_eq!(
            got,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(8000),
                ms(8000)
            ]
        );
        assert_eq!(DEFAULT.ceiling(u32::MAX), ms(8000));
        let huge = Backoff {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(
            huge.ceiling(3),
            Duration::MAX,
            "overflow saturates at the cap"
        );
        let _ = huge.delay(3);
    }

    #[test]
    fn full_jitter_varies() {
        let draws: std::collections::BTreeSet<_> = (0..200).map(|_| DEFAULT.delay(4)).collect();
        assert!(draws.len() > 150, "only {} distinct delays", draws.len());
        assert!(draws.iter().any(|d| *d < ms(2000)), "the low half is used");
        assert!(draws.iter().any(|d| *d > ms(6000)), "the high end is used");
    }

    fn rate_limited(pairs: &[(&'static str, &str)], retry_after: Option<Duration>) -> Error {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Error::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            headers,
            b"",
            retry_after,
            "t",
        )
    }

    #[test]
    fn server_wait_prefers_retry_after() {
        let err = rate_limited(&[("x-ratelimit-reset-requests", "9s")], Some(ms(1500)));
        assert_eq!(server_wait(&err), Some(ServerWait::Explicit(ms(1500))));
    }

    #[test]
    fn server_wait_uses_the_exhausted_limit() {
        let both = [
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        let requests_out = [
            both[0],
            both[1],
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "5000"),
        ];
        let got = server_wait(&rate_limited(&requests_out, None));
        assert_eq!(got, Some(ServerWait::Reset(ms(2000))));
        let tokens_out = [
            ("x-ratelimit-reset-requests", "20s"),
            ("x-ratelimit-reset-tokens", "750ms"),
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-remaining-tokens", "0"),
        ];
        let got = server_wait(&rate_limited(&tokens_out, None));
        assert_eq!(got, Some(ServerWait::Reset(ms(750))));
        // Neither known to be exhausted: the larger reset.
        let got = server_wait(&rate_limited(&both, None));
        assert_eq!(got, Some(ServerWait::Reset(ms(360_000))));
        assert_eq!(server_wait(&rate_limited(&[], None)), None);
    }

    #[test]
    fn only_429s_read_reset_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("2s"));
        let err = Error::from_status(StatusCode::BAD_GATEWAY, headers, b"", None, "t");
        assert_eq!(server_wait(&err), None);
        let err = Error::new(ErrorKind::Connect, "t");
        assert_eq!(server_wait(&err), None);
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            retry in 0u32..100,
            seed in any::<u64>(),
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
        ) {
            let backoff = Backoff { base: ms(base_ms), cap: ms(cap_ms) };
            let mut rng = SmallRng::seed_from_u64(seed);
            let delay = backoff.delay_with(retry, &mut rng);
            let bound = ms(cap_ms).min(ms(base_ms).saturating_mul(2u32.saturating_pow(retry)));
            prop_assert!(delay <= bound, "{delay:?} > {bound:?}");
            prop_assert_eq!(backoff.ceiling(retry), bound);
        }
    }
}
