//! GetKeyLastUsage: a key's last successful cryptographic operation since tracking began (this
//! process's start).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let (id, created) = {
        let reg = fe.registry();
        let record = reg.checked(&key_id, false, KeyOp::DescribeKey)?;
        (record.key_id, record.created_at_millis)
    };
    let mut answer = json!({
        "KeyId": fe.registry().key_arn(&id),
        "KeyCreationDate": epoch_seconds(created),
        "TrackingStartDate": epoch_seconds(fe.tracking_start_millis),
    });
    if let Some(usage) = fe.key_last_usage(&id) {
        answer["KeyLastUsage"] = json!({
            "Operation": usage.operation,
            "Timestamp": epoch_seconds(usage.at_millis),
            "CloudTrailEventId": usage.event_id.to_string(),
            "KmsRequestId": usage.request_id.to_string(),
        });
    }
    Ok(answer)
}
