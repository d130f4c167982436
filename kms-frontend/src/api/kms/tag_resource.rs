//! TagResource.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: TagResourceRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let tags = tag_pairs(Some(required(req.tags, "tags")?))?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.tag(&key_id, tags)?, ()))
    })
    .await?;
    Ok(json!({}))
}
