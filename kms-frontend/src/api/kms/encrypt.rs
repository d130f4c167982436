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
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

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
    check_algorithm(req.encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
    let key = fe.registry().usable(&key_id, KeyOp::Encrypt)?;
    dry_run(req.dry_run)?;
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, plaintext.expose(), &ctx).await?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}
