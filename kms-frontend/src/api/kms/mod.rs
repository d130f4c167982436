//! The KMS operations (`TrentService.*`), one per file, named after the operation: request
//! checks, the calls into the registry, the store and the cluster, and the JSON answers. Each
//! operation is audited and counted here.

mod cancel_key_deletion;
mod checks;
mod connect_custom_key_store;
mod create_alias;
mod create_custom_key_store;
mod create_key;
mod decrypt;
mod delete_alias;
mod delete_custom_key_store;
mod describe_custom_key_stores;
mod describe_key;
mod disable_key;
mod disconnect_custom_key_store;
mod enable_key;
mod encrypt;
mod envelope;
mod generate_data_key;
mod generate_data_key_without_plaintext;
mod generate_random;
mod get_key_policy;
mod get_key_rotation_status;
mod list_aliases;
mod list_key_policies;
mod list_keys;
mod list_resource_tags;
mod metadata;
mod put_key_policy;
mod re_encrypt;
mod schedule_key_deletion;
mod tag_resource;
mod untag_resource;
mod update_alias;
mod update_custom_key_store;
mod update_key_description;

use std::sync::Arc;

use serde_json::{json, Value};

pub use checks::MAX_PLAINTEXT;
pub use metadata::metadata;

use super::parse;
use crate::audit::{ApiCall, Parameters};
use crate::frontend::{iso8601, Frontend};
use crate::service::error::KmsError;
use crate::service::key_state;
use crate::service::model::KeyOrigin;

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
    frontend.metrics.count_request(op);
    let result = within_deadline(frontend, op, body).await;
    if let Err(e) = &result {
        frontend.metrics.count_error(e.type_name());
        if key_state::counts_as_pending_deletion_error(e) {
            frontend.metrics.count_pending_deletion_error();
        }
    }
    // What CloudTrail records: the parameters of a request it knows, never the whole body.
    let request = served.then(|| Parameters::of(body)).flatten();
    let recorded = match &result {
        Ok(value) => Ok(value),
        Err(e) => Err((e.type_name(), e.message())),
    };
    let additional = additional_event_data(frontend, op, request.as_ref(), result.as_ref().ok());
    frontend.audit.record_call(
        &frontend.metrics,
        ApiCall {
            event_time: iso8601(frontend.now()),
            event_name: op,
            request_id,
            request: request.as_ref(),
            result: recorded,
            additional,
            truncated: false,
        },
    );
    result
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
        KeyOrigin::AwsKms { .. } => None,
    }
}

/// Operations that change nothing (reads, and crypto, the hot path): cancelling one at any
/// await leaves nothing half done. Every other operation may commit a change and then install
/// it, and must not be cancelled in between.
const CHANGE_NOTHING: [&str; 14] = [
    "DescribeKey",
    "ListKeys",
    "GetKeyPolicy",
    "ListKeyPolicies",
    "GetKeyRotationStatus",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "ListAliases",
    "ListResourceTags",
    "DescribeCustomKeyStores",
];

/// Operations whose errors in KMS's model do not include DependencyTimeoutException: past the
/// deadline they answer KMSInternalException, which theirs do.
const NO_DEPENDENCY_TIMEOUT: [&str; 14] = [
    "ConnectCustomKeyStore",
    "CreateCustomKeyStore",
    "DeleteCustomKeyStore",
    "DescribeCustomKeyStores",
    "DisconnectCustomKeyStore",
    "GenerateMac",
    "ListKeyRotations",
    "ListResourceTags",
    "ReplicateKey",
    "TagResource",
    "UntagResource",
    "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
    "VerifyMac",
];

/// The answer to a call past the request deadline.
fn past_deadline(op: &str, deadline: std::time::Duration) -> KmsError {
    if NO_DEPENDENCY_TIMEOUT.contains(&op) {
        KmsError::KmsInternal(format!(
            "The request did not complete within {} seconds; it may still take effect.",
            deadline.as_secs()
        ))
    } else {
        KmsError::dependency_timeout()
    }
}

