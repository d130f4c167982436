//! ConnectCustomKeyStore: the store turns CONNECTING at once; the connect protocol runs in the
//! background (see [`crate::key_stores`]).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::{start_connect, transition};
use crate::service::connection_state::{ConnectionOp, ConnectionState};
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: CustomKeyStoreIdRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let mut owner = fe.store_owner(&store_id).await?;
    let before = fe.registry().store(&store_id)?.state;
    transition(fe, &owner, &store_id, ConnectionOp::Connect).await?;
    if before == ConnectionState::Disconnected {
        // Connecting takes a while on AWS; the call returns at once and the store moves on.
        start_connect(fe, &mut owner, &store_id);
    }
    Ok(json!({}))
}
