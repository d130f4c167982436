//! The KMS operations (`TrentService.*`): request checks, the calls into the registry, the
//! store and the cluster, and the JSON answers. Each operation is audited and counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsmkms_common::secret::SecretBytes;
use rand::RngCore;
use serde_json::{json, Value};

use super::key_stores;
use super::parse;
use super::types::*;
use crate::audit::{self, api_call_record};
use crate::frontend::{epoch_seconds, iso8601, Frontend};
use crate::locks::Resource;
use crate::service::ciphertext::{self, Header};
use crate::service::error::KmsError;
use crate::service::key_state::{self, KeyOp};
use crate::service::model::{BackingKey, KeyOrigin, KeyRecord};
use crate::service::registry::{Registry, UsableKey};

/// Largest plaintext Encrypt takes (SYMMETRIC_DEFAULT).
pub const MAX_PLAINTEXT: usize = 4096;

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, KmsError> {
    serde_json::to_value(value).map_err(|e| KmsError::KmsInternal(e.to_string()))
}

fn enum_error(member: &str, value: &str, allowed: &[&str]) -> KmsError {
    KmsError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// Decodes a base64 blob member.
fn blob(value: Option<String>, member: &str) -> Result<Vec<u8>, KmsError> {
    let text = required(value, member)?;
    B64.decode(text.as_bytes()).map_err(|_| {
        KmsError::Serialization(format!("The value of '{member}' is not valid base64."))
    })
}

fn check_limit(limit: Option<i64>, max: i64, default: i64) -> Result<usize, KmsError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
        )));
    }
    Ok(limit as usize)
}

fn check_algorithm(algorithm: Option<&str>) -> Result<(), KmsError> {
    const ALL: [&str; 4] = [
        "SYMMETRIC_DEFAULT",
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "SM2PKE",
    ];
    match algorithm {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(a) if ALL.contains(&a) => Err(KmsError::InvalidKeyUsage(format!(
            "The encryption algorithm {a} is not valid for a symmetric KMS key."
        ))),
        Some(a) => Err(enum_error("encryptionAlgorithm", a, &ALL)),
    }
}

fn check_grant_tokens(tokens: &Option<Vec<String>>) -> Result<(), KmsError> {
    if tokens.as_ref().is_some_and(|t| t.len() > 10) {
        return Err(KmsError::Validation(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10".into(),
        ));
    }
    Ok(())
}

fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::DryRunOperation(
            "The request would have succeeded, but the DryRun option is set.".into(),
        ));
    }
    Ok(())
}

/// The lock of the key a change names, if it names one.
fn lock_key(fe: &Frontend, key_id: &str) -> Vec<Resource> {
    fe.key_resource(key_id).into_iter().collect()
}

/// A key's metadata, as DescribeKey and CreateKey return it.
pub fn metadata(registry: &Registry, record: &KeyRecord) -> KeyMetadata {
    let state = registry.state_of(record);
    let (store, cluster) = match &record.origin {
        KeyOrigin::CloudHsm {
            custom_key_store_id,
            cluster_id,
            ..
        } => (Some(custom_key_store_id.clone()), Some(cluster_id.clone())),
        KeyOrigin::AwsKms { .. } => (None, None),
    };
    KeyMetadata {
        aws_account_id: registry.arns.account_id.clone(),
        key_id: record.key_id.to_string(),
        arn: registry.arns.key_arn(&record.key_id),
        creation_date: epoch_seconds(record.created_at_millis),
        enabled: state == key_state::KeyState::Enabled,
        description: record.description.clone(),
        key_usage: "ENCRYPT_DECRYPT",
        key_state: state.as_str(),
        deletion_date: record
            .deletion
            .map(|d| epoch_seconds(d.deletion_date_millis)),
        pending_deletion_window_in_days: record.deletion.map(|d| d.window_days),
        origin: record.origin.as_str(),
        custom_key_store_id: store,
        cloud_hsm_cluster_id: cluster,
        key_manager: "CUSTOMER",
        customer_master_key_spec: "SYMMETRIC_DEFAULT",
        key_spec: "SYMMETRIC_DEFAULT",
        encryption_algorithms: vec!["SYMMETRIC_DEFAULT"],
        multi_region: false,
    }
}

