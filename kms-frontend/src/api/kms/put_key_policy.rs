//! PutKeyPolicy.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: KeyPolicyRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let policy = required(req.policy, "policy")?;
    let name = req.policy_name.unwrap_or_else(|| "default".into());
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.put_policy(&key_id, &name, policy)?, ()))
    })
    .await?;
    Ok(json!({}))
}
