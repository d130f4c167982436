//! The custom key store operations, and the flows that connect and disconnect a store: the
//! connection state machine decides, the key store's actor talks to the cluster, and every
//! state change is durable before anyone sees it (persist, then install).
//!
//! One owner per store: every change to a store's record (create aside) holds the store's
//! [`StoreOwner`], so changes apply one at a time and in order, each on the record as the
//! previous one left it; a connect that a disconnect overtook finds a newer generation and
//! changes nothing.

use std::sync::Arc;

use hsmkms_common::secret::SecretBytes;
use rand::RngCore;
use serde_json::{json, Value};

use super::kms::{key_store_record, metadata};
use super::types::*;
use crate::cluster::ClusterDirectory;
use crate::frontend::{epoch_seconds, Frontend, StoreOwner};
use crate::hsm::new_password;
use crate::service::connection_state::{ConnectionErrorCode, ConnectionOp, ConnectionState};
use crate::service::error::KmsError;
use crate::service::model::KeyStoreRecord;
use crate::service::registry::Registry;
use hsmkms_common::secret::SecretString;

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, KmsError> {
    serde_json::to_value(value).map_err(|e| KmsError::KmsInternal(e.to_string()))
}

fn check_password(password: &str) -> Result<(), KmsError> {
    if !(7..=32).contains(&password.len()) {
        return Err(KmsError::Validation(
            "1 validation error detected: Value at 'keyStorePassword' failed to satisfy constraint: Member must have length between 7 and 32".into(),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), KmsError> {
    if name.is_empty() || name.chars().count() > 256 {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'customKeyStoreName' failed to satisfy constraint: Member must have length between 1 and 256"
        )));
    }
    Ok(())
}

/// A new custom key store id: `cks-` and 17 hex characters.
fn new_store_id() -> String {
    let mut bytes = [0u8; 9];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cks-{}", &hex[..17])
}

/// The trust anchor matches when the certificates are equal, PEM whitespace aside.
fn same_certificate(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    norm(a) == norm(b)
}

/// Checks the cluster a store is to use (CreateCustomKeyStore, UpdateCustomKeyStore).
fn check_cluster(
    fe: &Frontend,
    cluster_id: &str,
    except_store: Option<&str>,
) -> Result<crate::cluster::ClusterView, KmsError> {
    let cluster = fe.clusters.cluster(cluster_id).ok_or_else(|| {
        KmsError::CloudHsmClusterNotFound(format!("AWS CloudHSM cluster {cluster_id} not found."))
    })?;
    if cluster.state != "ACTIVE" {
        return Err(KmsError::CloudHsmClusterNotActive(format!(
            "AWS CloudHSM cluster {cluster_id} is {}; it must be ACTIVE.",
            cluster.state
        )));
    }
    let reg = fe.registry();
    for store in reg.stores() {
        if Some(store.id.as_str()) == except_store {
            continue;
        }
        let shares_history = fe
            .clusters
            .cluster(&store.cluster_id)
            .is_some_and(|other| same_certificate(&other.trust_anchor, &cluster.trust_anchor));
        if store.cluster_id == cluster_id || shares_history {
            return Err(KmsError::CloudHsmClusterInUse(format!(
                "AWS CloudHSM cluster {cluster_id} (or a cluster that shares its backup history) is already associated with custom key store {}.",
                store.id
            )));
        }
    }
    if !cluster.has_two_zones() {
        return Err(KmsError::CloudHsmClusterInvalidConfiguration(format!(
            "AWS CloudHSM cluster {cluster_id} must contain at least two active HSMs in different Availability Zones."
        )));
    }
    Ok(cluster)
}

