//! The rustls client configuration: the public WebPKI roots plus any extra CA
//! certificates the user trusts (a test CA, a corporate TLS proxy), and ALPN as
//! the HTTP policy allows. There is deliberately no way to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::HttpPolicy;

/// A CA certificate file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be read or holds no PEM certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// PEM text given inline holds no certificate.
    #[error("CA PEM text: {0}")]
    CaPem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate in a PEM file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |reason: String| TlsConfigError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads every certificate in PEM text.
pub fn load_ca_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError::CaPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::CaPem("no PEM certificate".into()));
    }
    Ok(certs)
}

/// Builds the TLS half of every connection: hyper-rustls over `tcp`, with a
/// rustls client config (ring provider, the roots above) whose ALPN list the
/// HTTP policy decides: `h2` and `http/1.1` (auto), `h2` only, or none
/// (HTTP/1.1 only; servers then speak HTTP/1.1).
pub(crate) fn https_connector<T>(
    extra_cas: &[CertificateDer<'static>],
    webpki_roots: bool,
    policy: HttpPolicy,
    tcp: T,
) -> Result<hyper_rustls::HttpsConnector<T>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    if webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for ca in extra_cas {
        roots.add(ca.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only();
    Ok(match policy {
        HttpPolicy::Auto => builder.enable_all_versions().wrap_connector(tcp),
        HttpPolicy::Http1Only => builder.enable_http1().wrap_connector(tcp),
        HttpPolicy::Http2Only => builder.enable_http2().wrap_connector(tcp),
    })
}
