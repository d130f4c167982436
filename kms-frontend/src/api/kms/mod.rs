//! The KMS operations (`TrentService.*`), one per file, named after the operation: request
//! checks, the calls into the registry, the store and the cluster, and the JSON answers. Each
//! operation is audited and counted here.

mod cancel_key_deletion;
pub(crate) mod checks;
mod connect_custom_key_store;
mod create_alias;
mod create_custom_key_store;
mod create_grant;
mod create_key;
mod decrypt;
mod delete_alias;
mod delete_custom_key_store;
mod derive_shared_secret;
mod describe_custom_key_stores;
mod describe_key;
mod disable_key;
mod disconnect_custom_key_store;
mod enable_key;
mod encapsulate;
mod encrypt;
mod envelope;
mod generate_data_key;
mod generate_data_key_pair;
mod generate_data_key_without_plaintext;
mod generate_random;
mod get_key_last_usage;
mod get_key_policy;
mod get_key_rotation_status;
mod get_public_key;
mod import_key_material;
mod key_rotation;
mod list_aliases;
mod list_grants;
mod list_key_policies;
mod list_keys;
mod list_resource_tags;
mod mac;
mod metadata;
mod model_checks;
mod model_rules;
mod multi_region;
mod put_key_policy;
mod re_encrypt;
mod retire_grant;
mod schedule_key_deletion;
mod sign;
mod tag_resource;
mod untag_resource;
mod update_alias;
mod update_custom_key_store;
mod update_key_description;

use std::sync::Arc;

use actix_web::web::Bytes;
use serde_json::{json, Value};

pub use checks::MAX_PLAINTEXT;
pub use metadata::metadata;

use super::deadline::{self, Late};
use crate::audit::{ApiCall, Parameters};
use crate::frontend::{iso8601, Frontend};
use crate::service::error::KmsError;
use crate::service::key_ref::{in_request_scope, request_scope, Arns, KeyRef};
use crate::service::key_state;
use crate::service::model::KeyOrigin;
use model_checks::valid;
use model_rules as rules;

/// How hsmkms runs one operation it serves.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The operation's name, as in `TrentService.<name>`.
    pub name: &'static str,
    /// It may commit a change and then install it: it runs as a task the request deadline
    /// cannot cut in between (see [`crate::api::deadline`]).
    changes: bool,
    /// Its errors in KMS's model include DependencyTimeoutException; past the deadline the
    /// others answer KMSInternalException, which theirs do.
    dependency_timeout: bool,
}

/// Reads and crypto: cancelling one at any await leaves nothing half done.
const fn reads(name: &'static str) -> Operation {
    Operation {
        name,
        changes: false,
        dependency_timeout: true,
    }
}

const fn changes(name: &'static str) -> Operation {
    Operation {
        name,
        changes: true,
        dependency_timeout: true,
    }
}

/// Whose model has no DependencyTimeoutException.
const fn without_timeout_error(op: Operation) -> Operation {
    Operation {
        dependency_timeout: false,
        ..op
    }
}

