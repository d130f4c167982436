//! Decrypt.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::envelope::open;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) async fn handle(fe: &Arc<Frontend>, req: DecryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
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