pub async fn create(
    fe: &Arc<Frontend>,
    req: CreateCustomKeyStoreRequest,
) -> Result<Value, KmsError> {
    let name = required(req.custom_key_store_name, "customKeyStoreName")?;
    check_name(&name)?;
    match req.custom_key_store_type.as_deref() {
        None | Some("AWS_CLOUDHSM") => {}
        Some("EXTERNAL_KEY_STORE") => {
            return Err(KmsError::UnsupportedOperation("hsmkms does not support external key stores.".into()))
        }
        Some(other) => {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'customKeyStoreType' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM]"
            )))
        }
    }
    let cluster_id = required(req.cloud_hsm_cluster_id, "cloudHsmClusterId")?;
    let trust_anchor = required(req.trust_anchor_certificate, "trustAnchorCertificate")?;
    let password = SecretString::new(required(req.key_store_password, "keyStorePassword")?);
    check_password(password.expose())?;
    // Names are unique: creations and renames take turns.
    let _names = fe.store_names.lock().await;
    // An identical request for an existing disconnected store is an idempotent retry.
    {
        let reg = fe.registry();
        if let Some(existing) = reg.store_by_name(&name) {
            let same = existing.cluster_id == cluster_id
                && same_certificate(&existing.trust_anchor, &trust_anchor)
                && existing.state == ConnectionState::Disconnected
                && reg
                    .passwords(existing)
                    .map(|(p, _)| p.ct_eq(password.expose()))
                    .unwrap_or(false);
            if same {
                return Ok(json!({"CustomKeyStoreId": existing.id}));
            }
            return Err(KmsError::CustomKeyStoreNameInUse(format!(
                "The custom key store name {name} is already in use."
            )));
        }
        reg.check_store_quota()?;
    }
    let cluster = check_cluster(fe, &cluster_id, None)?;
    if !same_certificate(&cluster.trust_anchor, &trust_anchor) {
        return Err(KmsError::IncorrectTrustAnchor(format!(
            "The trust anchor certificate does not match the trust anchor of AWS CloudHSM cluster {cluster_id}."
        )));
    }
    let id = new_store_id();
    let record = KeyStoreRecord {
        wrapped_password: fe.registry().wrap_password(&id, &password),
        wrapped_pending_password: None,
        id: id.clone(),
        name,
        cluster_id,
        trust_anchor,
        state: ConnectionState::Disconnected,
        created_at_millis: fe.now(),
    };
    persist(fe, record).await?;
    Ok(json!({"CustomKeyStoreId": id}))
}

pub fn describe(
    fe: &Arc<Frontend>,
    req: DescribeCustomKeyStoresRequest,
) -> Result<Value, KmsError> {
    let limit = req.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 1000"
        )));
    }
    let reg = fe.registry();
    let selected: Vec<&KeyStoreRecord> =
        match (&req.custom_key_store_id, &req.custom_key_store_name) {
            (Some(_), Some(_)) => {
                return Err(KmsError::Validation(
                    "Specify CustomKeyStoreId or CustomKeyStoreName, not both.".into(),
                ))
            }
            (Some(id), None) => vec![reg.store(id)?],
            (None, Some(name)) => vec![reg.store_by_name(name).ok_or_else(|| {
                KmsError::CustomKeyStoreNotFound(format!("Custom key store {name} does not exist."))
            })?],
            (None, None) => reg.stores().collect(),
        };
    let start = match &req.marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker: {m}")))?,
    };
    let page: Vec<CustomKeyStoreEntry> = selected
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|s| CustomKeyStoreEntry {
            custom_key_store_id: s.id.clone(),
            custom_key_store_name: s.name.clone(),
            cloud_hsm_cluster_id: s.cluster_id.clone(),
            trust_anchor_certificate: s.trust_anchor.clone(),
            connection_state: s.state.as_str(),
            connection_error_code: s.state.error_code().map(|c| c.as_str()),
            creation_date: epoch_seconds(s.created_at_millis),
            custom_key_store_type: "AWS_CLOUDHSM",
        })
        .collect();
    let end = start + page.len();
    let mut answer = json!({"CustomKeyStores": to_json(page)?, "Truncated": end < selected.len()});
    if end < selected.len() {
        answer["NextMarker"] = json!(end.to_string());
    }
    Ok(answer)
}

/// Makes a store record durable, then installs it.
async fn persist(fe: &Frontend, record: KeyStoreRecord) -> Result<KeyStoreRecord, KmsError> {
    fe.commit(vec![Registry::store_write(&record)]).await?;
    fe.registry_mut().install_store(record.clone());
    Ok(record)
}

