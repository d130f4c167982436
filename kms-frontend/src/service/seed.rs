//! Seeded keys (`--seed-file`): keys with fixed ids, specs, descriptions, aliases, tags,
//! policies, rotation and material, the same on every run and every machine, so that a
//! ciphertext made under one in one hsmkms decrypts in any other given the same file.
//!
//! The file is YAML (JSON is YAML too). Material is given (base64 for symmetric and HMAC keys,
//! a PEM `PRIVATE KEY` — PKCS#8 — for key pairs) or derived from a seed string: HMAC-SHA-256
//! under the string, of the key's id, expanded to the length the spec takes. Key pairs have no
//! such derivation here (RSA and ML-* key generation cannot be fed a seed through aws-lc-rs), so
//! a key pair needs its PEM. Everything is checked when the file is read: a bad file stops the
//! start with a message naming the key and the member.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use serde::Deserialize;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::asymmetric;
use super::key_ref::is_region;
use super::key_spec::{check_spec_and_usage, KeySpec, KeyUsage};
use super::registry::{check_alias_name, check_key_inputs};

/// The seed file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeedFile {
    /// The seed string of keys that give neither `material` nor `seed`.
    seed: Option<String>,
    #[serde(default)]
    keys: Vec<SeedKeyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeedKeyFile {
    id: String,
    region: Option<String>,
    account: Option<String>,
    spec: Option<String>,
    usage: Option<String>,
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    policy: Option<String>,
    rotation: Option<SeedRotation>,
    material: Option<String>,
    seed: Option<String>,
}

fn yes() -> bool {
    true
}

/// Automatic rotation of a seeded key.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeedRotation {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub period_days: Option<i64>,
}

/// A seeded key, checked, with its material.
#[derive(Debug)]
pub struct SeedKey {
    pub id: Uuid,
    pub region: Option<String>,
    pub account: Option<String>,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub description: Option<String>,
    pub enabled: bool,
    pub aliases: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub policy: Option<String>,
    pub rotation: Option<SeedRotation>,
    /// 32 bytes for SYMMETRIC_DEFAULT, the HMAC key, or PKCS#8 DER.
    pub material: SecretBytes,
}

/// The seed file's keys, checked.
#[derive(Debug, Default)]
pub struct Seed {
    pub keys: Vec<SeedKey>,
}

/// The material derived from `seed` for key `id` of `spec`, `len` bytes.
fn derived(seed: &str, id: &Uuid, len: usize) -> SecretBytes {
    let key = hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes());
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter = 1u32;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"hsmkms/seed-material/v1/");
        ctx.update(id.as_bytes());
        ctx.update(&counter.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(len);
    SecretBytes::new(out.to_vec())
}

impl Seed {
    /// Reads and checks a seed file's text.
    pub fn parse(text: &str) -> Result<Seed, String> {
        let file: SeedFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut keys: Vec<SeedKey> = Vec::with_capacity(file.keys.len());
        for (i, k) in file.keys.into_iter().enumerate() {
            let at = |member: &str, why: String| format!("keys[{i}] ({}): {member}: {why}", k.id);
            let id = (k.id.len() == 36)
                .then(|| Uuid::try_parse(&k.id).ok())
                .flatten()
                .ok_or_else(|| {
                    at(
                        "id",
                        "not a key id (a UUID such as 1234abcd-12ab-34cd-56ef-1234567890ab)".into(),
                    )
                })?;
            if keys.iter().any(|other| other.id == id) {
                return Err(at("id", "given twice".into()));
            }
            if let Some(region) = &k.region {
                if !is_region(region) {
                    return Err(at("region", format!("'{region}' is not a Region")));
                }
            }
            if let Some(account) = &k.account {
                if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(at("account", format!("'{account}' is not 12 digits")));
                }
            }
            let spec = match &k.spec {
                Some(s) => KeySpec::parse(s, "spec").map_err(|e| at("spec", e.message()))?,
                None => KeySpec::SymmetricDefault,
            };
            let usage = match &k.usage {
                Some(u) => Some(KeyUsage::parse(u).map_err(|e| at("usage", e.message()))?),
                None => None,
            };
            let usage = check_spec_and_usage(spec, usage).map_err(|e| at("usage", e.message()))?;
            if spec == KeySpec::Sm2 {
                return Err(at("spec", "SM2 keys are not supported".into()));
            }
            let tags: Vec<(String, String)> = k.tags.into_iter().collect();
            check_key_inputs(k.description.as_deref(), k.policy.as_deref(), &tags)
                .map_err(|e| at("description, policy or tags", e.message()))?;
            for alias in &k.aliases {
                check_alias_name(alias).map_err(|e| at("aliases", e.message()))?;
            }
            if k.rotation.is_some() && spec != KeySpec::SymmetricDefault {
                return Err(at(
                    "rotation",
                    "only symmetric encryption keys rotate".into(),
                ));
            }
            let material = match (&k.material, k.seed.as_ref().or(file.seed.as_ref())) {
                (Some(text), _) => material_of(spec, text).map_err(|why| at("material", why))?,
                (None, Some(seed)) => match spec {
                    KeySpec::SymmetricDefault => derived(seed, &id, 32),
                    s if s.is_hmac() => derived(seed, &id, hmac_length(s)),
                    s => {
                        return Err(at(
                            "material",
                            format!(
                                "a {} key needs its private key as PEM: hsmkms derives only symmetric and HMAC material from a seed",
                                s.as_str()
                            ),
                        ))
                    }
                },
                (None, None) => {
                    return Err(at(
                        "material",
                        "give the material, or a seed string (the key's `seed` or the file's)"
                            .into(),
                    ))
                }
            };
            keys.push(SeedKey {
                id,
                region: k.region,
                account: k.account,
                spec,
                usage,
                description: k.description,
                enabled: k.enabled,
                aliases: k.aliases,
                tags,
                policy: k.policy,
                rotation: k.rotation,
                material,
            });
        }
        Ok(Seed { keys })
    }
}

