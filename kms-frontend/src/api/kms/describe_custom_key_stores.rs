//! DescribeCustomKeyStores.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::model::KeyStoreRecord;

pub(super) fn handle(
    fe: &Arc<Frontend>,
    req: DescribeCustomKeyStoresRequest,
) -> Result<Value, KmsError> {
    let limit = req.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        let shown = format!(" '{limit}'");
        return Err(KmsError::out_of_bounds(
            "limit", &shown, "value", limit, 1, 1000,
        ));
    }
    let reg = fe.registry();
    let selected: Vec<&KeyStoreRecord> =
        match (&req.custom_key_store_id, &req.custom_key_store_name) {
            (Some(_), Some(_)) => {
                return Err(KmsError::Validation(
                    "Specify CustomKeyStoreId or CustomKeyStoreName, not both.".into(),
                ))
            }
            (Some(id), None) => vec![reg.store(id)?],
            (None, Some(name)) => vec![reg.store_by_name(name).ok_or_else(|| {
                KmsError::CustomKeyStoreNotFound(format!("Custom key store {name} does not exist."))
            })?],
            (None, None) => reg.stores().collect(),
        };
    let start = match &req.marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let page: Vec<CustomKeyStoreEntry> = selected
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|s| CustomKeyStoreEntry {
            custom_key_store_id: s.id.clone(),
            custom_key_store_name: s.name.clone(),
            cloud_hsm_cluster_id: s.cluster_id.clone(),
            trust_anchor_certificate: s.trust_anchor.clone(),
            connection_state: s.state.as_str(),
            connection_error_code: s.state.error_code().map(|c| c.as_str()),
            creation_date: epoch_seconds(s.created_at_millis),
            custom_key_store_type: "AWS_CLOUDHSM",
        })
        .collect();
    let end = start + page.len();
    let mut answer = json!({"CustomKeyStores": to_json(page)?, "Truncated": end < selected.len()});
    if end < selected.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}
