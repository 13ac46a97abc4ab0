//! Leaf certificates minted from the bottle CA for intercepted TLS, cached per host.
//!
//! One key pair serves every leaf (the CA key is the secret that matters; the leaf key never
//! leaves memory). The cache is bounded: the oldest host is evicted first.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;

/// How many hosts' certificates stay cached.
pub const LEAF_CACHE_SIZE: usize = 1024;

pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaf_key: KeyPair,
    cache: Mutex<LeafCache>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Minter(<ca>)")
    }
}

#[derive(Default)]
struct LeafCache {
    map: HashMap<String, Arc<ServerConfig>>,
    order: VecDeque<String>,
}

impl Minter {
    /// Loads the CA certificate and key (PEM) from the files named in the config.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Minter, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Io {
                path: p.to_path_buf(),
                source: e,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| Error::Ca {
            path: key_path.to_path_buf(),
            message:
                "not a PEM private key rcgen can use (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA)"
                    .into(),
        })?;
        Minter::from_parts(&cert_pem, key).map_err(|message| Error::Ca {
            path: cert_path.to_path_buf(),
            message,
        })
    }

    /// Builds a minter from a CA certificate (PEM) and its key (PEM). For tests.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Minter, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Ca {
            path: "<memory>".into(),
            message: e.to_string(),
        })?;
        Minter::from_parts(cert_pem, key).map_err(|message| Error::Ca {
            path: "<memory>".into(),
            message,
        })
    }

    fn from_parts(cert_pem: &str, key: KeyPair) -> Result<Minter, String> {
        use rustls_pki_types::pem::PemObject;
        let ca_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| "not a PEM certificate".to_string())?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| format!("cannot use as a CA certificate: {e}"))?;
        let leaf_key = KeyPair::generate().map_err(|e| format!("leaf key: {e}"))?;
        Ok(Minter {
            issuer,
            ca_der,
            leaf_key,
            cache: Mutex::new(LeafCache::default()),
        })
    }

    /// The CA certificate (DER), e.g. for tests that trust it.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A rustls server config presenting a leaf for `host` (a normalised name or IP literal),
    /// offering h2 and http/1.1.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, Error> {
        if let Some(c) = self.cache.lock().expect("leaf cache").map.get(host) {
            return Ok(c.clone());
        }
        let cfg = Arc::new(self.mint(host)?);
        let mut cache = self.cache.lock().expect("leaf cache");
        if !cache.map.contains_key(host) {
            while cache.order.len() >= LEAF_CACHE_SIZE {
                if let Some(old) = cache.order.pop_front() {
                    cache.map.remove(&old);
                }
            }
            cache.order.push_back(host.to_string());
            cache.map.insert(host.to_string(), cfg.clone());
        }
        Ok(cfg)
    }

    /// Number of cached leaves (tests check the bound).
    pub fn cached(&self) -> usize {
        self.cache.lock().expect("leaf cache").map.len()
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, Error> {
        let err = |message: String| Error::Mint {
            host: host.to_string(),
            message,
        };
        // CertificateParams::new turns an IP literal into an IP SAN and a name into a DNS SAN.
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|e| err(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| err(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key)
                .map_err(|e| err(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// Generates a CA (certificate PEM, key PEM) for tests and local runs.
pub fn generate_ca(common_name: &str) -> Result<(String, String), Error> {
    let err = |e: rcgen::Error| Error::Mint {
        host: common_name.to_string(),
        message: e.to_string(),
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_and_caches_bounded() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (c, k) = generate_ca("test ca").unwrap();
        let m = Minter::from_pem(&c, &k).unwrap();
        let a = m.server_config("api.example.test").unwrap();
        let b = m.server_config("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        m.server_config("127.0.0.1").unwrap();
        m.server_config("::1").unwrap();
        assert_eq!(m.cached(), 3);
        for i in 0..(LEAF_CACHE_SIZE + 10) {
            m.server_config(&format!("h{i}.example.test")).unwrap();
        }
        assert_eq!(m.cached(), LEAF_CACHE_SIZE);
    }
}