/// The KMS operations this emulator serves (what [`dispatch`] knows).
pub const OPERATIONS: [Operation; 56] = [
    changes("CreateKey"),
    reads("DescribeKey"),
    reads("ListKeys"),
    changes("EnableKey"),
    changes("DisableKey"),
    changes("UpdateKeyDescription"),
    changes("ScheduleKeyDeletion"),
    changes("CancelKeyDeletion"),
    reads("GetKeyPolicy"),
    changes("PutKeyPolicy"),
    reads("ListKeyPolicies"),
    reads("GetKeyRotationStatus"),
    reads("Encrypt"),
    reads("Decrypt"),
    reads("ReEncrypt"),
    reads("GenerateDataKey"),
    reads("GenerateDataKeyWithoutPlaintext"),
    reads("GenerateRandom"),
    changes("CreateAlias"),
    changes("UpdateAlias"),
    changes("DeleteAlias"),
    reads("ListAliases"),
    without_timeout_error(changes("TagResource")),
    without_timeout_error(changes("UntagResource")),
    without_timeout_error(reads("ListResourceTags")),
    without_timeout_error(changes("CreateCustomKeyStore")),
    without_timeout_error(reads("DescribeCustomKeyStores")),
    without_timeout_error(changes("ConnectCustomKeyStore")),
    without_timeout_error(changes("DisconnectCustomKeyStore")),
    without_timeout_error(changes("UpdateCustomKeyStore")),
    without_timeout_error(changes("DeleteCustomKeyStore")),
    changes("CreateGrant"),
    reads("ListGrants"),
    reads("ListRetirableGrants"),
    changes("RetireGrant"),
    changes("RevokeGrant"),
    changes("EnableKeyRotation"),
    changes("DisableKeyRotation"),
    changes("RotateKeyOnDemand"),
    without_timeout_error(reads("ListKeyRotations")),
    reads("GetKeyLastUsage"),
    reads("Sign"),
    reads("Verify"),
    reads("GetPublicKey"),
    without_timeout_error(reads("GenerateMac")),
    without_timeout_error(reads("VerifyMac")),
    reads("GenerateDataKeyPair"),
    reads("GenerateDataKeyPairWithoutPlaintext"),
    reads("DeriveSharedSecret"),
    reads("GetParametersForImport"),
    changes("ImportKeyMaterial"),
    changes("DeleteImportedKeyMaterial"),
    reads("Encapsulate"),
    reads("Decapsulate"),
    without_timeout_error(changes("ReplicateKey")),
    without_timeout_error(changes("UpdatePrimaryRegion")),
];

/// Where `name` stands in [`OPERATIONS`], if hsmkms serves it.
pub fn operation_index(name: &str) -> Option<usize> {
    OPERATIONS.iter().position(|op| op.name == name)
}

/// Runs one KMS operation, counts it and audits it.
pub async fn call(
    frontend: &Arc<Frontend>,
    op: &str,
    body: &Bytes,
    request_id: &str,
    scope: Arc<Arns>,
) -> Result<Value, KmsError> {
    in_request_scope(scope, call_in_scope(frontend, op, body, request_id)).await
}

/// [`call`], in the request's scope.
async fn call_in_scope(
    frontend: &Arc<Frontend>,
    op: &str,
    body: &Bytes,
    request_id: &str,
) -> Result<Value, KmsError> {
    let index = operation_index(op);
    frontend.metrics.count_request(index);
    let served = index.map(|i| &OPERATIONS[i]);
    let result = match served {
        Some(operation) => within_deadline(frontend, operation, body).await,
        None => Err(KmsError::UnknownOperation(format!(
            "TrentService.{op} is not an operation hsmkms serves."
        ))),
    };
    if let Err(e) = &result {
        frontend.metrics.count_error(e.type_name());
        if key_state::counts_as_pending_deletion_error(e) {
            frontend.metrics.count_pending_deletion_error();
        }
    }
    // What CloudTrail records: the parameters of a request it knows, never the whole body.
    let request = served.and_then(|_| Parameters::of(body));
    let recorded = match &result {
        Ok(value) => Ok(value),
        Err(e) => Err((e.type_name(), e.message())),
    };
    let additional = additional_event_data(frontend, op, request.as_ref(), result.as_ref().ok());
    let now = frontend.now();
    // Formatted on the stack: no allocation for an id on every request.
    let event_uuid = uuid::Uuid::new_v4();
    let mut event_buf = uuid::Uuid::encode_buffer();
    let event_id: &str = event_uuid.hyphenated().encode_lower(&mut event_buf);
    if let Ok(answer) = &result {
        record_last_usage(frontend, op, answer, now, event_uuid, request_id);
    }
    frontend.audit.record_call(
        &frontend.metrics,
        ApiCall {
            event_time: iso8601(now),
            event_name: op,
            request_id,
            event_id,
            request: request.as_ref(),
            result: recorded,
            additional,
            truncated: false,
        },
    );
    result
}

