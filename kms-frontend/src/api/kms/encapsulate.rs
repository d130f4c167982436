//! Encapsulate and Decapsulate, with ML-KEM (ENCAPSULATE_DECAPSULATE) keys.

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

pub(super) fn encapsulate(fe: &Arc<Frontend>, req: EncapsulateRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let algorithm = required(req.encapsulation_algorithm, "encapsulationAlgorithm")?;
    check_enum(&algorithm, "encapsulationAlgorithm", &["ML_KEM"])?;
    check_grant_tokens(&req.grant_tokens)?;
    let key = fe.registry().typed_key(&key_id, KeyOp::Encapsulate)?;
    dry_run(req.dry_run)?;
    let (ciphertext, secret) = asymmetric::encapsulate(key.spec, key.material.expose())?;
    Ok(json!({
        "KeyId": key.arn,
        "SharedSecret": B64.encode(secret.expose()),
        "SharedSecretCiphertextBlob": B64.encode(ciphertext),
        "EncapsulationAlgorithm": "ML_KEM",
    }))
}

pub(super) fn decapsulate(fe: &Arc<Frontend>, req: EncapsulateRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    // KMS's CiphertextType: 1 to 6144 bytes, a ValidationException otherwise.
    let ciphertext = super::sign::ciphertext_type_blob(
        req.shared_secret_ciphertext_blob,
        "sharedSecretCiphertextBlob",
    )?;
    let algorithm = required(req.encapsulation_algorithm, "encapsulationAlgorithm")?;
    check_enum(&algorithm, "encapsulationAlgorithm", &["ML_KEM"])?;
    check_grant_tokens(&req.grant_tokens)?;
    let key = fe.registry().typed_key(&key_id, KeyOp::Decapsulate)?;
    dry_run(req.dry_run)?;
    let secret = asymmetric::decapsulate(key.spec, key.material.expose(), &ciphertext)?
        .ok_or_else(KmsError::invalid_ciphertext)?;
    Ok(json!({
        "KeyId": key.arn,
        "SharedSecret": B64.encode(secret.expose()),
        "EncapsulationAlgorithm": "ML_KEM",
    }))
}
