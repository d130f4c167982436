//! GetKeyRotationStatus.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::GetKeyRotationStatus)?;
    let rotations = reg.rotations_of(&record.key_id);
    let schedule = rotations.and_then(|r| r.schedule);
    let mut answer = json!({
        "KeyRotationEnabled": schedule.is_some(),
        "KeyId": reg.key_arn(&record.key_id),
    });
    if let Some(s) = schedule {
        answer["RotationPeriodInDays"] = json!(s.period_days);
        answer["NextRotationDate"] = json!(epoch_seconds(s.next_rotation_millis));
    }
    if let Some(last) = rotations.and_then(|r| r.rotations.iter().rev().find(|r| r.on_demand)) {
        answer["OnDemandRotationStartDate"] = json!(epoch_seconds(last.rotated_at_millis));
    }
    Ok(answer)
}
