//! A throwaway CA for TLS test servers, trusted by naming its PEM file (the
//! sidecars' `upstream_ca`) or its DER in a client's root store.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Holds `ca_path`; tests put their other files here too, so they go
    /// away with the CA.
    pub dir: tempfile::TempDir,
    /// The CA certificate as PEM.
    pub ca_path: PathBuf,
}

/// A certificate signed by the test CA and its key.
pub struct Leaf {
    /// Leaf first, then the CA, as a server sends it.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `chain` as PEM, for servers that read files.
    pub chain_pem: String,
    pub key_pem: String,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        crate::install_crypto_provider();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "bot-bottle test upstream CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, issuer.pem()).unwrap();
        Pki {
            issuer,
            dir,
            ca_path,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// `names` become subject alternative names (an IP literal as an IP).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            chain: vec![cert.der().clone(), self.ca_der()],
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem()),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server for one host name offering `alpn`.
    pub fn server_config(&self, host: &str, alpn: &[&[u8]]) -> rustls::ServerConfig {
        self.server_config_for(&[host], alpn)
    }

    pub fn server_config_for(&self, names: &[&str], alpn: &[&[u8]]) -> rustls::ServerConfig {
        let leaf = self.leaf(names);
        let mut cfg = rustls::ServerConfig::builder_with_provider(crate::ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}
