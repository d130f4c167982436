//! ReplicateKey and UpdatePrimaryRegion: multi-Region keys (see
//! [`crate::service::registry`]'s multi_region module for what a family shares).

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::lock_key;
use super::metadata::metadata;
use crate::api::types::{required, tag_pairs, ReplicateKeyRequest, UpdatePrimaryRegionRequest};
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::key_ref::is_region;
use crate::service::registry::ReplicaRequest;

/// A Region name as KMS's model constrains it (`^([a-z]+-){2,3}\d+$`, 1 to 32 characters).
fn check_region(region: &str, member: &str) -> Result<(), KmsError> {
    if is_region(region) {
        Ok(())
    } else {
        Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{region}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([a-z]+-){{2,3}}\\d+$"
        )))
    }
}

pub(super) async fn replicate(
    fe: &Arc<Frontend>,
    req: ReplicateKeyRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.replica_region, "replicaRegion")?;
    check_region(&region, "replicaRegion")?;
    let request = ReplicaRequest {
        description: req.description,
        policy: req.policy,
        tags: tag_pairs(req.tags)?,
    };
    let now = fe.now();
    let replica = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (record, changes) =
                reg.plan_replicate(&key_id, &region, request, now, fe.entropy.as_ref())?;
            Ok((changes, record))
        })
        .await?;
    let reg = fe.registry();
    let tags: Vec<Value> = replica
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    Ok(json!({
        "ReplicaKeyMetadata": metadata(&reg, &replica),
        "ReplicaPolicy": &*replica.policy,
        "ReplicaTags": tags,
    }))
}

pub(super) async fn update_primary_region(
    fe: &Arc<Frontend>,
    req: UpdatePrimaryRegionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let region = required(req.primary_region, "primaryRegion")?;
    check_region(&region, "primaryRegion")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.plan_update_primary(&key_id, &region)?, ()))
    })
    .await?;
    Ok(json!({}))
}
