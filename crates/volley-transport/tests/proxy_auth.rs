//! A proxy that refuses the credentials (tinyproxy with Basic authentication): a clear error
//! naming the proxy, and the password never in errors, `Debug` or trace logs. In its own
//! binary: the log capture needs the only subscriber of the process (tracing caches each
//! call site's interest on first use).

mod common;

use common::*;
use volley_core::ErrorKind;
use volley_mock::{MockConfig, MockServer, MockTls};
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

#[test]
fn a_refused_password_is_a_407_naming_the_proxy_but_never_the_password() {
    let Some(proxy) = volley_testkit::proxy::Tinyproxy::start(Some(("volley", "the-right-one")))
    else {
        return;
    };
    // A current-thread runtime keeps hyper's connection tasks on this thread, where the
    // subscriber is installed.
    let (logs, _guard) = volley_testkit::logs::capture(tracing::Level::TRACE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = String::new();
    runtime.block_on(async {
        let pki = TestPki::new("407");
        let tls = tls_mock(&pki).await;
        let plain = mock(MockConfig::default()).await;
        let wrong = format!("http://volley:{PASSWORD}@127.0.0.1:{}", proxy.port());
        let shown = format!("http://***@127.0.0.1:{}", proxy.port());
        // CONNECT (https) and absolute form (http). tinyproxy 1.11 answers wrong credentials
        // with 401 (and `WWW-Authenticate`), which in absolute form cannot be told from the
        // server's own 401: only the tunnel's refusal is known to be the proxy's.
        for (server, tunnel) in [(&tls, true), (&plain, false)] {
            let transport = Transport::builder()
                .base_url(server.url())
                .tls_ca_pem(pki.ca_pem.as_bytes())
                .proxy(&wrong)
                .build()
                .unwrap();
            seen.push_str(&format!("{transport:?}\n"));
            let err = transport.send(chat()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Status, "{err}");
            // tinyproxy answers a CONNECT with bad credentials with 401, a request with 407.
            let status = err.status().map(|s| s.as_u16());
            assert!(matches!(status, Some(401 | 407)), "{err}");
            let text = format!("{err}");
            if tunnel {
                assert!(!err.is_request_sent(), "{err}");
                assert!(text.contains(&shown), "{text}");
                assert!(
                    text.contains("rejected the user name and password"),
                    "{text}"
                );
            }
            seen.push_str(&format!("{text}\n{err:?}\n{}\n", err.report()));
        }
        // Without credentials (a 407 both ways): says what is missing, naming the proxy.
        for server in [&tls, &plain] {
            let transport = Transport::builder()
                .base_url(server.url())
                .tls_ca_pem(pki.ca_pem.as_bytes())
                .proxy(proxy.url_without_credentials())
                .build()
                .unwrap();
            let err = transport.send(chat()).await.unwrap_err();
            assert!(
                matches!(err.status().map(|s| s.as_u16()), Some(401 | 407)),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains("requires authentication"), "{text}");
            assert!(text.contains(&proxy.url_without_credentials()), "{text}");
        }
        assert_eq!(tls.stats().requests_total + plain.stats().requests_total, 0);
    });
    let log_text = logs.text();
    assert!(log_text.contains("through a proxy"), "{log_text}");
    seen.push_str(&log_text);
    assert!(!seen.contains(PASSWORD), "the password leaked:\n{seen}");
    // Nor its Basic encoding (base64 of `volley:pr0xy-hunter2`).
    assert!(
        !seen.contains("dm9sbGV5OnByMHh5LWh1bnRlcjI="),
        "the credentials leaked:\n{seen}"
    );
}
