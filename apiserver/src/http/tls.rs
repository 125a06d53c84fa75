//! TLS for the client API without an outside CA: each cluster makes its own CA at its first
//! start and keeps it in the data dir; the server's certificate is issued by it at every start
//! (for the names and addresses it serves on), and the kubeconfig carries the CA.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the data dir failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Making a key or certificate failed.
    #[error("cannot make a certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The cluster's TLS material.
#[derive(Clone)]
pub struct Tls {
    /// The CA certificate (PEM), for clients.
    pub ca_pem: String,
    /// The server configuration.
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.display().to_string(), source }
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::member::write_private(path, bytes).map_err(io(path))
}

fn ca_params(cluster: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("univrs cluster {cluster} CA"));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    Ok(params)
}

/// Loads the CA of `cluster` from `dir` (making it on first use) and issues a server
/// certificate for `names` (DNS names or IP addresses).
pub fn load_or_create(dir: &Path, cluster: &str, names: &[String]) -> Result<Tls, TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_key_path, ca_cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
    if !ca_key_path.exists() {
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster)?.self_signed(&key)?;
        write_private(&ca_cert_path, cert.pem().as_bytes())?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
    }
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?)?;
    let ca_pem = std::fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
    // The CA is rebuilt from its key and its fixed name: certificates it issues chain to the
    // stored CA certificate.
    let issuer = Issuer::new(ca_params(cluster)?, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, "univrs apiserver");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls { ca_pem, config: Arc::new(config) })
}
