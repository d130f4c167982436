//! CreateKey: a symmetric key, in KMS (AWS_KMS) or in a custom key store (AWS_CLOUDHSM).

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use super::metadata::metadata;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::{self};
use crate::service::error::KmsError;

pub(super) async fn handle(fe: &Arc<Frontend>, req: CreateKeyRequest) -> Result<Value, KmsError> {
    const SPECS: [&str; 13] = [
        "RSA_2048",
        "RSA_3072",
        "RSA_4096",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "SYMMETRIC_DEFAULT",
        "HMAC_224",
        "HMAC_256",
        "HMAC_384",
        "HMAC_512",
        "SM2",
    ];
    const USAGES: [&str; 5] = [
        "SIGN_VERIFY",
        "ENCRYPT_DECRYPT",
        "GENERATE_VERIFY_MAC",
        "KEY_AGREEMENT",
        "ENCAPSULATE_DECAPSULATE",
    ];
    const ORIGINS: [&str; 4] = ["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
    let spec = req
        .key_spec
        .or(req.customer_master_key_spec)
        .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
    if !SPECS.contains(&spec.as_str()) {
        return Err(KmsError::not_in_enum("keySpec", &spec, &SPECS));
    }
    let usage = req.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
    if !USAGES.contains(&usage.as_str()) {
        return Err(KmsError::not_in_enum("keyUsage", &usage, &USAGES));
    }
    let origin = req.origin.unwrap_or_else(|| "AWS_KMS".into());
    if !ORIGINS.contains(&origin.as_str()) {
        return Err(KmsError::not_in_enum("origin", &origin, &ORIGINS));
    }
    if spec != "SYMMETRIC_DEFAULT" || usage != "ENCRYPT_DECRYPT" {
        return Err(KmsError::UnsupportedOperation(format!(
            "hsmkms supports symmetric encryption keys only (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT), not {spec} / {usage}."
        )));
    }
    if req.multi_region == Some(true) {
        return Err(KmsError::UnsupportedOperation(
            "hsmkms does not support multi-Region keys.".into(),
        ));
    }
    let tags = tag_pairs(req.tags)?;
    match (origin.as_str(), req.custom_key_store_id) {
        ("AWS_KMS", None) => {
            let now = fe.now();
            let (_, record, _material) = fe.registry().new_key(
                true,
                req.description,
                req.policy,
                tags,
                now,
                fe.entropy.as_ref(),
            )?;
            fe.add_key(record.clone()).await?;
            let reg = fe.registry();
            to_json(KeyMetadataResponse {
                key_metadata: metadata(&reg, &record),
            })
        }
        ("AWS_KMS", Some(_)) => Err(KmsError::UnsupportedOperation(
            "A key in a custom key store must have Origin AWS_CLOUDHSM.".into(),
        )),
        ("AWS_CLOUDHSM", Some(store_id)) => {
            let record =
                key_stores::create_key_in_store(fe, &store_id, req.description, req.policy, tags)
                    .await?;
            let reg = fe.registry();
            to_json(KeyMetadataResponse {
                key_metadata: metadata(&reg, &record),
            })
        }
        ("AWS_CLOUDHSM", None) => Err(KmsError::UnsupportedOperation(
            "A key with Origin AWS_CLOUDHSM needs a CustomKeyStoreId.".into(),
        )),
        (other, _) => Err(KmsError::UnsupportedOperation(format!(
            "hsmkms does not support keys with Origin {other}."
        ))),
    }
}
