//! Sign and Verify, with asymmetric SIGN_VERIFY keys.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric::{self, MessageType};
use crate::service::error::KmsError;
use crate::service::key_spec::SIGNING_ALGORITHMS;
use crate::service::key_state::KeyOp;
use crate::service::registry::TypedKey;

/// Decodes a `Signature` or `Mac` member, KMS's `CiphertextType`: 1 to 6144 bytes. An empty
/// one is a ValidationException, as for every member of that type, not a signature or MAC
/// that fails to verify.
pub(super) fn ciphertext_type_blob(
    value: Option<String>,
    member: &str,
) -> Result<Vec<u8>, KmsError> {
    let bytes = blob(value, member)?;
    if bytes.is_empty() || bytes.len() > 6144 {
        let bound = if bytes.is_empty() {
            "greater than or equal to 1"
        } else {
            "less than or equal to 6144"
        };
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member must have length {bound}"
        )));
    }
    Ok(bytes)
}

/// The checks Sign and Verify share, in AWS's order: the request's members (Verify's
/// `Signature` among them, so its violation is reported with the others), then the key, then
/// the algorithm against the key's spec, then the message against the algorithm (a digest of
/// the wrong length), all before DryRun is answered. Returns the key, algorithm, message type,
/// message and (Verify) signature.
#[allow(clippy::type_complexity)]
fn prepare(
    fe: &Frontend,
    req: &mut SignRequest,
    op: KeyOp,
) -> Result<(TypedKey, String, MessageType, Vec<u8>, Option<Vec<u8>>), KmsError> {
    let mut v = Violations::default();
    let key_id = v.check(required(req.key_id.take(), "keyId"))?;
    let message = v.check(message_blob(req.message.take(), "message"))?;
    let algorithm = v.check(
        required(req.signing_algorithm.take(), "signingAlgorithm").and_then(|a| {
            check_enum(&a, "signingAlgorithm", &SIGNING_ALGORITHMS)?;
            Ok(a)
        }),
    )?;
    let message_type = v.check(MessageType::parse(req.message_type.as_deref()))?;
    let signature = match op {
        KeyOp::Verify => v
            .check(ciphertext_type_blob(req.signature.take(), "signature"))?
            .map(Some),
        _ => Some(None),
    };
    v.check(check_grant_tokens(&req.grant_tokens))?;
    v.finish()?;
    let (key_id, message) = (checked(key_id)?, checked(message)?);
    let (algorithm, message_type) = (checked(algorithm)?, checked(message_type)?);
    let signature = checked(signature)?;
    let key = fe.registry().typed_key(&key_id, op)?;
    if !key.spec.signing_algorithms().contains(&algorithm.as_str()) {
        return Err(incompatible(&algorithm, key.spec));
    }
    asymmetric::check_message(key.spec, &algorithm, message_type, &message)?;
    Ok((key, algorithm, message_type, message, signature))
}

pub(super) async fn sign(fe: &Arc<Frontend>, mut req: SignRequest) -> Result<Value, KmsError> {
    let (key, algorithm, message_type, message, _) = prepare(fe, &mut req, KeyOp::Sign)?;
    dry_run(req.dry_run)?;
    let signature = asymmetric::sign(
        key.spec,
        key.material.expose(),
        &algorithm,
        message_type,
        &message,
    )?;
    Ok(json!({
        "KeyId": key.arn,
        "Signature": B64.encode(signature),
        "SigningAlgorithm": algorithm,
    }))
}

pub(super) async fn verify(fe: &Arc<Frontend>, mut req: SignRequest) -> Result<Value, KmsError> {
    let (key, algorithm, message_type, message, signature) = prepare(fe, &mut req, KeyOp::Verify)?;
    let signature = checked(signature)?;
    dry_run(req.dry_run)?;
    let valid = asymmetric::verify(
        key.spec,
        key.material.expose(),
        &algorithm,
        message_type,
        &message,
        &signature,
    )?;
    if !valid {
        // AWS answers an invalid signature with this error and no message (recorded).
        return Err(KmsError::KmsInvalidSignature(String::new()));
    }
    Ok(json!({
        "KeyId": key.arn,
        "SignatureValid": true,
        "SigningAlgorithm": algorithm,
    }))
}
