//! HTTPS serving, for tests of TLS trust, of proxies' `CONNECT` tunnels and of mutual TLS:
//! the same server as [`MockServer::start`], behind rustls (ring), with ALPN `h2` and
//! `http/1.1`. The mock serves plain HTTP unless started with [`MockServer::start_tls`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::{MockConfig, MockServer};

/// The certificate a TLS mock presents, and optionally the CA its clients' certificates must
/// come from (mutual TLS).
#[derive(Clone)]
pub struct MockTls {
    acceptor: TlsAcceptor,
    mutual: bool,
}

impl fmt::Debug for MockTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTls")
            .field("client_certificates_required", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl MockTls {
    /// Presents `cert_chain_pem` (leaf first) with its private key `key_pem` (PKCS#8, PKCS#1
    /// or SEC1). With `client_ca_pem`, every client must present a certificate that CA
    /// signed, or the handshake fails.
    ///
    /// # Errors
    /// `InvalidInput` when a PEM holds no certificate or key, or they do not match.
    pub fn new(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> io::Result<MockTls> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("the certificate chain is not valid PEM"))?;
        if certs.is_empty() {
            return Err(invalid("the certificate chain holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| invalid("the private key is not a valid PEM key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|_| invalid("the client CA is not valid PEM"))?;
                    roots
                        .add(cert)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(MockTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mutual: client_ca_pem.is_some(),
        })
    }
}

impl MockServer {
    /// Starts an HTTPS server on `127.0.0.1` with a free port, presenting `tls`'s
    /// certificate; [`MockServer::url`] is then `https://127.0.0.1:PORT/v1`. HTTP/1.1 and
    /// HTTP/2 are offered by ALPN. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// An invalid `config` (`InvalidInput`), or the socket cannot be bound.
    pub async fn start_tls(config: MockConfig, tls: MockTls) -> io::Result<MockServer> {
        MockServer::bind_with(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            config,
            Some(tls.acceptor),
        )
        .await
    }
}
