//! API key minting and hashing, and AES-256-GCM sealing of provider secrets.
//!
//! API keys are 190 bits of randomness, so a single SHA-256 is enough to store them safely: a
//! slow password hash would only add latency to every authenticated request.

use std::str::FromStr;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const NONCE_LEN: usize = 12;
const KEY_PREFIX: &str = "rq_";
const KEY_RANDOM_LEN: usize = 32;
/// Characters of a key kept in clear for display (`rq_AbC4eFgH`).
const DISPLAY_PREFIX_LEN: usize = 11;

/// SHA-256 of `bytes` (request fingerprints for idempotency).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The process-wide key that seals provider secrets at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(Key<Aes256Gcm>);

/// `RUNQ_MASTER_KEY` was not 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("the master key must be 32 bytes written as 64 hex characters")]
pub struct MasterKeyError;

impl FromStr for MasterKey {
    type Err = MasterKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| MasterKeyError)?;
        Ok(Self(bytes.into()))
    }
}

impl MasterKey {
    /// Encrypts `plaintext`; the result is `nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext =
            cipher.encrypt(&nonce, plaintext).expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts what [`MasterKey::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Crypto);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        Aes256Gcm::new(&self.0).decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| Error::Crypto)
    }
}

/// A full API key as the client presents it. Only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

impl ApiKey {
    /// Mints a new random key.
    pub fn generate() -> Self {
        let random: String = rand::rng().sample_iter(Alphanumeric).take(KEY_RANDOM_LEN).map(char::from).collect();
        Self(format!("{KEY_PREFIX}{random}"))
    }

    /// Wraps a key presented by a client (or configured by an operator).
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        if raw.len() < 16 || raw.len() > 256 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("api_key", "must be 16 to 256 printable characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The leading characters, safe to show in listings.
    pub fn display_prefix(&self) -> &str {
        let end = self.0.len().min(DISPLAY_PREFIX_LEN);
        &self.0[..end]
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".parse().unwrap()
    }

    #[test]
    fn sealed_secrets_open_with_the_same_key_only() {
        let sealed = key().seal(b"sk-secret");
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(key().open(&sealed).unwrap(), b"sk-secret");
        let other: MasterKey = "ff".repeat(32).parse().unwrap();
        assert!(matches!(other.open(&sealed), Err(Error::Crypto)));
    }

    #[test]
    fn a_short_master_key_is_refused() {
        assert!("abcd".parse::<MasterKey>().is_err());
    }

    #[test]
    fn generated_keys_are_distinct_and_hash_stably() {
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        assert_ne!(a, b);
        assert!(a.expose().starts_with("rq_"));
        assert_eq!(a.hash(), ApiKey::parse(a.expose()).unwrap().hash());
        assert!(!format!("{a:?}").contains(&a.expose()[12..]));
    }
}
