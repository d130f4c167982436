//! CreateKey: a key of any spec in KMS (AWS_KMS), or a symmetric key in a custom key store
//! (AWS_CLOUDHSM).

use std::sync::Arc;

use serde_json::Value;

use super::checks::*;
use super::metadata::metadata;
use crate::api::types::*;
use crate::frontend::Frontend;
use crate::key_stores::{self};
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::{check_spec_and_usage, KeySpec, KeyUsage};
use crate::service::registry::{check_key_inputs, NewKeyMaterial};
use hsmkms_common::secret::SecretBytes;

/// New material for an asymmetric or HMAC key. Key pairs are made on a blocking thread: an
/// RSA 4096 key takes up to a second, which would stall every request on this worker.
async fn generate_material(fe: &Frontend, spec: KeySpec) -> Result<SecretBytes, KmsError> {
    if spec.is_hmac() {
        return asymmetric::generate(spec, fe.entropy.as_ref());
    }
    let entropy = fe.entropy.clone();
    tokio::task::spawn_blocking(move || asymmetric::generate(spec, entropy.as_ref()))
        .await
        .map_err(|_| KmsError::KmsInternal("Key generation did not complete.".into()))?
}

pub(super) async fn handle(fe: &Arc<Frontend>, req: CreateKeyRequest) -> Result<Value, KmsError> {
    const ORIGINS: [&str; 4] = ["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
    let spec = match req
        .key_spec
        .as_deref()
        .or(req.customer_master_key_spec.as_deref())
    {
        Some(name) => {
            let member = if req.key_spec.is_some() {
                "keySpec"
            } else {
                "customerMasterKeySpec"
            };
            KeySpec::parse(name, member)
        }
        None => Ok(KeySpec::SymmetricDefault),
    };
    // The enums' violations are reported together, as AWS does.
    let mut v = Violations::default();
    let spec = v.check(spec)?;
    let usage = v.check(req.key_usage.as_deref().map(KeyUsage::parse).transpose())?;
    let origin = req.origin.unwrap_or_else(|| "AWS_KMS".into());
    v.check(check_enum(&origin, "origin", &ORIGINS))?;
    v.finish()?;
    let (spec, usage) = (checked(spec)?, checked(usage)?);
    let usage = check_spec_and_usage(spec, usage)?;
    if spec == KeySpec::Sm2 {
        return Err(KmsError::UnsupportedOperation(
            "KeySpec SM2 is only available in the China Regions.".into(),
        ));
    }
    let multi_region = req.multi_region == Some(true);
    if multi_region && req.custom_key_store_id.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Multi-Region keys are not supported in a custom key store.".into(),
        ));
    }
    if req.custom_key_store_id.is_some() && spec != KeySpec::SymmetricDefault {
        return Err(KmsError::UnsupportedOperation(format!(
            "A key in a custom key store must be a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT), not {}.",
            spec.as_str()
        )));
    }
    let tags = tag_pairs(req.tags)?;
    match (origin.as_str(), req.custom_key_store_id) {
        ("AWS_KMS", None) => {
            // Refused before the material is made: an RSA key takes up to a second.
            check_key_inputs(req.description.as_deref(), req.policy.as_deref(), &tags)?;
            let material = if spec == KeySpec::SymmetricDefault {
                NewKeyMaterial::Symmetric
            } else {
                NewKeyMaterial::Typed {
                    spec,
                    usage,
                    material: generate_material(fe, spec).await?,
                }
            };
            let now = fe.now();
            let (_, record, _material) = fe.registry().new_key(
                material,
                req.description,
                req.policy,
                tags,
                now,
                fe.entropy.as_ref(),
            )?;
            fe.add_key(record.clone(), multi_region).await?;
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
        ("EXTERNAL", None) => {
            let now = fe.now();
            let (_, record, _) = fe.registry().new_key(
                NewKeyMaterial::External { spec, usage },
                req.description,
                req.policy,
                tags,
                now,
                fe.entropy.as_ref(),
            )?;
            fe.add_key(record.clone(), multi_region).await?;
            let reg = fe.registry();
            to_json(KeyMetadataResponse {
                key_metadata: metadata(&reg, &record),
            })
        }
        ("AWS_CLOUDHSM", None) => Err(KmsError::UnsupportedOperation(
            "A key with Origin AWS_CLOUDHSM needs a CustomKeyStoreId.".into(),
        )),
        ("EXTERNAL", Some(_)) => Err(KmsError::UnsupportedOperation(
            "A key in a custom key store must have Origin AWS_CLOUDHSM.".into(),
        )),
        (other, _) => Err(KmsError::UnsupportedOperation(format!(
            "hsmkms does not support keys with Origin {other}."
        ))),
    }
}
