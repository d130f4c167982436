//! UntagResource.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: UntagResourceRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let keys = required(req.tag_keys, "tagKeys")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.untag(&key_id, keys)?, ()))
    })
    .await?;
    Ok(json!({}))
}