/// The KMS operations this emulator serves (what [`dispatch`] knows).
pub const OPERATIONS: [&str; 31] = [
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "EnableKey",
    "DisableKey",
    "UpdateKeyDescription",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    "GetKeyRotationStatus",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
    "ListAliases",
    "TagResource",
    "UntagResource",
    "ListResourceTags",
    "CreateCustomKeyStore",
    "DescribeCustomKeyStores",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
];

/// Runs one KMS operation, counts it and audits it.
pub async fn call(
    frontend: &Arc<Frontend>,
    op: &str,
    body: &[u8],
    request_id: &str,
) -> Result<Value, KmsError> {
    let served = OPERATIONS.contains(&op);
    frontend
        .metrics
        .count_request(audit::metric_name(op, &OPERATIONS));
    let result = dispatch(frontend, op, body).await;
    if let Err(e) = &result {
        frontend.metrics.count_error(e.type_name());
        if key_state::counts_as_pending_deletion_error(e) {
            frontend.metrics.count_pending_deletion_error();
        }
    }
    // What CloudTrail records: the parameters of a request it knows, never the whole body.
    let request = if served {
        audit::request_parameters(body)
    } else {
        Value::Null
    };
    let response = result.as_ref().ok().cloned().unwrap_or(Value::Null);
    let error = result.as_ref().err().map(|e| (e.type_name(), e.message()));
    let additional = additional_event_data(frontend, op, &request, &response);
    frontend.audit.record(
        &frontend.metrics,
        api_call_record(
            iso8601(frontend.now()),
            op,
            request_id,
            request,
            response,
            error,
            additional,
        ),
    );
    result
}

/// CloudTrail's `additionalEventData` for calls that concern a custom key store: the store and
/// cluster, and for keys the backing key (handle and id) KMS records.
fn additional_event_data(
    fe: &Frontend,
    op: &str,
    request: &Value,
    response: &Value,
) -> Option<Value> {
    let reg = fe.registry();
    let store_data = |store_id: &str| {
        reg.store(store_id).ok().map(|s| {
            json!({"customKeyStoreId": s.id, "customKeyStoreName": s.name, "clusterId": s.cluster_id})
        })
    };
    if op.contains("CustomKeyStore") {
        let id = request["CustomKeyStoreId"]
            .as_str()
            .or_else(|| response["CustomKeyStoreId"].as_str())?;
        return store_data(id);
    }
    let key_id = response["KeyMetadata"]["KeyId"]
        .as_str()
        .or_else(|| response["KeyId"].as_str())
        .or_else(|| request["KeyId"].as_str())
        .or_else(|| request["DestinationKeyId"].as_str())?;
    let record = reg.resolve(key_id, true).ok()?;
    match &record.origin {
        KeyOrigin::CloudHsm {
            custom_key_store_id,
            cluster_id,
            backing_key,
        } => {
            let backing = json!({"keyHandle": backing_key.key_handle.to_string(), "backingKeyId": backing_key.backing_key_id});
            let mut data =
                json!({"customKeyStoreId": custom_key_store_id, "clusterId": cluster_id});
            if op == "CreateKey" {
                data["backingKey"] = json!(backing.to_string());
            } else if op == "ScheduleKeyDeletion" {
                data["backingKeys"] = json!(json!([backing]).to_string());
            }
            Some(data)
        }
        KeyOrigin::AwsKms { .. } => None,
    }
}

