//! DisconnectCustomKeyStore: the sessions close, and the store's keys turn Unavailable.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::{complete_disconnect, transition};
use crate::service::connection_state::ConnectionOp;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: CustomKeyStoreIdRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let mut owner = fe.store_owner(&store_id).await?;
    // Once DISCONNECTING is durable the disconnection is accepted and will complete, as on
    // AWS, where the store shows DISCONNECTING until it has.
    transition(fe, &owner, &store_id, ConnectionOp::Disconnect).await?;
    complete_disconnect(fe, &mut owner, &store_id).await;
    Ok(json!({}))
}
