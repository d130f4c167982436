//! Checks and conversions the KMS operations share: request members, limits, DryRun.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::api::types::*;
use crate::cluster::ClusterDirectory;
use crate::frontend::Frontend;
use crate::locks::Resource;
use crate::service::error::KmsError;
use crate::service::key_spec::ENCRYPTION_ALGORITHMS;

/// Largest plaintext Encrypt takes (SYMMETRIC_DEFAULT).
pub const MAX_PLAINTEXT: usize = 4096;

pub(super) fn to_json<T: serde::Serialize>(value: T) -> Result<Value, KmsError> {
    serde_json::to_value(value).map_err(|e| KmsError::KmsInternal(e.to_string()))
}

/// Decodes a base64 blob member.
pub(super) fn blob(value: Option<String>, member: &str) -> Result<Vec<u8>, KmsError> {
    let text = required(value, member)?;
    B64.decode(text.as_bytes()).map_err(|_| {
        KmsError::Serialization(format!("The value of '{member}' is not valid base64."))
    })
}

pub(super) fn check_limit(limit: Option<i64>, max: i64, default: i64) -> Result<usize, KmsError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        let shown = format!(" '{limit}'");
        return Err(KmsError::out_of_bounds(
            "limit", &shown, "value", limit, 1, max,
        ));
    }
    Ok(limit as usize)
}

/// The model's check of an `EncryptionAlgorithmSpec` member (`member` as the enum error
/// names it), which AWS makes before it looks the key up.
pub(super) fn check_algorithm_enum(algorithm: Option<&str>, member: &str) -> Result<(), KmsError> {
    match algorithm {
        Some(a) => check_enum(a, member, &ENCRYPTION_ALGORITHMS),
        None => Ok(()),
    }
}

/// The encryption algorithm of a symmetric key: SYMMETRIC_DEFAULT or none. (The enum was
/// checked before the key's lookup; this is the check that needs the key.)
pub(super) fn check_algorithm(algorithm: Option<&str>) -> Result<(), KmsError> {
    match algorithm {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(a) if ENCRYPTION_ALGORITHMS.contains(&a) => Err(KmsError::InvalidKeyUsage(format!(
            "The encryption algorithm {a} is not valid for a symmetric KMS key."
        ))),
        Some(a) => Err(KmsError::not_in_enum(
            "encryptionAlgorithm",
            a,
            &ENCRYPTION_ALGORITHMS,
        )),
    }
}

pub(super) fn check_grant_tokens(tokens: &Option<Vec<String>>) -> Result<(), KmsError> {
    if tokens.as_ref().is_some_and(|t| t.len() > 10) {
        return Err(KmsError::Validation(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10".into(),
        ));
    }
    crate::service::registry::check_grant_tokens(tokens.as_deref().unwrap_or_default())
}

pub(super) fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::DryRunOperation(
            "The request would have succeeded, but the DryRun option is set.".into(),
        ));
    }
    Ok(())
}

/// The lock of the key a change names, if it names one.
pub(super) fn lock_key(fe: &Frontend, key_id: &str) -> Vec<Resource> {
    fe.key_resource(key_id).into_iter().collect()
}

pub(super) fn check_password(password: &str) -> Result<(), KmsError> {
    let n = i64::try_from(password.len()).unwrap_or(i64::MAX);
    if !(7..=32).contains(&n) {
        return Err(KmsError::out_of_bounds(
            "keyStorePassword",
            "",
            "length",
            n,
            7,
            32,
        ));
    }
    Ok(())
}

pub(super) fn check_name(name: &str) -> Result<(), KmsError> {
    let n = i64::try_from(name.chars().count()).unwrap_or(i64::MAX);
    if !(1..=256).contains(&n) {
        let shown = format!(" '{name}'");
        return Err(KmsError::out_of_bounds(
            "customKeyStoreName",
            &shown,
            "length",
            n,
            1,
            256,
        ));
    }
    Ok(())
}

/// A new custom key store id: `cks-` and 17 hex characters.
pub(super) fn new_store_id(entropy: &dyn hsmkms_common::entropy::Entropy) -> String {
    let mut bytes = [0u8; 9];
    entropy.fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cks-{}", &hex[..17])
}

/// The trust anchor matches when the certificates are equal, PEM whitespace aside.
pub(crate) fn same_certificate(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    norm(a) == norm(b)
}

