//! Decrypt.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::encrypt::rsa_algorithm;
use super::envelope::open;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::{KeySpec, KeyUsage};
use crate::service::key_state::KeyOp;

pub(super) async fn handle(fe: &Arc<Frontend>, req: DecryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    check_grant_tokens(&req.grant_tokens)?;
    if let Some(key_id) = req
        .key_id
        .as_deref()
        .filter(|id| names_asymmetric_encryption_key(fe, id))
    {
        let key = fe.registry().typed_key(key_id, KeyOp::Decrypt)?;
        let has_context = req.encryption_context.is_some_and(|c| !c.is_empty());
        let algorithm = rsa_algorithm(req.encryption_algorithm, key.spec, has_context)?;
        dry_run(req.dry_run)?;
        let plaintext = asymmetric::rsa_decrypt(key.material.expose(), &algorithm, &blob)?
            .ok_or_else(KmsError::invalid_ciphertext)?;
        return Ok(json!({
            "KeyId": key.arn,
            "Plaintext": B64.encode(plaintext.expose()),
            "EncryptionAlgorithm": algorithm,
        }));
    }
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let ctx = req.encryption_context.unwrap_or_default();
    let (plaintext, key) = open(fe, &blob, req.key_id, &ctx, KeyOp::Decrypt).await?;
    dry_run(req.dry_run)?;
    let material_id = fe.registry().material_id(&key.record.key_id, key.material);
    Ok(json!({
        "KeyId": key.arn,
        "Plaintext": B64.encode(plaintext.expose()),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "KeyMaterialId": material_id,
    }))
}

/// Whether `key_id` names an asymmetric ENCRYPT_DECRYPT key, whose ciphertexts are RSAES-OAEP.
/// A KeyId of a signing, MAC or key agreement key takes the symmetric path, where a ciphertext
/// of another key is IncorrectKeyException, as AWS answers a symmetric ciphertext with an HMAC
/// KeyId (recorded), not InvalidKeyUsageException.
pub(super) fn names_asymmetric_encryption_key(fe: &Frontend, key_id: &str) -> bool {
    fe.registry().resolve(key_id, true).is_ok_and(|r| {
        r.spec() != KeySpec::SymmetricDefault && r.usage() == KeyUsage::EncryptDecrypt
    })
}
