//! The rustls client configuration: roots chosen by feature and setting (the compiled-in
//! Mozilla set, the operating system's store, CA bundles from files or the environment's
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`), an optional client certificate (mTLS), and ring as the
//! crypto provider (it builds faster than aws-lc-rs and needs no C toolchain beyond `cc`).
//!
//! Files are read once, when the transport is built: never on the request path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use volley_core::{Error, ErrorKind};

/// Which roots a transport trusts, and who it is when the server asks (mTLS).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsRoots {
    pub(crate) webpki: bool,
    pub(crate) native: bool,
    pub(crate) extra_der: Vec<Vec<u8>>,
    /// PEM bundles to trust: (where it came from, its bytes or its path).
    pub(crate) extra_pem: Vec<PemSource>,
    /// Whether `SSL_CERT_FILE` / `SSL_CERT_DIR` are read when no CA was given explicitly.
    pub(crate) env: bool,
    pub(crate) identity: Option<Identity>,
}

/// A PEM document given as bytes or as a file.
#[derive(Clone)]
pub(crate) enum PemSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path, or the size: never the bytes (a key may be among them).
        match self {
            PemSource::Bytes(bytes) => write!(f, "<{} PEM bytes>", bytes.len()),
            PemSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) cert: PemSource,
    pub(crate) key: PemSource,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's bytes are a secret; its path is not.
        let key = match &self.key {
            PemSource::Bytes(_) => "<PEM bytes>".to_owned(),
            PemSource::File(path) => path.display().to_string(),
        };
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &key)
            .finish()
    }
}

impl TlsRoots {
    fn explicit_ca(&self) -> bool {
        !self.extra_der.is_empty() || !self.extra_pem.is_empty()
    }
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
        store.add(CertificateDer::from(der.clone())).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "an added TLS root certificate is not a valid DER certificate",
            )
            .with_source(e)
        })?;
    }
    for pem in &roots.extra_pem {
        add_pem(&mut store, pem, "the CA certificate setting")?;
    }
    if roots.env && !roots.explicit_ca() {
        let certs = env_certs()
            .as_ref()
            .map_err(|message| Error::new(ErrorKind::Config, message.clone()))?;
        store.add_parsable_certificates(certs.iter().cloned());
    }
    if store.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "no TLS root certificates: enable the `webpki-roots` or `native-roots` feature, \
             or add a root certificate",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, "TLS protocol versions").with_source(e))?
        .with_root_certificates(store);
    match &roots.identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let (certs, key) = load_identity(identity)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    "the client certificate and key do not belong together or are not usable",
                )
                .with_source(e)
            })
        }
    }
}

/// The certificates of `SSL_CERT_FILE` (a PEM bundle) and `SSL_CERT_DIR` (a `:`-separated
/// list of directories, as OpenSSL reads it), read once per process: the variables, and the
/// files (a system directory holds hundreds). Empty values count as unset. An unreadable or
/// empty `SSL_CERT_FILE` is an error (the message, kept to be reported by every build); files
/// in the directories that hold no certificate are skipped, as OpenSSL does.
fn env_certs() -> &'static Result<Vec<CertificateDer<'static>>, String> {
    static CERTS: OnceLock<Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    CERTS.get_or_init(|| {
        let mut certs = Vec::new();
        if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
            let source = PemSource::File(PathBuf::from(file));
            // The report keeps each cause once: the message, then its source's text.
            let found = pem_certs(&source, "SSL_CERT_FILE").map_err(|e| e.report().to_string())?;
            certs.extend(found);
        }
        if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
            for dir in std::env::split_paths(&dirs).filter(|p| !p.as_os_str().is_empty()) {
                dir_certs(&dir, &mut certs);
            }
        }
        Ok(certs)
    })
}

fn describe(source: &PemSource, setting: &str) -> String {
    match source {
        PemSource::Bytes(_) => format!("the PEM given to {setting}"),
        PemSource::File(path) => format!("{} (from {setting})", path.display()),
    }
}

fn read(source: &PemSource, setting: &str) -> Result<Vec<u8>, Error> {
    match source {
        PemSource::Bytes(bytes) => Ok(bytes.clone()),
        PemSource::File(path) => std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("could not read {}", describe(source, setting)),
            )
            .with_source(e)
        }),
    }
}

/// Adds every certificate of a PEM bundle; a bundle with none, or a broken one, is an error.
fn add_pem(store: &mut RootCertStore, source: &PemSource, setting: &str) -> Result<(), Error> {
    for cert in pem_certs(source, setting)? {
        store.add(cert).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{} holds a certificate that cannot be used",
                    describe(source, setting)
                ),
            )
            .with_source(e)
        })?;
    }
    Ok(())
}

/// The certificates of a PEM bundle; one with none, or a broken one, is an error.
fn pem_certs(source: &PemSource, setting: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(source, setting)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{} is not a valid PEM file", describe(source, setting)),
            )
            .with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                describe(source, setting)
            ),
        ));
    }
    Ok(certs)
}

/// The certificates of every file in an OpenSSL certificate directory; unreadable files and
/// files that hold no certificate (CRLs, notes) are skipped, as OpenSSL does.
fn dir_certs(dir: &Path, certs: &mut Vec<CertificateDer<'static>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::debug!(dir = %dir.display(), "SSL_CERT_DIR: cannot read the directory");
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        certs.extend(CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok));
    }
}

fn load_identity(
    identity: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    const SETTING: &str = "the client certificate setting";
    let bytes = read(&identity.cert, SETTING)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{} is not a valid PEM file",
                    describe(&identity.cert, SETTING)
                ),
            )
            .with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                describe(&identity.cert, SETTING)
            ),
        ));
    }
    const KEY_SETTING: &str = "the client key setting";
    let bytes = read(&identity.key, KEY_SETTING)?;
    // The parser's error is left out: it could quote the key.
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                describe(&identity.key, KEY_SETTING)
            ),
        )
    })?;
    Ok((certs, key))
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
        let certs = NATIVE.get_or_init(load);
        let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no usable root certificates were found in the operating system's store \
                     ({WHERE})"
                ),
            ));
        }
        Ok(())
    }

    /// Where [`load`] looks, for the error that finds nothing there.
    #[cfg(all(unix, not(target_os = "macos")))]
    const WHERE: &str =
        "the system's bundle file and certificate directories, such as /etc/ssl/certs";
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    const WHERE: &str = "the platform's certificate store";

    /// The system's bundle files, as OpenSSL's probe looks for them (its list is private):
    /// the first that exists is read, as the probe reads it.
    #[cfg(all(unix, not(target_os = "macos")))]
    const BUNDLES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/ssl/cert.pem",
        "/opt/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/certs/cacert.pem",
        "/usr/local/etc/ssl/cert.pem",
        "/usr/local/share/certs/ca-root-nss.crt",
        "/etc/openssl/certs/ca-certificates.crt",
        "/etc/certs/ca-certificates.crt",
        "/etc/ssl/cacert.pem",
    ];

    /// The system's bundle file and certificate directories (`/etc/ssl/certs/ca-certificates.crt`,
    /// `/etc/ssl/certs`, `/etc/pki/tls/certs`, ...), as OpenSSL's probe finds them. Not
    /// `rustls_native_certs::load_native_certs`: it reads `SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// *instead of* the system's store when they are set, where Volley reads them under its
    /// own rules (added to the roots, never read when a CA is given or
    /// [`tls_ca_from_env`](crate::Builder::tls_ca_from_env) is off).
    #[cfg(all(unix, not(target_os = "macos")))]
    fn load() -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let mut certs = Vec::new();
        let bundle = BUNDLES
            .iter()
            .map(std::path::Path::new)
            .find(|path| path.exists());
        if let Some(bundle) = bundle {
            certs.extend(rustls_native_certs::load_certs_from_paths(Some(bundle), None).certs);
        }
        for dir in openssl_probe::candidate_cert_dirs() {
            certs.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
        }
        // A bundle file in one directory repeats certificates another holds.
        certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certs.dedup();
        certs
    }

    /// The platform's store (Keychain, the Windows store). rustls-native-certs reads
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` instead when they are set.
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    fn load() -> Vec<rustls::pki_types::CertificateDer<'static>> {
        rustls_native_certs::load_native_certs().certs
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
