//! UpdateAlias.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::locks::Resource;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    let target = required(req.target_key_id, "targetKeyId")?;
    // The alias, its old target and its new one: the old target is read before the locks are
    // taken, so the plan checks it did not move meanwhile, and a move starts over.
    loop {
        let old = fe.registry().alias_target(&name);
        let mut resources = vec![Resource::Alias(name.clone())];
        resources.extend(fe.key_resource(&target));
        resources.extend(old.map(Resource::Key));
        let moved = fe
            .change(resources, |reg| {
                if reg.alias_target(&name) != old {
                    return Ok((vec![], true));
                }
                Ok((reg.update_alias(&name, &target, fe.now())?, false))
            })
            .await?;
        if !moved {
            break;
        }
    }
    Ok(json!({}))
}
