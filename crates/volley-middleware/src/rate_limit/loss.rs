//! A request rate found from 429s, for a provider that enforces a limit without stating it
//! (Azure OpenAI sends only `x-ratelimit-remaining-*`; many gateways send nothing).
//!
//! It applies only to a provider that shows it counts requests without saying the limit: its
//! answers carry `x-ratelimit-remaining-requests` but no `x-ratelimit-limit-requests`. (A
//! server whose 429s say nothing about a quota may be refusing at random, as a fault or an
//! overload; pacing by them would only slow the run, so there the 429s pause the queue and
//! count as rate signals, and that is all.) While requests are learned and no request limit
//! is stated, the first 429 installs a request rate: the answers per minute observed so far
//! (over at least a second, a provider's usual burst), which is what the provider let
//! through. Each later burst of 429s (at most one decrease a second) lowers it to the answers
//! per minute since the last change, by 30 % at most (the window holds the pause the 429
//! asked for, so the measure runs low), and never below half the first rate. Five seconds
//! without a 429 raise it by 10 %. A stated limit, learned from the headers, replaces it.
//!
//! Without this, the only signal is the pause a 429's `Retry-After` asks for, and every
//! request waiting behind it goes at once when it ends: against 600 requests a minute, 300
//! lines at a concurrency of 256 took about seven attempts each.

use std::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds in a second and a minute.
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
/// How long without a 429 before the rate grows.
pub(super) const GROW_EVERY: u64 = 5 * SECOND;

/// The rate in force and the window its next change is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LossRate {
    pub(super) per_minute: u64,
    /// Half the first rate: random 429s on top of a real limit must not wear it down.
    floor: u64,
    /// When the rate last changed (ns since the limiter's epoch).
    changed_at: u64,
    /// Answers observed, ever, at that time.
    answered_then: u64,
}

/// The answers (anything but a 429) a limiter observed, and when the first came.
#[derive(Debug)]
pub(super) struct Answers {
    count: AtomicU64,
    /// When the first answer was observed (ns); `u64::MAX` before.
    first_at: AtomicU64,
    /// When the loss rate may next grow (ns); `u64::MAX` while there is none.
    pub(super) grow_at: AtomicU64,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            count: AtomicU64::new(0),
            first_at: AtomicU64::new(u64::MAX),
            grow_at: AtomicU64::new(u64::MAX),
        }
    }
}

