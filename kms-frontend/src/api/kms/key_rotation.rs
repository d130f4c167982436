//! EnableKeyRotation, DisableKeyRotation, RotateKeyOnDemand and ListKeyRotations.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::key_state::KeyOp;
use crate::service::model::KeyOrigin;

/// EnableKeyRotation.
pub(super) async fn enable(
    fe: &Arc<Frontend>,
    req: EnableKeyRotationRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let now = fe.now();
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((
            reg.enable_rotation(&key_id, req.rotation_period_in_days, now)?,
            (),
        ))
    })
    .await?;
    Ok(json!({}))
}

/// DisableKeyRotation.
pub(super) async fn disable(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.disable_rotation(&key_id)?, ()))
    })
    .await?;
    Ok(json!({}))
}

/// RotateKeyOnDemand.
pub(super) async fn rotate(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let now = fe.now();
    let id = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (changes, id) = reg.rotate_on_demand(&key_id, now, fe.entropy.as_ref())?;
            Ok((changes, id))
        })
        .await?;
    Ok(json!({"KeyId": fe.registry().key_arn(&id)}))
}

/// ListKeyRotations: the key's rotations, oldest first.
pub(super) fn list(fe: &Arc<Frontend>, req: ListKeyRotationsRequest) -> Result<Value, KmsError> {
    const INCLUDE: [&str; 2] = ["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"];
    let key_id = required(req.key_id, "keyId")?;
    if let Some(include) = req.include_key_material.as_deref() {
        if !INCLUDE.contains(&include) {
            return Err(KmsError::not_in_enum(
                "includeKeyMaterial",
                include,
                &INCLUDE,
            ));
        }
    }
    let limit = check_limit(req.limit, 1000, 100)?;
    let all = req.include_key_material.as_deref() == Some("ALL_KEY_MATERIAL");
    let reg = fe.registry();
    // A symmetric EXTERNAL key lists its materials in any state but pending deletion: one that
    // is PendingImport because a material is missing must still say which.
    let record = match reg.resolve(&key_id, false) {
        Ok(r) if r.imported_material_id().is_some() && r.spec() == KeySpec::SymmetricDefault => {
            reg.checked(&key_id, false, KeyOp::DescribeKey)?
        }
        _ => reg.checked(&key_id, false, KeyOp::ListKeyRotations)?,
    };
    let id = record.key_id;
    let arn = reg.key_arn(&id);
    let entries: Vec<Value> = if matches!(record.origin, KeyOrigin::External { .. }) {
        reg.imported_entries(record)
            .into_iter()
            .filter(|e| all || e.rotated_at_millis.is_some())
            .map(|e| {
                let mut entry = json!({
                    "KeyId": arn,
                    "KeyMaterialId": e.material_id,
                    "ImportState": if e.imported { "IMPORTED" } else { "PENDING_IMPORT" },
                    "KeyMaterialState": e.state,
                    "ExpirationModel": if e.valid_to_millis.is_some() { "KEY_MATERIAL_EXPIRES" } else { "KEY_MATERIAL_DOES_NOT_EXPIRE" },
                });
                if let Some(d) = e.description {
                    entry["KeyMaterialDescription"] = json!(d);
                }
                if let Some(t) = e.valid_to_millis {
                    entry["ValidTo"] = json!(epoch_seconds(t));
                }
                if let Some(t) = e.rotated_at_millis {
                    entry["RotationDate"] = json!(epoch_seconds(t));
                    entry["RotationType"] = json!("ON_DEMAND");
                }
                entry
            })
            .collect()
    } else {
        let rotations = reg
            .rotations_of(&id)
            .map(|r| r.rotations.as_slice())
            .unwrap_or_default();
        let current = rotations.len();
        let first = all.then(|| {
            json!({
                "KeyId": arn,
                "KeyMaterialId": reg.material_id(&id, 0),
                "KeyMaterialState": if current == 0 { "CURRENT" } else { "NON_CURRENT" },
            })
        });
        first
            .into_iter()
            .chain(rotations.iter().enumerate().map(|(i, r)| {
                json!({
                    "KeyId": arn,
                    "KeyMaterialId": r.material_id,
                    "KeyMaterialState": if i + 1 == current { "CURRENT" } else { "NON_CURRENT" },
                    "RotationDate": epoch_seconds(r.rotated_at_millis),
                    "RotationType": if r.on_demand { "ON_DEMAND" } else { "AUTOMATIC" },
                })
            }))
            .collect()
    };
    let start = match req.marker.as_deref() {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&i| i <= entries.len())
            .ok_or_else(|| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let page: Vec<Value> = entries.iter().skip(start).take(limit).cloned().collect();
    let end = start + page.len();
    let mut answer = json!({"Rotations": page, "Truncated": end < entries.len()});
    if end < entries.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}
