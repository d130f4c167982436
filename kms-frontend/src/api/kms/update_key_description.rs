//! UpdateKeyDescription.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: UpdateKeyDescriptionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let description = required(req.description, "description")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.update_description(&key_id, description)?, ()))
    })
    .await?;
    Ok(json!({}))
}