/// Applies a transition to a store (its owner held) and makes it durable. Returns the store
/// as it now is.
async fn transition(
    fe: &Frontend,
    _owner: &StoreOwner,
    store_id: &str,
    op: ConnectionOp,
) -> Result<KeyStoreRecord, KmsError> {
    let mut record = fe.registry().store(store_id)?.clone();
    let next = record.state.apply(op, store_id)?;
    if next == record.state {
        return Ok(record);
    }
    record.state = next;
    persist(fe, record).await
}

pub async fn connect(fe: &Arc<Frontend>, req: CustomKeyStoreIdRequest) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let mut owner = fe.store_owner(&store_id).await?;
    let before = fe.registry().store(&store_id)?.state;
    transition(fe, &owner, &store_id, ConnectionOp::Connect).await?;
    if before == ConnectionState::Disconnected {
        // Connecting takes a while on AWS; the call returns at once and the store moves on.
        owner.generation += 1;
        let generation = owner.generation;
        drop(owner);
        let fe = fe.clone();
        actix::spawn(async move { finish_connect(&fe, &store_id, generation).await });
    }
    Ok(json!({}))
}

/// Runs the connect protocol of `generation` and records its outcome, unless a later
/// connect or disconnect overtook it.
async fn finish_connect(fe: &Arc<Frontend>, store_id: &str, generation: u64) {
    let outcome = connect_to_cluster(fe, store_id, generation).await;
    let Ok(owner) = fe.store_owner(store_id).await else {
        return;
    };
    if owner.generation != generation {
        tracing::info!(%store_id, "a later call overtook this connection attempt");
        return;
    }
    let op = match outcome {
        Ok(()) => ConnectionOp::ConnectSucceeded,
        Err(code) => {
            tracing::warn!(%store_id, code = code.as_str(), "custom key store connection failed");
            fe.hsm.close(store_id, generation).await;
            ConnectionOp::ConnectFailed(code)
        }
    };
    match transition(fe, &owner, store_id, op).await {
        Ok(r) if r.state == ConnectionState::Connected => {
            tracing::info!(%store_id, "custom key store CONNECTED")
        }
        Ok(_) => fe.hsm.close(store_id, generation).await,
        Err(e) => {
            tracing::error!(%store_id, error = %e, "cannot record the connection outcome");
            fe.hsm.close(store_id, generation).await;
        }
    }
}

/// Records the kmsuser passwords of a store, if `generation` is still the store's.
async fn set_passwords(
    fe: &Frontend,
    store_id: &str,
    generation: u64,
    current: &SecretString,
    pending: Option<&SecretString>,
) -> Result<(), ConnectionErrorCode> {
    let owner = fe
        .store_owner(store_id)
        .await
        .map_err(|_| ConnectionErrorCode::InternalError)?;
    if owner.generation != generation {
        // Overtaken: the record keeps the pending password, which a later connect tries.
        return Err(ConnectionErrorCode::InternalError);
    }
    let mut record = fe
        .registry()
        .store(store_id)
        .map_err(|_| ConnectionErrorCode::InternalError)?
        .clone();
    {
        let reg = fe.registry();
        record.wrapped_password = reg.wrap_password(store_id, current);
        record.wrapped_pending_password = pending.map(|p| reg.wrap_password(store_id, p));
    }
    persist(fe, record)
        .await
        .map(|_| ())
        .map_err(|_| ConnectionErrorCode::InternalError)
}

/// Logs in as kmsuser and rotates its password, persisting the new password before the cluster
/// has it (as pending) and after (as current), so a crash never loses it.
async fn connect_to_cluster(
    fe: &Arc<Frontend>,
    store_id: &str,
    generation: u64,
) -> Result<(), ConnectionErrorCode> {
    let (cluster_id, current, pending) = {
        let reg = fe.registry();
        let record = reg
            .store(store_id)
            .map_err(|_| ConnectionErrorCode::InternalError)?;
        let (current, pending) = reg
            .passwords(record)
            .map_err(|_| ConnectionErrorCode::InternalError)?;
        (record.cluster_id.clone(), current, pending)
    };
    let working = fe
        .hsm
        .open(store_id, generation, &cluster_id, current, pending)
        .await?;
    let rotated = SecretString::new(new_password());
    set_passwords(fe, store_id, generation, &working, Some(&rotated)).await?;
    fe.hsm
        .rotate(store_id, generation, rotated.duplicate())
        .await
        .map_err(|_| ConnectionErrorCode::InternalError)?;
    set_passwords(fe, store_id, generation, &rotated, None).await
}

