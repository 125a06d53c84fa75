//! TLS to a node's agent, authenticated by the node's own key.
//!
//! An agent serves its log endpoint with a self-signed certificate made from its node key
//! (Ed25519), the key the operator signed into the Node's `spec.nodeKey`. The apiserver pins
//! exactly that key: it accepts a certificate only if its public key is the node key, and the
//! handshake signature is checked against the node key itself (with the crypto provider's
//! Ed25519), so only a peer holding the node's private key completes the handshake. No CA is
//! involved (there is none for nodes), and validity dates do not matter: the signed Node is what
//! vouches for the key. Only TLS 1.3 and Ed25519 are offered. The bearer token is written only
//! after this handshake, so an impostor at the address never receives it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The SubjectPublicKeyInfo (DER) of an Ed25519 public key.
pub fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], &key[..]].concat()
}

/// Accepts exactly the agent that proves one node key.
#[derive(Debug)]
pub struct NodeKeyVerifier {
    spki: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl NodeKeyVerifier {
    /// A verifier for the node whose Ed25519 public key is `node_key`.
    pub fn new(node_key: &[u8; 32]) -> Self {
        let provider = rustls::crypto::ring::default_provider();
        Self { spki: ed25519_spki(node_key), algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for NodeKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if cert.subject_public_key_info().as_ref() != self.spki.as_slice() {
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Only TLS 1.3 is offered, so a peer that signs a TLS 1.2 handshake misbehaves.
        Err(Error::General("node agents are spoken to over TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Against the pinned key, not whatever the certificate says.
        let spki = SubjectPublicKeyInfoDer::from(self.spki.as_slice());
        verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The client configuration that reaches only the agent holding `node_key`.
pub fn client_config(node_key: &[u8; 32]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeKeyVerifier::new(node_key)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// PKCS#8 v1 of an Ed25519 key (RFC 8410), as the agent makes it.
    fn pkcs8(key: &SigningKey) -> Vec<u8> {
        let prefix =
            [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        [&prefix[..], &key.to_bytes()[..]].concat()
    }

    fn key_pair(key: &SigningKey) -> KeyPair {
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8(key)), &rcgen::PKCS_ED25519)
            .unwrap()
    }

    fn self_signed(key: &SigningKey) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "univrs node");
        params.self_signed(&key_pair(key)).unwrap().der().clone()
    }

    fn verify(verifier: &NodeKeyVerifier, cert: &CertificateDer<'_>) -> Result<ServerCertVerified, Error> {
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn only_a_certificate_of_the_node_key_is_accepted() {
        let verifier = NodeKeyVerifier::new(&key(1).verifying_key().to_bytes());
        assert!(verify(&verifier, &self_signed(&key(1))).is_ok());
        assert!(matches!(
            verify(&verifier, &self_signed(&key(2))),
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        ));
        // A certificate issued by a CA (of the node's key, even) for another key: the chain
        // means nothing here, the key is pinned.
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, key_pair(&key(1)));
        let leaf = CertificateParams::new(vec!["node".to_owned()]).unwrap();
        let issued = leaf.signed_by(&key_pair(&key(3)), &issuer).unwrap();
        assert!(verify(&verifier, issued.der()).is_err());
        // A certificate of another algorithm (P-256) is not the node key either.
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&p256).unwrap();
        assert!(verify(&verifier, cert.der()).is_err());
        // No certificate: nothing, or bytes that are not one.
        for junk in [&b""[..], b"\x30\x03\x02\x01\x00", b"not a certificate"] {
            assert!(matches!(
                verify(&verifier, &CertificateDer::from(junk.to_vec())),
                Err(Error::InvalidCertificate(CertificateError::BadEncoding))
            ));
        }
    }

    /// Presents `cert` and signs the handshake with `signer`, whether they match or not.
    #[derive(Debug)]
    struct Presents(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Presents {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn server(cert: CertificateDer<'static>, signer: &SigningKey) -> Arc<rustls::ServerConfig> {
        let provider = rustls::crypto::ring::default_provider();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(signer)));
        let signing = provider.key_provider.load_private_key(der).unwrap();
        let certified = rustls::sign::CertifiedKey::new(vec![cert], signing);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Presents(Arc::new(certified))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A handshake between a client pinned to `node_key` and `server`; on success the client
    /// writes a secret. Returns whether the client connected and what the server read.
    async fn handshake(node_key: &SigningKey, server: Arc<rustls::ServerConfig>) -> (bool, Vec<u8>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let serving = tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(server_io).await else { return Vec::new() };
            let mut read = Vec::new();
            let _ = tls.read_to_end(&mut read).await;
            read
        });
        let connector = tokio_rustls::TlsConnector::from(client_config(&node_key.verifying_key().to_bytes()));
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let connected = match connector.connect(name, client_io).await {
            Ok(mut tls) => {
                tls.write_all(b"Authorization: Bearer secret").await.unwrap();
                tls.shutdown().await.unwrap();
                // Until the server is done (it may still write after the handshake).
                let _ = tls.read_to_end(&mut Vec::new()).await;
                true
            }
            Err(_) => false,
        };
        (connected, serving.await.unwrap())
    }

    #[tokio::test]
    async fn only_the_holder_of_the_node_key_completes_the_handshake() {
        let node = key(1);
        // The agent: its own certificate, signed with its own key.
        let (ok, read) = handshake(&node, server(self_signed(&node), &node)).await;
        assert!(ok);
        assert_eq!(read, b"Authorization: Bearer secret");
        // Another node's agent at the address.
        let (ok, read) = handshake(&node, server(self_signed(&key(2)), &key(2))).await;
        assert!(!ok);
        assert!(read.is_empty());
        // An impostor replaying the node's certificate without its private key.
        let (ok, read) = handshake(&node, server(self_signed(&node), &key(2))).await;
        assert!(!ok, "a certificate without the key proves nothing");
        assert!(read.is_empty());
    }
}
