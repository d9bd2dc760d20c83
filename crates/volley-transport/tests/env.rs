//! The environment's proxy and CA variables (`HTTPS_PROXY`, `NO_PROXY`, `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`), honoured by default, overridden by explicit settings, and read once per
//! process. One test in its own binary: it sets the variables before anything reads them.

mod common;

use common::*;
use volley_core::ErrorKind;
use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::proxy::Tinyproxy;
use volley_testkit::tls::TestPki;
use volley_transport::Transport;

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
fn the_environment_is_honoured_overridden_and_read_once() {
    let from_file = TestPki::new("ssl-cert-file");
    let from_dir = TestPki::new("ssl-cert-dir");
    let ca_dir = from_dir.dir().join("certs");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("0a1b2c3d.0"), &from_dir.ca_pem).unwrap();
    std::fs::write(ca_dir.join("README"), "not a certificate").unwrap();
    let proxy = Tinyproxy::start(None);
    // SAFETY: the only test of this binary, and no other thread runs yet: nothing reads the
    // environment while it changes.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", from_file.ca_file());
        std::env::set_var("SSL_CERT_DIR", &ca_dir);
        std::env::set_var("NO_PROXY", "localhost,example.invalid");
        if let Some(proxy) = &proxy {
            std::env::set_var("HTTPS_PROXY", proxy.url());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let a = tls_mock(&from_file).await;
        let b = tls_mock(&from_dir).await;
        let proxied = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.starts_with("CONNECT 127.0.0.1:"))
                .count()
        };

        // Both CAs trusted from the environment, both servers reached through HTTPS_PROXY.
        for server in [&a, &b] {
            let transport = Transport::builder().base_url(server.url()).build().unwrap();
            transport.send(chat()).await.unwrap();
        }
        if let Some(proxy) = &proxy {
            assert_eq!(proxied(&proxy.requests()), 2, "{:?}", proxy.requests());
        }

        // Read once: what the variables say now is not seen.
        // SAFETY: current-thread runtime; no other thread reads the environment.
        unsafe {
            std::env::set_var("SSL_CERT_FILE", "/nonexistent/ca.pem");
            std::env::set_var("HTTPS_PROXY", "http://127.0.0.1:1");
        }
        let transport = Transport::builder().base_url(a.url()).build().unwrap();
        transport.send(chat()).await.unwrap();
        if let Some(proxy) = &proxy {
            assert_eq!(proxied(&proxy.requests()), 3);
        }

        // Explicit settings win: a CA given explicitly replaces the environment's files...
        let other = TestPki::new("explicit");
        let transport = Transport::builder()
            .base_url(a.url())
            .tls_ca_pem(other.ca_pem.as_bytes())
            .build()
            .unwrap();
        let err = transport.send(chat()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        // ...and they can be turned off.
        let transport = Transport::builder()
            .base_url(b.url())
            .tls_ca_from_env(false)
            .build()
            .unwrap();
        assert_eq!(
            transport.send(chat()).await.unwrap_err().kind(),
            ErrorKind::Tls
        );

        // Without the proxy variables, or with NO_PROXY naming the host: direct.
        let before = proxy.as_ref().map(|p| proxied(&p.requests()));
        let transport = Transport::builder()
            .base_url(a.url())
            .proxy_env(false)
            .build()
            .unwrap();
        transport.send(chat()).await.unwrap();
        let localhost = a.url().replace("127.0.0.1", "localhost");
        let transport = Transport::builder().base_url(localhost).build().unwrap();
        transport.send(chat()).await.unwrap();
        assert_eq!(proxy.as_ref().map(|p| proxied(&p.requests())), before);
        assert_eq!(a.stats().requests_total, 4);
    });
}
