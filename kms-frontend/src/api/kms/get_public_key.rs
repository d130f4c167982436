//! GetPublicKey: an asymmetric key's public key, DER-encoded SubjectPublicKeyInfo.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    check_grant_tokens(&req.grant_tokens)?;
    let key = fe.registry().typed_key(&key_id, KeyOp::GetPublicKey)?;
    let public = asymmetric::public_key(key.spec, key.material.expose())?;
    let algorithms = key_spec::algorithms(key.spec, key.usage);
    let mut answer = json!({
        "KeyId": key.arn,
        "PublicKey": B64.encode(public),
        "KeySpec": key.spec.as_str(),
        "KeyUsage": key.usage.as_str(),
    });
    if let Some(cmk_spec) = key.spec.customer_master_key_spec() {
        answer["CustomerMasterKeySpec"] = json!(cmk_spec);
    }
    for (member, list) in [
        ("EncryptionAlgorithms", algorithms.encryption),
        ("SigningAlgorithms", algorithms.signing),
        ("KeyAgreementAlgorithms", algorithms.key_agreement),
        ("EncapsulationAlgorithms", algorithms.encapsulation),
    ] {
        if !list.is_empty() {
            answer[member] = json!(list);
        }
    }
    Ok(answer)
}
