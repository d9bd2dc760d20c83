//! Through a real forward proxy (tinyproxy, started by each test with its own configuration):
//! `CONNECT` tunnels with TLS end to end for `https://`, absolute-form requests for `http://`,
//! Basic authentication, a clear 407 that never shows the password, `NO_PROXY`, HTTP/2 in a
//! tunnel, and many requests in flight through it. Besides, a raw proxy whose CONNECT answer
//! ends its lines with a lone LF, and the test SOCKS5 proxy (ports, credentials).

mod common;

use common::*;
use volley_core::ErrorKind;
use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::require_tinyproxy;
use volley_testkit::tls::TestPki;
use volley_transport::Transport;

const PASSWORD: &str = "pr0xy-hunter2";

async fn tls_mock(pki: &TestPki) -> MockServer {
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        None,
    )
    .unwrap();
    MockServer::start_tls(MockConfig::default(), tls)
        .await
        .unwrap()
}

fn connects(lines: &[String], port: u16) -> usize {
    let want = format!("CONNECT 127.0.0.1:{port} HTTP/1.1");
    lines.iter().filter(|l| **l == want).count()
}

#[tokio::test]
async fn https_goes_through_one_connect_tunnel_per_pooled_connection() {
    let proxy = require_tinyproxy!(None);
    let pki = TestPki::new("tunnel");
    let server = tls_mock(&pki).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .proxy(proxy.url())
        .build()
        .unwrap();
    for _ in 0..3 {
        transport.send(chat()).await.unwrap();
    }
    // Sent one after another, the three requests reuse one connection: one tunnel.
    let lines = proxy.requests();
    assert_eq!(connects(&lines, server.addr().port()), 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(transport.stats().opened, 1);
    assert_eq!(server.stats().requests_total, 3);
}

#[tokio::test]
async fn plain_http_is_sent_in_absolute_form_with_proxy_credentials() {
    let proxy = require_tinyproxy!(Some(("volley", PASSWORD)));
    let server = mock(MockConfig::default()).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .proxy(proxy.url())
        .build()
        .unwrap();
    for _ in 0..2 {
        transport.send(chat()).await.unwrap();
    }
    let want = format!("POST {}/chat/completions HTTP/1.1", server.url());
    let lines = proxy.requests();
    assert_eq!(lines.iter().filter(|l| **l == want).count(), 2, "{lines:?}");
    assert_eq!(server.stats().requests_total, 2);
}

#[tokio::test]
async fn https_through_a_proxy_with_credentials() {
    let proxy = require_tinyproxy!(Some(("volley", PASSWORD)));
    let pki = TestPki::new("auth");
    let server = tls_mock(&pki).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .proxy(proxy.url())
        .build()
        .unwrap();
    transport.send(chat()).await.unwrap();
    assert_eq!(connects(&proxy.requests(), server.addr().port()), 1);
}

#[tokio::test]
async fn no_proxy_reaches_listed_hosts_directly() {
    let proxy = require_tinyproxy!(None);
    let server = mock(MockConfig::default()).await;
    for list in ["127.0.0.1", "127.0.0.0/8", "*"] {
        let transport = Transport::builder()
            .base_url(server.url())
            .proxy(proxy.url())
            .no_proxy(list)
            .build()
            .unwrap();
        transport.send(chat()).await.unwrap();
    }
    // An empty proxy setting means no proxy, whatever the environment says.
    let direct = Transport::builder()
        .base_url(server.url())
        .proxy("")
        .build()
        .unwrap();
    direct.send(chat()).await.unwrap();
    assert_eq!(proxy.requests(), Vec::<String>::new());
    assert_eq!(server.stats().requests_total, 4);
}

#[tokio::test]
async fn http2_works_inside_a_tunnel() {
    let proxy = require_tinyproxy!(None);
    let pki = TestPki::new("h2");
    let server = tls_mock(&pki).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .http2_prior_knowledge(true)
        .proxy(proxy.url())
        .build()
        .unwrap();
    let sends = (0..20).map(|_| transport.send(chat()));
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    // Twenty concurrent requests, one HTTP/2 connection, one tunnel.
    assert_eq!(connects(&proxy.requests(), server.addr().port()), 1);
    assert_eq!(transport.stats().opened, 1);
    assert_eq!(server.stats().requests_total, 20);
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_connect_error_naming_it() {
    // A port nothing listens on.
    let refused = volley_testkit::ports::RefusedPort::new();
    let port = refused.port();
    let server = mock(MockConfig::default()).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .proxy(format!("http://u:{PASSWORD}@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    let text = format!("{err} {err:?} {}", err.report());
    assert!(
        text.contains(&format!(
            "could not connect to the proxy http://***@127.0.0.1:{port}"
        )),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(server.stats().requests_total, 0);
}

#[tokio::test]
async fn many_requests_in_flight_through_one_proxy() {
    let proxy = require_tinyproxy!(None);
    let pki = TestPki::new("load");
    let server = tls_mock(&pki).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .proxy(proxy.url())
        .build()
        .unwrap();
    // 2 000 requests, at most 256 at once: bounded in count (and by the test's timeout).
    use futures_util::StreamExt as _;
    let results: Vec<_> = futures_util::stream::iter(0..2000)
        .map(|_| transport.send(chat()))
        .buffer_unordered(256)
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(server.stats().requests_total, 2000);
    // Each connection the pool opened is one tunnel; no more than the concurrency.
    let tunnels = connects(&proxy.requests(), server.addr().port());
    assert_eq!(tunnels as u64, transport.stats().opened);
    assert!(tunnels <= 256, "{tunnels} tunnels");
}

#[tokio::test]
async fn socks5_with_remote_and_local_name_resolution() {
    let socks = volley_testkit::socks::Socks5::start(Some(("volley", PASSWORD)));
    let pki = TestPki::new("socks");
    let server = tls_mock(&pki).await;
    let port = server.addr().port();
    // socks5h: the proxy resolves `localhost`; socks5: the client does, and sends the IP.
    let remote = socks.url();
    let local = remote.replace("socks5h://", "socks5://");
    for proxy in [&remote, &local] {
        let transport = Transport::builder()
            .base_url(format!("https://localhost:{port}/v1"))
            .tls_ca_pem(pki.ca_pem.as_bytes())
            .proxy(proxy)
            .build()
            .unwrap();
        transport.send(chat()).await.unwrap();
        transport.send(chat()).await.unwrap();
    }
    let targets = socks.targets();
    assert_eq!(targets.len(), 2, "one connection each: {targets:?}");
    assert_eq!(targets[0], format!("localhost:{port}"));
    assert!(targets[1].ends_with(&format!(":{port}")) && targets[1] != targets[0]);
    assert_eq!(server.stats().requests_total, 4);

    let wrong = remote.replace(PASSWORD, "wrong-password");
    let transport = Transport::builder()
        .base_url(format!("https://localhost:{port}/v1"))
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .proxy(&wrong)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    // The setting is wrong: `Config`, which no retry policy sends again.
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_request_sent());
    let text = format!("{err} {}", err.report());
    assert!(text.contains("socks5h://***@127.0.0.1:"), "{text}");
    assert!(
        text.contains("rejected the user name and password"),
        "{text}"
    );
    assert!(!text.contains("wrong-password"), "{text}");
}

/// A proxy that ends the lines of its CONNECT answer with a lone LF (`HTTP/1.0 200 ...\n\n`):
/// RFC 9112 (2.2) lets a recipient accept that, and curl does. The tunnel works.
#[tokio::test]
async fn a_connect_answer_with_bare_line_feeds_opens_the_tunnel() {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The head in lower case: `connect 127.0.0.1:PORT http/1.1`.
                let Some(head) = volley_testkit::raw::read_request_head(&mut client).await else {
                    return;
                };
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.0 200 Connection established\n\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    let pki = TestPki::new("lf-proxy");
    let server = tls_mock(&pki).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .proxy(&proxy)
        .connect_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .unwrap();
    let answer = transport.send(chat()).await.expect("through the tunnel");
    assert_eq!(answer.status(), http::StatusCode::OK);
    assert_eq!(server.stats().requests_total, 1);
}

/// Through SOCKS5, an `http://` base URL without a port goes to port 80 (its scheme's), not
/// the 443 the SOCKS connector would take for a target without one; with the name resolved by
/// the proxy (`socks5h`) and with an address literal alike.
#[tokio::test]
async fn socks5_takes_the_schemes_port_for_a_url_without_one() {
    let socks = volley_testkit::socks::Socks5::start(None);
    for (proxy, base) in [
        (socks.url(), "http://localhost/v1"),
        (
            socks.url().replace("socks5h://", "socks5://"),
            "http://127.0.0.1/v1",
        ),
    ] {
        let transport = Transport::builder()
            .base_url(base)
            .proxy(&proxy)
            .build()
            .unwrap();
        // Whether anything answers on port 80 here does not matter, the target does: the proxy
        // records it before connecting. Bounded, in case something there never answers.
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), transport.send(chat())).await;
    }
    assert_eq!(socks.targets(), ["localhost:80", "127.0.0.1:80"]);
}

/// A SOCKS5 proxy that asks for credentials the URL does not have says so, instead of
/// claiming it rejected a user name and password that were never sent.
#[tokio::test]
async fn a_socks5_proxy_that_needs_credentials_says_so() {
    let socks = volley_testkit::socks::Socks5::start(Some(("volley", PASSWORD)));
    let without = socks.url().replace(&format!("volley:{PASSWORD}@"), "");
    let transport = Transport::builder()
        .base_url("https://localhost:1/v1")
        .proxy(&without)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let text = format!("{err} {}", err.report());
    assert!(text.contains("requires a user name and password"), "{text}");
    assert!(!text.contains("rejected"), "{text}");
}

/// A forward proxy (or the origin behind it) whose error page echoes the request's headers:
/// the proxy's `Proxy-Authorization` and password are scrubbed from the error as the API key
/// is.
#[tokio::test]
async fn an_echoed_proxy_authorization_is_scrubbed_from_errors() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let echo = String::from_utf8_lossy(&head).into_owned();
                let body = serde_json::json!({"error": {"message": echo}}).to_string();
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    let transport = Transport::builder()
        .base_url("http://127.0.0.1:9/v1")
        .api_key("sk-proxied-key-0123456789")
        .proxy(format!("http://volley:{PASSWORD}@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
    let body = String::from_utf8_lossy(err.body().unwrap()).into_owned();
    // The echo arrived: the request went through this proxy with its credentials.
    assert!(
        body.contains("roxy-authorization") || body.contains("ROXY-AUTHORIZATION"),
        "{body}"
    );
    let basic = "dm9sbGV5OnByMHh5LWh1bnRlcjI="; // base64("volley:pr0xy-hunter2")
    let text = format!("{err} {} {err:?} {body}", err.report());
    for secret in [PASSWORD, basic, "sk-proxied-key-0123456789"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // A short password is no secret of its own (it could be a word of any answer): its
    // header value is scrubbed, the error body stays readable.
    let transport = Transport::builder()
        .base_url("http://127.0.0.1:9/v1")
        .proxy(format!("http://volley:error@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert!(err.api_error().is_some(), "{err}");
    let body = String::from_utf8_lossy(err.body().unwrap()).into_owned();
    assert!(!body.contains("dm9sbGV5OmVycm9y"), "{body}"); // base64("volley:error")
}

/// A SOCKS5 proxy that takes no credentials (`ssh -D`) works with credentials in its URL: as
/// curl does, "no authentication" is offered beside them and the proxy chooses. A target it
/// cannot reach is named with the proxy's reply. Credentials longer than RFC 1929's 255 bytes
/// are refused when the transport is built.
#[tokio::test]
async fn a_socks5_proxy_that_takes_no_credentials_works_with_them_in_its_url() {
    let server = mock(MockConfig::default()).await;
    let socks = volley_testkit::socks::Socks5::start(None);
    let with = socks.url().replace("socks5h://", "socks5h://volley:pw@");
    let transport = Transport::builder()
        .base_url(server.url())
        .proxy(&with)
        .no_proxy("")
        .build()
        .unwrap();
    transport.send(chat()).await.unwrap();
    assert_eq!(server.stats().requests_total, 1);
    assert_eq!(socks.targets().len(), 1, "{:?}", socks.targets());

    // A target the proxy cannot reach (nothing listens there): its reply, named.
    let closed = volley_testkit::ports::RefusedPort::new();
    let transport = Transport::builder()
        .base_url(closed.url())
        .proxy(&with)
        .no_proxy("")
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    let text = format!("{err} {}", err.report());
    assert!(
        text.contains("the connection was refused (reply 5)"),
        "{text}"
    );
    assert!(!err.is_request_sent());

    // A name longer than SOCKS5 carries: the settings' fault, never retried.
    let long = vec!["a".repeat(60); 5].join(".");
    let transport = Transport::builder()
        .base_url(format!("http://{long}/v1"))
        .proxy(&with)
        .no_proxy("")
        .allow_plain_http(true)
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("longer than the 255 bytes"),
        "{err}"
    );

    let long = socks.url().replace(
        "socks5h://",
        &format!("socks5h://volley:{}@", "p".repeat(256)),
    );
    let err = Transport::builder()
        .base_url("http://localhost:1/v1")
        .proxy(&long)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("255 bytes"), "{err}");
    assert!(!err.to_string().contains("ppppp"), "{err}");
}
