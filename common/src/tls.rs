//! The cluster's certificate authority and the mutual-TLS configurations built on it.
//!
//! Every cluster gets its own CA at creation; its certificate is the cluster's trust anchor
//! (`customerCA.crt`). Each node gets a certificate from it that serves as both server and
//! client identity (for peer links), and each client (the KMS frontend, the cluster CLI) gets a
//! client-only certificate. A connection whose certificate does not chain to the CA never
//! completes its handshake. Only TLS 1.3 is offered.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;

use crate::secret::SecretString;

/// The name every node certificate carries and every client checks: any node of the cluster's
/// CA is a valid endpoint, the CA is the trust boundary.
pub const NODE_SERVER_NAME: &str = "hsm-node.hsmkms.internal";
/// The name only node certificates carry; it entitles a connection to the peer calls.
pub const PEER_NAME: &str = "peer.hsmkms.internal";
/// The name client certificates carry.
pub const CLIENT_NAME: &str = "client.hsmkms.internal";

/// Why building or using TLS material failed.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error("client verifier configuration failed: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM data is not valid: {0}")]
    Pem(String),
}

/// What a certificate entitles its holder to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// An HSM node: server, and client of its peers.
    Node,
    /// A client of the cluster: the KMS frontend, the CLI.
    Client,
}

/// A certificate and its private key, in PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// A cluster's certificate authority.
#[derive(Debug)]
pub struct ClusterCa {
    pub identity: Identity,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
}

impl ClusterCa {
    /// A new CA for `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("hsmkms {cluster_id} customer CA"),
        );
        dn.push(DnType::OrganizationName, "hsmkms");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            identity: Identity {
                cert_pem: cert.pem(),
                key_pem: SecretString::new(key.serialize_pem()),
            },
        })
    }

    /// Issues a certificate for `name` (an HSM id, or a client's name).
    pub fn issue(&self, kind: CertKind, name: &str) -> Result<Identity, TlsError> {
        let ca_key = KeyPair::from_pem(self.identity.key_pem.expose())?;
        let ca_cert =
            CertificateParams::from_ca_cert_pem(&self.identity.cert_pem)?.self_signed(&ca_key)?;
        let (sans, ekus) = match kind {
            CertKind::Node => (
                vec![NODE_SERVER_NAME.to_string(), PEER_NAME.to_string()],
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            CertKind::Client => (
                vec![CLIENT_NAME.to_string()],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        };
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = ekus;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: SecretString::new(key.serialize_pem()),
        })
    }
}

/// A certificate signing request for a cluster, as an UNINITIALIZED CloudHSM cluster offers
/// (`ClusterCsr`), to be signed by the customer's CA. Returns the CSR in PEM.
pub fn cluster_csr(cluster_id: &str, hsm_id: &str) -> Result<String, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("HSM:{hsm_id}:PARTN:1, for FIPS mode"),
    );
    dn.push(DnType::OrganizationName, format!("hsmkms {cluster_id}"));
    params.distinguished_name = dn;
    let key = KeyPair::generate()?;
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Checks what InitializeCluster is given: `signed_pem` must be a certificate for the key of
/// `csr_pem`, signed by the key of `anchor_pem`, itself a certificate.
pub fn verify_signed_csr(csr_pem: &str, signed_pem: &str, anchor_pem: &str) -> Result<(), String> {
    use x509_parser::prelude::*;
    let der_of = |what: &str, pem: &str| -> Result<Vec<u8>, String> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map(|d| d.to_vec())
            .map_err(|_| format!("{what} is not a PEM certificate"))
    };
    let signed_der = der_of("SignedCert", signed_pem)?;
    let anchor_der = der_of("TrustAnchor", anchor_pem)?;
    let (_, signed) = X509Certificate::from_der(&signed_der)
        .map_err(|e| format!("SignedCert is not a valid certificate: {e}"))?;
    let (_, anchor) = X509Certificate::from_der(&anchor_der)
        .map_err(|e| format!("TrustAnchor is not a valid certificate: {e}"))?;
    signed
        .verify_signature(Some(anchor.public_key()))
        .map_err(|_| "SignedCert is not signed by the TrustAnchor".to_string())?;
    let (_, csr_pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| format!("the cluster's CSR is unreadable: {e}"))?;
    let (_, csr) = X509CertificationRequest::from_der(&csr_pem.contents)
        .map_err(|e| format!("the cluster's CSR is unreadable: {e}"))?;
    if csr.certification_request_info.subject_pki.raw != signed.public_key().raw {
        return Err("SignedCert does not certify the key of the cluster's CSR".into());
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem("no CA certificate found".into()));
    }
    Ok(roots)
}

