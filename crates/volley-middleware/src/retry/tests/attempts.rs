//! How many attempts: classification, `max_retries`, the budget, metrics.

use super::*;

#[tokio::test(start_paused = true)]
async fn max_retries_is_respected_exactly() {
    for max in [0, 1, 4] {
        let mock = failing(usize::MAX, || status(500));
        let policy = quick().max_retries(max).build().unwrap();
        let err = run(&mock, policy).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(mock.calls(), 1 + max as usize);
    }
}

#[tokio::test(start_paused = true)]
async fn retries_reuse_the_request_body() {
    let mock = failing(2, || status(502));
    let request = request();
    let body = request.body().clone();
    let service = Retry::new(mock.clone(), quick().build().unwrap());
    service.oneshot(request).await.unwrap();
    let calls = mock.calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(_, b)| b.as_ptr() == body.as_ptr()));
}

#[tokio::test(start_paused = true)]
async fn default_classification() {
    let retried: Vec<Case> = vec![
        ("connect", || Error::new(ErrorKind::Connect, "t")),
        ("connection", || Error::new(ErrorKind::Connection, "t")),
        ("timeout", || Error::new(ErrorKind::Timeout, "t")),
        ("ttfb", || Error::new(ErrorKind::FirstByteTimeout, "t")),
        ("idle", || Error::new(ErrorKind::IdleTimeout, "t")),
        ("broken", || Error::new(ErrorKind::StreamBroken, "t")),
        ("408", || status(408)),
        ("409", || status(409)),
        ("429", || status(429)),
        ("500", || status(500)),
        ("502", || status(502)),
        ("503", || status(503)),
        ("504", || status(504)),
        // Cloudflare in front of the origin: an unknown error, a timeout.
        ("520", || status(520)),
        ("524", || status(524)),
        ("529", || status(529)),
        // The provider's word wins over the status.
        ("400, x-should-retry: true", || {
            status_with(400, &[("x-should-retry", "true")], None)
        }),
    ];
    for (name, make) in retried {
        let mock = failing(1, make);
        assert!(run(&mock, quick().build().unwrap()).await.is_ok(), "{name}");
        assert_eq!(mock.calls(), 2, "{name} is retried");
    }
    let not_retried: Vec<Case> = vec![
        ("400", || status(400)),
        ("401", || status(401)),
        ("403", || status(403)),
        ("404", || status(404)),
        ("422", || status(422)),
        ("418", || status(418)),
        ("501", || status(501)),
        ("505", || status(505)),
        ("507", || status(507)),
        ("508", || status(508)),
        ("511", || status(511)),
        ("500, x-should-retry: false", || {
            status_with(500, &[("x-should-retry", "false")], None)
        }),
        ("tls", || Error::new(ErrorKind::Tls, "t")),
        ("invalid", || Error::new(ErrorKind::InvalidInput, "t")),
        ("config", || Error::new(ErrorKind::Config, "t")),
        ("cancelled", || Error::new(ErrorKind::Cancelled, "t")),
        ("decode", || Error::new(ErrorKind::BodyDecode, "t")),
        ("429 insufficient_quota", quota_used_up),
    ];
    for (name, make) in not_retried {
        let mock = failing(1, make);
        assert!(
            run(&mock, quick().build().unwrap()).await.is_err(),
            "{name}"
        );
        assert_eq!(mock.calls(), 1, "{name} is tried once");
    }
}

