//! ListGrants and ListRetirableGrants.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::error::KmsError;
use crate::service::model::GrantRecord;
use crate::service::registry::Registry;

/// ListGrants.
pub(super) fn handle(fe: &Arc<Frontend>, req: ListGrantsRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let limit = check_limit(req.limit, 100, 50)?;
    let reg = fe.registry();
    let grants = reg.list_grants(
        &key_id,
        req.grant_id.as_deref(),
        req.grantee_principal.as_deref(),
    )?;
    page(&reg, &grants, limit, req.marker.as_deref())
}

/// ListRetirableGrants.
pub(super) fn retirable(fe: &Arc<Frontend>, req: ListGrantsRequest) -> Result<Value, KmsError> {
    let principal = required(req.retiring_principal, "retiringPrincipal")?;
    let limit = check_limit(req.limit, 100, 50)?;
    let reg = fe.registry();
    let grants = reg.retirable_grants(&principal);
    page(&reg, &grants, limit, req.marker.as_deref())
}

/// One page of `grants`, from the marker's position.
fn page(
    reg: &Registry,
    grants: &[&GrantRecord],
    limit: usize,
    marker: Option<&str>,
) -> Result<Value, KmsError> {
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&i| i <= grants.len())
            .ok_or_else(|| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let listed: Vec<Value> = grants
        .iter()
        .skip(start)
        .take(limit)
        .map(|g| entry(reg, g))
        .collect();
    let end = start + listed.len();
    let mut answer = json!({"Grants": listed, "Truncated": end < grants.len()});
    if end < grants.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}

/// A `GrantListEntry`: the key by ARN, as KMS lists it.
fn entry(reg: &Registry, g: &GrantRecord) -> Value {
    let mut entry = json!({
        "KeyId": reg.key_arn(&g.key_id),
        "GrantId": g.grant_id,
        "CreationDate": epoch_seconds(g.created_at_millis),
        "GranteePrincipal": g.grantee_principal,
        "IssuingAccount": g.issuing_account,
        "Operations": g.operations,
    });
    if let Some(name) = &g.name {
        entry["Name"] = json!(name);
    }
    if let Some(retiring) = &g.retiring_principal {
        entry["RetiringPrincipal"] = json!(retiring);
    }
    if let Some(c) = &g.constraints {
        let mut constraints = json!({});
        if let Some(subset) = &c.encryption_context_subset {
            constraints["EncryptionContextSubset"] = json!(subset);
        }
        if let Some(equals) = &c.encryption_context_equals {
            constraints["EncryptionContextEquals"] = json!(equals);
        }
        entry["Constraints"] = constraints;
    }
    entry
}
