//! TLS trust against a TLS mock whose certificate a CA made by the test signed: the CA from a
//! file or PEM bytes, an unknown CA refused with a message naming the host and the fix,
//! unusable CA files reported at build time, and client certificates (mutual TLS).

mod common;

use common::*;
use volley_core::ErrorKind;
use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::tls::TestPki;
use volley_transport::Transport;

async fn tls_mock(pki: &TestPki, client_ca: Option<&TestPki>) -> MockServer {
    let tls = MockTls::new(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        client_ca.map(|ca| ca.ca_pem.as_bytes()),
    )
    .unwrap();
    MockServer::start_tls(MockConfig::default(), tls)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_private_ca_from_a_file_is_trusted_alongside_the_default_roots() {
    let pki = TestPki::new("file");
    let server = tls_mock(&pki, None).await;
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_file(pki.ca_file())
        .build()
        .unwrap();
    transport.send(chat()).await.unwrap();
    // A bundle of several certificates: another CA first, then ours.
    let other = TestPki::new("other");
    let bundle = format!("{}{}", other.ca_pem, pki.ca_pem);
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(bundle)
        .build()
        .unwrap();
    transport.send(chat()).await.unwrap();
    assert_eq!(server.stats().requests_total, 2);
}

#[tokio::test]
async fn an_unknown_ca_is_refused_naming_the_host_and_the_fix() {
    let pki = TestPki::new("unknown");
    let server = tls_mock(&pki, None).await;
    for http2 in [false, true] {
        // Trusts the default roots and another private CA, not the server's.
        let other = TestPki::new("not-the-one");
        let transport = Transport::builder()
            .base_url(server.url())
            .tls_ca_pem(other.ca_pem.as_bytes())
            .http2(http2)
            .build()
            .unwrap();
        let err = transport.send(chat()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("TLS handshake with 127.0.0.1 failed"),
            "{text}"
        );
        assert!(
            text.contains("not signed by a trusted certificate authority"),
            "{text}"
        );
        assert!(text.contains("--ca-cert"), "{text}");
    }
    assert_eq!(server.stats().requests_total, 0);
}

#[test]
fn unusable_ca_files_fail_the_build_naming_them() {
    let pki = TestPki::new("bad-files");
    let missing = pki.dir().join("missing.pem");
    let err = Transport::builder()
        .base_url("https://127.0.0.1:1/v1")
        .tls_ca_file(&missing)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key is not a certificate.
    let err = Transport::builder()
        .base_url("https://127.0.0.1:1/v1")
        .tls_ca_file(pki.client_key_file())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("PRIVATE KEY"), "{err:?}");
    // A client certificate without a usable key.
    let err = Transport::builder()
        .base_url("https://127.0.0.1:1/v1")
        .tls_client_identity_files(pki.client_cert_file(), pki.ca_file())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("no usable PEM private key"),
        "{err}"
    );
}

/// A server that wants a client certificate refuses the first request at the handshake,
/// over HTTP/1.1 and over HTTP/2 (where h2 keeps the TLS alert as text only: it was a broken
/// connection, the request counted as sent): a TLS error that says what to give, the request
/// not sent. With the certificate, from files or PEM, it answers.
#[tokio::test]
async fn client_certificates_satisfy_a_server_that_requires_them() {
    let pki = TestPki::new("mtls");
    let server = tls_mock(&pki, Some(&pki)).await;
    for http2 in [false, true] {
        let without = Transport::builder()
            .base_url(server.url())
            .tls_ca_file(pki.ca_file())
            .http2(http2)
            .build()
            .unwrap();
        let err = without.send(chat()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "http2 {http2}: {err}");
        assert!(err.to_string().contains("--client-cert"), "{err}");
        // Refused at the handshake, the request was never processed: safe to send again.
        assert!(!err.is_request_sent(), "http2 {http2}: {err}");

        let with = Transport::builder()
            .base_url(server.url())
            .tls_ca_file(pki.ca_file())
            .tls_client_identity_files(pki.client_cert_file(), pki.client_key_file())
            .http2(http2)
            .build()
            .unwrap();
        with.send(chat()).await.unwrap();
    }
    let from_pem = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .tls_client_identity_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .build()
        .unwrap();
    from_pem.send(chat()).await.unwrap();
    assert!(!format!("{from_pem:?}").contains("PRIVATE KEY"));
    assert_eq!(server.stats().requests_total, 3);
}

/// A TLS failure after the request was written and read (here a corrupted record where the
/// answer should be) may come after the server did the work: the request counts as sent, so
/// that nothing sends it again as if it had never left.
#[tokio::test]
async fn a_tls_failure_after_the_request_was_read_counts_as_sent() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = TestPki::new("corrupt");
    let certs = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(socket).await.unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before its request");
            request.extend_from_slice(&chunk[..n]);
        }
        read_tx.send(()).unwrap();
        // An application-data record that no key decrypts, in place of the answer.
        let (mut socket, _) = tls.into_inner();
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        record.extend((0..0x40u8).map(|i| i.wrapping_mul(37)));
        socket.write_all(&record).await.unwrap();
        let _ = socket.read(&mut chunk).await;
    });
    let transport = Transport::builder()
        .base_url(format!("https://127.0.0.1:{port}/v1"))
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let err = transport.send(chat()).await.unwrap_err();
    read_rx.await.expect("the server read the request");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(err.is_request_sent(), "{err}");
    assert!(
        err.to_string().contains("after the request was sent"),
        "{err}"
    );
}

#[tokio::test]
async fn alpn_negotiates_h2_over_tls_and_multiplexes() {
    let pki = TestPki::new("alpn");
    let server = MockServer::start_tls(
        MockConfig {
            latency: "100ms".parse().unwrap(),
            ..MockConfig::default()
        },
        MockTls::new(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            None,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let transport = Transport::builder()
        .base_url(server.url())
        .tls_ca_pem(pki.ca_pem.as_bytes())
        .http2(true)
        .build()
        .unwrap();
    // The first request finds out (ALPN) that the server speaks h2; then 20 at once share its
    // one connection, where HTTP/1.1 would need one connection each.
    transport.send(chat()).await.unwrap();
    let results = futures_util::future::join_all((0..20).map(|_| transport.send(chat()))).await;
    assert!(results.iter().all(Result::is_ok));
    let stats = transport.stats();
    assert_eq!(stats.opened, 1, "h2 over TLS multiplexes: {stats:?}");
    assert_eq!(stats.requests, 21);
    assert_eq!(server.stats().requests_total, 21);
}

/// A server that accepts the TCP connection and never answers the TLS handshake (a
/// black-holed load balancer): the connection fails within its connect timeouts, as a
/// connect failure through which nothing was sent, HTTP/1.1 and HTTP/2 alike.
#[tokio::test]
async fn a_silent_tls_handshake_fails_within_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for http2 in [false, true] {
        let transport = Transport::builder()
            .base_url(format!("https://127.0.0.1:{port}/v1"))
            .connect_timeout(Some(std::time::Duration::from_millis(300)))
            .http2(http2)
            .build()
            .unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(20), transport.send(chat()))
            .await
            .expect("the handshake's bound ended the attempt")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
        assert!(!err.is_request_sent(), "{err}");
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    }
}
