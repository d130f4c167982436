//! Password hashing: argon2id with the crate's recommended parameters. Slow on purpose, so the
//! node runs it on a blocking thread, never on an actor's.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hsmkms_common::entropy::{Entropy, OsEntropy};

/// Bytes of salt: the PHC string format's recommended length.
const SALT_LEN: usize = 16;

/// Hashes a password into a PHC string (algorithm, parameters, salt and hash), salted from the
/// operating system's CSPRNG.
pub fn hash(password: &str) -> Result<String, String> {
    hash_with(password, &OsEntropy)
}

/// Hashes a password as [`hash`] does, with its salt from `entropy` (the node's injected
/// randomness, so a seeded run hashes alike twice).
pub fn hash_with(password: &str, entropy: &dyn Entropy) -> Result<String, String> {
    let mut bytes = [0u8; SALT_LEN];
    entropy.fill(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("password salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
pub fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_only_the_right_password_and_hide_it() {
        let h = super::hash("Password1").unwrap();
        assert!(!h.contains("Password1"));
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify(&h, "Password1"));
        assert!(!super::verify(&h, "Password2"));
        assert!(!super::verify("not a hash", "Password1"));
    }

    #[test]
    fn the_salt_comes_from_the_injected_entropy() {
        use hsmkms_common::entropy::SeededEntropy;
        let once = super::hash_with("Password1", &SeededEntropy::new(3)).unwrap();
        let again = super::hash_with("Password1", &SeededEntropy::new(3)).unwrap();
        let other = super::hash_with("Password1", &SeededEntropy::new(4)).unwrap();
        assert_eq!(once, again);
        assert_ne!(once, other);
        assert!(super::verify(&once, "Password1"));
    }
}
