//! CancelKeyDeletion: the key turns Disabled.

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let id = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (id, changes) = reg.cancel_deletion(&key_id)?;
            Ok((changes, id))
        })
        .await?;
    to_json(KeyIdResponse {
        key_id: fe.registry().key_arn(&id),
    })
}
