//! GenerateRandom: from the frontend, or from a custom key store's cluster.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use serde_json::{json, Value};

use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::{self};
use crate::service::error::KmsError;

pub(super) async fn handle(
    fe: &Arc<Frontend>,
    req: GenerateRandomRequest,
) -> Result<Value, KmsError> {
    let n = match req.number_of_bytes {
        Some(n) if (1..=1024).contains(&n) => n as u32,
        Some(n) => return Err(KmsError::number_of_bytes(n)),
        // AWS's recorded text for GenerateRandom.
        None => return Err(KmsError::Validation("NumberOfBytes is required.".into())),
    };
    let bytes = match req.custom_key_store_id {
        Some(store_id) => key_stores::random(fe, &store_id, n).await?,
        None => {
            let bytes = hsmkms_common::entropy::bytes(fe.entropy.as_ref(), n as usize);
            SecretBytes::new(bytes)
        }
    };
    Ok(json!({"Plaintext": B64.encode(bytes.expose())}))
}
