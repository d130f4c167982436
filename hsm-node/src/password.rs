//! Password hashing: argon2id with the crate's recommended parameters. Slow on purpose, so the
//! node runs it on a blocking thread, never on an actor's.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

/// Hashes a password into a PHC string (algorithm, parameters, salt and hash).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
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
}