#[tokio::test(start_paused = true)]
async fn safe_only_retries_what_cannot_have_been_billed() {
    let cases: Vec<(&str, MakeError, usize)> = vec![
        ("500", || status(500), 1),
        ("429", || status(429), 2),
        ("408", || status(408), 2),
        // LiteLLM's 408 after an upstream timeout: the work may have been billed.
        ("408 with an error object", gateway_timeout, 1),
        // Cloudflare never reached the origin; a 524 came after it did.
        ("522", || status(522), 2),
        ("521, unsent or not", || status(521), 2),
        ("524", || status(524), 1),
        (
            "429, x-should-retry: false",
            || status_with(429, &[("x-should-retry", "false")], None),
            1,
        ),
        ("503", || status(503), 1),
        (
            "503 with Retry-After",
            || status_with(503, &[], Some(ms(5))),
            2,
        ),
        ("connect", || Error::new(ErrorKind::Connect, "t"), 2),
        (
            "connection, unsent",
            || Error::new(ErrorKind::Connection, "t").with_request_sent(false),
            2,
        ),
        ("connection", || Error::new(ErrorKind::Connection, "t"), 1),
        // A proxy's refusal of the tunnel: nothing reached the server, yet it does not heal.
        ("407, unsent", || status(407).with_request_sent(false), 1),
        ("502, unsent", || status(502).with_request_sent(false), 2),
        ("timeout", || Error::new(ErrorKind::Timeout, "t"), 1),
        ("tls", || Error::new(ErrorKind::Tls, "t"), 1),
        ("broken", || Error::new(ErrorKind::StreamBroken, "t"), 1),
    ];
    for (name, make, calls) in cases {
        let mock = failing(1, make);
        let policy = Policy::builder()
            .classifier(classify_safe_only)
            .backoff_base(ms(1))
            .build()
            .unwrap();
        let _ = run(&mock, policy).await;
        assert_eq!(mock.calls(), calls, "{name}");
    }
    let mock = failing(1, || status(429));
    assert!(run(&mock, Policy::safe_only()).await.is_ok());
    // A used-up quota is not a rate limit: no wait restores it.
    let mock = failing(1, quota_used_up);
    assert!(run(&mock, Policy::safe_only()).await.is_err());
    assert_eq!(mock.calls(), 1);
    // `Policy::safe_only()` is that classifier: a 500 (maybe billed) is not retried.
    let mock = failing(1, || status(500));
    assert!(run(&mock, Policy::safe_only()).await.is_err());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let mock = failing(usize::MAX, || status(500));
    let policy = Policy::builder()
        .max_retries(3)
        .backoff_base(ms(1))
        .budget_ttl(Duration::from_secs(10))
        .budget_min_per_sec(0)
        .budget_ratio(0.1)
        .build()
        .unwrap();
    let mut service = Retry::new(mock.clone(), policy);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        // Every first attempt deposits when it is called; the retries come later.
        let future = service.ready().await.unwrap().call(request());
        tasks.spawn(future);
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(
            result.unwrap().unwrap_err().status().map(|s| s.as_u16()),
            Some(500)
        );
    }
    // 100 first attempts at 10 % buy 10 retries, where max_retries alone would allow 300.
    assert_eq!(mock.calls(), 110);
}

#[tokio::test(start_paused = true)]
async fn custom_classifier() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let policy = quick()
        .classifier(move |error: &Error, attempt: u32| {
            log.lock().unwrap().push(attempt);
            match error.status().map(|s| s.as_u16()) {
                Some(418) => Decision::RetryAfter(ms(250)),
                Some(500) => Decision::Fail,
                _ => classify_default(error, attempt),
            }
        })
        .build()
        .unwrap();
    let mock = Mock::new(|n| match n {
        1 | 2 => Err(status(418)),
        3 => Err(status(503)),
        _ => ok(),
    });
    let start = Instant::now();
    run(&mock, policy.clone()).await.unwrap();
    assert_eq!(mock.calls(), 4);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
    assert_eq!(&mock.gaps()[..2], [ms(250), ms(250)]);
    assert!(start.elapsed() >= ms(500) && start.elapsed() <= ms(502));

    let mock = failing(1, || status(500));
    run(&mock, policy).await.unwrap_err();
    assert_eq!(mock.calls(), 1, "the classifier overrides the default");
}

