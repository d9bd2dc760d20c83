//! How long between attempts: backoff, `Retry-After`, rate-limit resets.

use super::*;

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_under_their_ceilings() {
    let mock = failing(usize::MAX, || status(503));
    let policy = Policy::builder()
        .max_retries(5)
        .backoff_base(ms(100))
        .backoff_cap(ms(250))
        .budget_enabled(false)
        .build()
        .unwrap();
    let start = Instant::now();
    run(&mock, policy).await.unwrap_err();
    let ceilings = [100, 200, 250, 250, 250];
    let gaps = mock.gaps();
    assert_eq!(gaps.len(), ceilings.len());
    for (gap, ceiling) in gaps.iter().zip(ceilings) {
        // Timers have millisecond resolution: a wait may round up by one.
        assert!(*gap <= ms(ceiling + 1), "{gap:?} > {ceiling} ms");
    }
    assert_eq!(start.elapsed(), gaps.iter().sum::<Duration>());
}

#[tokio::test(start_paused = true)]
async fn retry_after_wins_when_longer_than_the_backoff() {
    let mock = failing(2, || status_with(429, &[], Some(ms(3000))));
    let start = Instant::now();
    run(&mock, quick().build().unwrap()).await.unwrap();
    assert_waited(&mock.gaps(), &[3000, 3000], 1);
    assert_eq!(start.elapsed(), mock.gaps().iter().sum::<Duration>());

    // A backoff longer than the server's wait wins instead.
    let mock = failing(1, || status_with(503, &[], Some(ms(1))));
    let policy = quick().backoff_base(ms(10_000)).backoff_cap(ms(10_000));
    let policy = policy.build().unwrap();
    run(&mock, policy).await.unwrap();
    let gap = mock.gaps()[0];
    assert!(gap >= ms(1) && gap <= ms(10_001), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_gives_up() {
    let mock = failing(1, || status_with(429, &[], Some(ms(90_000))));
    let start = Instant::now();
    let err = run(&mock, quick().build().unwrap()).await.unwrap_err();
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        err.retry_after(),
        Some(ms(90_000)),
        "the caller sees the wait"
    );
    assert_eq!(start.elapsed(), Duration::ZERO);

    let mock = failing(1, || status_with(429, &[], Some(ms(90_000))));
    let policy = quick().max_retry_after(ms(120_000)).build().unwrap();
    run(&mock, policy).await.unwrap();
    assert_waited(&mock.gaps(), &[90_000], 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_resets_are_honoured_up_to_the_backoff_cap() {
    // A 1 ms backoff under an 8 s cap, so the waits are the resets'.
    let policy = || quick().backoff_cap(ms(8000)).build().unwrap();
    let headers = [
        ("x-ratelimit-remaining-requests", "12"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-requests", "30s"),
        ("x-ratelimit-reset-tokens", "7s"),
    ];
    let mock = failing(1, move || status_with(429, &headers, None));
    run(&mock, policy()).await.unwrap();
    // The exhausted limit's reset, stretched by up to a fifth.
    assert_waited(&mock.gaps(), &[7000], 1400);

    // OpenAI's reset is the time until the whole minute's quota is back, not until the next
    // request fits: beyond the backoff cap, wait the cap and retry.
    let headers = [("x-ratelimit-reset-tokens", "6m0s")];
    let mock = failing(1, move || status_with(429, &headers, None));
    run(&mock, policy()).await.unwrap();
    assert_waited(&mock.gaps(), &[8000], 1600);
    let headers = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "59s"),
    ];
    let mock = failing(1, move || status_with(429, &headers, None));
    run(&mock, policy()).await.unwrap();
    assert_waited(&mock.gaps(), &[8000], 1600);

    // An explicit `Retry-After` keeps its own rule: honoured up to `max_retry_after`.
    let headers = [("x-ratelimit-reset-tokens", "6m0s")];
    let mock = failing(1, move || status_with(429, &headers, Some(ms(20_000))));
    run(&mock, policy()).await.unwrap();
    assert_waited(&mock.gaps(), &[20_000], 4000);
}

/// Clients told to come back at the same time do not: a server's wait is stretched at random
/// by up to a fifth (at most the backoff cap), never cut.
#[tokio::test(start_paused = true)]
async fn clients_told_the_same_wait_come_back_spread_out() {
    let policy = Policy::builder().budget_enabled(false).build().unwrap();
    let mut gaps = Vec::new();
    for _ in 0..40 {
        let mock = failing(1, || status_with(429, &[], Some(ms(5000))));
        run(&mock, policy.clone()).await.unwrap();
        gaps.extend(mock.gaps());
    }
    assert_waited(&gaps, &[5000; 40], 1000);
    let (low, high) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    // 40 draws from a second all within a fifth of it: about 40 · 0.2^39, never.
    assert!(*high - *low > ms(200), "all within {:?}", *high - *low);

    // A retry that fits before the call's deadline is not stretched past it.
    for _ in 0..20 {
        let mock = failing(1, || status_with(429, &[], Some(ms(5000))));
        let mut request = request();
        request.set_deadline(Some((Instant::now() + ms(5100)).into_std()));
        Retry::new(mock.clone(), policy.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_waited(&mock.gaps(), &[5000], 100);
    }
}

/// A request an endpoint's own limiter held back, unsent, past its deadline: with
/// `moving_held_requests` it is retried at once (a balancer below sends it to another
/// endpoint), counted toward the retries, so one every endpoint holds back fails after them;
/// without it, it fails at once (the wait is longer than the time left). A 429 is not moved
/// at once, sent or not.
#[tokio::test(start_paused = true)]
async fn a_request_held_back_unsent_is_retried_at_once_when_it_can_move() {
    // The limiter's refusal: it would wait 30 s, 5 s are left.
    let held = || {
        crate::rate_limit::past_deadline(
            volley_core::RequestId::from_u64(1),
            30_000_000_000,
            5_000_000_000,
        )
    };
    let with_deadline = || {
        let mut request = request();
        request.set_deadline(Some((Instant::now() + Duration::from_secs(5)).into_std()));
        request
    };
    let policy = quick().max_retries(3).build().unwrap();
    let moving = policy.moving_held_requests();

    // Held once, then answered: at once, no wait.
    let mock = failing(1, held);
    let start = Instant::now();
    Retry::new(mock.clone(), moving.clone())
        .oneshot(with_deadline())
        .await
        .expect("the retry is answered");
    assert_eq!(mock.calls(), 2);
    assert!(start.elapsed() < ms(5), "{:?}", start.elapsed());

    // Held everywhere: the first attempt and three retries, then the caller has the error.
    let mock = failing(usize::MAX, held);
    let err = Retry::new(mock.clone(), moving.clone())
        .oneshot(with_deadline())
        .await
        .unwrap_err();
    assert!(err.is_rate_limited() && !err.is_request_sent(), "{err}");
    assert_eq!(mock.calls(), 4);

    // Without it: one attempt.
    let mock = failing(1, held);
    let err = Retry::new(mock.clone(), policy.clone())
        .oneshot(with_deadline())
        .await
        .unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    assert_eq!(mock.calls(), 1);

    // A 429 asking for longer than the time left is not retried at once, a provider's or a
    // proxy's (which refused the tunnel: not sent either).
    for sent in [true, false] {
        let mock = failing(1, move || {
            status_with(429, &[], Some(Duration::from_secs(30))).with_request_sent(sent)
        });
        Retry::new(mock.clone(), moving.clone())
            .oneshot(with_deadline())
            .await
            .unwrap_err();
        assert_eq!(mock.calls(), 1, "sent: {sent}");
    }
}
