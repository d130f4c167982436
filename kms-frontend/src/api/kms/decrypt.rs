//! Decrypt.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::encrypt::rsa_algorithm;
use super::envelope::{named_key, open};
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) async fn handle(fe: &Arc<Frontend>, req: DecryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    check_grant_tokens(&req.grant_tokens)?;
    // The model's enum first: AWS checks it before it looks the key up.
    check_algorithm_enum(req.encryption_algorithm.as_deref(), "encryptionAlgorithm")?;
    // One lookup of the KeyId decides the path (this is the hot one).
    let named = req.key_id.as_deref().map(|id| named_key(fe, id));
    if let (Some(key_id), Some(Ok(n))) = (req.key_id.as_deref(), &named) {
        if n.asymmetric_encryption {
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
    }
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let ctx = req.encryption_context.unwrap_or_default();
    let (plaintext, key) = open(fe, &blob, named, &ctx, KeyOp::Decrypt).await?;
    dry_run(req.dry_run)?;
    let material_id = fe.registry().material_id(&key.record.key_id, key.material);
    Ok(json!({
        "KeyId": key.arn,
        "Plaintext": B64.encode(plaintext.expose()),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "KeyMaterialId": material_id,
    }))
}