/// Checks the cluster a store is to use (CreateCustomKeyStore, UpdateCustomKeyStore, a
/// seeded store).
pub(crate) fn check_cluster(
    fe: &Frontend,
    cluster_id: &str,
    except_store: Option<&str>,
) -> Result<crate::cluster::ClusterView, KmsError> {
    // Clusters live in the home Region and account; a request of any other sees none.
    let cluster = fe
        .clusters
        .cluster(cluster_id)
        .filter(|_| fe.registry().in_home_scope())
        .ok_or_else(|| KmsError::cluster_not_found(cluster_id))?;
    if cluster.state != "ACTIVE" {
        return Err(KmsError::CloudHsmClusterNotActive(format!(
            "AWS CloudHSM cluster {cluster_id} is {}; it must be ACTIVE.",
            cluster.state
        )));
    }
    let reg = fe.registry();
    for store in reg.stores() {
        if Some(store.id.as_str()) == except_store {
            continue;
        }
        let shares_history = fe
            .clusters
            .cluster(&store.cluster_id)
            .is_some_and(|other| same_certificate(&other.trust_anchor, &cluster.trust_anchor));
        if store.cluster_id == cluster_id || shares_history {
            return Err(KmsError::CloudHsmClusterInUse(format!(
                "AWS CloudHSM cluster {cluster_id} (or a cluster that shares its backup history) is already associated with custom key store {}.",
                store.id
            )));
        }
    }
    if !cluster.has_two_zones() {
        return Err(KmsError::cluster_too_small(cluster_id));
    }
    Ok(cluster)
}

/// Decodes a `Message` member: 1 to 4096 bytes (one message per bound, as AWS words them).
pub(super) fn message_blob(value: Option<String>, member: &str) -> Result<Vec<u8>, KmsError> {
    let message = blob(value, member)?;
    if message.is_empty() || message.len() > MAX_PLAINTEXT {
        let bound = if message.is_empty() {
            "greater than or equal to 1".to_string()
        } else {
            format!("less than or equal to {MAX_PLAINTEXT}")
        };
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length {bound}"
        )));
    }
    Ok(message)
}

/// Checks that `value` is one of an enum's names.
pub(super) fn check_enum(value: &str, member: &str, allowed: &[&str]) -> Result<(), KmsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(KmsError::not_in_enum(member, value, allowed))
    }
}

/// An algorithm the key's spec does not have (AWS's text, recorded for MAC algorithms).
pub(super) fn incompatible(algorithm: &str, spec: crate::service::key_spec::KeySpec) -> KmsError {
    KmsError::InvalidKeyUsage(format!(
        "Algorithm {algorithm} is incompatible with key spec {}.",
        spec.as_str()
    ))
}

/// `Recipient` (a Nitro Enclave's attestation document): hsmkms has no enclaves to attest.
pub(super) fn recipient_unsupported() -> KmsError {
    KmsError::UnsupportedOperation(
        "hsmkms does not support Recipient (Nitro Enclaves attestation documents).".into(),
    )
}

/// The model's constraint violations of one request, reported together as AWS does: `1
/// validation error detected: ...`, or `N validation errors detected: ...; ...`. Checks that
/// fail otherwise (a blob that is not base64: SerializationException) end the request at once.
#[derive(Debug, Default)]
pub(super) struct Violations(Vec<String>);

const ONE_VIOLATION: &str = "1 validation error detected: ";

impl Violations {
    /// Runs one check: its value, or `None` with its violation noted.
    pub(super) fn check<T>(&mut self, result: Result<T, KmsError>) -> Result<Option<T>, KmsError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(KmsError::Validation(message)) if message.starts_with(ONE_VIOLATION) => {
                self.0.push(message[ONE_VIOLATION.len()..].to_string());
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// Notes one violation, worded as after `1 validation error detected: `.
    pub(super) fn note(&mut self, message: String) {
        self.0.push(message);
    }

    /// Every violation noted, in one ValidationException.
    pub(super) fn finish(self) -> Result<(), KmsError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(KmsError::Validation(format!(
                "{ONE_VIOLATION}{}",
                self.0[0]
            ))),
            n => Err(KmsError::Validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

/// A value every check of which passed (after [`Violations::finish`]).
pub(super) fn checked<T>(value: Option<T>) -> Result<T, KmsError> {
    value.ok_or_else(|| KmsError::KmsInternal("a checked request member is missing".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_reported_together_in_kms_form() {
        let mut v = Violations::default();
        assert_eq!(v.check(required(Some(1), "keyId")).unwrap(), Some(1));
        assert_eq!(v.finish(), Ok(()));

        let mut v = Violations::default();
        assert_eq!(v.check(required::<u8>(None, "keyId")).unwrap(), None);
        assert_eq!(
            v.finish().unwrap_err().message(),
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
        );

        let mut v = Violations::default();
        v.check(required::<u8>(None, "keyId")).unwrap();
        v.check(check_enum("X", "signingAlgorithm", &["A", "B"]))
            .unwrap();
        assert_eq!(
            v.finish().unwrap_err().message(),
            "2 validation errors detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null; Value 'X' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [A, B]"
        );

        // Other errors are not collected.
        let mut v = Violations::default();
        let err = v.check(blob(Some("***".into()), "message")).unwrap_err();
        assert_eq!(err.type_name(), "SerializationException");
    }
}