impl Answers {
    /// Counts one answer; `now` is read only for the first.
    pub(super) fn record(&self, now: impl FnOnce() -> u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.first_at.load(Ordering::Relaxed) == u64::MAX {
            let _ = self.first_at.compare_exchange(
                u64::MAX,
                now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether a loss rate is in force (and may grow): a cheap check before reading the clock.
    pub(super) fn growing(&self) -> bool {
        self.grow_at.load(Ordering::Relaxed) != u64::MAX
    }

    /// Whether the rate is due to grow at `now` (a cheap check before taking the lock).
    pub(super) fn grow_due(&self, now: u64) -> bool {
        now >= self.grow_at.load(Ordering::Relaxed)
    }
}

/// `n` answers over `elapsed` nanoseconds (at least a second), per minute.
fn per_minute(n: u64, elapsed: u64) -> u64 {
    let elapsed = elapsed.max(SECOND);
    u64::try_from(u128::from(n) * u128::from(MINUTE) / u128::from(elapsed)).unwrap_or(u64::MAX)
}

/// The rate after a 429 at `now`, or `None` when this 429 belongs to a burst already
/// counted (the rate changed less than a second ago).
pub(super) fn after_429(
    current: Option<LossRate>,
    answers: &Answers,
    now: u64,
) -> Option<LossRate> {
    let answered = answers.count.load(Ordering::Relaxed);
    let (per_minute, floor) = match current {
        None => {
            let first = answers.first_at.load(Ordering::Relaxed);
            let since = if first == u64::MAX { now } else { first };
            let rate = per_minute(answered, now.saturating_sub(since)).max(1);
            (rate, (rate / 2).max(1))
        }
        Some(c) if now.saturating_sub(c.changed_at) < SECOND => return None,
        Some(c) => {
            let measured = per_minute(
                answered.saturating_sub(c.answered_then),
                now.saturating_sub(c.changed_at),
            );
            // The window holds the pause the 429 asked for, so the measure runs low: a cut
            // is 30 % at most.
            let cut = c.per_minute * 7 / 10;
            let lower = if measured < c.per_minute {
                measured.max(cut)
            } else {
                cut
            };
            (lower.max(c.floor), c.floor)
        }
    };
    answers
        .grow_at
        .store(now.saturating_add(GROW_EVERY), Ordering::Relaxed);
    Some(LossRate {
        per_minute,
        floor,
        changed_at: now,
        answered_then: answered,
    })
}

/// The rate after [`GROW_EVERY`] without a 429: 10 % more (at least one more).
pub(super) fn grown(current: LossRate, answers: &Answers, now: u64) -> LossRate {
    answers
        .grow_at
        .store(now.saturating_add(GROW_EVERY), Ordering::Relaxed);
    LossRate {
        per_minute: (current.per_minute + current.per_minute / 10).max(current.per_minute + 1),
        floor: current.floor,
        changed_at: now,
        answered_then: answers.count.load(Ordering::Relaxed),
    }
}

/// The burst of a loss rate: a second's worth, at least one.
pub(super) fn burst(per_minute: u64) -> u64 {
    (per_minute / 60).max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use tower::{Service, ServiceExt};
    use volley_core::{Body, Error, ErrorKind, Request, Response, Timings};

    use super::*;
    use crate::rate_limit::{Limits, RateLimitLayer};

    #[test]
    fn the_first_429_takes_the_answers_so_far_per_minute() {
        let answers = Answers::default();
        for _ in 0..10 {
            answers.record(|| 0);
        }
        // Ten answers in a tenth of a second count over a second: 600 a minute.
        let rate = after_429(None, &answers, SECOND / 10).unwrap();
        assert_eq!(rate.per_minute, 600);
        // The rest of that burst's 429s change nothing.
        assert_eq!(after_429(Some(rate), &answers, SECOND / 2), None);
        // Later: fewer answers than the rate allowed → what was answered, 30 % less at most
        // (4 answers in 1.9 s is about 126 a minute).
        for _ in 0..4 {
            answers.record(|| SECOND);
        }
        let lower = after_429(Some(rate), &answers, 2 * SECOND).unwrap();
        assert_eq!(lower.per_minute, 420);
        // Answers that kept up with the rate, and still 429s: 30 % less, but never below half
        // the first rate.
        for _ in 0..20 {
            answers.record(|| 3 * SECOND);
        }
        let kept_up = after_429(Some(lower), &answers, 4 * SECOND).unwrap();
        assert_eq!(kept_up.per_minute, 300, "floored at half of 600");
        let up = grown(kept_up, &answers, 14 * SECOND);
        assert_eq!(up.per_minute, 330);
        assert!(!answers.grow_due(18 * SECOND) && answers.grow_due(19 * SECOND));
        for _ in 0..40 {
            answers.record(|| 15 * SECOND);
        }
        let again = after_429(Some(up), &answers, 16 * SECOND).unwrap();
        assert_eq!(
            again.per_minute, 300,
            "30 % less than 330 is below the floor"
        );
        assert_eq!(burst(600), 10);
        assert_eq!(burst(30), 1);
    }

    /// A provider that lets 10 requests a second through (a bucket of 10, refilled
    /// continuously) and answers 429 with `Retry-After: 1` beyond, never stating the limit
    /// (with `states_remaining`, its answers carry `x-ratelimit-remaining-requests`); counts
    /// its answers and 429s.
    #[derive(Clone)]
    struct Provider {
        state: Arc<std::sync::Mutex<(f64, tokio::time::Instant)>>,
        ok: Arc<AtomicU64>,
        limited: Arc<AtomicU64>,
        states_remaining: bool,
    }

    impl Provider {
        fn new(states_remaining: bool) -> Provider {
            Provider {
                state: Arc::new(std::sync::Mutex::new((10.0, tokio::time::Instant::now()))),
                ok: Arc::default(),
                limited: Arc::default(),
                states_remaining,
            }
        }

        fn answer(&self, request: Request) -> Result<Response, Error> {
            let now = tokio::time::Instant::now();
            let mut state = self.state.lock().unwrap();
            let refill = now.duration_since(state.1).as_secs_f64() * 10.0;
            state.0 = (state.0 + refill).min(10.0);
            state.1 = now;
            if state.0 >= 1.0 {
                state.0 -= 1.0;
                self.ok.fetch_add(1, Ordering::Relaxed);
                // As Azure OpenAI: what is left, never the limit.
                let mut headers = HeaderMap::new();
                if self.states_remaining {
                    headers.insert("x-ratelimit-remaining-requests", (state.0 as u64).into());
                }
                return Ok(Response::new(
                    StatusCode::OK,
                    headers,
                    Body::Full(Bytes::from_static(b"{}")),
                    Timings::start(),
                    request.id(),
                ));
            }
            self.limited.fetch_add(1, Ordering::Relaxed);
            Err(Error::new(ErrorKind::RateLimited, "429")
                .with_retry_after(Some(Duration::from_secs(1))))
        }
    }

    /// 300 requests from 64 callers, each retrying its 429s, against `provider`; returns
    /// (answers, 429s).
    async fn run(provider: Provider) -> (u64, u64) {
        let inner = {
            let provider = provider.clone();
            tower::service_fn(move |request: Request| {
                let provider = provider.clone();
                async move {
                    // A little latency, as a real answer has.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    provider.answer(request)
                }
            })
        };
        let layer = RateLimitLayer::new(Limits::auto().learn_per_model(false)).unwrap();
        let service = tower::Layer::layer(&layer, inner);
        let mut callers = Vec::new();
        for caller in 0..64u64 {
            let service = service.clone();
            callers.push(tokio::spawn(async move {
                for i in 0..300 / 64 + 1 {
                    let id = caller * 1_000 + i;
                    if id % 1_000 >= 300 / 64 + u64::from(caller < 300 % 64) {
                        break;
                    }
                    loop {
                        let request = Request::post("/chat/completions", "{}")
                            .unwrap()
                            .with_id(volley_core::RequestId::from_u64(id));
                        match service
                            .clone()
                            .ready_oneshot()
                            .await
                            .unwrap()
                            .call(request)
                            .await
                        {
                            Ok(_) => break,
                            Err(e) if e.kind() == ErrorKind::RateLimited => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        (
            provider.ok.load(Ordering::Relaxed),
            provider.limited.load(Ordering::Relaxed),
        )
    }

    /// A provider that counts requests but states no limit (Azure OpenAI): with the loss rate,
    /// most attempts are answered (without it, about four of five were 429s). A provider
    /// whose 429s say nothing of a quota is only paused on (its 429s may be random).
    #[tokio::test(start_paused = true)]
    async fn a_provider_that_states_no_limit_gets_few_429s() {
        let (ok, limited) = run(Provider::new(true)).await;
        eprintln!("remaining stated: {ok} answered, {limited} 429s");
        assert_eq!(ok, 300);
        assert!(limited * 4 <= ok, "{limited} 429s for {ok} answers");
        let (ok, silent) = run(Provider::new(false)).await;
        eprintln!("nothing stated: {ok} answered, {silent} 429s");
        assert_eq!(ok, 300);
        assert!(
            silent > 3 * limited,
            "{silent} 429s: paced without a quota stated?"
        );
    }
}
