//! DisconnectCustomKeyStore: the sessions close, and the store's keys turn Unavailable.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::transition;
use crate::service::connection_state::ConnectionOp;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: CustomKeyStoreIdRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let mut owner = fe.store_owner(&store_id).await?;
    transition(fe, &owner, &store_id, ConnectionOp::Disconnect).await?;
    owner.generation += 1;
    fe.hsm.close(&store_id, owner.generation).await;
    transition(fe, &owner, &store_id, ConnectionOp::DisconnectCompleted).await?;
    Ok(json!({}))
}
