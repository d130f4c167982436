//! ReEncrypt: open under the source key, seal under the destination key. Either may be an RSA
//! ENCRYPT_DECRYPT key (named by SourceKeyId, with its algorithm), as on AWS.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use super::encrypt::{check_rsa_size, rsa_algorithm};
use super::envelope::{named_key, open, seal};
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::key_state::KeyOp;

pub(super) async fn handle(fe: &Arc<Frontend>, req: ReEncryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    let destination = required(req.destination_key_id, "destinationKeyId")?;
    check_grant_tokens(&req.grant_tokens)?;
    // The model's enums first: AWS checks them before it looks a key up.
    check_algorithm_enum(
        req.source_encryption_algorithm.as_deref(),
        "sourceEncryptionAlgorithm",
    )?;
    check_algorithm_enum(
        req.destination_encryption_algorithm.as_deref(),
        "destinationEncryptionAlgorithm",
    )?;
    let source_ctx = req.source_encryption_context.unwrap_or_default();
    // One lookup of the SourceKeyId decides the path.
    let named = req.source_key_id.as_deref().map(|id| named_key(fe, id));
    let asymmetric_source = match (&req.source_key_id, &named) {
        (Some(id), Some(Ok(n))) if n.asymmetric_encryption => Some(id.clone()),
        _ => None,
    };
    // The plaintext, and the source's ARN, algorithm and (symmetric keys) material id.
    let (plaintext, source_arn, source_algorithm, source_material) = match asymmetric_source {
        Some(id) => {
            let key = fe.registry().typed_key(&id, KeyOp::ReEncryptSource)?;
            let algorithm = rsa_algorithm(
                req.source_encryption_algorithm,
                key.spec,
                !source_ctx.is_empty(),
            )?;
            let plaintext = asymmetric::rsa_decrypt(key.material.expose(), &algorithm, &blob)?
                .ok_or_else(KmsError::invalid_ciphertext)?;
            (plaintext, key.arn, algorithm, None)
        }
        None => {
            check_algorithm(req.source_encryption_algorithm.as_deref())?;
            let (plaintext, source) =
                open(fe, &blob, named, &source_ctx, KeyOp::ReEncryptSource).await?;
            let material = fe
                .registry()
                .material_id(&source.record.key_id, source.material);
            let arn = source.arn.clone();
            (
                plaintext,
                arn,
                "SYMMETRIC_DEFAULT".to_string(),
                Some(material),
            )
        }
    };
    let dest_ctx = req.destination_encryption_context.unwrap_or_default();
    // One lookup serves both paths, as in Encrypt: an asymmetric ENCRYPT_DECRYPT key passes
    // the usage check and takes the RSA path.
    let dest = fe
        .registry()
        .usable(&destination, KeyOp::ReEncryptDestination)?;
    let mut answer = if dest.record.spec() != KeySpec::SymmetricDefault {
        let key = fe
            .registry()
            .typed_key(&destination, KeyOp::ReEncryptDestination)?;
        let algorithm = rsa_algorithm(
            req.destination_encryption_algorithm,
            key.spec,
            !dest_ctx.is_empty(),
        )?;
        check_rsa_size(&key, &algorithm, plaintext.len())?;
        dry_run(req.dry_run)?;
        let sealed =
            asymmetric::rsa_encrypt(key.material.expose(), &algorithm, plaintext.expose())?;
        json!({
            "CiphertextBlob": B64.encode(sealed),
            "KeyId": key.arn,
            "DestinationEncryptionAlgorithm": algorithm,
        })
    } else {
        check_algorithm(req.destination_encryption_algorithm.as_deref())?;
        dry_run(req.dry_run)?;
        let sealed = seal(fe, &dest, plaintext.expose(), &dest_ctx).await?;
        let material = fe
            .registry()
            .material_id(&dest.record.key_id, dest.material);
        json!({
            "CiphertextBlob": B64.encode(sealed),
            "KeyId": dest.arn,
            "DestinationKeyMaterialId": material,
            "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        })
    };
    answer["SourceKeyId"] = json!(source_arn);
    answer["SourceEncryptionAlgorithm"] = json!(source_algorithm);
    if let Some(material) = source_material {
        answer["SourceKeyMaterialId"] = json!(material);
    }
    Ok(answer)
}
