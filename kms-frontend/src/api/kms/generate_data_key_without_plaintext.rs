//! GenerateDataKeyWithoutPlaintext: a data key sealed under a KMS key, its plaintext not returned.

use std::sync::Arc;

use serde_json::Value;

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: GenerateDataKeyRequest,
) -> Result<Value, KmsError> {
    super::generate_data_key::generate(fe, req, false).await
}
