//! Secrets have types: key material and passwords live in zeroizing containers without
//! `Clone`, `PartialEq`, `Serialize` or a revealing `Debug`, so they cannot leak by accident
//! into logs, error messages or comparisons that take variable time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Length of every key the emulator holds: AES-256.
pub const KEY_LEN: usize = 32;

/// 256 bits of AES key material: the secret of one HSM key object, a node's storage key or the
/// cluster's synchronisation key. Wiped from memory on drop; never printed.
pub struct KeyMaterial(Zeroizing<[u8; KEY_LEN]>);

impl KeyMaterial {
    /// Fresh material from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self::generate_from(&crate::entropy::OsEntropy)
    }

    /// Fresh material from `entropy`.
    pub fn generate_from(entropy: &dyn crate::entropy::Entropy) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        entropy.fill(bytes.as_mut());
        Self(bytes)
    }

    /// Takes material from a buffer, which is wiped. Fails unless it holds exactly 32 bytes.
    pub fn from_slice(bytes: &mut [u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            bytes.zeroize();
            return None;
        }
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(bytes);
        bytes.zeroize();
        Some(Self(out))
    }

    /// The raw bytes, for the cipher that needs them. Callers must not copy them elsewhere.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A deliberate duplicate, for the few places (wrapping for a peer) that need one; not
    /// `Clone` so that copies are never made implicitly.
    pub fn duplicate(&self) -> Self {
        Self(Zeroizing::new(*self.0))
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// A password or other secret string: zeroized on drop, redacted in `Debug`, compared in
/// constant time. It crosses the node protocol only inside TLS.
#[derive(Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A deliberate copy; see [`KeyMaterial::duplicate`].
    pub fn duplicate(&self) -> Self {
        Self::new(self.0.as_str())
    }

    /// Constant-time equality, for comparing a presented secret with a stored one.
    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

// Passwords must cross the wire (inside TLS) to reach the HSM, like a real login does.
impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Zeroizing::new(String::deserialize(d)?)))
    }
}

/// Bytes that are secret (decrypted plaintext, random bytes handed to a caller): zeroized on
/// drop and redacted in `Debug`.
#[derive(Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

/// As a byte string (one slice in postcard, not byte by byte; the same encoding).
impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The buffer is moved into the wiping wrapper, never copied.
        serde_bytes::ByteBuf::deserialize(d).map(|b| Self::new(b.into_vec()))
    }
}

impl SecretBytes {
    pub fn new(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For a cipher that decrypts in place.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let key = KeyMaterial::generate();
        let hex: String = key.expose().iter().map(|b| format!("{b:02x}")).collect();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex));
        assert_eq!(shown, "KeyMaterial(<redacted>)");
        let pw = SecretString::new("hunter22");
        assert!(!format!("{pw:?}").contains("hunter22"));
        let bytes = SecretBytes::new(b"plaintext!".to_vec());
        assert!(!format!("{bytes:?}").contains("plaintext"));
    }

    #[test]
    fn material_from_slice_wipes_the_source_and_checks_length() {
        let mut buf = [7u8; 32];
        let key = KeyMaterial::from_slice(&mut buf).map(|k| *k.expose());
        assert_eq!(key, Some([7u8; 32]));
        assert_eq!(buf, [0u8; 32]);
        assert!(KeyMaterial::from_slice(&mut [1u8; 31]).is_none());
    }
}
