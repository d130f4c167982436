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
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use uuid::Uuid;

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

/// LocalStack's CreateKey tag that sets the key's id.
const CUSTOM_ID: &str = "_custom_id_";
/// LocalStack's CreateKey tag that sets the key's material (base64).
const CUSTOM_MATERIAL: &str = "_custom_key_material_";

/// What LocalStack's tags ask of a new key.
struct Custom {
    id: Option<Uuid>,
    material: Option<SecretBytes>,
}

/// Takes LocalStack's `_custom_id_` and `_custom_key_material_` out of `tags` (they set the
/// key's id and material, and are not stored), checking them: the id a key id (a UUID, or
/// `mrk-` and 32 hex digits for a multi-Region key), the material base64 of what the key's spec
/// takes (32 bytes for SYMMETRIC_DEFAULT, an HMAC key of its spec's length, or a PKCS#8 DER
/// private key of its spec).
fn take_custom(
    tags: &mut Vec<(String, String)>,
    spec: KeySpec,
    multi_region: bool,
) -> Result<Custom, KmsError> {
    let mut take = |name: &str| {
        let at = tags.iter().position(|(k, _)| k == name)?;
        Some(tags.remove(at).1)
    };
    let (id, material) = (take(CUSTOM_ID), take(CUSTOM_MATERIAL));
    let id = match id {
        None => None,
        Some(text) => {
            let parsed = if multi_region {
                text.strip_prefix("mrk-")
                    .filter(|d| d.len() == 32)
                    .and_then(|d| Uuid::try_parse(d).ok())
            } else {
                Some(text.as_str())
                    .filter(|t| t.len() == 36)
                    .and_then(|t| Uuid::try_parse(t).ok())
            };
            Some(parsed.ok_or_else(|| {
                KmsError::Validation(format!(
                    "The {CUSTOM_ID} tag must be a key id ({}), not '{text}'.",
                    if multi_region {
                        "mrk- and 32 hex digits, for a multi-Region key"
                    } else {
                        "a UUID"
                    }
                ))
            })?)
        }
    };
    let material = match material {
        None => None,
        Some(text) => {
            let bytes = B64
                .decode(text.trim())
                .ok()
                .map(SecretBytes::new)
                .filter(|b| asymmetric::valid_material(spec, b.expose()));
            Some(bytes.ok_or_else(|| {
                KmsError::Validation(format!(
                    "The {CUSTOM_MATERIAL} tag must be base64 of key material for KeySpec {}.",
                    spec.as_str()
                ))
            })?)
        }
    };
    Ok(Custom { id, material })
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
    let mut tags = tag_pairs(req.tags)?;
    let custom = take_custom(&mut tags, spec, multi_region)?;
    if (custom.id.is_some() && origin == "AWS_CLOUDHSM")
        || (custom.material.is_some() && origin != "AWS_KMS")
    {
        return Err(KmsError::Validation(format!(
            "The {CUSTOM_ID} and {CUSTOM_MATERIAL} tags do not apply to a key of Origin {origin}{}.",
            if origin == "EXTERNAL" { " (import its material)" } else { "" }
        )));
    }
    match (origin.as_str(), req.custom_key_store_id) {
        ("AWS_KMS", None) => {
            // Refused before the material is made: an RSA key takes up to a second.
            check_key_inputs(req.description.as_deref(), req.policy.as_deref(), &tags)?;
            let material = match (spec, custom.material) {
                (KeySpec::SymmetricDefault, Some(given)) => {
                    NewKeyMaterial::symmetric_given(&given)?
                }
                (KeySpec::SymmetricDefault, None) => NewKeyMaterial::Symmetric,
                (_, given) => NewKeyMaterial::Typed {
                    spec,
                    usage,
                    material: match given {
                        Some(given) => given,
                        None => generate_material(fe, spec).await?,
                    },
                },
            };
            let now = fe.now();
            let (_, record, _material) = fe.registry().new_key_with_id(
                custom.id,
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
            let (_, record, _) = fe.registry().new_key_with_id(
                custom.id,
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
