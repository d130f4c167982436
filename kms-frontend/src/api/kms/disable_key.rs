//! DisableKey.

use std::sync::Arc;

use serde_json::Value;

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    super::enable_key::set_enabled(fe, req, false).await
}