/// At start, before the emulator serves: every store that was CONNECTED (or CONNECTING) when
/// it stopped connects again (logging in with the persisted password and rotating it, as a
/// connect does) and ends CONNECTED, or FAILED with the reason; a store that was being
/// disconnected is DISCONNECTED. Stores recover side by side.
pub async fn recover(fe: &Arc<Frontend>) {
    let stores: Vec<(String, ConnectionState)> = fe
        .registry()
        .stores()
        .map(|s| (s.id.clone(), s.state))
        .collect();
    let recoveries = stores.into_iter().map(|(store_id, state)| async move {
        let Ok(mut owner) = fe.store_owner(&store_id).await else {
            return;
        };
        match state {
            ConnectionState::Connected | ConnectionState::Connecting => {
                if let Err(e) = transition(fe, &owner, &store_id, ConnectionOp::Reconnect).await {
                    tracing::error!(%store_id, error = %e, "cannot record the reconnection");
                    return;
                }
                owner.generation += 1;
                let generation = owner.generation;
                drop(owner);
                tracing::info!(%store_id, "reconnecting a custom key store that was connected");
                finish_connect(fe, &store_id, generation).await;
            }
            ConnectionState::Disconnecting => {
                if let Err(e) =
                    transition(fe, &owner, &store_id, ConnectionOp::DisconnectCompleted).await
                {
                    tracing::error!(%store_id, error = %e, "cannot record the disconnection");
                }
            }
            ConnectionState::Disconnected | ConnectionState::Failed(_) => {}
        }
    });
    futures::future::join_all(recoveries).await;
}

pub async fn disconnect(
    fe: &Arc<Frontend>,
    req: CustomKeyStoreIdRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let mut owner = fe.store_owner(&store_id).await?;
    transition(fe, &owner, &store_id, ConnectionOp::Disconnect).await?;
    owner.generation += 1;
    fe.hsm.close(&store_id, owner.generation).await;
    transition(fe, &owner, &store_id, ConnectionOp::DisconnectCompleted).await?;
    Ok(json!({}))
}

pub async fn update(
    fe: &Arc<Frontend>,
    req: UpdateCustomKeyStoreRequest,
) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let _names = match req.new_custom_key_store_name {
        Some(_) => Some(fe.store_names.lock().await),
        None => None,
    };
    let owner = fe.store_owner(&store_id).await?;
    let record = fe.registry().store(&store_id)?.clone();
    let changes_secret = req.key_store_password.is_some() || req.cloud_hsm_cluster_id.is_some();
    let op = if changes_secret {
        ConnectionOp::UpdatePasswordOrCluster
    } else {
        ConnectionOp::UpdateName
    };
    record.state.apply(op, &store_id)?;
    let mut updated = record.clone();
    if let Some(name) = req.new_custom_key_store_name {
        check_name(&name)?;
        if fe
            .registry()
            .store_by_name(&name)
            .is_some_and(|s| s.id != store_id)
        {
            return Err(KmsError::CustomKeyStoreNameInUse(format!(
                "The custom key store name {name} is already in use."
            )));
        }
        updated.name = name;
    }
    if let Some(password) = req.key_store_password {
        let password = SecretString::new(password);
        check_password(password.expose())?;
        updated.wrapped_password = fe.registry().wrap_password(&store_id, &password);
        updated.wrapped_pending_password = None;
    }
    if let Some(cluster_id) = req.cloud_hsm_cluster_id {
        if cluster_id != record.cluster_id {
            let new = check_cluster(fe, &cluster_id, Some(&store_id))?;
            let related = fe
                .clusters
                .cluster(&record.cluster_id)
                .map(|old| same_certificate(&old.trust_anchor, &new.trust_anchor))
                .unwrap_or_else(|| same_certificate(&record.trust_anchor, &new.trust_anchor));
            if !related {
                return Err(KmsError::CloudHsmClusterNotRelated(format!(
                    "AWS CloudHSM cluster {cluster_id} is not related to {}: it does not share its backup history.",
                    record.cluster_id
                )));
            }
            updated.cluster_id = cluster_id;
        }
    }
    persist(fe, updated).await?;
    drop(owner);
    Ok(json!({}))
}