fn chain_and_key(
    id: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.expose().as_bytes())
        // The error names the PEM section, never its content.
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    Ok((certs, key))
}

/// A node's server side: TLS 1.3 only, and a client certificate from the cluster CA required.
pub fn server_config(ca_pem: &str, id: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .build()?;
    let (certs, key) = chain_and_key(id)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The client side of a node connection (a peer link, the frontend, the CLI).
pub fn client_config(ca_pem: &str, id: &Identity) -> Result<Arc<ClientConfig>, TlsError> {
    let (certs, key) = chain_and_key(id)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The server name clients present and check.
pub fn node_server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls_pki_types::DnsName::try_from(NODE_SERVER_NAME)
            .map(|n| n.to_owned())
            // NODE_SERVER_NAME is a constant, valid DNS name.
            .unwrap_or_else(|_| unreachable_dns_name()),
    )
}

#[allow(clippy::unwrap_used)]
fn unreachable_dns_name() -> rustls_pki_types::DnsName<'static> {
    // Only reached if the constant above were not a DNS name, which a unit test rules out.
    rustls_pki_types::DnsName::try_from("localhost").unwrap()
}

/// Whether an (already CA-verified) end-entity certificate is a node's, entitling its holder to
/// the peer calls.
pub fn is_peer_certificate(der: &CertificateDer<'_>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(PEER_NAME) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_client_certificates_are_told_apart() -> Result<(), TlsError> {
        let ca = ClusterCa::generate("cluster-abcdefghijk")?;
        let node = ca.issue(CertKind::Node, "hsm-abcdefghijk")?;
        let client = ca.issue(CertKind::Client, "frontend")?;
        let node_der = chain_and_key(&node)?.0.remove(0);
        let client_der = chain_and_key(&client)?.0.remove(0);
        assert!(is_peer_certificate(&node_der));
        assert!(!is_peer_certificate(&client_der));
        assert!(server_config(&ca.identity.cert_pem, &node).is_ok());
        assert!(client_config(&ca.identity.cert_pem, &client).is_ok());
        assert!(
            matches!(node_server_name(), ServerName::DnsName(n) if n.as_ref() == NODE_SERVER_NAME)
        );
        Ok(())
    }

    fn sign(csr: &str, ca: &ClusterCa) -> Result<String, TlsError> {
        let ca_key = KeyPair::from_pem(ca.identity.key_pem.expose())?;
        let ca_cert =
            CertificateParams::from_ca_cert_pem(&ca.identity.cert_pem)?.self_signed(&ca_key)?;
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr)?;
        Ok(request.signed_by(&ca_cert, &ca_key)?.pem())
    }

    #[test]
    fn initialization_accepts_only_the_csr_signed_by_the_anchor() -> Result<(), TlsError> {
        let customer = ClusterCa::generate("customer")?;
        let stranger = ClusterCa::generate("stranger")?;
        let csr = cluster_csr("cluster-abcdefghijk", "hsm-abcdefghijk")?;
        let signed = sign(&csr, &customer)?;
        let anchor = &customer.identity.cert_pem;
        assert_eq!(verify_signed_csr(&csr, &signed, anchor), Ok(()));
        // Signed by another CA than the anchor given.
        let by_stranger = sign(&csr, &stranger)?;
        assert!(verify_signed_csr(&csr, &by_stranger, anchor).is_err());
        // A certificate for another key than the CSR's.
        let other_csr = cluster_csr("cluster-abcdefghijk", "hsm-abcdefghijk")?;
        let other = sign(&other_csr, &customer)?;
        assert!(verify_signed_csr(&csr, &other, anchor).is_err());
        assert!(verify_signed_csr(&csr, "not a certificate", anchor).is_err());
        Ok(())
    }

    #[test]
    fn ca_key_never_shows_in_debug() -> Result<(), TlsError> {
        let ca = ClusterCa::generate("cluster-abcdefghijk")?;
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE KEY"));
        Ok(())
    }
}