/// Runs the operation within the frontend's request deadline; past it the client gets
/// DependencyTimeoutException (KMSInternalException where the model has no such error). An operation that may change state runs as a task of its own,
/// which the deadline does not cancel: a change that was committed is always installed (and
/// its effects run), whether or not its caller still waits, as on AWS, where a call that timed
/// out may still have happened. The others are simply dropped at the deadline.
async fn within_deadline(fe: &Arc<Frontend>, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    let deadline = fe.request_deadline;
    if CHANGE_NOTHING.contains(&op) {
        return tokio::time::timeout(deadline, dispatch(fe, op, body))
            .await
            .unwrap_or_else(|_| Err(past_deadline(op, deadline)));
    }
    let (task_fe, task_op, body) = (fe.clone(), op.to_string(), body.to_vec());
    let task = actix::spawn(async move { dispatch(&task_fe, &task_op, &body).await });
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(KmsError::KmsInternal(
            "The request could not be completed.".into(),
        )),
        Err(_) => Err(past_deadline(op, deadline)),
    }
}

/// The operation's handler, given the request parsed into its shape.
async fn dispatch(fe: &Arc<Frontend>, op: &str, body: &[u8]) -> Result<Value, KmsError> {
    match op {
        "CreateKey" => create_key::handle(fe, parse(body)?).await,
        "DescribeKey" => describe_key::handle(fe, parse(body)?),
        "ListKeys" => list_keys::handle(fe, parse(body)?),
        "EnableKey" => enable_key::handle(fe, parse(body)?).await,
        "DisableKey" => disable_key::handle(fe, parse(body)?).await,
        "UpdateKeyDescription" => update_key_description::handle(fe, parse(body)?).await,
        "ScheduleKeyDeletion" => schedule_key_deletion::handle(fe, parse(body)?).await,
        "CancelKeyDeletion" => cancel_key_deletion::handle(fe, parse(body)?).await,
        "GetKeyPolicy" => get_key_policy::handle(fe, parse(body)?),
        "PutKeyPolicy" => put_key_policy::handle(fe, parse(body)?).await,
        "ListKeyPolicies" => list_key_policies::handle(fe, parse(body)?),
        "GetKeyRotationStatus" => get_key_rotation_status::handle(fe, parse(body)?),
        "Encrypt" => encrypt::handle(fe, parse(body)?).await,
        "Decrypt" => decrypt::handle(fe, parse(body)?).await,
        "ReEncrypt" => re_encrypt::handle(fe, parse(body)?).await,
        "GenerateDataKey" => generate_data_key::handle(fe, parse(body)?).await,
        "GenerateDataKeyWithoutPlaintext" => {
            generate_data_key_without_plaintext::handle(fe, parse(body)?).await
        }
        "GenerateRandom" => generate_random::handle(fe, parse(body)?).await,
        "CreateAlias" => create_alias::handle(fe, parse(body)?).await,
        "UpdateAlias" => update_alias::handle(fe, parse(body)?).await,
        "DeleteAlias" => delete_alias::handle(fe, parse(body)?).await,
        "ListAliases" => list_aliases::handle(fe, parse(body)?),
        "TagResource" => tag_resource::handle(fe, parse(body)?).await,
        "UntagResource" => untag_resource::handle(fe, parse(body)?).await,
        "ListResourceTags" => list_resource_tags::handle(fe, parse(body)?),
        "CreateCustomKeyStore" => create_custom_key_store::handle(fe, parse(body)?).await,
        "DescribeCustomKeyStores" => describe_custom_key_stores::handle(fe, parse(body)?),
        "ConnectCustomKeyStore" => connect_custom_key_store::handle(fe, parse(body)?).await,
        "DisconnectCustomKeyStore" => disconnect_custom_key_store::handle(fe, parse(body)?).await,
        "UpdateCustomKeyStore" => update_custom_key_store::handle(fe, parse(body)?).await,
        "DeleteCustomKeyStore" => delete_custom_key_store::handle(fe, parse(body)?).await,
        other => Err(KmsError::UnknownOperation(format!(
            "TrentService.{other} is not an operation hsmkms serves."
        ))),
    }
}