async fn dispatch(fe: &Arc<Frontend>, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    match op {
        "CreateKey" => create_key(fe, parse(body)?).await,
        "DescribeKey" => describe_key(fe, parse(body)?),
        "ListKeys" => list_keys(fe, parse(body)?),
        "EnableKey" => set_enabled(fe, parse(body)?, true).await,
        "DisableKey" => set_enabled(fe, parse(body)?, false).await,
        "UpdateKeyDescription" => update_description(fe, parse(body)?).await,
        "ScheduleKeyDeletion" => schedule_deletion(fe, parse(body)?).await,
        "CancelKeyDeletion" => cancel_deletion(fe, parse(body)?).await,
        "GetKeyPolicy" => get_key_policy(fe, parse(body)?),
        "PutKeyPolicy" => put_key_policy(fe, parse(body)?).await,
        "ListKeyPolicies" => list_key_policies(fe, parse(body)?),
        "GetKeyRotationStatus" => get_key_rotation_status(fe, parse(body)?),
        "Encrypt" => encrypt(fe, parse(body)?).await,
        "Decrypt" => decrypt(fe, parse(body)?).await,
        "ReEncrypt" => re_encrypt(fe, parse(body)?).await,
        "GenerateDataKey" => generate_data_key(fe, parse(body)?, true).await,
        "GenerateDataKeyWithoutPlaintext" => generate_data_key(fe, parse(body)?, false).await,
        "GenerateRandom" => generate_random(fe, parse(body)?).await,
        "CreateAlias" => create_alias(fe, parse(body)?).await,
        "UpdateAlias" => update_alias(fe, parse(body)?).await,
        "DeleteAlias" => delete_alias(fe, parse(body)?).await,
        "ListAliases" => list_aliases(fe, parse(body)?),
        "TagResource" => tag_resource(fe, parse(body)?).await,
        "UntagResource" => untag_resource(fe, parse(body)?).await,
        "ListResourceTags" => list_resource_tags(fe, parse(body)?),
        "CreateCustomKeyStore" => key_stores::create(fe, parse(body)?).await,
        "DescribeCustomKeyStores" => key_stores::describe(fe, parse(body)?),
        "ConnectCustomKeyStore" => key_stores::connect(fe, parse(body)?).await,
        "DisconnectCustomKeyStore" => key_stores::disconnect(fe, parse(body)?).await,
        "UpdateCustomKeyStore" => key_stores::update(fe, parse(body)?).await,
        "DeleteCustomKeyStore" => key_stores::delete(fe, parse(body)?).await,
        other => Err(KmsError::UnknownOperation(format!(
            "TrentService.{other} is not an operation hsmkms serves."
        ))),
    }
}

// ---- keys -----------------------------------------------------------------------------

async fn create_key(fe: &Arc<Frontend>, req: CreateKeyRequest) -> Result<Value, KmsError> {
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
        return Err(enum_error("keySpec", &spec, &SPECS));
    }
    let usage = req.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
    if !USAGES.contains(&usage.as_str()) {
        return Err(enum_error("keyUsage", &usage, &USAGES));
    }
    let origin = req.origin.unwrap_or_else(|| "AWS_KMS".into());
    if !ORIGINS.contains(&origin.as_str()) {
        return Err(enum_error("origin", &origin, &ORIGINS));
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
            let (_, record, _material) =
                fe.registry()
                    .new_key(true, req.description, req.policy, tags, now)?;
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
            key_stores::create_key_in_store(fe, &store_id, req.description, req.policy, tags).await
        }
        ("AWS_CLOUDHSM", None) => Err(KmsError::UnsupportedOperation(
            "A key with Origin AWS_CLOUDHSM needs a CustomKeyStoreId.".into(),
        )),
        (other, _) => Err(KmsError::UnsupportedOperation(format!(
            "hsmkms does not support keys with Origin {other}."
        ))),
    }
}

/// Creates the KMS record of a key store key whose backing key the cluster just made.
pub fn key_store_record(
    mut record: KeyRecord,
    store_id: &str,
    cluster_id: &str,
    handle: u64,
) -> KeyRecord {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    record.origin = KeyOrigin::CloudHsm {
        custom_key_store_id: store_id.to_string(),
        cluster_id: cluster_id.to_string(),
        backing_key: BackingKey {
            key_handle: handle,
            backing_key_id: id.iter().map(|b| format!("{b:02x}")).collect(),
        },
    };
    record
}

fn describe_key(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    check_grant_tokens(&req.grant_tokens)?;
    let key_id = required(req.key_id, "keyId")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, true, KeyOp::DescribeKey)?;
    to_json(KeyMetadataResponse {
        key_metadata: metadata(&reg, record),
    })
}

fn list_keys(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let limit = check_limit(req.limit, 1000, 100)?;
    let reg = fe.registry();
    let (ids, next) = reg.list_keys(req.marker.as_deref(), limit)?;
    to_json(ListKeysResponse {
        keys: ids
            .iter()
            .map(|id| KeyListEntry {
                key_id: id.to_string(),
                key_arn: reg.arns.key_arn(id),
            })
            .collect(),
        truncated: next.is_some(),
        next_marker: next,
    })
}

async fn set_enabled(
    fe: &Arc<Frontend>,
    req: KeyIdRequest,
    enabled: bool,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.set_enabled(&key_id, enabled)?, ()))
    })
    .await?;
    Ok(json!({}))
}

