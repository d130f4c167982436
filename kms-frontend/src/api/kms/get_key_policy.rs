//! GetKeyPolicy.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyPolicyRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let name = req.policy_name.unwrap_or_else(|| "default".into());
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::GetKeyPolicy)?;
    if name != "default" {
        return Err(KmsError::NotFound(format!("No such policy exists: {name}")));
    }
    Ok(json!({"Policy": record.policy, "PolicyName": "default"}))
}
