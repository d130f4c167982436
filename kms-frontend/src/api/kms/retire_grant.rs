//! RetireGrant and RevokeGrant.

use std::sync::Arc;

use serde_json::{json, Value};

use super::checks::*;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

/// RetireGrant: by grant token, or by key and grant id.
pub(super) async fn handle(fe: &Arc<Frontend>, req: RetireGrantRequest) -> Result<Value, KmsError> {
    remove(fe, req.key_id, req.grant_id, req.grant_token, req.dry_run).await
}

/// RevokeGrant: by key and grant id, both required.
pub(super) async fn revoke(fe: &Arc<Frontend>, req: RetireGrantRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let grant_id = required(req.grant_id, "grantId")?;
    remove(fe, Some(key_id), Some(grant_id), None, req.dry_run).await
}

async fn remove(
    fe: &Arc<Frontend>,
    key_id: Option<String>,
    grant_id: Option<String>,
    token: Option<String>,
    dry: Option<bool>,
) -> Result<Value, KmsError> {
    if let Some(id) = &grant_id {
        if id.is_empty() || id.len() > 128 {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{id}' at 'grantId' failed to satisfy constraint: Member must have length less than or equal to 128"
            )));
        }
    }
    if dry == Some(true) {
        fe.registry()
            .remove_grant(key_id.as_deref(), grant_id.as_deref(), token.as_deref())?;
        return dry_run(Some(true)).map(|()| json!({}));
    }
    let locks = key_id
        .as_deref()
        .map(|k| lock_key(fe, k))
        .unwrap_or_default();
    fe.change(locks, |reg| {
        let changes = reg.remove_grant(key_id.as_deref(), grant_id.as_deref(), token.as_deref())?;
        Ok((changes, ()))
    })
    .await?;
    Ok(json!({}))
}
