//! The rustls client configuration: roots chosen by feature and setting, ring as the crypto
//! provider (it builds faster than aws-lc-rs and needs no C toolchain beyond `cc`).

use std::sync::Arc;

use rustls::RootCertStore;
use volley_core::{Error, ErrorKind};

/// Which roots a transport trusts.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsRoots {
    pub(crate) webpki: bool,
    pub(crate) native: bool,
    pub(crate) extra_der: Vec<Vec<u8>>,
}

pub(crate) fn client_config(roots: &TlsRoots) -> Result<rustls::ClientConfig, Error> {
    let mut store = RootCertStore::empty();
    if roots.webpki {
        webpki::add(&mut store)?;
    }
    if roots.native {
        native::add(&mut store)?;
    }
    for der in &roots.extra_der {
        store
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    "an added TLS root certificate is not a valid DER certificate",
                )
                .with_source(e)
            })?;
    }
    if store.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "no TLS root certificates: enable the `webpki-roots` or `native-roots` feature, \
             or add a root certificate",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, "TLS protocol versions").with_source(e))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(feature = "webpki-roots")]
mod webpki {
    use super::*;

    pub(super) fn add(store: &mut RootCertStore) -> Result<(), Error> {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Ok(())
    }
}

#[cfg(not(feature = "webpki-roots"))]
mod webpki {
    use super::*;

    pub(super) fn add(_: &mut RootCertStore) -> Result<(), Error> {
        Err(Error::new(
            ErrorKind::Config,
            "the Mozilla (webpki) root certificates were asked for, but volley-transport was \
             built without its `webpki-roots` feature",
        ))
    }
}

#[cfg(feature = "native-roots")]
mod native {
    use std::sync::OnceLock;

    use super::*;

    /// Loading the system's store reads files: do it once per process.
    static NATIVE: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();

    pub(super) fn add(store: &mut RootCertStore) -> Result<(), Error> {
        let certs = NATIVE.get_or_init(|| rustls_native_certs::load_native_certs().certs);
        let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "no usable root certificates were found in the operating system's store",
            ));
        }
        Ok(())
    }
}

#[cfg(not(feature = "native-roots"))]
mod native {
    use super::*;

    pub(super) fn add(_: &mut RootCertStore) -> Result<(), Error> {
        Err(Error::new(
            ErrorKind::Config,
            "the operating system's root certificates were asked for, but volley-transport was \
             built without its `native-roots` feature",
        ))
    }
}
