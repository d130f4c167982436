//! EnableKey (and the change it shares with DisableKey).

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn set_enabled(
    fe: &Arc<Frontend>,
    req: KeyIdRequest,
    enabled: bool,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.set_enabled(&key_id, enabled)?, ()))
    })
    .await?;
    Ok(json!({}))
}

pub(super) async fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    set_enabled(fe, req, true).await
}