async fn update_description(
    fe: &Arc<Frontend>,
    req: UpdateKeyDescriptionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let description = required(req.description, "description")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.update_description(&key_id, description)?, ()))
    })
    .await?;
    Ok(json!({}))
}

async fn schedule_deletion(
    fe: &Arc<Frontend>,
    req: ScheduleKeyDeletionRequest,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let record = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (record, changes) =
                reg.schedule_deletion(&key_id, req.pending_window_in_days, fe.now())?;
            Ok((changes, record))
        })
        .await?;
    let deletion = record
        .deletion
        .ok_or_else(|| KmsError::KmsInternal("deletion not recorded".into()))?;
    to_json(ScheduleKeyDeletionResponse {
        key_id: fe.arns.key_arn(&record.key_id),
        deletion_date: epoch_seconds(deletion.deletion_date_millis),
        key_state: "PendingDeletion",
        pending_window_in_days: deletion.window_days,
    })
}

async fn cancel_deletion(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let id = fe
        .change(lock_key(fe, &key_id), |reg| {
            let (id, changes) = reg.cancel_deletion(&key_id)?;
            Ok((changes, id))
        })
        .await?;
    to_json(KeyIdResponse {
        key_id: fe.arns.key_arn(&id),
    })
}

fn get_key_policy(fe: &Arc<Frontend>, req: KeyPolicyRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let name = req.policy_name.unwrap_or_else(|| "default".into());
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::GetKeyPolicy)?;
    if name != "default" {
        return Err(KmsError::NotFound(format!("No such policy exists: {name}")));
    }
    Ok(json!({"Policy": record.policy, "PolicyName": "default"}))
}

async fn put_key_policy(fe: &Arc<Frontend>, req: KeyPolicyRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let policy = required(req.policy, "policy")?;
    let name = req.policy_name.unwrap_or_else(|| "default".into());
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.put_policy(&key_id, &name, policy)?, ()))
    })
    .await?;
    Ok(json!({}))
}

fn list_key_policies(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    check_limit(req.limit, 1000, 100)?;
    fe.registry()
        .checked(&key_id, false, KeyOp::ListKeyPolicies)?;
    Ok(json!({"PolicyNames": ["default"], "Truncated": false}))
}

fn get_key_rotation_status(fe: &Arc<Frontend>, req: KeyIdRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::GetKeyRotationStatus)?;
    Ok(json!({
        "KeyRotationEnabled": false,
        "KeyId": reg.arns.key_arn(&record.key_id),
    }))
}

// ---- crypto ---------------------------------------------------------------------------

/// Seals `plaintext` under a usable key: in the frontend for AWS_KMS keys, on an HSM for key
/// store keys. Returns the ciphertext blob.
async fn seal(
    fe: &Arc<Frontend>,
    key: &UsableKey,
    plaintext: &[u8],
    ctx: &BTreeMap<String, String>,
) -> Result<Vec<u8>, KmsError> {
    let header = Header {
        key_id: key.record.key_id,
    };
    let aad = ciphertext::aad(&header, ctx);
    let sealed = match (&key.sealer, &key.record.origin) {
        (Some(sealer), _) => sealer.seal(plaintext, &aad),
        (
            None,
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                backing_key,
                ..
            },
        ) => {
            fe.hsm
                .encrypt(custom_key_store_id, backing_key.key_handle, plaintext, &aad)
                .await?
        }
        (None, KeyOrigin::AwsKms { .. }) => {
            return Err(KmsError::KmsInternal("key material is not loaded".into()))
        }
    };
    Ok(ciphertext::assemble(&header, &sealed))
}

