//! CreateAlias.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::locks::Resource;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    let target = required(req.target_key_id, "targetKeyId")?;
    let mut resources = vec![Resource::Alias(name.clone())];
    resources.extend(fe.key_resource(&target));
    fe.change(resources, |reg| {
        Ok((reg.create_alias(&name, &target, fe.now())?, ()))
    })
    .await?;
    Ok(json!({}))
}
