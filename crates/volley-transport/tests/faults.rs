//! Every fault volley-mock can inject surfaces as the right `ErrorKind`.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use http::StatusCode;
use volley_core::ErrorKind;
use volley_mock::MockConfig;
use volley_transport::Transport;

#[tokio::test]
async fn rate_limited_carries_retry_after_and_the_provider_error() {
    let server = mock(MockConfig::default()).await;
    let err = transport(&server)
        .send(with_fault(chat(), "429"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    let api = err
        .api_error()
        .expect("the mock sends an OpenAI error body");
    assert_eq!(api.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(err.headers().unwrap().contains_key("retry-after"));
    assert!(err.is_request_sent());
}

#[tokio::test]
async fn server_errors_are_status_errors() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    for (fault, status) in [
        ("500", StatusCode::INTERNAL_SERVER_ERROR),
        ("503", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let err = transport.send(with_fault(chat(), fault)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status, "{fault}");
        assert_eq!(err.status(), Some(status));
        assert!(err.api_error().is_some());
        let text = err.to_string();
        assert!(text.contains(&status.as_u16().to_string()), "{text}");
        assert!(text.contains("/chat/completions"), "{text}");
    }
}

#[tokio::test]
async fn client_errors_name_the_request() {
    let server = mock(MockConfig::default()).await;
    let err = transport(&server)
        .send(volley_core::Request::post("/chat/completions", "{not json").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(
        err.api_error().unwrap().r#type.as_deref(),
        Some("invalid_request_error")
    );
    let unknown = transport(&server)
        .send(volley_core::Request::get("/nope").unwrap())
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn reset_before_the_response_is_a_connection_error() {
    let server = mock(MockConfig::default()).await;
    let transport = transport(&server);
    let err = transport
        .send(with_fault(chat(), "reset"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.status().is_none());
    // The pool recovers: the next request opens a fresh connection and succeeds.
    transport.send(chat()).await.unwrap();
}

#[tokio::test]
async fn a_stall_that_ends_in_a_close_is_a_connection_error() {
    let server = mock(MockConfig {
        stall_duration: Duration::from_millis(200),
        ..MockConfig::default()
    })
    .await;
    let err = transport(&server)
        .send(with_fault(chat(), "stall"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
}

#[tokio::test]
async fn a_stall_produces_no_response_in_time() {
    let server = mock(MockConfig::default()).await;
    let pending = tokio::time::timeout(
        Duration::from_millis(300),
        transport(&server).send(with_fault(chat(), "stall")),
    )
    .await;
    assert!(pending.is_err(), "a stalled request must not complete");
}

#[tokio::test]
async fn a_cut_stream_is_stream_broken() {
    let server = mock(MockConfig::default()).await;
    let response = transport(&server)
        .send(with_fault(chat_stream(), "cut"))
        .await
        .expect("the head arrives before the cut");
    let mut events = response.events();
    let mut delivered = 0;
    let err = loop {
        match events.next().await {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => break e,
            None => panic!("a cut stream must not end cleanly"),
        }
    };
    assert!(delivered > 0, "some chunks arrive before the cut");
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
}

#[tokio::test]
async fn a_cut_plain_body_is_stream_broken() {
    let server = mock(MockConfig::default()).await;
    let err = transport(&server)
        .send(with_fault(chat(), "cut"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamBroken, "{err}");
}

#[tokio::test]
async fn malformed_json_is_body_decode() {
    let server = mock(MockConfig::default()).await;
    let response = transport(&server)
        .send(with_fault(chat(), "malformed"))
        .await
        .unwrap();
    let err = response.json::<serde_json::Value>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyDecode, "{err}");
}

#[tokio::test]
async fn refused_connections_are_connect_errors_and_never_sent() {
    // A port nobody listens on.
    let refused = volley_testkit::ports::RefusedPort::new();
    let port = refused.port();
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(!err.is_request_sent());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // Each cause once, whether the chain is printed by the report or walked naively (as
    // `anyhow`'s `{:#}` does).
    for line in [err.report().to_string(), naive_chain(&err)] {
        assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
        assert_eq!(line.matches("tcp connect error").count(), 1, "{line}");
    }
}

#[tokio::test]
async fn refused_http2_connections_name_each_cause_once() {
    let refused = volley_testkit::ports::RefusedPort::new();
    let port = refused.port();
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    for line in [err.report().to_string(), naive_chain(&err)] {
        assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
    }
}

/// The error and every source joined by `": "`, with no deduplication.
fn naive_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[tokio::test]
async fn tls_failures_are_tls_errors() {
    // A plain-text server spoken to over https: the handshake fails.
    let server = mock(MockConfig::default()).await;
    let url = server.url().replace("http://", "https://");
    let transport = Transport::builder().base_url(url).build().unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(!err.is_request_sent());
    let line = naive_chain(&err);
    let last = err.report().to_string();
    let cause = last.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "{line}");
}

/// An HTTP/2 server that resets a stream with REFUSED_STREAM did not process it (RFC 9113,
/// 8.7): the error says the request was not sent, so a policy that resends only unsent
/// requests resends it, POST included. The stream after it on the same connection is answered.
#[tokio::test]
async fn a_refused_http2_stream_counts_as_not_sent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const ANSWER: &[u8] = br#"{"id":"chatcmpl-h2","object":"chat.completion","choices":[]}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    // The first stream is refused, the others answered.
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let head = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(())
                        .unwrap();
                    let Ok(mut body) = respond.send_response(head, false) else {
                        continue;
                    };
                    let _ = body.send_data(bytes::Bytes::from_static(ANSWER), true);
                }
            });
        }
    });
    let transport = Transport::builder()
        .base_url(&url)
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    refused_unsent(&transport).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), transport.send(chat()))
        .await
        .expect("the request ends")
        .expect("the next stream is answered");
    assert_eq!(&answered.bytes().await.unwrap()[..], ANSWER);
    assert_eq!(streams.load(Ordering::SeqCst), 2);
}

