//! ReEncrypt: open under the source key, seal under the destination key.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::envelope::{open, seal};
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) async fn handle(fe: &Arc<Frontend>, req: ReEncryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    let destination = required(req.destination_key_id, "destinationKeyId")?;
    check_algorithm(req.source_encryption_algorithm.as_deref())?;
    check_algorithm(req.destination_encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
    let source_ctx = req.source_encryption_context.unwrap_or_default();
    let (plaintext, source) = open(
        fe,
        &blob,
        req.source_key_id,
        &source_ctx,
        KeyOp::ReEncryptSource,
    )
    .await?;
    let dest = fe
        .registry()
        .usable(&destination, KeyOp::ReEncryptDestination)?;
    dry_run(req.dry_run)?;
    let dest_ctx = req.destination_encryption_context.unwrap_or_default();
    let sealed = seal(fe, &dest, plaintext.expose(), &dest_ctx).await?;
    let (source_material, dest_material) = {
        let reg = fe.registry();
        (
            reg.material_id(&source.record.key_id, source.material),
            reg.material_id(&dest.record.key_id, dest.material),
        )
    };
    Ok(json!({
        "CiphertextBlob": B64.encode(sealed),
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceKeyMaterialId": source_material,
        "DestinationKeyMaterialId": dest_material,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}
