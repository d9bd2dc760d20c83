//! The HTTP/1.1 pool over real loopback sockets: connections come back when their body ends,
//! half-read bodies close theirs, connections the server closed are replaced without an
//! error, and idle connections are bounded in number and in time.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use volley_mock::{Latency, MockConfig, OutputTokens};
use volley_transport::{ConnectionStats, Transport};

/// Waits (bounded) until the transport's counters satisfy `done`.
async fn wait_for(transport: &Transport, done: impl Fn(&ConnectionStats) -> bool) {
    for _ in 0..500 {
        if done(&transport.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the counters never got there: {:?}", transport.stats());
}

async fn read_stream_to_end(transport: &Transport) -> usize {
    let response = transport.send(chat_stream()).await.unwrap();
    assert!(response.is_stream());
    let mut stream = response.into_parts().1.into_stream();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    chunks
}

#[tokio::test]
async fn a_streams_connection_serves_the_next_request() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    for _ in 0..3 {
        assert!(read_stream_to_end(&transport).await > 0);
        transport.send(chat()).await.unwrap();
    }
    let stats = transport.stats();
    assert_eq!((stats.requests, stats.opened), (6, 1), "{stats:?}");
}

#[tokio::test]
async fn a_stream_dropped_after_its_last_event_keeps_its_connection() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    for _ in 0..5 {
        let mut events = transport.send(chat_stream()).await.unwrap().events();
        // Stop at `[DONE]`, as callers do, without polling the body to its end.
        while let Some(event) = events.next().await {
            if event.unwrap().is_done() {
                break;
            }
        }
    }
    let stats = transport.stats();
    assert_eq!((stats.requests, stats.opened), (5, 1), "{stats:?}");
}

#[tokio::test]
async fn concurrent_requests_never_open_more_connections_than_they_are() {
    let server = mock(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .await;
    let transport = transport(&server);
    // 8 callers, 10 requests each, one after the other: 8 connections, then only reuse.
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let transport = transport.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    transport.send(chat()).await.unwrap();
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let stats = transport.stats();
    assert_eq!(stats.requests, 80);
    assert!((1..=8).contains(&stats.opened), "{stats:?}");
}

#[tokio::test]
async fn a_body_dropped_half_read_closes_its_connection() {
    let server = mock(MockConfig {
        inter_token: Latency::Fixed(Duration::from_millis(5)),
        output_tokens: OutputTokens::Fixed(100),
        ..MockConfig::default()
    })
    .await;
    let transport = transport(&server);
    let response = transport.send(chat_stream()).await.unwrap();
    assert!(response.is_stream());
    let mut stream = response.into_parts().1.into_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    wait_for(&transport, |s| s.closed == 1).await;
    // The next request cannot use it: HTTP/1.1 has no way to skip the rest of an answer.
    transport.send(chat()).await.unwrap();
    let stats = transport.stats();
    assert_eq!((stats.opened, stats.open()), (2, 1), "{stats:?}");
}

/// A server that answers each connection's requests with a small JSON body, and either
/// closes every connection `close_after` its first answer, or says `Connection: close`.
async fn closing_server(close_after: Option<Duration>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // One request: the head, then its Content-Length body.
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = r#"{"object":"chat.completion","choices":[]}"#;
                let connection = if close_after.is_some() {
                    "keep-alive"
                } else {
                    "close"
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                if let Some(after) = close_after {
                    tokio::time::sleep(after).await;
                }
                // Dropping the socket closes the connection.
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    let (url, server) = closing_server(Some(Duration::from_millis(50))).await;
    let transport = Transport::builder().base_url(&url).build().unwrap();
    for round in 1..=3 {
        let response = transport.send(chat()).await.unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        // The server closes it while it is idle in the pool.
        wait_for(&transport, |s| s.closed == round).await;
    }
    let stats = transport.stats();
    assert_eq!((stats.requests, stats.opened), (3, 3), "{stats:?}");
    server.abort();
}

#[tokio::test]
async fn connection_close_answers_are_not_reused() {
    let (url, server) = closing_server(None).await;
    let transport = Transport::builder().base_url(&url).build().unwrap();
    // Sent right after each other: the pool must notice each connection is done.
    for _ in 0..3 {
        transport.send(chat()).await.unwrap();
    }
    assert_eq!(transport.stats().opened, 3, "{:?}", transport.stats());
    server.abort();
}

#[tokio::test]
async fn idle_connections_beyond_the_maximum_are_closed() {
    let server = mock(MockConfig {
        latency: Latency::Fixed(Duration::from_millis(50)),
        ..MockConfig::default()
    })
    .await;
    let transport = Transport::builder()
        .base_url(server.url())
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let sends: Vec<_> = (0..4).map(|_| transport.send(chat())).collect();
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(transport.stats().opened, 4);
    wait_for(&transport, |s| s.closed == 3).await;
    transport.send(chat()).await.unwrap();
    assert_eq!(transport.stats().opened, 4, "the one kept is used");
}

#[tokio::test(start_paused = true)]
async fn idle_connections_time_out() {
    let server = mock(MockConfig::default()).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .pool_idle_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    transport.send(chat()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    transport.send(chat()).await.unwrap();
    assert_eq!(
        transport.stats().opened,
        1,
        "5 s idle is within the timeout"
    );
    // Past the timeout the sweep closes it, and the next request opens another.
    tokio::time::sleep(Duration::from_secs(30)).await;
    wait_for(&transport, |s| s.closed == 1).await;
    transport.send(chat()).await.unwrap();
    let stats = transport.stats();
    assert_eq!((stats.opened, stats.open()), (2, 1), "{stats:?}");
}

/// A server that says `Keep-Alive: timeout=1` and means it: a request that arrives on a
/// connection idle for longer is read and the connection closed without an answer (the race a
/// client loses when its request crosses the server's close). The client keeps connections
/// idle for half of that below 2 s, so the second request, 1.2 s later, goes on a new one.
#[tokio::test]
async fn the_servers_keep_alive_timeout_lowers_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // When the last answer went: the first request is always answered.
                let mut last: Option<tokio::time::Instant> = None;
                while volley_testkit::raw::read_request(&mut socket, &mut buf)
                    .await
                    .is_some()
                {
                    if last.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) {
                        return;
                    }
                    let answer = volley_testkit::raw::json_response(
                        "200 OK",
                        &["keep-alive: timeout=1, max=100".to_owned()],
                        r#"{"object":"chat.completion","choices":[]}"#,
                    );
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                    last = Some(tokio::time::Instant::now());
                }
            });
        }
    });
    let transport = Transport::builder().base_url(&url).build().unwrap();
    transport.send(chat()).await.unwrap().bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = transport.send(chat()).await;
    assert!(second.is_ok(), "{:?}", second.err());
    assert_eq!(transport.stats().opened, 2);
}

