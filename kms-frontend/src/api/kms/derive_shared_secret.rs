//! DeriveSharedSecret: ECDH between a KEY_AGREEMENT key and a peer's public key.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: DeriveSharedSecretRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let algorithm = required(req.key_agreement_algorithm, "keyAgreementAlgorithm")?;
    check_enum(&algorithm, "keyAgreementAlgorithm", &["ECDH"])?;
    let public_key = blob(req.public_key, "publicKey")?;
    if public_key.is_empty() || public_key.len() > 8192 {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at 'publicKey' failed to satisfy constraint: Member must have length {}",
            if public_key.is_empty() { "greater than or equal to 1" } else { "less than or equal to 8192" }
        )));
    }
    check_grant_tokens(&req.grant_tokens)?;
    if req.recipient.is_some() {
        return Err(recipient_unsupported());
    }
    let key = fe
        .registry()
        .typed_key(&key_id, KeyOp::DeriveSharedSecret)?;
    dry_run(req.dry_run)?;
    // A key that is not a public key on the key's curve: AWS answers a ValidationException
    // without a message (recorded).
    let secret = asymmetric::derive_shared_secret(key.spec, key.material.expose(), &public_key)?
        .ok_or_else(|| KmsError::Validation(String::new()))?;
    Ok(json!({
        "KeyId": key.arn,
        "SharedSecret": B64.encode(secret.expose()),
        "KeyAgreementAlgorithm": "ECDH",
        "KeyOrigin": key.record.origin.as_str(),
    }))
}