#[test]
fn retries_and_give_ups_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let mock = failing(usize::MAX, || status(500));
            let policy = quick().max_retries(2).build().unwrap();
            run(&mock, policy).await.unwrap_err();
            // Not retryable: neither a retry nor a give-up.
            let mock = failing(usize::MAX, || status(400));
            run(&mock, quick().build().unwrap()).await.unwrap_err();
        })
    });
    let mut counters: Vec<(String, Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else {
                panic!("only counters")
            };
            let key = key.key();
            let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value()));
            (key.name().to_owned(), labels.collect(), n)
        })
        .collect();
    counters.sort();
    assert_eq!(
        counters,
        [
            ("volley_retries_total".into(), vec!["kind=status".into()], 2),
            (
                "volley_retry_exhausted_total".into(),
                vec!["kind=status".into(), "reason=max_retries".into()],
                1
            ),
        ]
    );
}

#[test]
fn builder_checks_the_budget() {
    let err = Policy::builder()
        .budget_ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("TTL"), "{err}");
    let policy = Policy::builder()
        .budget_ttl(Duration::ZERO)
        .budget_enabled(false)
        .build()
        .unwrap();
    assert_eq!(policy.max_retries(), 3);
    let text = format!("{policy:?} {:?}", Policy::builder());
    assert!(text.contains("max_retries: 3"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn rate_signals_do_not_use_up_the_retries() {
    // Ten 429s and 529s, then a 500, then success: with one retry allowed, only the 500
    // counts, so the request succeeds on its twelfth attempt.
    let mock = Mock::new(|n| match n {
        1..=5 => Err(status(429)),
        6..=10 => Err(status(529)),
        11 => Err(status(500)),
        _ => ok(),
    });
    run(&mock, quick().max_retries(1).build().unwrap())
        .await
        .unwrap();
    assert_eq!(mock.calls(), 12);
    // A second 500 is one too many.
    let mock = Mock::new(|n| match n {
        1..=3 => Err(status(429)),
        4 | 5 => Err(status(500)),
        _ => ok(),
    });
    let err = run(&mock, quick().max_retries(1).build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(mock.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn zero_retries_turns_off_the_retry_of_rate_signals_too() {
    // With retry off the layer keeps no service or request copy to retry with: a 429 or a
    // 529 is the answer, never a second attempt (nor a panic for want of a service).
    for code in [429, 529] {
        let mock = Mock::new(move |n| match n {
            1 => Err(status(code)),
            _ => ok(),
        });
        let err = run(&mock, quick().max_retries(0).build().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(code));
        assert_eq!(mock.calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn rate_signals_draw_nothing_from_the_budget() {
    // A budget that allows no retry at all still lets rate signals through.
    let policy = quick()
        .budget_enabled(true)
        .budget_min_per_sec(0)
        .budget_ratio(0.001)
        .build()
        .unwrap();
    let mock = failing(10, || status(429));
    run(&mock, policy.clone()).await.unwrap();
    assert_eq!(mock.calls(), 11);
    let mock = failing(1, || status(500));
    assert!(run(&mock, policy).await.is_err(), "a 500 needs the budget");
}

#[tokio::test(start_paused = true)]
async fn rate_signals_give_up_after_their_time() {
    let mock = failing(usize::MAX, || {
        status_with(429, &[("retry-after", "1")], Some(Duration::from_secs(1)))
    });
    let policy = quick()
        .give_up_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = run(&mock, policy).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(30), "{took:?}");
    assert!(took >= Duration::from_secs(29), "{took:?}");
    // A second apart, each stretched by up to a millisecond.
    assert!((30..=31).contains(&mock.calls()), "{}", mock.calls());
}

/// The first retry waits at most the backoff base (full jitter over `[0, base]`); the second
/// at most twice it. Forty draws each: a policy one step ahead would exceed the bound on about
/// half of them.
#[tokio::test(start_paused = true)]
async fn the_first_retry_waits_at_most_the_base() {
    let policy = || {
        Policy::builder()
            .backoff_base(ms(100))
            .backoff_cap(ms(10_000))
            .build()
            .unwrap()
    };
    for (failures, bound) in [(1, ms(100)), (2, ms(300))] {
        for _ in 0..40 {
            let mock = failing(failures, || status(500));
            let started = tokio::time::Instant::now();
            assert!(run(&mock, policy()).await.is_ok());
            let waited = started.elapsed();
            assert!(waited <= bound, "{failures} retries waited {waited:?}");
        }
    }
}

/// LiteLLM's 408 when the upstream provider timed out.
fn gateway_timeout() -> Error {
    Error::from_status(
        StatusCode::REQUEST_TIMEOUT,
        HeaderMap::new(),
        br#"{"error":{"message":"litellm.Timeout: APITimeoutError - Request timed out.","type":null,"param":null,"code":"408"}}"#,
        None,
        "test",
    )
}

fn answer(body: &'static str) -> Result<Response, Error> {
    Ok(response(Body::Full(Bytes::from_static(body.as_bytes()))))
}

/// Answers `first` to the first call, `then` to the others.
fn first_then(first: &'static str, then: &'static str) -> Mock {
    Mock::new(move |n| if n == 1 { answer(first) } else { answer(then) })
}

/// A 200 whose whole body is an error object (a gateway's: LiteLLM, OpenRouter, vLLM behind
/// RunPod) is classified as the error it names: a rate limit or a 502 in `code` is retried, a
/// 400 is not. When no retry follows, the caller gets the answer as the server sent it.
#[tokio::test(start_paused = true)]
async fn a_200_that_is_an_error_object_is_classified_by_its_error() {
    const LIMITED: &str =
        r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":429}}"#;
    const UPSTREAM: &str = r#"{"error":{"message":"Upstream failed","code":502}}"#;
    const INVALID: &str =
        r#"{"error":{"message":"bad model","type":"invalid_request_error","code":400}}"#;
    const FINE: &str = r#"{"id":"c","choices":[{"message":{"content":"the error"}}]}"#;

    for first in [LIMITED, UPSTREAM] {
        let mock = first_then(first, FINE);
        let response = run(&mock, quick().max_retries(1).build().unwrap())
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap(), FINE, "after {first}");
        assert_eq!(mock.calls(), 2, "{first}");
    }

    // Not retryable: the answer itself, once.
    let mock = Mock::new(|_| answer(INVALID));
    let response = run(&mock, quick().max_retries(3).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), INVALID);
    assert_eq!(mock.calls(), 1);

    // Retries used up: the last answer.
    let mock = Mock::new(|_| answer(UPSTREAM));
    let response = run(&mock, quick().max_retries(2).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), UPSTREAM);
    assert_eq!(mock.calls(), 3);

    // Only billed-safe retries: a 502 may have been billed, a rate limit was not.
    let safe = || quick().classifier(classify_safe_only);
    let mock = first_then(UPSTREAM, FINE);
    let response = run(&mock, safe().build().unwrap()).await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), UPSTREAM);
    let mock = first_then(LIMITED, FINE);
    let response = run(&mock, safe().build().unwrap()).await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), FINE);
    assert_eq!(mock.calls(), 2);

    // The answer's headers count as an error status's would: its `Retry-After` is waited
    // for, its `x-should-retry: false` obeyed.
    let with_headers = |pairs: &'static [(&'static str, &'static str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        let id = volley_core::RequestId::from_u64(1);
        let body = Body::Full(Bytes::from_static(LIMITED.as_bytes()));
        Ok(Response::new(
            StatusCode::OK,
            headers,
            body,
            Timings::start(),
            id,
        ))
    };
    let mock = Mock::new(move |n| {
        if n == 1 {
            with_headers(&[("retry-after", "5")])
        } else {
            answer(FINE)
        }
    });
    run(&mock, quick().max_retries(1).build().unwrap())
        .await
        .unwrap();
    assert_waited(&mock.gaps(), &[5_000], 1);
    let mock = Mock::new(move |_| with_headers(&[("x-should-retry", "false")]));
    let response = run(&mock, quick().max_retries(3).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), LIMITED);
    assert_eq!(mock.calls(), 1);
}
