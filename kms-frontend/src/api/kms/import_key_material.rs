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
use crate::service::model::KeyRecord;
use crate::service::registry::{
    ImportAsk, ImportToken, IMPORT_PARAMETERS_VALIDITY_MILLIS, MAX_VALID_TO_MILLIS,
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
    // Past the model's checks, KMS finds the key first (it authorizes the call against the
    // key's policy), then refuses what the service does not take.
    let (id, arn, material_spec) = {
        let reg = fe.registry();
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        (record.key_id, reg.key_arn(&record.key_id), record.spec())
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
    check_wrapping_for(material_spec, &algorithm, &key_spec)?;
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
    let valid_to = fe.now().saturating_add(IMPORT_PARAMETERS_VALIDITY_MILLIS);
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

/// The Developer Guide's rules for what wraps the material of a key of `spec`: an RSA private
/// key only with an RSA_AES algorithm (it is larger than RSAES-OAEP can carry), and ECC_NIST_P521
/// material not with RSAES-OAEP under an RSA_2048 wrapping key (too large for it). They depend on
/// the key, so they come after its lookup.
fn check_wrapping_for(
    spec: KeySpec,
    algorithm: &str,
    wrapping_key_spec: &str,
) -> Result<(), KmsError> {
    let oaep = algorithm.starts_with("RSAES_OAEP_");
    if spec.is_rsa() && oaep {
        return Err(KmsError::Validation(format!(
            "The {algorithm} wrapping algorithm cannot wrap {} key material; to import an RSA private key, use an RSA_AES wrapping algorithm.",
            spec.as_str()
        )));
    }
    if spec == KeySpec::EccNistP521 && oaep && wrapping_key_spec == "RSA_2048" {
        return Err(KmsError::Validation(format!(
            "The {algorithm} wrapping algorithm with the RSA_2048 wrapping key spec cannot wrap ECC_NIST_P521 key material."
        )));
    }
    Ok(())
}

/// ImportType EXISTING_KEY_MATERIAL into a key that never had material names material that
/// does not exist (refused before the material is unwrapped; the rest of ImportType's rules
/// need the material and are the registry's).
fn check_import_type(
    record: &KeyRecord,
    import_type: Option<&str>,
    arn: &str,
) -> Result<(), KmsError> {
    match (import_type, record.imported_material_id()) {
        (Some("EXISTING_KEY_MATERIAL"), None) => Err(KmsError::IncorrectKeyMaterial(format!(
            "No key material was ever imported into {arn}, so there is no existing key material to reimport. Use ImportType NEW_KEY_MATERIAL."
        ))),
        _ => Ok(()),
    }
}

/// A `KeyMaterialId` as the model constrains it (`BackingKeyIdType`: 64 lowercase hex digits).
fn check_material_id(id: &str) -> Result<(), KmsError> {
    if id.len() != 64 {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{id}' at 'keyMaterialId' failed to satisfy constraint: Member must have length equal to 64"
        )));
    }
    if !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{id}' at 'keyMaterialId' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-f0-9]+$"
        )));
    }
    Ok(())
}

/// A `KeyMaterialDescription` as the model constrains it (0 to 256 characters of
/// `^[a-zA-Z0-9:/_\s.-]+$`).
fn check_material_description(d: &str) -> Result<(), KmsError> {
    if d.chars().count() > 256 {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{d}' at 'keyMaterialDescription' failed to satisfy constraint: Member must have length less than or equal to 256"
        )));
    }
    if !d.is_empty()
        && !d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || ":/_.-".contains(c))
    {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{d}' at 'keyMaterialDescription' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_\\s.-]+$"
        )));
    }
    Ok(())
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
    if let Some(id) = req.key_material_id.as_deref() {
        check_material_id(id)?;
    }
    if let Some(d) = req.key_material_description.as_deref() {
        check_material_description(d)?;
    }
    let import_type = req.import_type.as_deref();
    // What the request can be refused for without the material: the key, its token, the
    // ImportType. Under the registry's read lock only for these lookups.
    let (id, spec, token) = {
        let reg = fe.registry();
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        let token = reg
            .open_import_token(&token)
            .filter(|t| t.key_id == record.key_id)
            .ok_or_else(|| {
                KmsError::InvalidImportToken(
                    "The import token is not valid for this KMS key.".into(),
                )
            })?;
        if token.valid_to_millis <= now {
            return Err(KmsError::ExpiredImportToken(
                "The import token has expired. Call GetParametersForImport for a new one.".into(),
            ));
        }
        check_import_type(record, import_type, &reg.key_arn(&record.key_id))?;
        (record.key_id, record.spec(), token)
    };
    // RSA decryption, AES key unwrap and the material's checks (an ML-KEM round trip, an RSA
    // key's parse) take milliseconds: on a blocking thread, holding no lock.
    let material = tokio::task::spawn_blocking(move || {
        let material =
            asymmetric::unwrap_import(&token.wrapping_key, &token.wrapping_algorithm, &encrypted)?
                .ok_or_else(KmsError::invalid_ciphertext)?;
        if !asymmetric::valid_material(spec, material.expose()) {
            return Err(KmsError::IncorrectKeyMaterial(format!(
                "The key material is not valid for a KMS key with KeySpec {}.",
                spec.as_str()
            )));
        }
        Ok(material)
    })
    .await
    .map_err(|_| KmsError::KmsInternal("The key material could not be unwrapped.".into()))??;
    // Installed under the key's lock; what may have changed meanwhile is checked again.
    fe.change(lock_key(fe, &key_id), |reg| {
        let record = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?;
        if record.key_id != id {
            return Err(KmsError::InvalidImportToken(
                "The import token is not valid for this KMS key.".into(),
            ));
        }
        check_import_type(record, import_type, &reg.key_arn(&id))?;
        let (changes, material_id) = reg.plan_import(
            id,
            &material,
            ImportAsk {
                import_type,
                material_id: req.key_material_id.as_deref(),
                description: req.key_material_description.as_deref(),
                valid_to_millis: valid_to,
            },
        )?;
        Ok((changes, (reg.key_arn(&id), material_id)))
    })
    .await
    .map(|(arn, material_id)| json!({"KeyId": arn, "KeyMaterialId": material_id}))
}

pub(super) async fn delete(
    fe: &Arc<Frontend>,
    req: DeleteImportedKeyMaterialRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    if let Some(id) = req.key_material_id.as_deref() {
        check_material_id(id)?;
    }
    fe.change(lock_key(fe, &key_id), |reg| {
        let id = reg.external_key(&key_id, KeyOp::ImportKeyMaterial)?.key_id;
        let (changes, material_id) =
            reg.plan_delete_imported(id, req.key_material_id.as_deref())?;
        Ok((changes, (reg.key_arn(&id), material_id)))
    })
    .await
    .map(|(arn, material_id)| {
        // A key that never had material has no id to report: the member is left out, not null.
        let mut answer = json!({"KeyId": arn});
        if let Some(id) = material_id {
            answer["KeyMaterialId"] = json!(id);
        }
        answer
    })
}
