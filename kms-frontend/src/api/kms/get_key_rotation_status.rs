//! GetKeyRotationStatus.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::GetKeyRotationStatus)?;
    Ok(json!({
        "KeyRotationEnabled": false,
        "KeyId": reg.arns.key_arn(&record.key_id),
    }))
}
