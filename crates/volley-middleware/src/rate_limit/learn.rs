//! Limits learned from the provider's `x-ratelimit-limit-*` headers, with the window inferred
//! from `x-ratelimit-remaining-*` and `x-ratelimit-reset-*`.
//!
//! A provider that states `x-ratelimit-limit-requests: 14400` may mean per minute (OpenAI) or
//! per day (Groq's requests). The reset header says how long until the quota is whole again:
//! with `remaining` of `limit` left and `reset` to wait, the quota refills at
//! `(limit − remaining) / reset`, so the window is `reset · limit / (limit − remaining)`. That
//! is snapped to the windows providers use (a minute, an hour, a day), never below a minute:
//! a server whose reset is the time until a small burst bucket is full (volley-mock, some
//! gateways) would otherwise read as a window of a fraction of a second, and a longer window
//! only makes the limiter slower, never the provider's 429s more frequent. Without the
//! headers needed to infer it, the window is a minute. A reset in whole seconds may have
//! been rounded up, so it counts for a second less; Anthropic states every limit per minute
//! ([`RateLimitInfo::limits_per_minute`](volley_core::headers::RateLimitInfo)), so its
//! coarse reset times are not used at all.

use std::time::Duration;

/// The least limit learned from a header, per dimension (requests, tokens, input tokens,
/// output tokens): a token limit below 100 (in any window) is no provider's, since one
/// request uses more, and learning it (a broken or hostile server's
/// `x-ratelimit-limit-tokens: 1`) would hold every later request for hours.
pub(crate) const MIN_LEARNED: [u64; 4] = [1, 100, 100, 100];

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

/// The window of a limit of `limit` with `remaining` left and a full quota back in `reset`:
/// a minute, an hour or a day.
pub(crate) fn infer_window(
    limit: u64,
    remaining: Option<u64>,
    reset: Option<Duration>,
) -> Duration {
    let (Some(remaining), Some(reset)) = (remaining, reset) else {
        return Duration::from_secs(MINUTE);
    };
    if remaining >= limit || reset.is_zero() {
        return Duration::from_secs(MINUTE);
    }
    // A reset in whole seconds may be rounded up by almost a second (a server that states
    // seconds only): at 600 a minute with one request used, a true 100 ms read as "1s" would
    // make the window an hour and the pace a sixtieth of the limit. Such a reset counts for
    // what it is at least, a second less. The price: a reset of exactly "1s" always reads as
    // a minute, so 3 600 an hour with one used would be paced as 3 600 a minute; the
    // provider's 429s and their Retry-After then slow the run, where the other reading would
    // have held it at a sixtieth of its limit with nothing to correct it.
    let reset = if reset.subsec_nanos() == 0 {
        reset.saturating_sub(Duration::from_secs(1))
    } else {
        reset
    };
    let raw = reset.as_secs_f64() * limit as f64 / (limit - remaining) as f64;
    // Snap at the geometric middle between neighbours, so a request counted late does not
    // tip one window into the next.
    let secs = if raw < (MINUTE as f64 * HOUR as f64).sqrt() {
        MINUTE
    } else if raw < (HOUR as f64 * DAY as f64).sqrt() {
        HOUR
    } else {
        DAY
    };
    Duration::from_secs(secs)
}