/// A server that sends GOAWAY naming a last stream below the request's did not process it
/// (RFC 9113, 6.8), as nginx, envoy and load balancers do when they retire a connection:
/// the error says the request was not sent, so a policy that resends only unsent requests
/// resends it. Raw frames, so that the GOAWAY's last stream id is exactly 0.
#[tokio::test]
async fn a_stream_above_a_goaways_last_stream_counts_as_not_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                socket.read_exact(&mut preface).await?;
                // The server's SETTINGS (empty), then the client's frames up to its HEADERS.
                socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
                loop {
                    let mut head = [0u8; 9];
                    socket.read_exact(&mut head).await?;
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    socket.read_exact(&mut payload).await?;
                    if head[3] == 1 {
                        break;
                    }
                }
                // SETTINGS ACK, then GOAWAY(last stream 0, NO_ERROR): stream 1 not processed.
                socket.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await?;
                socket
                    .write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                    .await?;
                let mut rest = Vec::new();
                let _ = socket.read_to_end(&mut rest).await;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    let transport = Transport::builder()
        .base_url(&url)
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    refused_unsent(&transport).await;
}

/// Sends a chat over HTTP/2 (bounded): the server refused its stream, so the error says it was
/// not sent.
async fn refused_unsent(transport: &Transport) {
    let refused = tokio::time::timeout(Duration::from_secs(10), transport.send(chat()))
        .await
        .expect("the request ends")
        .expect_err("a stream the server did not process is no answer");
    assert_eq!(refused.kind(), ErrorKind::Connection, "{refused}");
    assert!(
        !refused.is_request_sent(),
        "{refused}: {}",
        refused.report()
    );
    assert!(refused.to_string().contains("refused"), "{refused}");
}

/// HTTP/2 with prior knowledge to a server that speaks HTTP/1.1 only (uvicorn, vLLM's): its
/// answer to the connection preface is no HTTP/2 frame, and the error says what to change
/// (it said only "frame with invalid size").
#[tokio::test]
async fn prior_knowledge_to_an_http1_server_says_to_turn_it_off() {
    let port = volley_testkit::raw::serve(|_| {
        volley_testkit::raw::json_response("400 Bad Request", &[], r#"{"error":"bad"}"#)
    })
    .await;
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), transport.send(chat()))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(
        err.to_string().contains("turn http2_prior_knowledge off"),
        "{err}"
    );
    // The same server without it: its answer.
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
}
