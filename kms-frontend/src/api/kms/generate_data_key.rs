//! GenerateDataKey (and the work it shares with GenerateDataKeyWithoutPlaintext).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use serde_json::{json, Value};

use super::checks::*;
use super::envelope::seal;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) async fn generate(
    fe: &Arc<Frontend>,
    req: GenerateDataKeyRequest,
    with_plaintext: bool,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let length = match (req.key_spec.as_deref(), req.number_of_bytes) {
        (Some("AES_256"), None) => 32,
        (Some("AES_128"), None) => 16,
        (Some(other), None) => {
            return Err(KmsError::not_in_enum(
                "keySpec",
                other,
                &["AES_256", "AES_128"],
            ))
        }
        (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
        (None, Some(n)) => return Err(KmsError::number_of_bytes(n)),
        (Some(_), Some(_)) => {
            return Err(KmsError::Validation(
                "Specify either KeySpec or NumberOfBytes, not both.".into(),
            ))
        }
        (None, None) => return Err(KmsError::length_missing()),
    };
    check_grant_tokens(&req.grant_tokens)?;
    let op = if with_plaintext {
        KeyOp::GenerateDataKey
    } else {
        KeyOp::GenerateDataKeyWithoutPlaintext
    };
    let key = fe.registry().usable(&key_id, op)?;
    dry_run(req.dry_run)?;
    let bytes = hsmkms_common::entropy::bytes(fe.entropy.as_ref(), length);
    let data_key = SecretBytes::new(bytes);
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, data_key.expose(), &ctx).await?;
    let material_id = fe.registry().material_id(&key.record.key_id, key.material);
    let mut answer =
        json!({"CiphertextBlob": B64.encode(blob), "KeyId": key.arn, "KeyMaterialId": material_id});
    if with_plaintext {
        answer["Plaintext"] = json!(B64.encode(data_key.expose()));
    }
    Ok(answer)
}

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: GenerateDataKeyRequest,
) -> Result<Value, KmsError> {
    generate(fe, req, true).await
}
