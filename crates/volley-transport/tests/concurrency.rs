//! One transport keeps 1 024 requests in flight at once.

mod common;

use common::*;
use volley_mock::MockConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transport_keeps_1024_requests_in_flight() {
    const N: usize = 1024;
    // Client and server sockets of this process: 2 048 descriptors and a margin.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    assert!(
        limit >= 2 * N as u64 + 64,
        "this test needs an open-file limit of at least {}; the hard limit is {limit}",
        2 * N + 64
    );
    let server = mock(MockConfig {
        // Long enough that a loaded machine sends most of the burst before the first answer.
        latency: "2s".parse().unwrap(),
        ..MockConfig::default()
    })
    .await;
    let transport = transport(&server);
    // Open the connections first (a burst with a shorter latency), so that the measured burst
    // is about keeping requests in flight, not about how fast a loaded machine accepts 1 024
    // new connections.
    let warm: Vec<_> = (0..N)
        .map(|_| {
            let transport = transport.clone();
            tokio::spawn(async move {
                let request = chat().with_header(
                    http::HeaderName::from_static("x-mock-latency"),
                    http::HeaderValue::from_static("200ms"),
                );
                transport.send(request).await
            })
        })
        .collect();
    for task in warm {
        task.await.unwrap().unwrap();
    }
    server.reset_stats();
    let sent_before = transport.stats().requests;
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let transport = transport.clone();
            tokio::spawn(async move { transport.send(chat()).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let stats = server.stats();
    assert_eq!(ok, N, "every request succeeds");
    assert_eq!(stats.requests_total, N as u64);
    // One-sided: never more than were sent, and most of them at once (the exact share, 99 %
    // and more, is a benchmark's figure: `cargo xtask bench`).
    assert!(
        stats.peak_in_flight <= N as u64 && stats.peak_in_flight >= (N / 2) as u64,
        "the mock saw {} of {N} requests in flight at once",
        stats.peak_in_flight
    );
    assert_eq!(transport.stats().requests - sent_before, N as u64);
}
