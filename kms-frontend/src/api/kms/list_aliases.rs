//! ListAliases.

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;

pub(super) fn handle(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let limit = check_limit(req.limit, 1000, 50)?;
    let reg = fe.registry();
    let scope = reg.scope();
    let (aliases, next) = reg.list_aliases(req.key_id.as_deref(), req.marker.as_deref(), limit)?;
    to_json(ListAliasesResponse {
        aliases: aliases
            .iter()
            .map(|a| AliasListEntry {
                alias_arn: scope.alias_arn(&a.name),
                alias_name: a.name.clone(),
                target_key_id: reg.key_id_text(&a.target_key_id),
                creation_date: epoch_seconds(a.created_at_millis),
                last_updated_date: epoch_seconds(a.updated_at_millis),
            })
            .collect(),
        truncated: next.is_some(),
        next_marker: next,
    })
}