/// A keep-alive server that answers each request with the number of the connection it came
/// on (counted from 0 as they are accepted): `{"connection":N}` as JSON, or as one event of
/// a `text/event-stream` for a request that asks for a stream.
async fn numbering_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // Bounded: the test opens a handful.
        for number in 0..16 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) =
                    volley_testkit::raw::read_request(&mut socket, &mut buf).await
                {
                    // Told apart by their bodies' lengths: STREAM_BODY's is not CHAT_BODY's.
                    let streamed = head.contains(&format!("content-length: {}", STREAM_BODY.len()));
                    let (content_type, body) = if streamed {
                        (
                            "text/event-stream",
                            format!("data: {{\"connection\":{number}}}\n\ndata: [DONE]\n\n"),
                        )
                    } else {
                        ("application/json", format!("{{\"connection\":{number}}}"))
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A current-thread runtime on a thread of its own, as `volley bench` runs one per core; it
/// stops when the sender is dropped.
fn runtime_on_its_thread() -> (tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = runtime.block_on(stopped);
    });
    (handle, stop)
}

/// The connection a plain request sent on `runtime` went out on.
async fn connection_used(transport: &Transport, runtime: &tokio::runtime::Handle) -> u64 {
    let transport = transport.clone();
    runtime
        .spawn(async move {
            let response = transport.send(chat()).await.unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            body["connection"].as_u64().unwrap()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_thread_takes_back_its_own_idle_connection_before_anothers() {
    let url = numbering_server().await;
    let transport = Transport::builder().base_url(&url).build().unwrap();
    let (a, _stop_a) = runtime_on_its_thread();
    let (b, _stop_b) = runtime_on_its_thread();
    // Thread a opens connection 0 and holds it with an unread stream.
    let held = {
        let transport = transport.clone();
        a.spawn(async move { transport.send(chat_stream()).await.unwrap() })
            .await
            .unwrap()
    };
    assert!(held.is_stream());
    // Thread b opens connection 1; it goes back to the pool first.
    assert_eq!(connection_used(&transport, &b).await, 1);
    // Connection 0 goes back last, on top of the idle list.
    let mut events = held.events();
    while let Some(event) = events.next().await {
        if event.unwrap().is_done() {
            break;
        }
    }
    drop(events);
    // Each thread takes its own, not the most recently returned.
    assert_eq!(connection_used(&transport, &b).await, 1);
    assert_eq!(connection_used(&transport, &a).await, 0);
    assert_eq!(connection_used(&transport, &b).await, 1);
    // A thread with none of its own takes another's rather than opening one.
    let (c, _stop_c) = runtime_on_its_thread();
    let taken = connection_used(&transport, &c).await;
    assert!(taken <= 1, "{taken}");
    let stats = transport.stats();
    assert_eq!((stats.requests, stats.opened), (6, 2), "{stats:?}");
}

/// A response that gives both `Content-Length` and `Transfer-Encoding` (read by the latter, as
/// RFC 9112 says) closes its connection: a middlebox that read it by the length would be out of
/// step, and the next answer on it could be another request's. Each request opens its own.
#[tokio::test]
async fn a_response_framed_twice_closes_its_connection() {
    let port = volley_testkit::raw::serve(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\
          transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
            .to_vec()
    })
    .await;
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    for _ in 0..2 {
        let body = transport.send(chat()).await.unwrap().bytes().await.unwrap();
        assert_eq!(body, "{}");
    }
    assert_eq!(transport.stats().opened, 2);
    assert_eq!(transport.stats().reused(), 0);
}
