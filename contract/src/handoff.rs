//! The signed hand-off between egress and cred-proxy.
//!
//! Egress signs every request it hands over; cred-proxy refuses anything whose
//! signature does not verify. The message is fixed by the cross-crate contract:
//! `route_id + "\n" + dial + "\n" + METHOD + "\n" + path_and_query`, signed with
//! HMAC-SHA256 under the per-bottle broker key and sent as lowercase hex.
//!

use std::fmt;

use hmac::{Hmac, Mac};

use crate::error::Error;
use sha2::Sha256;

/// Header carrying the route id egress matched.
pub const HEADER_ROUTE: &str = "x-bottle-route";
/// Header carrying the `ip:port` egress checked; cred-proxy dials exactly this.
pub const HEADER_DIAL: &str = "x-bottle-dial";
/// Header carrying the lowercase hex HMAC-SHA256 signature.
pub const HEADER_SIG: &str = "x-bottle-sig";
/// Environment variable holding the per-bottle broker key (hex, 32 bytes).
pub const BROKER_KEY_ENV: &str = "BOT_BOTTLE_BROKER_KEY";

/// Length of the broker key in bytes.
pub const BROKER_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The per-bottle broker key shared by egress and cred-proxy.
///
/// `Debug` never prints the key.
#[derive(Clone)]
pub struct BrokerKey([u8; BROKER_KEY_LEN]);

impl fmt::Debug for BrokerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerKey(<redacted>)")
    }
}

impl BrokerKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(hex_str: &str) -> Result<BrokerKey, Error> {
        Self::from_hex_origin(hex_str, "the given value")
    }

    fn from_hex_origin(hex_str: &str, origin: &str) -> Result<BrokerKey, Error> {
        let mut key = [0u8; BROKER_KEY_LEN];
        hex::decode_to_slice(hex_str.trim(), &mut key).map_err(|_| Error::BrokerKeyMalformed {
            origin: origin.to_owned(),
        })?;
        Ok(BrokerKey(key))
    }

    /// Builds a key from raw bytes.
    pub fn from_bytes(bytes: [u8; BROKER_KEY_LEN]) -> BrokerKey {
        BrokerKey(bytes)
    }

    /// Reads the key from [`BROKER_KEY_ENV`].
    pub fn from_env() -> Result<BrokerKey, Error> {
        Self::from_env_var(BROKER_KEY_ENV)
    }

    /// Reads the key from the named environment variable.
    pub fn from_env_var(var: &str) -> Result<BrokerKey, Error> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Self::from_hex_origin(&v, var),
            _ => Err(Error::BrokerKeyMissing(var.to_owned())),
        }
    }

    /// Lowercase hex of the key, for the orchestrator to put in an environment.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self, route_id: &str, dial: &str, method: &str, path_and_query: &str) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.0).expect("HMAC-SHA256 accepts any key length");
        mac.update(route_id.as_bytes());
        mac.update(b"\n");
        mac.update(dial.as_bytes());
        mac.update(b"\n");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac
    }
}

/// Lowercase hex HMAC-SHA256 over `route_id\ndial\nMETHOD\npath_and_query`.
pub fn sign(
    key: &BrokerKey,
    route_id: &str,
    dial: &str,
    method: &str,
    path_and_query: &str,
) -> String {
    hex::encode(
        key.mac(route_id, dial, method, path_and_query)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a signature in constant time. Anything that is not 64 hex digits
/// is refused (uppercase hex is accepted as the same bytes).
pub fn verify(
    key: &BrokerKey,
    route_id: &str,
    dial: &str,
    method: &str,
    path_and_query: &str,
    sig: &str,
) -> bool {
    let mut given = [0u8; 32];
    if hex::decode_to_slice(sig.trim(), &mut given).is_err() {
        return false;
    }
    key.mac(route_id, dial, method, path_and_query)
        .verify_slice(&given)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BrokerKey {
        BrokerKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn sign_matches_the_contract_message() {
        let k = key();
        let sig = sign(&k, "gh", "10.0.0.5:443", "POST", "/repos?x=1");
        let mut mac = HmacSha256::new_from_slice(&[0xab; 32]).unwrap();
        mac.update(b"gh\n10.0.0.5:443\nPOST\n/repos?x=1");
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig.len(), 64);
        assert!(sig
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn verify_accepts_only_the_signed_tuple() {
        let k = key();
        let sig = sign(&k, "gh", "10.0.0.5:443", "GET", "/a");
        assert!(verify(&k, "gh", "10.0.0.5:443", "GET", "/a", &sig));
        assert!(!verify(&k, "other", "10.0.0.5:443", "GET", "/a", &sig));
        assert!(!verify(&k, "gh", "10.0.0.6:443", "GET", "/a", &sig));
        assert!(!verify(&k, "gh", "10.0.0.5:443", "PUT", "/a", &sig));
        assert!(!verify(&k, "gh", "10.0.0.5:443", "GET", "/b", &sig));
        assert!(!verify(&k, "gh", "10.0.0.5:443", "GET", "/a", ""));
        assert!(!verify(&k, "gh", "10.0.0.5:443", "GET", "/a", &sig[..62]));
        let other = BrokerKey::from_bytes([1; 32]);
        assert!(!verify(&other, "gh", "10.0.0.5:443", "GET", "/a", &sig));
    }

    #[test]
    fn key_parsing_and_debug_never_show_the_key() {
        let k = key();
        assert!(!format!("{k:?}").contains("abab"));
        assert_eq!(k.to_hex(), "ab".repeat(32));
        assert!(BrokerKey::from_hex("abcd").is_err());
        assert!(BrokerKey::from_hex(&"zz".repeat(32)).is_err());
        let err = BrokerKey::from_env_var("CRED_PROXY_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.to_string().contains("CRED_PROXY_TEST_SURELY_UNSET_VAR"));
    }
}