/// `limit` per `window` as a per-minute limit for the GCRA, at least 1 (rounded down, so
/// rounding never loosens).
pub(crate) fn per_minute(limit: u64, window: Duration) -> u64 {
    let secs = window.as_secs().max(1);
    (u128::from(limit) * 60 / u128::from(secs)).clamp(1, u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::local::PROBE_WINDOW;
    use crate::rate_limit::{Cost, Limits, LocalAcquire, LocalLimiter, Observation, RateLimiter};
    use volley_core::RequestId;
    use volley_core::headers::RateLimitInfo;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn windows_are_inferred_from_the_reset() {
        // OpenAI: 600 per minute, one used, back in 100 ms.
        assert_eq!(infer_window(600, Some(599), ms(100)).as_secs(), MINUTE);
        // OpenAI tokens: 150 000 per minute, 16 used, 6 ms.
        assert_eq!(
            infer_window(150_000, Some(149_984), ms(6)).as_secs(),
            MINUTE
        );
        // Groq requests: 14 400 per day, one used, back in 6 s.
        assert_eq!(infer_window(14_400, Some(14_399), ms(6_000)).as_secs(), DAY);
        // 1 000 per hour, ten used, back in 36 s.
        assert_eq!(infer_window(1_000, Some(990), ms(36_000)).as_secs(), HOUR);
        // A small burst bucket's reset (volley-mock): a minute, not a tenth of a second.
        assert_eq!(infer_window(600, Some(9), ms(100)).as_secs(), MINUTE);
        // Not enough to infer anything: a minute.
        assert_eq!(infer_window(600, None, ms(100)).as_secs(), MINUTE);
        assert_eq!(infer_window(600, Some(600), ms(100)).as_secs(), MINUTE);
        assert_eq!(
            infer_window(600, Some(3), Some(Duration::ZERO)).as_secs(),
            MINUTE
        );
        assert_eq!(infer_window(600, Some(599), None).as_secs(), MINUTE);
        // A reset rounded up to the whole second is no evidence of a longer window: 600 a
        // minute with one used, its 100 ms stated as "1s".
        assert_eq!(infer_window(600, Some(599), ms(1_000)).as_secs(), MINUTE);
        assert_eq!(
            infer_window(150_000, Some(149_984), ms(1_000)).as_secs(),
            MINUTE
        );
        // Whole seconds that say more than the rounding still tell an hour or a day.
        assert_eq!(infer_window(1_000, Some(999), ms(4_000)).as_secs(), HOUR);
        assert_eq!(infer_window(14_400, Some(14_399), ms(6_000)).as_secs(), DAY);
    }

    /// A request above a given token limit is refused before the slow start's gate, so it
    /// takes none of its probe permits: the next request goes at once, not after the probe
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn refused_requests_take_no_probe() {
        let limiter = LocalLimiter::new(Limits::auto().tokens(100)).unwrap();
        let huge = Cost {
            requests: 1,
            tokens: 1_000,
            ..Cost::ZERO
        };
        for _ in 0..PROBE_WINDOW + 2 {
            let err = limiter.acquire(id(), huge).await.unwrap_err();
            assert_eq!(err.kind(), volley_core::ErrorKind::InvalidInput, "{err}");
        }
        let small = Cost {
            requests: 1,
            tokens: 10,
            ..Cost::ZERO
        };
        let mut next = limiter.acquire(id(), small);
        assert!(
            done_after(&mut next, Duration::ZERO).await,
            "a probe was left"
        );
    }

    fn info(limit: u64, remaining: u64, reset: Duration) -> Observation {
        Observation {
            info: RateLimitInfo {
                limit_requests: Some(limit),
                remaining_requests: Some(remaining),
                reset_requests: Some(reset),
                ..RateLimitInfo::default()
            },
            ..Observation::default()
        }
    }

    fn id() -> RequestId {
        RequestId::from_u64(1)
    }

    const ONE: Cost = Cost {
        requests: 1,
        tokens: 0,
        ..Cost::ZERO
    };

    /// Whether `acquire` has completed after the clock advanced by `by`.
    async fn done_after(acquire: &mut LocalAcquire, by: Duration) -> bool {
        tokio::time::advance(by).await;
        futures_util::poll!(std::pin::Pin::new(acquire)).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_until_the_first_answer_then_the_learned_pace() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        assert!(limiter.learns());
        for _ in 0..PROBE_WINDOW {
            limiter.acquire(id(), ONE).await.unwrap();
        }
        let mut waiting: Vec<_> = (0..20).map(|_| limiter.acquire(id(), ONE)).collect();
        for w in &mut waiting {
            assert!(
                !done_after(w, Duration::from_millis(100)).await,
                "behind the probe"
            );
        }
        // The first answer: 600 a minute (one every 100 ms, a burst of 10), 6 left.
        limiter.observe(&info(600, 6, Duration::from_millis(400)));
        assert_eq!(limiter.learned(), (Some(600), None));
        let mut ready = 0;
        for w in &mut waiting {
            ready += usize::from(done_after(w, Duration::ZERO).await);
        }
        // 6 left, less the jitter margin's share of the burst (25 ms of 100 ms per request).
        assert!((5..=6).contains(&ready), "{ready} went at once");
        // Then about one per 100 ms: ten in the next second.
        let mut pending: Vec<_> = waiting.into_iter().skip(ready).collect();
        let before = pending.len();
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(10)).await;
            let mut still = Vec::new();
            for mut w in pending {
                if futures_util::poll!(std::pin::Pin::new(&mut w)).is_pending() {
                    still.push(w);
                }
            }
            pending = still;
        }
        let paced = before - pending.len();
        assert!((9..=11).contains(&paced), "{paced} in a second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_never_sent_hands_the_probe_on_and_a_lost_one_times_out() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        for _ in 1..PROBE_WINDOW {
            limiter.acquire(id(), ONE).await.unwrap();
        }
        let probe = limiter.acquire(id(), ONE).await.unwrap();
        let mut second = limiter.acquire(id(), ONE);
        let mut third = limiter.acquire(id(), ONE);
        assert!(!done_after(&mut second, Duration::from_millis(10)).await);
        limiter.release(probe);
        assert!(
            done_after(&mut second, Duration::ZERO).await,
            "the new probe"
        );
        assert!(!done_after(&mut third, Duration::from_secs(9)).await);
        // The second probe's answer never comes back: the gate opens after 10 s.
        assert!(done_after(&mut third, Duration::from_secs(1)).await);
        assert_eq!(limiter.learned(), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_limit_wins_and_nothing_learned_leaves_only_the_pause() {
        let limiter = LocalLimiter::new(Limits::auto().requests(60)).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&info(6_000, 5_999, Duration::from_millis(10)));
        assert_eq!(limiter.learned(), (None, None));
        assert!(!limiter.counts_tokens());
        // An answer without headers ends the slow start: nothing limits but 429 pauses.
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        for _ in 0..1000 {
            let mut next = limiter.acquire(id(), ONE);
            assert!(done_after(&mut next, Duration::ZERO).await);
        }
        let pause = Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(1)),
            ..Observation::default()
        };
        limiter.observe(&pause);
        let mut next = limiter.acquire(id(), ONE);
        assert!(!done_after(&mut next, Duration::from_millis(999)).await);
        // Held by the pause, it goes up to a fifth of it after its end.
        assert!(done_after(&mut next, Duration::from_millis(201)).await);
    }

    /// How long a 429's pause still holds the sends, for a progress display: none before it,
    /// what is left of it while it holds, none after its end.
    #[tokio::test(start_paused = true)]
    async fn the_pause_left_is_known() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        assert_eq!(limiter.paused_for(), None);
        limiter.observe(&Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(30)),
            ..Observation::default()
        });
        assert_eq!(limiter.paused_for(), Some(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limiter.paused_for(), Some(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(limiter.paused_for(), None);
        // Per model: the longest pause of any model's.
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        let model = limiter.for_model("gpt-4o-mini");
        model.acquire(id(), ONE).await.unwrap();
        model.observe(&Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(5)),
            ..Observation::default()
        });
        assert_eq!(limiter.paused_for(), Some(Duration::from_secs(5)));
    }

    /// A request the limiter would hold past its caller's deadline fails at once, unsent, as
    /// rate-limited with the wait it would have had, and gives its place back; a request
    /// already waiting when a pause pushes it past its deadline does the same. One that can
    /// go at once goes, whatever its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_fails_at_once_and_gives_its_place_back() {
        let now = || tokio::time::Instant::now().into_std();
        let limits = Limits::per_minute().requests(60).burst_requests(1);
        let limiter = LocalLimiter::new(limits).unwrap();
        // Its deadline long past, the first goes: the burst has room.
        let past = now();
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter
            .acquire_before(id(), ONE, Some(past))
            .await
            .expect("no wait, so no deadline to miss");
        // The next may go a second later: half a second is too short, two seconds are not.
        let err = limiter
            .acquire_before(id(), ONE, Some(now() + Duration::from_millis(500)))
            .await
            .unwrap_err();
        crate::rate_limit::assert_held_past_deadline(&err, Duration::from_secs(1));
        // Nothing was reserved for it: this one goes a second from now, not two.
        let mut next = limiter.acquire_before(id(), ONE, Some(now() + Duration::from_secs(2)));
        assert!(!done_after(&mut next, Duration::from_millis(900)).await);
        assert!(done_after(&mut next, Duration::from_millis(200)).await);

        // In a slow start (tokens still learned), one failed so gives its probe permit back:
        // after four of them, the next request is not held behind the gate for 10 s.
        let limits = Limits::auto()
            .requests(60)
            .burst_requests(1)
            .learn_requests(false);
        let limiter = LocalLimiter::new(limits).unwrap();
        let started = tokio::time::Instant::now();
        limiter.acquire(id(), ONE).await.unwrap();
        for _ in 0..PROBE_WINDOW {
            let soon = Some(now() + Duration::from_millis(500));
            limiter.acquire_before(id(), ONE, soon).await.unwrap_err();
        }
        limiter.acquire(id(), ONE).await.unwrap();
        // Paused time jumps to the gate's 10 s when a permit is missing.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_100), "{took:?}");

        // Waiting with 5 s left when a 429 pauses the sends for 30 s: it fails there and then.
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        let pause = Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(30)),
            ..Observation::default()
        };
        limiter.observe(&Observation {
            retry_after: Some(Duration::from_secs(1)),
            ..pause
        });
        let mut waiting = limiter.acquire_before(id(), ONE, Some(now() + Duration::from_secs(5)));
        let mut patient = limiter.acquire(id(), ONE);
        assert!(!done_after(&mut waiting, Duration::from_millis(100)).await);
        limiter.observe(&pause);
        match futures_util::poll!(std::pin::Pin::new(&mut waiting)) {
            std::task::Poll::Ready(Err(err)) => {
                assert!(err.is_rate_limited(), "{err}");
                let wait = err.retry_after().unwrap();
                assert!(wait >= Duration::from_secs(30), "{wait:?}");
            }
            other => panic!("still waiting, or granted: {other:?}"),
        }
        // One that comes during the pause fails at once too; one without a deadline waits.
        let err = limiter
            .acquire_before(id(), ONE, Some(now() + Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(err.is_rate_limited(), "{err}");
        assert!(!done_after(&mut patient, Duration::from_secs(29)).await);
        // At most a fifth of the 30 s pause after its end.
        assert!(done_after(&mut patient, Duration::from_secs(8)).await);
    }

    /// A 429 that comes after a pause ended, while sends it held still wait out their random
    /// stretch, holds them to its own end: none goes inside the new pause.
    #[tokio::test(start_paused = true)]
    async fn a_pause_after_a_pause_holds_the_stretched_sends_to_its_end() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        let pause = |secs| Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(secs)),
            ..Observation::default()
        };
        let started = tokio::time::Instant::now();
        // 40 s, spread over 8 s after its end.
        limiter.observe(&pause(40));
        let mut waiting: Vec<_> = (0..100).map(|_| limiter.acquire(id(), ONE)).collect();
        tokio::time::advance(Duration::from_secs(47)).await;
        let mut left = Vec::new();
        for mut acquire in waiting {
            if futures_util::poll!(std::pin::Pin::new(&mut acquire)).is_pending() {
                left.push(acquire);
            }
        }
        waiting = left;
        // About 12 of 100 drew more than 7/8 of the spread: none, one time in 600 000.
        assert!(!waiting.is_empty(), "every send went before 47 s");
        // 7 s after the first pause's end, another 429 asks for 5 s: until 52 s.
        limiter.observe(&pause(5));
        while !waiting.is_empty() {
            let mut left = Vec::new();
            for mut acquire in waiting {
                if futures_util::poll!(std::pin::Pin::new(&mut acquire)).is_ready() {
                    let at = started.elapsed();
                    assert!(
                        at >= Duration::from_secs(52),
                        "went at {at:?}, inside the pause"
                    );
                } else {
                    left.push(acquire);
                }
            }
            waiting = left;
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(started.elapsed() < Duration::from_secs(54));
        }
    }

    /// The end of a pause does not let every send it held go at one instant when nothing
    /// paces them (no limit given, none learned): each goes a random part of a fifth of the
    /// pause after its end, those waiting when it came and those that came after alike. With
    /// a limit in force the bucket spaces them, and nothing is added.
    #[tokio::test(start_paused = true)]
    async fn the_end_of_a_pause_is_spread_when_nothing_paces_the_sends() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        let pause = Observation {
            rate_limited: true,
            retry_after: Some(Duration::from_secs(10)),
            ..Observation::default()
        };
        let started = tokio::time::Instant::now();
        // Held by a first pause, then pushed back by the 10 s one.
        limiter.observe(&Observation {
            retry_after: Some(Duration::from_millis(10)),
            ..pause
        });
        let mut waiting: Vec<_> = (0..20).map(|_| (0, limiter.acquire(id(), ONE))).collect();
        limiter.observe(&pause);
        waiting.extend((0..20).map(|_| (1, limiter.acquire(id(), ONE))));
        // When each went: those pushed back by the pause, those that came after it.
        let mut went = [Vec::new(), Vec::new()];
        let mut step = Duration::from_millis(9_990);
        while !waiting.is_empty() {
            tokio::time::advance(step).await;
            step = Duration::from_millis(10);
            let mut left = Vec::new();
            for (group, mut acquire) in waiting {
                if futures_util::poll!(std::pin::Pin::new(&mut acquire)).is_ready() {
                    went[group].push(started.elapsed());
                } else {
                    left.push((group, acquire));
                }
            }
            waiting = left;
            assert!(started.elapsed() < Duration::from_secs(13), "{went:?}");
        }
        for went in went {
            let (first, last) = (went.iter().min().unwrap(), went.iter().max().unwrap());
            assert!(*first >= Duration::from_secs(10), "{first:?}");
            assert!(*last <= Duration::from_millis(12_030), "{last:?}");
            // 20 draws from 2 s all within half a second of each other: never.
            assert!(*last - *first > Duration::from_millis(500), "{went:?}");
        }

        // A send whose part of the spread would reach its call's deadline takes that part of
        // half the time left instead of failing: with 10.2 s left, those the pause pushes back
        // and those that come during it all go, within 10.1 s, still spread out.
        let now = || tokio::time::Instant::now().into_std();
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&Observation::default());
        let started = tokio::time::Instant::now();
        let until = Some(now() + Duration::from_millis(10_200));
        limiter.observe(&Observation {
            retry_after: Some(Duration::from_millis(10)),
            ..pause
        });
        let mut waiting: Vec<_> = (0..20)
            .map(|_| limiter.acquire_before(id(), ONE, until))
            .collect();
        limiter.observe(&pause);
        waiting.extend((0..20).map(|_| limiter.acquire_before(id(), ONE, until)));
        let mut step = Duration::from_millis(9_990);
        let mut times = std::collections::BTreeSet::new();
        while !waiting.is_empty() {
            tokio::time::advance(step).await;
            step = Duration::from_millis(10);
            let mut left = Vec::new();
            for mut acquire in waiting {
                match futures_util::poll!(std::pin::Pin::new(&mut acquire)) {
                    std::task::Poll::Ready(went) => {
                        went.expect("could go in time");
                        let at = started.elapsed();
                        assert!(at >= Duration::from_secs(10), "{at:?}");
                        times.insert(at);
                    }
                    std::task::Poll::Pending => left.push(acquire),
                }
            }
            waiting = left;
            assert!(started.elapsed() <= Duration::from_millis(10_110));
        }
        // 40 draws of the 0.1 s: polled every 10 ms, they go at several of those times.
        assert!(times.len() >= 4, "not spread: {times:?}");

        // A request limit spaces them instead, and adds nothing: 60 a minute, the first send
        // after the pause a second after its end (the emptied bucket's refill, with the
        // limiter's headroom and margin), every time.
        for _ in 0..10 {
            let limits = Limits::per_minute().requests(60).burst_requests(1);
            let limiter = LocalLimiter::new(limits).unwrap();
            limiter.acquire(id(), ONE).await.unwrap();
            limiter.observe(&pause);
            let mut next = limiter.acquire(id(), ONE);
            assert!(!done_after(&mut next, Duration::from_millis(9_999)).await);
            assert!(done_after(&mut next, Duration::from_millis(1_100)).await);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_limit_learned_asks_for_estimates() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        let mut observation = Observation::default();
        observation.info.limit_tokens = Some(90_000);
        limiter.observe(&observation);
        assert!(limiter.counts_tokens());
        assert_eq!(limiter.learned(), (None, Some(90_000)));
    }

    /// A token limit no provider states (a broken or hostile server's `1`) is not learned: it
    /// would hold every later request for hours. A plausible one is, and a later, higher
    /// limit repays the debt of the lower one at its own rate.
    #[tokio::test(start_paused = true)]
    async fn an_implausible_token_limit_is_not_learned_and_a_raised_one_repays_the_debt() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        let mut observation = Observation::default();
        observation.info.limit_tokens = Some(1);
        limiter.observe(&observation);
        assert_eq!(limiter.learned(), (None, None));

        // 6 000 a minute (100 a second), then a whole minute's worth spent: about a minute
        // of debt at that rate.
        observation.info.limit_tokens = Some(6_000);
        limiter.observe(&observation);
        assert_eq!(limiter.learned(), (None, Some(6_000)));
        limiter.acquire(id(), tokens(6_000)).await.unwrap();
        let mut next = limiter.acquire(id(), tokens(10));
        assert!(!done_after(&mut next, Duration::from_secs(30)).await);
        drop(next);
        // Raised to 600 000 a minute: the 6 000 tokens take 0.6 s to repay, not a minute.
        observation.info.limit_tokens = Some(600_000);
        limiter.observe(&observation);
        let mut next = limiter.acquire(id(), tokens(10));
        assert!(done_after(&mut next, Duration::from_secs(2)).await);
    }

    fn tokens(tokens: u64) -> Cost {
        Cost {
            requests: 1,
            tokens,
            ..Cost::ZERO
        }
    }

    /// Until the first answer a token limit may still be learned, and the requests held at
    /// the gate reserve under it when it opens: they need an estimate, or they would reserve
    /// no tokens at all. An answer that teaches no token limit stops the estimates; a limiter
    /// that learns no token limit never asks for them.
    #[tokio::test(start_paused = true)]
    async fn estimates_are_asked_for_until_an_answer_shows_no_token_limit() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        assert!(limiter.counts_tokens(), "before any answer or model");
        limiter.observe(&Observation::default());
        assert!(!limiter.counts_tokens(), "the answer had no token limit");

        // Per model: each model's slow start asks for estimates until its own first answer.
        let root = LocalLimiter::new(Limits::auto()).unwrap();
        let model = root.for_model("gpt-4o");
        assert!(root.counts_tokens());
        model.acquire(id(), ONE).await.unwrap();
        let other = root.for_model("gpt-4o-mini");
        model.observe(&Observation::default());
        assert!(root.counts_tokens(), "gpt-4o-mini has had no answer");
        other.observe(&Observation::default());
        assert!(
            !root.counts_tokens(),
            "both models answered without a token limit"
        );

        let no_tokens = LocalLimiter::new(Limits::auto().learn_tokens(false)).unwrap();
        assert!(!no_tokens.counts_tokens());
    }

    /// A probe reserved no tokens (there was no token limit yet), though it carried an
    /// estimate: settled after the limit is learned, it refunds nothing. 60 000 tokens a
    /// minute (1 000 a second); the first answer says none are left; the probe, estimated at
    /// 1 000, used 200: the next request of 800 waits for the bucket, where a refund of the
    /// 800 never reserved would have let it go at once.
    #[tokio::test(start_paused = true)]
    async fn a_probe_refunds_no_tokens_it_never_reserved() {
        let limiter = LocalLimiter::new(Limits::auto().learn_per_model(false)).unwrap();
        let tokens = |tokens: u64| Cost {
            requests: 1,
            tokens,
            ..Cost::ZERO
        };
        let probe = limiter.acquire(id(), tokens(1_000)).await.unwrap();
        let mut observation = Observation::default();
        observation.info.limit_tokens = Some(60_000);
        observation.info.remaining_tokens = Some(0);
        observation.info.reset_tokens = Some(Duration::from_millis(1_000));
        limiter.observe(&observation);
        assert_eq!(limiter.learned(), (None, Some(60_000)));
        limiter.settle(probe, 200);
        let mut next = limiter.acquire(id(), tokens(800));
        assert!(!done_after(&mut next, Duration::from_millis(500)).await);
        assert!(done_after(&mut next, Duration::from_secs(2)).await);
    }

    /// A limit learned over an hour is paced at a sixtieth of it a minute, but one answer may
    /// use more than that pace: its usage is believed up to the hour's limit, not the
    /// minute's share. 60 000 tokens an hour (1 000 a minute); a request estimated at 500
    /// that used 3 000 is charged 3 000, so the next 500 wait for all of it to drain.
    #[tokio::test(start_paused = true)]
    async fn a_learned_hourly_limit_believes_usage_up_to_the_hours_limit() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        let cost = Cost {
            requests: 1,
            tokens: 500,
            ..Cost::ZERO
        };
        let grant = limiter.acquire(id(), cost).await.unwrap();
        let mut observation = Observation::default();
        observation.info.limit_tokens = Some(60_000);
        observation.info.remaining_tokens = Some(59_500);
        observation.info.reset_tokens = Some(Duration::from_millis(18_500));
        limiter.observe(&observation);
        assert_eq!(limiter.learned(), (None, Some(1_000)), "an hour's 60 000");
        limiter.settle(grant, 3_000);
        let start = tokio::time::Instant::now();
        let mut next = limiter.acquire(id(), cost);
        let mut waited = Duration::ZERO;
        while !done_after(&mut next, Duration::from_secs(1)).await {
            waited += Duration::from_secs(1);
            assert!(waited < Duration::from_secs(600), "never went");
        }
        let waited = start.elapsed().as_secs();
        // The 2 500 beyond the estimate take 150 s at 1 000 a minute; believed only up to a
        // minute's 1 000, they would have taken 30 s.
        assert!((120..=240).contains(&waited), "waited {waited} s");
    }

    /// An Anthropic answer's headers: 4 000 requests, 400 000 input and 6 000 output tokens
    /// a minute (the output tokens the most restrictive, so the combined quota shows them).
    fn anthropic_headers() -> Observation {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            ("anthropic-ratelimit-tokens-limit", "6000"),
            ("anthropic-ratelimit-tokens-remaining", "5990"),
            ("anthropic-ratelimit-input-tokens-limit", "400000"),
            ("anthropic-ratelimit-input-tokens-remaining", "399900"),
            ("anthropic-ratelimit-output-tokens-limit", "6000"),
            ("anthropic-ratelimit-output-tokens-remaining", "5990"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        Observation::from_headers_in(volley_core::Dialect::Anthropic, &headers)
    }

    #[tokio::test(start_paused = true)]
    async fn anthropic_requests_input_and_output_tokens_are_learned_apart() {
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        // Before the first answer an input or output limit may still come with it.
        assert!(limiter.splits_tokens());
        limiter.acquire(id(), ONE).await.unwrap();
        limiter.observe(&anthropic_headers());
        // The combined quota's limit is the output tokens', not a total: not learned.
        assert_eq!(limiter.learned(), (Some(4_000), None));
        assert_eq!(limiter.learned_split(), (Some(400_000), Some(6_000)));
        assert!(limiter.splits_tokens());
        assert!(!limiter.counts_tokens());
        // 6 000 output tokens a minute: 100 a second, a burst of 100 (less the jitter
        // margin's 2.5). Requests of 50 output tokens: one at once, then one per 0.5 s.
        let fifty = Cost {
            requests: 1,
            output_tokens: 50,
            ..Cost::ZERO
        };
        let mut waiting: Vec<_> = (0..6).map(|_| limiter.acquire(id(), fifty)).collect();
        let mut ready = 0;
        for w in &mut waiting {
            ready += usize::from(done_after(w, Duration::ZERO).await);
        }
        assert_eq!(ready, 1, "the burst holds one request of 50, not two");
        // The others about one per 0.5 s (50 tokens at 100 a second, less the headroom):
        // the second once the burst, less the margin, holds 50 again, at 30 ms.
        let start = tokio::time::Instant::now();
        for (k, w) in waiting.iter_mut().enumerate().skip(1) {
            let due = Duration::from_micros(30_000 + (k as u64 - 1) * 502_513);
            let before = (start + due - Duration::from_millis(20)) - tokio::time::Instant::now();
            assert!(!done_after(w, before).await, "request {k} before {due:?}");
            assert!(
                done_after(w, Duration::from_millis(30)).await,
                "request {k} at {due:?}"
            );
        }
    }

    #[test]
    fn per_minute_rounds_down_and_never_reaches_zero() {
        assert_eq!(per_minute(600, Duration::from_secs(60)), 600);
        assert_eq!(per_minute(14_400, Duration::from_secs(DAY)), 10);
        assert_eq!(per_minute(100, Duration::from_secs(DAY)), 1);
        assert_eq!(per_minute(u64::MAX, Duration::from_secs(1)), u64::MAX);
    }
}
