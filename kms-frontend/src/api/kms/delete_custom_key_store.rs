//! DeleteCustomKeyStore: only a store with no keys left.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::connection_state::ConnectionOp;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: CustomKeyStoreIdRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let owner = fe.store_owner(&store_id).await?;
    {
        let reg = fe.registry();
        let record = reg.store(&store_id)?;
        record.state.apply(ConnectionOp::Delete, &store_id)?;
        let keys = reg.keys_in_store(&store_id) + owner.creating();
        if keys > 0 {
            return Err(KmsError::CustomKeyStoreHasCmks(format!(
                "Custom key store {store_id} still holds {keys} KMS keys (keys pending deletion count until their waiting period ends)."
            )));
        }
    }
    fe.commit(vec![crate::store::Write::delete(
        crate::store::Table::KeyStores,
        store_id.clone(),
    )])
    .await?;
    fe.registry_mut().uninstall_store(&store_id);
    drop(owner);
    fe.forget_store(&store_id);
    Ok(json!({}))
}
