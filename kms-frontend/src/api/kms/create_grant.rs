//! CreateGrant.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;
use crate::service::model::GrantConstraints;
use crate::service::registry::{GrantRequest, GRANT_OPERATIONS};

pub(super) async fn handle(fe: &Arc<Frontend>, req: CreateGrantRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let grantee = required(req.grantee_principal, "granteePrincipal")?;
    check_principal(&grantee, "granteePrincipal")?;
    if let Some(retiring) = &req.retiring_principal {
        check_principal(retiring, "retiringPrincipal")?;
    }
    let listed = required(req.operations, "operations")?;
    if listed.is_empty() {
        return Err(KmsError::Validation(
            "1 validation error detected: Value '[]' at 'operations' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    let mut operations: Vec<String> = Vec::with_capacity(listed.len());
    for (i, op) in listed.into_iter().enumerate() {
        if !GRANT_OPERATIONS.contains(&op.as_str()) {
            return Err(KmsError::not_in_enum(
                &format!("operations.{}.member", i + 1),
                &op,
                &GRANT_OPERATIONS,
            ));
        }
        if !operations.contains(&op) {
            operations.push(op);
        }
    }
    if let Some(name) = &req.name {
        check_grant_name(name)?;
    }
    check_grant_tokens(&req.grant_tokens)?;
    let constraints = req.constraints.map(|c| GrantConstraints {
        encryption_context_subset: c.encryption_context_subset,
        encryption_context_equals: c.encryption_context_equals,
    });
    let request = GrantRequest {
        key_id: key_id.clone(),
        grantee_principal: grantee,
        retiring_principal: req.retiring_principal,
        operations,
        constraints,
        name: req.name,
    };
    if req.dry_run == Some(true) {
        // Every check a real call makes, nothing stored.
        fe.registry()
            .create_grant(request, fe.now(), fe.entropy.as_ref())?;
        return dry_run(Some(true)).map(|()| json!({}));
    }
    let now = fe.now();
    let (grant_id, token) = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (changes, id, token) = reg.create_grant(request, now, fe.entropy.as_ref())?;
            Ok((changes, (id, token)))
        })
        .await?;
    Ok(json!({"GrantToken": token, "GrantId": grant_id}))
}

/// The model's `PrincipalIdType`: 1 to 256 characters of `[\w+=,.@:/-]`.
fn check_principal(principal: &str, member: &str) -> Result<(), KmsError> {
    let allowed = |c: char| c.is_alphanumeric() || c == '_' || "+=,.@:/-".contains(c);
    if principal.is_empty() || principal.chars().count() > 256 || !principal.chars().all(allowed) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{principal}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[\\w+=,.@:/-]+$"
        )));
    }
    Ok(())
}

/// The model's `GrantNameType`: 1 to 256 characters of `[a-zA-Z0-9:/_-]`.
fn check_grant_name(name: &str) -> Result<(), KmsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":/_-".contains(c);
    if name.is_empty() || name.len() > 256 || !name.chars().all(allowed) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    Ok(())
}
