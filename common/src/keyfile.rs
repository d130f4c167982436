//! Secret files: written once with mode 0600 (owner read/write only), read back into secret
//! types. Used for node storage keys, the cluster's synchronisation key and private keys.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::secret::{KeyMaterial, SecretString};

/// Writes `bytes` to a new file at `path` readable only by its owner. Fails if it exists, so a
/// secret is never silently replaced.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a 32-byte key written by [`write_secret`].
pub fn read_key(path: &Path) -> std::io::Result<KeyMaterial> {
    let mut bytes = fs::read(path)?;
    KeyMaterial::from_slice(&mut bytes).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} does not hold a 32-byte key", path.display()),
        )
    })
}

/// Reads a secret text file (a PEM private key).
pub fn read_secret_text(path: &Path) -> std::io::Result<SecretString> {
    Ok(SecretString::new(fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_files_are_owner_only_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("hsmkms-keyfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("storage.key");
        let key = KeyMaterial::generate();
        write_secret(&path, key.expose()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key(&path).unwrap().expose(), key.expose());
        assert!(write_secret(&path, b"other").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
