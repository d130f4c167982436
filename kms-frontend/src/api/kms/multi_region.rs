//! ReplicateKey and UpdatePrimaryRegion. hsmkms has no multi-Region keys yet (CreateKey with
//! `MultiRegion` is refused), so every key these name is a single-Region key, which AWS
//! answers with UnsupportedOperationException (recorded for ReplicateKey); the request is
//! checked as AWS checks it first.

use std::sync::Arc;

use serde_json::Value;

use crate::api::types::{required, ReplicateKeyRequest, UpdatePrimaryRegionRequest};
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_state::KeyOp;

/// A Region name as KMS's model constrains it (`^([a-z]+-){2,3}\d+$`, 1 to 32 characters).
fn check_region(region: &str, member: &str) -> Result<(), KmsError> {
    let parts: Vec<&str> = region.split('-').collect();
    let well_formed = region.len() <= 32
        && (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if well_formed {
        Ok(())
    } else {
        Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{region}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([a-z]+-){{2,3}}\\d+$"
        )))
    }
}

pub(super) fn replicate(fe: &Arc<Frontend>, req: ReplicateKeyRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.replica_region, "replicaRegion")?;
    check_region(&region, "replicaRegion")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::DescribeKey)?;
    Err(KmsError::UnsupportedOperation(format!(
        "{} is not a multi-region primary key.",
        reg.arns.key_arn(&record.key_id)
    )))
}

pub(super) fn update_primary_region(
    fe: &Arc<Frontend>,
    req: UpdatePrimaryRegionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.primary_region, "primaryRegion")?;
    check_region(&region, "primaryRegion")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::DescribeKey)?;
    Err(KmsError::UnsupportedOperation(format!(
        "{} is not a multi-region key.",
        reg.arns.key_arn(&record.key_id)
    )))
}
