//! Encrypt.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use serde_json::{json, Value};

use super::checks::*;
use super::envelope::seal;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::{KeySpec, ENCRYPTION_ALGORITHMS};
use crate::service::key_state::KeyOp;
use crate::service::registry::TypedKey;

pub(super) async fn handle(fe: &Arc<Frontend>, req: EncryptRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let plaintext = SecretBytes::new(blob(req.plaintext, "plaintext")?);
    // One message per bound, as AWS words them (recorded).
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        let bound = if plaintext.is_empty() {
            "greater than or equal to 1".to_string()
        } else {
            format!("less than or equal to {MAX_PLAINTEXT}")
        };
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length {bound}"
        )));
    }
    check_grant_tokens(&req.grant_tokens)?;
    // The model's enum first: AWS checks it before it looks the key up.
    check_algorithm_enum(req.encryption_algorithm.as_deref(), "encryptionAlgorithm")?;
    // One lookup serves both paths (this is the hot one): an asymmetric ENCRYPT_DECRYPT key
    // passes the usage check and takes the RSA path.
    let key = fe.registry().usable(&key_id, KeyOp::Encrypt)?;
    if key.record.spec() != KeySpec::SymmetricDefault {
        let has_context = req.encryption_context.is_some_and(|c| !c.is_empty());
        let algorithm = req.encryption_algorithm;
        return encrypt_rsa(fe, &key_id, algorithm, has_context, req.dry_run, &plaintext);
    }
    check_algorithm(req.encryption_algorithm.as_deref())?;
    dry_run(req.dry_run)?;
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, plaintext.expose(), &ctx).await?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

/// The encryption algorithm of an asymmetric Encrypt or Decrypt: required, and one the key's
/// spec has.
pub(super) fn rsa_algorithm(
    algorithm: Option<String>,
    spec: KeySpec,
    has_context: bool,
) -> Result<String, KmsError> {
    let algorithm = algorithm.unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
    check_enum(&algorithm, "encryptionAlgorithm", &ENCRYPTION_ALGORITHMS)?;
    if !spec.encryption_algorithms().contains(&algorithm.as_str()) {
        return Err(incompatible(&algorithm, spec));
    }
    if has_context {
        return Err(KmsError::Validation(
            "EncryptionContext is not supported for asymmetric KMS keys.".into(),
        ));
    }
    Ok(algorithm)
}

/// AWS's limit on what an RSA key encrypts with an algorithm (texts recorded).
pub(super) fn check_rsa_size(key: &TypedKey, algorithm: &str, len: usize) -> Result<(), KmsError> {
    let max = asymmetric::max_rsa_plaintext(key.spec, algorithm);
    if len > max {
        return Err(KmsError::Validation(format!(
            "Algorithm {algorithm} and key spec {} cannot encrypt data larger than {max} bytes.",
            key.spec.as_str()
        )));
    }
    Ok(())
}

/// Encrypt with an RSA ENCRYPT_DECRYPT key: RSAES-OAEP under its public key, within AWS's size
/// limits (texts recorded).
fn encrypt_rsa(
    fe: &Frontend,
    key_id: &str,
    algorithm: Option<String>,
    has_context: bool,
    dry: Option<bool>,
    plaintext: &SecretBytes,
) -> Result<Value, KmsError> {
    let key = fe.registry().typed_key(key_id, KeyOp::Encrypt)?;
    let algorithm = rsa_algorithm(algorithm, key.spec, has_context)?;
    check_rsa_size(&key, &algorithm, plaintext.len())?;
    dry_run(dry)?;
    let blob = asymmetric::rsa_encrypt(key.material.expose(), &algorithm, plaintext.expose())?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": key.arn,
        "EncryptionAlgorithm": algorithm,
    }))
}
