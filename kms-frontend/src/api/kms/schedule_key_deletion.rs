//! ScheduleKeyDeletion: the key turns PendingDeletion until its waiting period ends.

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::key_state::KeyState;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: ScheduleKeyDeletionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let record = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (record, changes) =
                reg.schedule_deletion(&key_id, req.pending_window_in_days, fe.now())?;
            Ok((changes, record))
        })
        .await?;
    let deletion = record
        .deletion
        .ok_or_else(|| KmsError::KmsInternal("deletion not recorded".into()))?;
    let reg = fe.registry();
    let state = reg.state_of(&record);
    to_json(ScheduleKeyDeletionResponse {
        key_id: reg.key_arn(&record.key_id),
        deletion_date: (state == KeyState::PendingDeletion)
            .then(|| epoch_seconds(deletion.deletion_date_millis)),
        key_state: state.as_str(),
        pending_window_in_days: deletion.window_days,
    })
}
