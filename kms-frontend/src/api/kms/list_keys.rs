//! ListKeys.

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) fn handle(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let limit = check_limit(req.limit, 1000, 100)?;
    let reg = fe.registry();
    let (ids, next) = reg.list_keys(req.marker.as_deref(), limit)?;
    to_json(ListKeysResponse {
        keys: ids
            .iter()
            .map(|id| KeyListEntry {
                key_id: reg.key_id_text(id),
                key_arn: reg.key_arn(id),
            })
            .collect(),
        truncated: next.is_some(),
        next_marker: next,
    })
}