/// Opens a ciphertext blob: finds its key (checking a given KeyId matches), checks the key's
/// state for `op`, and decrypts. Returns the plaintext and the key.
async fn open(
    fe: &Arc<Frontend>,
    blob: &[u8],
    key_id: Option<String>,
    ctx: &BTreeMap<String, String>,
    op: KeyOp,
) -> Result<(SecretBytes, UsableKey), KmsError> {
    let (header, sealed) = ciphertext::parse(blob)?;
    let key = {
        let reg = fe.registry();
        let record = reg.by_id(&header.key_id).ok_or_else(|| {
            KmsError::NotFound(format!(
                "Key '{}' does not exist",
                reg.arns.key_arn(&header.key_id)
            ))
        })?;
        if let Some(given) = key_id {
            let named = reg.resolve(&given, true)?;
            if named.key_id != record.key_id {
                return Err(KmsError::IncorrectKey(
                    "The key ID in the request does not identify a CMK that can perform this operation.".into(),
                ));
            }
        }
        reg.usable(&record.key_id.to_string(), op)?
    };
    let aad = ciphertext::aad(&header, ctx);
    let plaintext = match (&key.sealer, &key.record.origin) {
        (Some(sealer), _) => sealer.open(sealed, &aad).map_err(|_| {
            KmsError::InvalidCiphertext(
                "The ciphertext is invalid, or the encryption context does not match.".into(),
            )
        })?,
        (
            None,
            KeyOrigin::CloudHsm {
                custom_key_store_id,
                backing_key,
                ..
            },
        ) => fe
            .hsm
            .decrypt(custom_key_store_id, backing_key.key_handle, sealed, &aad)
            .await
            .map_err(|e| match e {
                KmsError::InvalidCiphertext(_) => KmsError::InvalidCiphertext(
                    "The ciphertext is invalid, or the encryption context does not match.".into(),
                ),
                other => other,
            })?,
        (None, KeyOrigin::AwsKms { .. }) => {
            return Err(KmsError::KmsInternal("key material is not loaded".into()))
        }
    };
    Ok((plaintext, key))
}

