//! AES-256-GCM: the one cipher of the project. Used for the HSMs' encrypt/decrypt operation, for
//! wrapping key material at rest (under a node's storage key) and on the wire (under the
//! cluster's synchronisation key).
//!
//! Sealed format: `nonce (12 bytes) || ciphertext || tag (16 bytes)`, nonce drawn at random.
//!
//! The cipher is `ring`'s: it picks at run time between stitched AES-NI/VAES + carry-less
//! multiply code and constant-time fallbacks for CPUs without them, so one binary is fast where
//! the CPU allows and still runs where it does not. RustCrypto's `aes-gcm` 0.10, used before,
//! measured about five times slower at 4 KiB when it was replaced: two thirds of its time went
//! to POLYVAL multiplying and reducing one block at a time. `benches/aead.rs` prints what this
//! wrapper costs against bare `ring`.
//! Nonces come from a thread-local CSPRNG (ChaCha, seeded and reseeded from the operating
//! system) rather than a system call per message.

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use thiserror::Error;

use crate::secret::{KeyMaterial, SecretBytes};

/// Length of the random nonce that starts every sealed message.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag that ends every sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Why opening a sealed message failed. Deliberately says nothing about the key or the data.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AeadError {
    /// Too short to hold a nonce and a tag.
    #[error("sealed message is truncated")]
    Truncated,
    /// The tag did not verify: wrong key, wrong associated data, or tampered bytes.
    #[error("sealed message failed authentication")]
    Authentication,
}

/// A cipher bound to one key, so the key schedule is computed once and not per message.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    pub fn new(key: &KeyMaterial) -> Self {
        // A 32-byte key is always a valid AES-256 key: `KeyMaterial` holds exactly 32 bytes.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("AES-256 key is 32 bytes");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts and authenticates `plaintext`, binding `aad`. Returns nonce || ciphertext || tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        // Sealing fails only past GCM's 64 GiB message limit, far beyond any frame this
        // project accepts; the empty answer then fails to open rather than leaking anything.
        match self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        ) {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            Err(_) => out.clear(),
        }
        out
    }

    /// Verifies and decrypts a message made by [`Sealer::seal`] with the same key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, AeadError> {
        if sealed.len() < OVERHEAD {
            return Err(AeadError::Truncated);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AeadError::Truncated)?;
        // Decrypted in a buffer that is wiped on drop, whether or not the tag verifies.
        let mut plain = SecretBytes::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), plain.expose_mut())
            .map_err(|_| AeadError::Authentication)?
            .len();
        plain.truncate(len);
        Ok(plain)
    }

    /// Wraps key material for storage or transport, bound to `context` (for example the key's
    /// handle and where the wrapped copy lives), so a wrapped key cannot be swapped for another.
    pub fn wrap(&self, material: &KeyMaterial, context: &[u8]) -> Vec<u8> {
        self.seal(material.expose(), context)
    }

    /// Unwraps material made by [`Sealer::wrap`] with the same key and context.
    pub fn unwrap_key(&self, wrapped: &[u8], context: &[u8]) -> Result<KeyMaterial, AeadError> {
        let plain = self.open(wrapped, context)?;
        let mut bytes = plain.expose().to_vec();
        let key = KeyMaterial::from_slice(&mut bytes).ok_or(AeadError::Authentication);
        drop(plain);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_aad() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let sealed = sealer.seal(b"attack at dawn", b"ctx");
        assert_eq!(sealed.len(), 14 + OVERHEAD);
        assert_eq!(
            sealer.open(&sealed, b"ctx").map(|p| p.expose().to_vec()),
            Ok(b"attack at dawn".to_vec())
        );
        assert_eq!(
            sealer.open(&sealed, b"other").err(),
            Some(AeadError::Authentication)
        );
    }

    #[test]
    fn tampering_and_truncation_are_detected() {
        let sealer = Sealer::new(&KeyMaterial::generate());
        let mut sealed = sealer.seal(b"x", b"");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            sealer.open(&sealed, b"").err(),
            Some(AeadError::Authentication)
        );
        assert_eq!(
            sealer.open(&sealed[..10], b"").err(),
            Some(AeadError::Truncated)
        );
    }

    #[test]
    fn a_wrapped_key_only_unwraps_with_its_key_and_context() {
        let kek = Sealer::new(&KeyMaterial::generate());
        let other = Sealer::new(&KeyMaterial::generate());
        let material = KeyMaterial::generate();
        let wrapped = kek.wrap(&material, b"handle-1");
        assert!(!wrapped.windows(32).any(|w| w == material.expose()));
        let back = kek.unwrap_key(&wrapped, b"handle-1").map(|k| *k.expose());
        assert_eq!(back, Ok(*material.expose()));
        assert!(kek.unwrap_key(&wrapped, b"handle-2").is_err());
        assert!(other.unwrap_key(&wrapped, b"handle-1").is_err());
    }
}
