//! DeleteAlias.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::locks::Resource;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    fe.change(vec![Resource::Alias(name.clone())], |reg| {
        Ok((reg.delete_alias(&name)?, ()))
    })
    .await?;
    Ok(json!({}))
}
