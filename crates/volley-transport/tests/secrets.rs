//! The API key never appears in `Debug`, errors or logs, even at trace level.

mod common;

use common::*;
use volley_core::ErrorKind;
use volley_mock::MockConfig;
use volley_transport::Transport;

const KEY: &str = "sk-volley-test-0123456789abcdef";

#[test]
fn the_key_never_appears_in_debug_errors_or_trace_logs() {
    // A current-thread runtime keeps every task, hyper's connection tasks included, on this
    // thread, where the subscriber is installed.
    let (logs, _guard) = volley_testkit::logs::capture(tracing::Level::TRACE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = String::new();
    runtime.block_on(async {
        let server = mock(MockConfig {
            require_api_key: Some("sk-the-right-key".to_owned()),
            ..MockConfig::default()
        })
        .await;
        for http2 in [false, true] {
            let transport = Transport::builder()
                .base_url(server.url())
                .api_key(KEY)
                .http2_prior_knowledge(http2)
                .build()
                .unwrap();
            seen.push_str(&format!("{transport:?}\n"));
            let err = transport.send(chat()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Status);
            assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
            seen.push_str(&format!("{err}\n{err:?}\n{:?}\n", err.headers()));
            let err = transport
                .send(with_fault(chat_stream(), "cut"))
                .await
                .unwrap_err();
            seen.push_str(&format!("{err}\n{err:?}\n"));
        }
        // The same key accepted: a whole successful exchange, logged at trace level.
        let good = Transport::builder()
            .base_url(server.url())
            .api_key("sk-the-right-key")
            .build()
            .unwrap();
        good.send(chat()).await.unwrap();
        // A path without its leading '/' (Request::new takes any, and a bare query parses as
        // one): refused without its query, which may carry a key.
        let bad = volley_core::Request::new(
            http::Method::GET,
            format!("?api-key={KEY}").parse().unwrap(),
        );
        let err = good.send(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let text = format!("{err} {err:?} {}", err.report());
        assert!(text.contains("\"?***\""), "{text}");
        seen.push_str(&text);
        let log_text = logs.text();
        assert!(
            log_text.contains("sending"),
            "trace logging was captured: {log_text}"
        );
        assert!(!log_text.contains("sk-the-right-key"), "{log_text}");
        seen.push_str(&log_text);
        server.shutdown().await;
    });
    assert!(!seen.contains(KEY), "the key leaked:\n{seen}");
    assert!(
        !seen.contains("0123456789abcdef"),
        "part of the key leaked:\n{seen}"
    );
}

/// A gateway's own credential header (not one of the listed ones) is a credential too: an
/// error body that echoes it shows `***`, whether the client sends it by default or a request
/// carries it, and whether it is known by its name or only marked sensitive.
#[tokio::test]
async fn a_gateways_own_key_echoed_in_an_error_is_scrubbed() {
    const GATEWAY: &str = "sk-hel-gateway-secret-42";
    let port = volley_testkit::raw::serve(|_| {
        let body = format!(
            "{{\"error\":{{\"message\":\"invalid key Bearer {GATEWAY}\",\"type\":\"auth\"}}}}"
        );
        volley_testkit::raw::json_response("401 Unauthorized", &[], &body)
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/v1");
    let value = || http::HeaderValue::from_str(&format!("Bearer {GATEWAY}")).unwrap();
    let mut seen = String::new();
    // By default, under a name that says what it is.
    let by_default = Transport::builder()
        .base_url(&url)
        .default_header(http::HeaderName::from_static("helicone-auth"), value())
        .build()
        .unwrap();
    seen.push_str(&format!("{by_default:?}\n"));
    // On the request, under a name that does not, but marked sensitive.
    let plain = Transport::builder().base_url(&url).build().unwrap();
    let mut marked = value();
    marked.set_sensitive(true);
    let requests = [
        (&by_default, chat()),
        (
            &plain,
            chat().with_header(http::HeaderName::from_static("x-tenant"), marked),
        ),
    ];
    for (transport, request) in requests {
        let err = transport.send(request).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
        let text = format!("{err} {err:?} {}", err.report());
        assert!(text.contains("invalid key"), "the message stays: {text}");
        seen.push_str(&text);
    }
    assert!(!seen.contains(GATEWAY), "the gateway's key leaked:\n{seen}");
}

/// An error body longer than the limit is cut there: a key the cut splits leaves no part of
/// itself at the end (its first half escaped the search for the whole key).
#[tokio::test]
async fn a_key_split_by_the_error_body_limit_leaves_no_part_of_itself() {
    const MAX: usize = 200;
    let port = volley_testkit::raw::serve(|head| {
        // The key the request carried, echoed so that it straddles the cut.
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: bearer "))
            .unwrap_or("none")
            .to_owned();
        let body = format!("{}{key}{}", "x".repeat(MAX - 8), "y".repeat(100));
        volley_testkit::raw::json_response("401 Unauthorized", &[], &body)
    })
    .await;
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_error_body_bytes(MAX)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    let body = err.body().expect("the body, as far as it was read");
    assert!(body.starts_with(&[b'x'; MAX - 8]), "{body:?}");
    let text = format!("{err} {err:?} {}", String::from_utf8_lossy(body));
    for part in KEY.as_bytes().windows(4) {
        let part = std::str::from_utf8(part).unwrap();
        assert!(!text.contains(part), "{part:?} of the key in {text}");
    }
}

/// An error body that breaks off (the connection closed before its promised length) may end
/// in the first bytes of a key as a cut one does: they go too.
#[tokio::test]
async fn a_key_split_by_an_error_body_that_breaks_off_leaves_no_part_of_itself() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        volley_testkit::raw::read_request_head(&mut socket).await;
        let head = "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n\
                    content-length: 1000\r\n\r\n";
        let body = format!("{}{}", "x".repeat(50), &KEY[..12]);
        let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
        // Closed 938 bytes short.
    });
    let transport = Transport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let body = String::from_utf8_lossy(err.body().expect("what arrived")).into_owned();
    assert!(body.starts_with("xxxx"), "{body}");
    for part in KEY.as_bytes().windows(4) {
        let part = std::str::from_utf8(part).unwrap();
        assert!(!body.contains(part), "{part:?} of the key in {body}");
    }
}