/// Notes a successful cryptographic operation for GetKeyLastUsage: the key (or, for ReEncrypt,
/// both keys) its answer names.
fn record_last_usage(
    fe: &Frontend,
    op: &str,
    answer: &Value,
    now: u64,
    event_id: uuid::Uuid,
    request_id: &str,
) {
    let Some(operation) = crate::frontend::TRACKED_OPERATIONS
        .iter()
        .find(|o| **o == op)
    else {
        return;
    };
    for member in ["KeyId", "SourceKeyId"] {
        let Some(arn) = answer.get(member).and_then(Value::as_str) else {
            continue;
        };
        // An answer's key ARN names a key of the request's scope; only a multi-Region key's
        // id needs the registry to find which key it is.
        let scope = request_scope().unwrap_or_else(|| fe.home_scope.clone());
        let id = match scope.parse(arn, false) {
            Ok(KeyRef::Key(id)) => Some(id),
            Ok(KeyRef::MultiRegion(_)) => fe.registry().resolve(arn, false).ok().map(|r| r.key_id),
            _ => None,
        };
        if let Some(id) = id {
            fe.note_key_use(id, operation, now, event_id, request_id);
        }
    }
}

/// CloudTrail's `additionalEventData` for calls that concern a custom key store: the store and
/// cluster, and for keys the backing key (handle and id) KMS records.
fn additional_event_data(
    fe: &Frontend,
    op: &str,
    request: Option<&Parameters<'_>>,
    response: Option<&Value>,
) -> Option<Value> {
    let asked = |name: &str| request.and_then(|r| r.str(name));
    let answered = |path: &[&str]| {
        let mut v = response?;
        for member in path {
            v = v.get(*member)?;
        }
        v.as_str().map(|s| std::borrow::Cow::Owned(s.to_string()))
    };
    let reg = fe.registry();
    let store_data = |store_id: &str| {
        reg.store(store_id).ok().map(|s| {
            json!({"customKeyStoreId": s.id, "customKeyStoreName": s.name, "clusterId": s.cluster_id})
        })
    };
    if op.contains("CustomKeyStore") {
        let id = asked("CustomKeyStoreId").or_else(|| answered(&["CustomKeyStoreId"]))?;
        return store_data(&id);
    }
    let key_id = answered(&["KeyMetadata", "KeyId"])
        .or_else(|| answered(&["KeyId"]))
        .or_else(|| asked("KeyId"))
        .or_else(|| asked("DestinationKeyId"))?;
    let record = reg.resolve(&key_id, true).ok()?;
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
        _ => None,
    }
}

/// Runs the operation within the frontend's request deadline (see [`crate::api::deadline`]):
/// past it the client gets DependencyTimeoutException, or KMSInternalException where the
/// model has no such error; with too many changes still running after their callers gave up,
/// a new change gets ThrottlingException at once.
async fn within_deadline(
    fe: &Arc<Frontend>,
    operation: &'static Operation,
    body: &Bytes,
) -> Result<Value, KmsError> {
    let deadline = fe.request_deadline;
    // The operation's future is boxed: `dispatch`'s future is as large as the largest
    // operation's (kilobytes), and every future around it (the deadline, the request's scope,
    // the HTTP handler, which actix boxes and moves) would otherwise carry and copy all of it.
    let answer = if operation.changes {
        let (task_fe, body) = (fe.clone(), body.clone());
        // The work is a task of its own: it carries the request's scope along.
        let scope = request_scope().unwrap_or_else(|| fe.home_scope.clone());
        let work = in_request_scope(
            scope,
            Box::pin(async move { dispatch(&task_fe, operation.name, &body).await }),
        );
        deadline::detached(deadline, &fe.overdue, work).await
    } else {
        deadline::inline(deadline, Box::pin(dispatch(fe, operation.name, body))).await
    };
    answer.unwrap_or_else(|late| {
        Err(match late {
            Late::Timeout if operation.dependency_timeout => KmsError::dependency_timeout(),
            Late::Timeout => KmsError::KmsInternal(format!(
                "The request did not complete within {} seconds; it may still take effect.",
                deadline.as_secs()
            )),
            Late::Busy => KmsError::throttled(),
            Late::Lost => KmsError::KmsInternal("The request could not be completed.".into()),
        })
    })
}

