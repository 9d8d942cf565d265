//! TLS material: the generated test CA + leaf certificate, loading PEM files,
//! and building the rustls [`ServerConfig`] (with ALPN) the server uses.
//!
//! Two certificates are generated because rustls refuses a self-signed
//! `CA:TRUE` certificate as an end-entity: a CA (`keyCertSign`, `cRLSign`,
//! unconstrained) and a leaf signed by it (`CA:FALSE`, EKU `serverAuth`)
//! carrying the WNS and login host names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{EmulatorError, HttpVersions, TlsSource};

/// DNS names (and one IP) every generated leaf certificate carries.
pub const DEFAULT_SANS: &[&str] = &[
    "notify.windows.com",
    "*.notify.windows.com",
    "login.live.com",
    "login.microsoftonline.com",
    "localhost",
    "127.0.0.1",
];

/// Certificate chain + key to serve, and the CA PEM when it was generated.
pub(crate) struct ServerTls {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM of the generated CA, `None` for [`TlsSource::Files`].
    pub ca_pem: Option<String>,
}

/// PEM texts of a freshly generated CA and leaf.
pub(crate) struct GeneratedPems {
    /// The CA certificate.
    pub ca_pem: String,
    /// The leaf certificate.
    pub cert_pem: String,
    /// The leaf private key (PKCS#8).
    pub key_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The leaf private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// Generates a CA and a leaf signed by it, valid for [`DEFAULT_SANS`] plus `extra_sans`.
pub(crate) fn generate(extra_sans: &[String]) -> Result<GeneratedPems, EmulatorError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "FleetWake WNS Emulator Test CA");
    ca_dn.push(DnType::OrganizationName, "FleetWake test");
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect();
    for extra in extra_sans {
        if !sans.iter().any(|s| s.eq_ignore_ascii_case(extra)) {
            sans.push(extra.clone());
        }
    }
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(sans)?;
    let mut leaf_dn = DistinguishedName::new();
    leaf_dn.push(DnType::CommonName, "notify.windows.com");
    leaf_params.distinguished_name = leaf_dn;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    Ok(GeneratedPems {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        cert_der: leaf_cert.der().clone(),
        key_der: leaf_key.serialize_der(),
    })
}

/// Produces the certificate chain and key for `source`, writing generated
/// files to `out_dir` when asked.
pub(crate) fn load(source: &TlsSource, extra_sans: &[String]) -> Result<ServerTls, EmulatorError> {
    match source {
        TlsSource::Generate { out_dir } => {
            let g = generate(extra_sans)?;
            if let Some(dir) = out_dir {
                write_out(dir, &g)?;
            }
            Ok(ServerTls {
                chain: vec![g.cert_der],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(g.key_der)),
                ca_pem: Some(g.ca_pem),
            })
        }
        TlsSource::Files { cert_pem, key_pem } => {
            let cert_bytes = read_file(cert_pem)?;
            let chain = CertificateDer::pem_slice_iter(&cert_bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EmulatorError::PemParse {
                    path: cert_pem.clone(),
                    reason: e.to_string(),
                })?;
            if chain.is_empty() {
                return Err(EmulatorError::PemParse {
                    path: cert_pem.clone(),
                    reason: "no CERTIFICATE section found".into(),
                });
            }
            let key_bytes = read_file(key_pem)?;
            let key =
                PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| EmulatorError::PemParse {
                    path: key_pem.clone(),
                    reason: format!("no usable private key: {e}"),
                })?;
            Ok(ServerTls {
                chain,
                key,
                ca_pem: None,
            })
        }
    }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, EmulatorError> {
    std::fs::read(path).map_err(|source| EmulatorError::FileRead {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
fn write_out(dir: &Path, g: &GeneratedPems) -> Result<(), EmulatorError> {
    let wrap = |path: PathBuf| {
        move |source| EmulatorError::FileWrite {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(wrap(dir.to_path_buf()))?;
    for (name, text) in [
        ("ca.pem", &g.ca_pem),
        ("cert.pem", &g.cert_pem),
        ("key.pem", &g.key_pem),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(wrap(path.clone()))?;
    }
    Ok(())
}

/// ALPN protocol ids to offer for `http`.
pub(crate) fn alpn_for(http: HttpVersions) -> Vec<Vec<u8>> {
    match http {
        HttpVersions::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersions::Http1Only => vec![b"http/1.1".to_vec()],
        HttpVersions::Http2Only => vec![b"h2".to_vec()],
    }
}

/// Builds the rustls server configuration with an explicit ring provider.
pub(crate) fn server_config(
    tls: ServerTls,
    http: HttpVersions,
) -> Result<Arc<ServerConfig>, EmulatorError> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(tls.chain, tls.key)?;
    cfg.alpn_protocols = alpn_for(http);
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_leaf_is_accepted_by_rustls() {
        let g = generate(&["push.example.test".into()]).unwrap();
        assert!(g.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(g.key_pem.contains("PRIVATE KEY"));
        let tls = ServerTls {
            chain: vec![g.cert_der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(g.key_der)),
            ca_pem: Some(g.ca_pem),
        };
        let cfg = server_config(tls, HttpVersions::Both).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn files_roundtrip_and_errors() {
        let dir = std::env::temp_dir().join(format!("wns-emu-certs-{}", fastrand::u64(..)));
        let tls = load(
            &TlsSource::Generate {
                out_dir: Some(dir.clone()),
            },
            &[],
        )
        .unwrap();
        assert!(tls.ca_pem.is_some());
        let loaded = load(
            &TlsSource::Files {
                cert_pem: dir.join("cert.pem"),
                key_pem: dir.join("key.pem"),
            },
            &[],
        )
        .unwrap();
        assert_eq!(loaded.chain.len(), 1);
        assert!(loaded.ca_pem.is_none());

        let missing = dir.join("nope.pem");
        let err = load(
            &TlsSource::Files {
                cert_pem: missing.clone(),
                key_pem: dir.join("key.pem"),
            },
            &[],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let err = load(
            &TlsSource::Files {
                cert_pem: dir.join("key.pem"),
                key_pem: dir.join("key.pem"),
            },
            &[],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
