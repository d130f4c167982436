//! Imported key material: GetParametersForImport, ImportKeyMaterial and
//! DeleteImportedKeyMaterial, for keys of origin EXTERNAL.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::checks::*;
use crate::api::types::*;
use crate::frontend::{epoch_seconds, Frontend};
use crate::service::asymmetric;
use crate::service::error::KmsError;
use crate::service::key_spec::KeySpec;
use crate::service::key_state::KeyOp;
use crate::service::registry::{
    ImportToken, IMPORT_PARAMETERS_VALIDITY_MILLIS, MAX_VALID_TO_MILLIS,
};

/// KMS's `AlgorithmSpec` enum.
const WRAPPING_ALGORITHMS: [&str; 6] = [
    "RSAES_PKCS1_V1_5",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
    "SM2PKE",
];
/// KMS's `WrappingKeySpec` enum.
const WRAPPING_KEY_SPECS: [&str; 4] = ["RSA_2048", "RSA_3072", "RSA_4096", "SM2"];

pub(super) async fn get_parameters(
    fe: &Arc<Frontend>,
    req: GetParametersForImportRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let algorithm = required(req.wrapping_algorithm, "wrappingAlgorithm")?;
    check_enum(&algorithm, "wrappingAlgorithm", &WRAPPING_ALGORITHMS)?;
    let key_spec = required(req.wrapping_key_spec, "wrappingKeySpec")?;
    check_enum(&key_spec, "wrappingKeySpec", &WRAPPING_KEY_SPECS)?;
    let (id, arn) = {
        let reg = fe.registry();
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        (record.key_id, reg.key_arn(&record.key_id))
    };
    if algorithm == "RSAES_PKCS1_V1_5" {
        return Err(KmsError::Validation(
            "As of October 10, 2023, KMS does not support the RSAES_PKCS1_V1_5 wrapping algorithm."
                .into(),
        ));
    }
    if algorithm == "SM2PKE" || key_spec == "SM2" {
        return Err(KmsError::UnsupportedOperation(
            "SM2 wrapping keys are only available in the China Regions.".into(),
        ));
    }
    let spec = KeySpec::parse(&key_spec, "wrappingKeySpec")?;
    // An RSA key takes up to a second to make: not on this worker's thread.
    let entropy = fe.entropy.clone();
    let wrapping = tokio::task::spawn_blocking(move || {
        let private = asymmetric::generate(spec, entropy.as_ref())?;
        let public = asymmetric::public_key(spec, private.expose())?;
        Ok::<_, KmsError>((private, public))
    })
    .await
    .map_err(|_| KmsError::KmsInternal("Key generation did not complete.".into()))?;
    let (private, public) = wrapping?;
    let valid_to = fe.now() + IMPORT_PARAMETERS_VALIDITY_MILLIS;
    let token = fe.registry().seal_import_token(&ImportToken {
        key_id: id,
        wrapping_algorithm: algorithm,
        wrapping_key: Zeroizing::new(private.expose().to_vec()),
        valid_to_millis: valid_to,
    })?;
    Ok(json!({
        "KeyId": arn,
        "ImportToken": B64.encode(token),
        "PublicKey": B64.encode(public),
        "ParametersValidTo": epoch_seconds(valid_to),
    }))
}

pub(super) async fn import(
    fe: &Arc<Frontend>,
    req: ImportKeyMaterialRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let token = blob(req.import_token, "importToken")?;
    let encrypted = blob(req.encrypted_key_material, "encryptedKeyMaterial")?;
    let model = req
        .expiration_model
        .unwrap_or_else(|| "KEY_MATERIAL_EXPIRES".into());
    check_enum(
        &model,
        "expirationModel",
        &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"],
    )?;
    if let Some(t) = req.import_type.as_deref() {
        check_enum(
            t,
            "importType",
            &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"],
        )?;
    }
    let now = fe.now();
    let valid_to = match (model.as_str(), req.valid_to) {
        ("KEY_MATERIAL_EXPIRES", None) => {
            return Err(KmsError::Validation(
                "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES".into(),
            ))
        }
        ("KEY_MATERIAL_EXPIRES", Some(seconds)) => {
            let millis = if seconds.is_finite() && seconds > 0.0 {
                (seconds * 1000.0) as u64
            } else {
                0
            };
            if millis <= now || millis - now > MAX_VALID_TO_MILLIS {
                return Err(KmsError::Validation(
                    "The ValidTo date must be in the future and at most 365 days from now.".into(),
                ));
            }
            Some(millis)
        }
        (_, Some(_)) => return Err(KmsError::Validation(
            "A validTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE"
                .into(),
        )),
        (_, None) => None,
    };
    fe.change(lock_key(fe, &key_id), |reg| {
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        let (id, spec) = (record.key_id, record.spec());
        let token = reg.open_import_token(&token).filter(|t| t.key_id == id).ok_or_else(|| {
            KmsError::InvalidImportToken(
                "The import token is not valid for this KMS key.".into(),
            )
        })?;
        if token.valid_to_millis <= now {
            return Err(KmsError::ExpiredImportToken(
                "The import token has expired. Call GetParametersForImport for a new one.".into(),
            ));
        }
        if req.import_type.as_deref() == Some("NEW_KEY_MATERIAL") && record.imported_material_id().is_some() {
            return Err(KmsError::UnsupportedOperation(
                "hsmkms does not support importing new key material into a key that already had key material (rotation of imported material); reimport the same material.".into(),
            ));
        }
        let material = asymmetric::unwrap_import(&token.wrapping_key, &token.wrapping_algorithm, &encrypted)?
            .ok_or_else(KmsError::invalid_ciphertext)?;
        if !asymmetric::valid_material(spec, material.expose()) {
            return Err(KmsError::IncorrectKeyMaterial(format!(
                "The key material is not valid for a KMS key with KeySpec {}.",
                spec.as_str()
            )));
        }
        if let Some(asked) = req.key_material_id.as_deref() {
            if Some(asked) != record.imported_material_id() {
                return Err(KmsError::IncorrectKeyMaterial(format!(
                    "The key material id {asked} is not associated with this KMS key."
                )));
            }
        }
        let (changes, material_id) = reg.plan_import(id, &material, valid_to)?;
        Ok((changes, (reg.key_arn(&id), material_id)))
    })
    .await
    .map(|(arn, material_id)| json!({"KeyId": arn, "KeyMaterialId": material_id}))
}

pub(super) async fn delete(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        let (id, material_id) = (
            record.key_id,
            record.imported_material_id().map(str::to_string),
        );
        Ok((
            reg.plan_delete_imported(id),
            (reg.key_arn(&id), material_id),
        ))
    })
    .await
    .map(|(arn, material_id)| json!({"KeyId": arn, "KeyMaterialId": material_id}))
}