/// An HMAC key spec's key length: its digest's.
fn hmac_length(spec: KeySpec) -> usize {
    match spec {
        KeySpec::Hmac224 => 28,
        KeySpec::Hmac256 => 32,
        KeySpec::Hmac384 => 48,
        _ => 64,
    }
}

/// Given material: base64 for symmetric and HMAC keys, a PEM PKCS#8 private key otherwise.
fn material_of(spec: KeySpec, text: &str) -> Result<SecretBytes, String> {
    let bytes = if spec == KeySpec::SymmetricDefault || spec.is_hmac() {
        SecretBytes::new(
            B64.decode(text.trim())
                .map_err(|_| "not base64".to_string())?,
        )
    } else {
        let (label, doc) = pkcs8::SecretDocument::from_pem(text.trim())
            .map_err(|_| "not a PEM private key".to_string())?;
        if label != "PRIVATE KEY" {
            return Err(format!(
                "a PEM 'PRIVATE KEY' (PKCS#8) is needed, not '{label}'"
            ));
        }
        SecretBytes::new(doc.as_bytes().to_vec())
    };
    if !asymmetric::valid_material(spec, bytes.expose()) {
        return Err(format!("not key material of KeySpec {}", spec.as_str()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_material_and_a_bad_file_says_where() {
        let text = r#"
seed: team-fixtures
keys:
  - id: 11111111-2222-3333-4444-555555555555
    description: app
    aliases: [alias/app]
    tags: {team: a}
  - id: 11111111-2222-3333-4444-666666666666
    spec: HMAC_256
    usage: GENERATE_VERIFY_MAC
  - id: 11111111-2222-3333-4444-777777777777
    material: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
"#;
        let a = Seed::parse(text).unwrap();
        let b = Seed::parse(text).unwrap();
        assert_eq!(a.keys.len(), 3);
        for (x, y) in a.keys.iter().zip(&b.keys) {
            assert_eq!(x.material.expose(), y.material.expose());
        }
        assert_eq!(a.keys[0].material.expose().len(), 32);
        assert_ne!(a.keys[0].material.expose(), a.keys[1].material.expose());
        assert_eq!(a.keys[2].material.expose(), (0u8..32).collect::<Vec<_>>());
        let other = Seed::parse(&text.replace("team-fixtures", "other")).unwrap();
        assert_ne!(a.keys[0].material.expose(), other.keys[0].material.expose());

        for (bad, says) in [
            ("keys: [{id: nope, seed: s}]", "id"),
            ("keys: [{id: 11111111-2222-3333-4444-555555555555}]", "material"),
            (
                "keys: [{id: 11111111-2222-3333-4444-555555555555, spec: RSA_2048, usage: SIGN_VERIFY, seed: s}]",
                "PEM",
            ),
            (
                "keys: [{id: 11111111-2222-3333-4444-555555555555, seed: s, aliases: [app]}]",
                "aliases",
            ),
            ("keys: [{id: 11111111-2222-3333-4444-555555555555, seed: s, colour: red}]", "colour"),
            (
                "keys: [{id: 11111111-2222-3333-4444-555555555555, material: c2hvcnQ=}]",
                "material",
            ),
        ] {
            let err = Seed::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