/// The operation's handler, given the request parsed into its shape and checked against the
/// model's constraints on its members.
async fn dispatch(fe: &Arc<Frontend>, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    match op {
        "CreateKey" => create_key::handle(fe, valid(body, &rules::CREATE_KEY)?).await,
        "DescribeKey" => describe_key::handle(fe, valid(body, &rules::DESCRIBE_KEY)?),
        "ListKeys" => list_keys::handle(fe, valid(body, &rules::LIST_KEYS)?),
        "EnableKey" => enable_key::handle(fe, valid(body, &rules::ENABLE_KEY)?).await,
        "DisableKey" => disable_key::handle(fe, valid(body, &rules::DISABLE_KEY)?).await,
        "UpdateKeyDescription" => {
            update_key_description::handle(fe, valid(body, &rules::UPDATE_KEY_DESCRIPTION)?).await
        }
        "ScheduleKeyDeletion" => {
            schedule_key_deletion::handle(fe, valid(body, &rules::SCHEDULE_KEY_DELETION)?).await
        }
        "CancelKeyDeletion" => {
            cancel_key_deletion::handle(fe, valid(body, &rules::CANCEL_KEY_DELETION)?).await
        }
        "GetKeyPolicy" => get_key_policy::handle(fe, valid(body, &rules::GET_KEY_POLICY)?),
        "PutKeyPolicy" => put_key_policy::handle(fe, valid(body, &rules::PUT_KEY_POLICY)?).await,
        "ListKeyPolicies" => list_key_policies::handle(fe, valid(body, &rules::LIST_KEY_POLICIES)?),
        "GetKeyRotationStatus" => {
            get_key_rotation_status::handle(fe, valid(body, &rules::GET_KEY_ROTATION_STATUS)?)
        }
        "Encrypt" => encrypt::handle(fe, valid(body, &rules::ENCRYPT)?).await,
        "Decrypt" => decrypt::handle(fe, valid(body, &rules::DECRYPT)?).await,
        "ReEncrypt" => re_encrypt::handle(fe, valid(body, &rules::RE_ENCRYPT)?).await,
        "GenerateDataKey" => {
            generate_data_key::handle(fe, valid(body, &rules::GENERATE_DATA_KEY)?).await
        }
        "GenerateDataKeyWithoutPlaintext" => {
            generate_data_key_without_plaintext::handle(
                fe,
                valid(body, &rules::GENERATE_DATA_KEY_WITHOUT_PLAINTEXT)?,
            )
            .await
        }
        "GenerateRandom" => {
            generate_random::handle(fe, valid(body, &rules::GENERATE_RANDOM)?).await
        }
        "CreateAlias" => create_alias::handle(fe, valid(body, &rules::CREATE_ALIAS)?).await,
        "UpdateAlias" => update_alias::handle(fe, valid(body, &rules::UPDATE_ALIAS)?).await,
        "DeleteAlias" => delete_alias::handle(fe, valid(body, &rules::DELETE_ALIAS)?).await,
        "ListAliases" => list_aliases::handle(fe, valid(body, &rules::LIST_ALIASES)?),
        "TagResource" => tag_resource::handle(fe, valid(body, &rules::TAG_RESOURCE)?).await,
        "UntagResource" => untag_resource::handle(fe, valid(body, &rules::UNTAG_RESOURCE)?).await,
        "ListResourceTags" => {
            list_resource_tags::handle(fe, valid(body, &rules::LIST_RESOURCE_TAGS)?)
        }
        "CreateCustomKeyStore" => {
            create_custom_key_store::handle(fe, valid(body, &rules::CREATE_CUSTOM_KEY_STORE)?).await
        }
        "DescribeCustomKeyStores" => {
            describe_custom_key_stores::handle(fe, valid(body, &rules::DESCRIBE_CUSTOM_KEY_STORES)?)
        }
        "ConnectCustomKeyStore" => {
            connect_custom_key_store::handle(fe, valid(body, &rules::CONNECT_CUSTOM_KEY_STORE)?)
                .await
        }
        "DisconnectCustomKeyStore" => {
            disconnect_custom_key_store::handle(
                fe,
                valid(body, &rules::DISCONNECT_CUSTOM_KEY_STORE)?,
            )
            .await
        }
        "UpdateCustomKeyStore" => {
            update_custom_key_store::handle(fe, valid(body, &rules::UPDATE_CUSTOM_KEY_STORE)?).await
        }
        "DeleteCustomKeyStore" => {
            delete_custom_key_store::handle(fe, valid(body, &rules::DELETE_CUSTOM_KEY_STORE)?).await
        }
        "CreateGrant" => create_grant::handle(fe, valid(body, &rules::CREATE_GRANT)?).await,
        "ListGrants" => list_grants::handle(fe, valid(body, &rules::LIST_GRANTS)?),
        "ListRetirableGrants" => {
            list_grants::retirable(fe, valid(body, &rules::LIST_RETIRABLE_GRANTS)?)
        }
        "RetireGrant" => retire_grant::handle(fe, valid(body, &rules::RETIRE_GRANT)?).await,
        "RevokeGrant" => retire_grant::revoke(fe, valid(body, &rules::REVOKE_GRANT)?).await,
        "EnableKeyRotation" => {
            key_rotation::enable(fe, valid(body, &rules::ENABLE_KEY_ROTATION)?).await
        }
        "DisableKeyRotation" => {
            key_rotation::disable(fe, valid(body, &rules::DISABLE_KEY_ROTATION)?).await
        }
        "RotateKeyOnDemand" => {
            key_rotation::rotate(fe, valid(body, &rules::ROTATE_KEY_ON_DEMAND)?).await
        }
        "ListKeyRotations" => key_rotation::list(fe, valid(body, &rules::LIST_KEY_ROTATIONS)?),
        "GetKeyLastUsage" => {
            get_key_last_usage::handle(fe, valid(body, &rules::GET_KEY_LAST_USAGE)?)
        }
        "Sign" => sign::sign(fe, valid(body, &rules::SIGN)?).await,
        "Verify" => sign::verify(fe, valid(body, &rules::VERIFY)?).await,
        "GetPublicKey" => get_public_key::handle(fe, valid(body, &rules::GET_PUBLIC_KEY)?),
        "GenerateMac" => mac::generate(fe, valid(body, &rules::GENERATE_MAC)?).await,
        "VerifyMac" => mac::verify(fe, valid(body, &rules::VERIFY_MAC)?).await,
        "GenerateDataKeyPair" => {
            generate_data_key_pair::generate(fe, valid(body, &rules::GENERATE_DATA_KEY_PAIR)?, true)
                .await
        }
        "GenerateDataKeyPairWithoutPlaintext" => {
            generate_data_key_pair::generate(
                fe,
                valid(body, &rules::GENERATE_DATA_KEY_PAIR_WITHOUT_PLAINTEXT)?,
                false,
            )
            .await
        }
        "DeriveSharedSecret" => {
            derive_shared_secret::handle(fe, valid(body, &rules::DERIVE_SHARED_SECRET)?).await
        }
        "GetParametersForImport" => {
            import_key_material::get_parameters(fe, valid(body, &rules::GET_PARAMETERS_FOR_IMPORT)?)
                .await
        }
        "ImportKeyMaterial" => {
            import_key_material::import(fe, valid(body, &rules::IMPORT_KEY_MATERIAL)?).await
        }
        "DeleteImportedKeyMaterial" => {
            import_key_material::delete(fe, valid(body, &rules::DELETE_IMPORTED_KEY_MATERIAL)?)
                .await
        }
        "Encapsulate" => encapsulate::encapsulate(fe, valid(body, &rules::ENCAPSULATE)?),
        "Decapsulate" => encapsulate::decapsulate(fe, valid(body, &rules::DECAPSULATE)?),
        "ReplicateKey" => multi_region::replicate(fe, valid(body, &rules::REPLICATE_KEY)?).await,
        "UpdatePrimaryRegion" => {
            multi_region::update_primary_region(fe, valid(body, &rules::UPDATE_PRIMARY_REGION)?)
                .await
        }
        other => Err(KmsError::UnknownOperation(format!(
            "TrentService.{other} is not an operation hsmkms serves."
        ))),
    }
}
