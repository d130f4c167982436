//! ListResourceTags.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let limit = check_limit(req.limit, 50, 50)?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::ListResourceTags)?;
    let start = match req.marker.as_deref() {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let all: Vec<(&String, &String)> = record.tags.iter().collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    let end = start + page.len();
    let mut answer = json!({"Tags": page, "Truncated": end < all.len()});
    if end < all.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}
