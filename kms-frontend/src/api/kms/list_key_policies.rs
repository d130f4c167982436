//! ListKeyPolicies.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    check_limit(req.limit, 1000, 100)?;
    fe.registry()
        .checked(&key_id, false, KeyOp::ListKeyPolicies)?;
    Ok(json!({"PolicyNames": ["default"], "Truncated": false}))
}