pub async fn delete(fe: &Arc<Frontend>, req: CustomKeyStoreIdRequest) -> Result<Value, KmsError> {
    let store_id = required(req.custom_key_store_id, "customKeyStoreId")?;
    let owner = fe.store_owner(&store_id).await?;
    {
        let reg = fe.registry();
        let record = reg.store(&store_id)?;
        record.state.apply(ConnectionOp::Delete, &store_id)?;
        let keys = reg.keys_in_store(&store_id) + owner.creating();
        if keys > 0 {
            return Err(KmsError::CustomKeyStoreHasCmks(format!(
                "Custom key store {store_id} still holds {keys} KMS keys (keys pending deletion count until their waiting period ends)."
            )));
        }
    }
    fe.commit(vec![crate::store::Write::delete(
        crate::store::Table::KeyStores,
        store_id.clone(),
    )])
    .await?;
    fe.registry_mut().uninstall_store(&store_id);
    drop(owner);
    fe.forget_store(&store_id);
    Ok(json!({}))
}

/// CreateKey with `Origin=AWS_CLOUDHSM`: the backing key is generated in the cluster first.
pub async fn create_key_in_store(
    fe: &Arc<Frontend>,
    store_id: &str,
    description: Option<String>,
    policy: Option<String>,
    tags: Vec<(String, String)>,
) -> Result<Value, KmsError> {
    // Counted as in flight until its record is durable, so the store cannot be deleted under it.
    let _creating = fe.store_owner(store_id).await?.begin_create();
    let (cluster_id, record) = {
        let reg = fe.registry();
        let store = reg.store(store_id)?;
        store.state.apply(ConnectionOp::CreateKey, store_id)?;
        let (_, record, _) = reg.new_key(false, description, policy, tags, fe.now())?;
        (store.cluster_id.clone(), record)
    };
    let cluster = fe.clusters.cluster(&cluster_id).ok_or_else(|| {
        KmsError::CloudHsmClusterNotFound(format!("AWS CloudHSM cluster {cluster_id} not found."))
    })?;
    if !cluster.has_two_zones() {
        return Err(KmsError::CloudHsmClusterInvalidConfiguration(format!(
            "AWS CloudHSM cluster {cluster_id} must contain at least two active HSMs in different Availability Zones."
        )));
    }
    let arn = fe.arns.key_arn(&record.key_id);
    let (generated, uncertain) = fe.hsm.generate_key(store_id, &arn).await;
    let added = match generated {
        Ok(handle) => {
            let record = key_store_record(record, store_id, &cluster_id, handle);
            fe.add_key(record.clone()).await.map(|()| record)
        }
        Err(e) => Err(e),
    };
    if uncertain || added.is_err() {
        // An attempt may have made a key that KMS does not record: clean the label up, once
        // replication has settled and once more after any straggler could have arrived.
        let keep = added.as_ref().ok().and_then(|r| r.origin.backing_handle());
        spawn_reconcile(fe.clone(), store_id.to_string(), arn, keep);
    }
    let record = added?;
    let reg = fe.registry();
    to_json(KeyMetadataResponse {
        key_metadata: metadata(&reg, &record),
    })
}

/// When [`spawn_reconcile`] looks for second backing keys: after replication settles, and
/// after a stalled HSM's calls are past their deadline for sure.
pub const RECONCILE_AFTER: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(20),
];

/// Removes, in the background, key objects labelled `arn` other than `keep`.
fn spawn_reconcile(fe: Arc<Frontend>, store_id: String, arn: String, keep: Option<u64>) {
    actix::spawn(async move {
        for wait in RECONCILE_AFTER {
            tokio::time::sleep(wait).await;
            fe.hsm.reconcile(&store_id, &arn, keep).await;
        }
    });
}

/// GenerateRandom with a CustomKeyStoreId: random bytes from the store's cluster.
pub async fn random(fe: &Arc<Frontend>, store_id: &str, n: u32) -> Result<SecretBytes, KmsError> {
    fe.registry()
        .store(store_id)?
        .state
        .apply(ConnectionOp::GenerateRandom, store_id)?;
    fe.hsm.random(store_id, n).await
}
