//! The access keys `--auth strict` accepts, and the two ways to give them: an AWS shared
//! credentials file (INI, as `~/.aws/credentials`: one profile per key, with
//! `aws_access_key_id` and `aws_secret_access_key`) and a list `AKID:SECRET,AKID2:SECRET2`
//! (`HSMKMS_ACCESS_KEYS`). Secret access keys live in [`SecretString`]s: wiped on drop, never
//! in `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;

use hsmkms_common::secret::SecretString;

/// At most this many access keys: the table is read on every request.
pub const MAX_ACCESS_KEYS: usize = 10_000;

/// Access key id -> secret access key.
#[derive(Default)]
pub struct AccessKeys {
    keys: BTreeMap<String, SecretString>,
}

impl fmt::Debug for AccessKeys {
    // Key ids are not secret (they travel in every request's Authorization header); secrets are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("access_key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AccessKeys {
    /// The secret access key of `access_key_id`, if it is one of ours.
    pub fn secret(&self, access_key_id: &str) -> Option<&SecretString> {
        self.keys.get(access_key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds one key; a second secret for the same id is an error (which one would win?).
    fn add(&mut self, id: &str, secret: SecretString, source: &str) -> Result<(), String> {
        if id.is_empty() || id.contains(['/', ' ', ',', '=']) {
            return Err(format!(
                "{source}: '{id}' is not an access key id (non-empty, without '/', ',', '=' or spaces)"
            ));
        }
        if secret.expose().is_empty() {
            return Err(format!("{source}: access key {id} has an empty secret"));
        }
        if self.keys.len() >= MAX_ACCESS_KEYS {
            return Err(format!("{source}: more than {MAX_ACCESS_KEYS} access keys"));
        }
        if self.keys.insert(id.to_string(), secret).is_some() {
            return Err(format!("{source}: access key {id} is given twice"));
        }
        Ok(())
    }

    /// Adds the keys of an AWS shared credentials file: every profile (`[name]`) with an
    /// `aws_access_key_id` must have an `aws_secret_access_key`, and the reverse. Other
    /// settings (`aws_session_token`, `region`, ...) are ignored; `#` and `;` start comments.
    pub fn add_credentials_file(&mut self, text: &str, source: &str) -> Result<(), String> {
        let mut profiles: Vec<(String, Option<String>, Option<SecretString>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name.strip_suffix(']').ok_or_else(|| {
                    format!(
                        "{source}, line {}: a profile header must end with ']'",
                        n + 1
                    )
                })?;
                profiles.push((name.trim().to_string(), None, None));
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "{source}, line {}: expected 'name = value' or '[profile]'",
                    n + 1
                ));
            };
            let Some(profile) = profiles.last_mut() else {
                return Err(format!(
                    "{source}, line {}: a setting before any [profile]",
                    n + 1
                ));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => profile.1 = Some(value.trim().to_string()),
                "aws_secret_access_key" => profile.2 = Some(SecretString::new(value.trim())),
                _ => {}
            }
        }
        let mut added = 0;
        for (name, id, secret) in profiles {
            match (id, secret) {
                (Some(id), Some(secret)) => {
                    self.add(&id, secret, source)?;
                    added += 1;
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!(
                    "{source}: profile [{name}] has aws_access_key_id but no aws_secret_access_key"
                ))
                }
                (None, Some(_)) => {
                    return Err(format!(
                    "{source}: profile [{name}] has aws_secret_access_key but no aws_access_key_id"
                ))
                }
            }
        }
        if added == 0 {
            return Err(format!(
                "{source}: no profile with aws_access_key_id and aws_secret_access_key"
            ));
        }
        Ok(())
    }

    /// Adds keys written `AKID:SECRET,AKID2:SECRET2` (spaces around items are ignored; AWS
    /// secret access keys never contain ':' or ',').
    pub fn add_list(&mut self, text: &str, source: &str) -> Result<(), String> {
        let mut added = 0;
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((id, secret)) = item.split_once(':') else {
                // The item may hold a secret: name only its position.
                return Err(format!(
                    "{source}: item {} is not ACCESS_KEY_ID:SECRET_ACCESS_KEY",
                    added + 1
                ));
            };
            self.add(id.trim(), SecretString::new(secret.trim()), source)?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{source}: no access keys"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_every_complete_profile_of_a_credentials_file() {
        let mut keys = AccessKeys::default();
        keys.add_credentials_file(
            "# mine\n[default]\naws_access_key_id = AKIDONE\naws_secret_access_key=s3cr/et+1\n\n\
             [ci]\nregion = us-east-1\naws_access_key_id=AKIDTWO\naws_secret_access_key = two\n\
             aws_session_token = ignored\n[config-only]\nregion = eu-west-1\n",
            "file",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.secret("AKIDONE").unwrap().expose(), "s3cr/et+1");
        assert_eq!(keys.secret("AKIDTWO").unwrap().expose(), "two");
        assert!(keys.secret("AKIDTHREE").is_none());
        let shown = format!("{keys:?}");
        assert!(shown.contains("AKIDONE") && !shown.contains("s3cr"));
    }

    #[test]
    fn refuses_half_profiles_duplicates_and_empty_files() {
        let half = "[p]\naws_access_key_id = A\n";
        assert!(AccessKeys::default()
            .add_credentials_file(half, "f")
            .unwrap_err()
            .contains("[p]"));
        let twice = "[a]\naws_access_key_id=A\naws_secret_access_key=x\n[b]\naws_access_key_id=A\naws_secret_access_key=y\n";
        assert!(AccessKeys::default()
            .add_credentials_file(twice, "f")
            .is_err());
        assert!(AccessKeys::default()
            .add_credentials_file("[a]\nregion=x\n", "f")
            .is_err());
    }

    #[test]
    fn reads_a_list_and_never_echoes_a_secret() {
        let mut keys = AccessKeys::default();
        keys.add_list(" AKID1:sec/ret1 , AKID2:secret2,", "env")
            .unwrap();
        assert_eq!(keys.secret("AKID1").unwrap().expose(), "sec/ret1");
        assert_eq!(keys.secret("AKID2").unwrap().expose(), "secret2");
        let e = AccessKeys::default()
            .add_list("AKID1:ok,oops-a-secret", "env")
            .unwrap_err();
        assert!(!e.contains("oops"), "{e}");
        assert!(AccessKeys::default().add_list(" , ", "env").is_err());
    }
}
