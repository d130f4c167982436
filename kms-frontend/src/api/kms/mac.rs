//! GenerateMac and VerifyMac, with HMAC keys.

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
use crate::service::registry::TypedKey;

/// `MacAlgorithmSpec`'s names in the order AWS lists them in its enum error (recorded:
/// `[HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512]`), which is not the model's order.
const MAC_ALGORITHM_ENUM: [&str; 4] = [
    "HMAC_SHA_384",
    "HMAC_SHA_256",
    "HMAC_SHA_224",
    "HMAC_SHA_512",
];

/// The checks GenerateMac and VerifyMac share: the request's members (VerifyMac's `Mac`
/// among them, so its violation is reported with the others), then the key, then the
/// algorithm against the key's spec. Returns the key, algorithm, message and (VerifyMac) MAC.
#[allow(clippy::type_complexity)]
fn prepare(
    fe: &Frontend,
    req: &mut MacRequest,
    op: KeyOp,
) -> Result<(TypedKey, String, Vec<u8>, Option<Vec<u8>>), KmsError> {
    let mut v = Violations::default();
    let message = v.check(message_blob(req.message.take(), "message"))?;
    let key_id = v.check(required(req.key_id.take(), "keyId"))?;
    let algorithm = v.check(
        required(req.mac_algorithm.take(), "macAlgorithm").and_then(|a| {
            check_enum(&a, "macAlgorithm", &MAC_ALGORITHM_ENUM)?;
            Ok(a)
        }),
    )?;
    let mac = match op {
        KeyOp::VerifyMac => v
            .check(super::sign::ciphertext_type_blob(req.mac.take(), "mac"))?
            .map(Some),
        _ => Some(None),
    };
    v.check(check_grant_tokens(&req.grant_tokens))?;
    v.finish()?;
    let (message, key_id, algorithm) = (checked(message)?, checked(key_id)?, checked(algorithm)?);
    let mac = checked(mac)?;
    let key = fe.registry().typed_key(&key_id, op)?;
    if key.spec.mac_algorithm() != Some(algorithm.as_str()) {
        return Err(incompatible(&algorithm, key.spec));
    }
    Ok((key, algorithm, message, mac))
}

pub(super) async fn generate(fe: &Arc<Frontend>, mut req: MacRequest) -> Result<Value, KmsError> {
    let (key, algorithm, message, _) = prepare(fe, &mut req, KeyOp::GenerateMac)?;
    dry_run(req.dry_run)?;
    let mac = asymmetric::mac(key.spec, key.material.expose(), &message)?;
    Ok(json!({
        "Mac": B64.encode(mac),
        "MacAlgorithm": algorithm,
        "KeyId": key.arn,
    }))
}

pub(super) async fn verify(fe: &Arc<Frontend>, mut req: MacRequest) -> Result<Value, KmsError> {
    let (key, algorithm, message, mac) = prepare(fe, &mut req, KeyOp::VerifyMac)?;
    let mac = checked(mac)?;
    dry_run(req.dry_run)?;
    if !asymmetric::verify_mac(key.spec, key.material.expose(), &message, &mac)? {
        // AWS answers a MAC that does not verify with this error and no message (recorded).
        return Err(KmsError::KmsInvalidMac(String::new()));
    }
    Ok(json!({
        "KeyId": key.arn,
        "MacValid": true,
        "MacAlgorithm": algorithm,
    }))
}
