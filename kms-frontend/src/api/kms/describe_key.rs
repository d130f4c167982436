//! DescribeKey.

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use super::metadata::metadata;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

pub(super) fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    check_grant_tokens(&req.grant_tokens)?;
    let key_id = required(req.key_id, "keyId")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, true, KeyOp::DescribeKey)?;
    to_json(KeyMetadataResponse {
        key_metadata: metadata(&reg, record),
    })
}