async fn encrypt(fe: &Arc<Frontend>, req: EncryptRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let plaintext = SecretBytes::new(blob(req.plaintext, "plaintext")?);
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length between 1 and {MAX_PLAINTEXT}"
        )));
    }
    check_algorithm(req.encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
    let key = fe.registry().usable(&key_id, KeyOp::Encrypt)?;
    dry_run(req.dry_run)?;
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, plaintext.expose(), &ctx).await?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn decrypt(fe: &Arc<Frontend>, req: DecryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
    let ctx = req.encryption_context.unwrap_or_default();
    let (plaintext, key) = open(fe, &blob, req.key_id, &ctx, KeyOp::Decrypt).await?;
    dry_run(req.dry_run)?;
    Ok(json!({
        "KeyId": key.arn,
        "Plaintext": B64.encode(plaintext.expose()),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn re_encrypt(fe: &Arc<Frontend>, req: ReEncryptRequest) -> Result<Value, KmsError> {
    let blob = blob(req.ciphertext_blob, "ciphertextBlob")?;
    let destination = required(req.destination_key_id, "destinationKeyId")?;
    check_algorithm(req.source_encryption_algorithm.as_deref())?;
    check_algorithm(req.destination_encryption_algorithm.as_deref())?;
    check_grant_tokens(&req.grant_tokens)?;
    let source_ctx = req.source_encryption_context.unwrap_or_default();
    let (plaintext, source) = open(
        fe,
        &blob,
        req.source_key_id,
        &source_ctx,
        KeyOp::ReEncryptSource,
    )
    .await?;
    let dest = fe
        .registry()
        .usable(&destination, KeyOp::ReEncryptDestination)?;
    dry_run(req.dry_run)?;
    let dest_ctx = req.destination_encryption_context.unwrap_or_default();
    let sealed = seal(fe, &dest, plaintext.expose(), &dest_ctx).await?;
    Ok(json!({
        "CiphertextBlob": B64.encode(sealed),
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

async fn generate_data_key(
    fe: &Arc<Frontend>,
    req: GenerateDataKeyRequest,
    with_plaintext: bool,
) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let length = match (req.key_spec.as_deref(), req.number_of_bytes) {
        (Some("AES_256"), None) => 32,
        (Some("AES_128"), None) => 16,
        (Some(other), None) => return Err(enum_error("keySpec", other, &["AES_256", "AES_128"])),
        (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
        (None, Some(n)) => {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(KmsError::Validation("Specify either KeySpec or NumberOfBytes, not both.".into()))
        }
        (None, None) => {
            return Err(KmsError::Validation("Please specify either number of bytes or key spec.".into()))
        }
    };
    check_grant_tokens(&req.grant_tokens)?;
    let op = if with_plaintext {
        KeyOp::GenerateDataKey
    } else {
        KeyOp::GenerateDataKeyWithoutPlaintext
    };
    let key = fe.registry().usable(&key_id, op)?;
    dry_run(req.dry_run)?;
    let mut bytes = vec![0u8; length];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let data_key = SecretBytes::new(bytes);
    let ctx = req.encryption_context.unwrap_or_default();
    let blob = seal(fe, &key, data_key.expose(), &ctx).await?;
    let mut answer = json!({"CiphertextBlob": B64.encode(blob), "KeyId": key.arn});
    if with_plaintext {
        answer["Plaintext"] = json!(B64.encode(data_key.expose()));
    }
    Ok(answer)
}

async fn generate_random(
    fe: &Arc<Frontend>,
    req: GenerateRandomRequest,
) -> Result<Value, KmsError> {
    let n = match req.number_of_bytes {
        Some(n) if (1..=1024).contains(&n) => n as u32,
        Some(n) => {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024"
            )))
        }
        None => return Err(KmsError::Validation("Please specify either number of bytes or key spec.".into())),
    };
    let bytes = match req.custom_key_store_id {
        Some(store_id) => key_stores::random(fe, &store_id, n).await?,
        None => {
            let mut bytes = vec![0u8; n as usize];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            SecretBytes::new(bytes)
        }
    };
    Ok(json!({"Plaintext": B64.encode(bytes.expose())}))
}

// ---- aliases and tags -----------------------------------------------------------------

async fn create_alias(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    let target = required(req.target_key_id, "targetKeyId")?;
    let mut resources = vec![Resource::Alias(name.clone())];
    resources.extend(fe.key_resource(&target));
    fe.change(resources, |reg| {
        Ok((reg.create_alias(&name, &target, fe.now())?, ()))
    })
    .await?;
    Ok(json!({}))
}

async fn update_alias(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    let target = required(req.target_key_id, "targetKeyId")?;
    // The alias, its old target and its new one: the old target is read before the locks are
    // taken, so the plan checks it did not move meanwhile, and a move starts over.
    loop {
        let old = fe.registry().alias_target(&name);
        let mut resources = vec![Resource::Alias(name.clone())];
        resources.extend(fe.key_resource(&target));
        resources.extend(old.map(Resource::Key));
        let moved = fe
            .change(resources, |reg| {
                if reg.alias_target(&name) != old {
                    return Ok((vec![], true));
                }
                Ok((reg.update_alias(&name, &target, fe.now())?, false))
            })
            .await?;
        if !moved {
            break;
        }
    }
    Ok(json!({}))
}

async fn delete_alias(fe: &Arc<Frontend>, req: AliasRequest) -> Result<Value, KmsError> {
    let name = required(req.alias_name, "aliasName")?;
    fe.change(vec![Resource::Alias(name.clone())], |reg| {
        Ok((reg.delete_alias(&name)?, ()))
    })
    .await?;
    Ok(json!({}))
}

fn list_aliases(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let limit = check_limit(req.limit, 1000, 50)?;
    let reg = fe.registry();
    let (aliases, next) = reg.list_aliases(req.key_id.as_deref(), req.marker.as_deref(), limit)?;
    to_json(ListAliasesResponse {
        aliases: aliases
            .iter()
            .map(|a| AliasListEntry {
                alias_arn: reg.arns.alias_arn(&a.name),
                alias_name: a.name.clone(),
                target_key_id: a.target_key_id.to_string(),
                creation_date: epoch_seconds(a.created_at_millis),
                last_updated_date: epoch_seconds(a.updated_at_millis),
            })
            .collect(),
        truncated: next.is_some(),
        next_marker: next,
    })
}

async fn tag_resource(fe: &Arc<Frontend>, req: TagResourceRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let tags = tag_pairs(Some(required(req.tags, "tags")?))?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.tag(&key_id, tags)?, ()))
    })
    .await?;
    Ok(json!({}))
}

async fn untag_resource(fe: &Arc<Frontend>, req: UntagResourceRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let keys = required(req.tag_keys, "tagKeys")?;
    fe.change(lock_key(fe, &key_id), |reg| {
        Ok((reg.untag(&key_id, keys)?, ()))
    })
    .await?;
    Ok(json!({}))
}

fn list_resource_tags(fe: &Arc<Frontend>, req: ListRequest) -> Result<Value, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let limit = check_limit(req.limit, 50, 50)?;
    let reg = fe.registry();
    let record = reg.checked(&key_id, false, KeyOp::ListResourceTags)?;
    let start = match req.marker.as_deref() {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let all: Vec<(&String, &String)> = record.tags.iter().collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    let end = start + page.len();
    let mut answer = json!({"Tags": page, "Truncated": end < all.len()});
    if end < all.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}
