//! How a custom key store's state moves beyond one request: the connect protocol (log in as
//! kmsuser on every HSM, rotate the password, record the outcome), recovery on start, keys
//! created in a store, and random bytes from its cluster. The connection state machine
//! ([`ConnectionState::apply`]) and the connect protocol's ([`ConnectAttempt`]) decide; the
//! store's actor talks to the cluster; every state change is durable before anyone sees it
//! (persist, then install).
//!
//! One owner per store: every change to a store's record (create aside) holds the store's
//! [`StoreOwner`], so changes apply one at a time and in the order they asked, each on the
//! record as the previous one left it; a connect that a disconnect overtook finds a newer
//! generation and changes nothing.

use std::sync::Arc;

use hsmkms_common::entropy::{Entropy, EntropyRng};
use hsmkms_common::secret::{SecretBytes, SecretString};
use rand::distributions::{Alphanumeric, DistString};

use crate::cluster::ClusterDirectory;
use crate::frontend::{Frontend, StoreOwner};
use crate::service::connect::{ConnectAttempt, Event, Step};
use crate::service::connection_state::{ConnectionErrorCode, ConnectionOp, ConnectionState};
use crate::service::error::KmsError;
use crate::service::model::{BackingKey, KeyOrigin, KeyRecord, KeyStoreRecord};
use crate::service::registry::Registry;

/// A new random kmsuser password: 32 letters and digits, as KMS sets on every connect.
pub fn new_password(entropy: &dyn Entropy) -> SecretString {
    SecretString::new(Alphanumeric.sample_string(&mut EntropyRng(entropy), 32))
}

/// Makes a store record durable, then installs it.
pub async fn persist(fe: &Frontend, record: KeyStoreRecord) -> Result<KeyStoreRecord, KmsError> {
    fe.commit(vec![Registry::store_write(&record)]).await?;
    fe.registry_mut().install_store(record.clone());
    Ok(record)
}

/// Applies a transition to a store (its owner held) and makes it durable. Returns the store
/// as it now is.
pub async fn transition(
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

/// Runs the connect protocol of `generation` and records its outcome, unless a later
/// connect or disconnect overtook it.
pub async fn finish_connect(fe: &Arc<Frontend>, store_id: &str, generation: u64) {
    let outcome = connect_to_cluster(fe, store_id, generation).await;
    let Ok(mut owner) = fe.store_owner(store_id).await else {
        return;
    };
    if owner.attempt == Some(generation) {
        owner.attempt = None;
    }
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
            // The store stays CONNECTING with no attempt running; `settle` starts another.
            tracing::error!(%store_id, error = %e, "cannot record the connection outcome");
            fe.hsm.close(store_id, generation).await;
        }
    }
}

/// Makes the next generation of a store's connection the attempt that runs now.
fn begin_attempt(owner: &mut StoreOwner) -> u64 {
    owner.generation += 1;
    owner.attempt = Some(owner.generation);
    owner.generation
}

/// Starts a connect attempt in the background, as the next generation of the store's
/// connection (the store is CONNECTING and durable so).
pub fn start_connect(fe: &Arc<Frontend>, owner: &mut StoreOwner, store_id: &str) {
    let generation = begin_attempt(owner);
    let fe = fe.clone();
    let store_id = store_id.to_string();
    actix::spawn(async move { finish_connect(&fe, &store_id, generation).await });
}

/// Connects a DISCONNECTED store and waits for the outcome: the state it ends in, CONNECTED
/// or FAILED (a seeded store, before the emulator serves or a reset answers).
pub async fn connect_and_wait(
    fe: &Arc<Frontend>,
    store_id: &str,
) -> Result<ConnectionState, KmsError> {
    let generation = {
        let mut owner = fe.store_owner(store_id).await?;
        transition(fe, &owner, store_id, ConnectionOp::Connect).await?;
        begin_attempt(&mut owner)
    };
    finish_connect(fe, store_id, generation).await;
    Ok(fe.registry().store(store_id)?.state)
}

/// Completes a disconnection whose DISCONNECTING state is durable: the sessions close, then
/// the store is DISCONNECTED. If that last commit fails, the store stays DISCONNECTING and
/// `settle` completes it later.
pub async fn complete_disconnect(fe: &Frontend, owner: &mut StoreOwner, store_id: &str) {
    owner.generation += 1;
    fe.hsm.close(store_id, owner.generation).await;
    if let Err(e) = transition(fe, owner, store_id, ConnectionOp::DisconnectCompleted).await {
        tracing::error!(%store_id, error = %e, "cannot record the disconnection; retrying");
    }
}

/// Moves on, from the scheduler's tick, every store that a failed commit left between two
/// states with nobody working on it: a CONNECTING store whose attempt's outcome was lost
/// connects again, a DISCONNECTING store finishes disconnecting, and a CONNECTED store without
/// sessions (its reconnection at start could not be recorded) reconnects. A store whose owner
/// is held is being worked on and is left alone.
pub async fn settle(fe: &Arc<Frontend>) {
    let unsettled: Vec<String> = fe
        .registry()
        .stores()
        .filter(|s| {
            matches!(
                s.state,
                ConnectionState::Connecting
                    | ConnectionState::Disconnecting
                    | ConnectionState::Connected
            )
        })
        .map(|s| s.id.clone())
        .collect();
    for store_id in unsettled {
        let Some(mut owner) = fe.try_store_owner(&store_id) else {
            continue;
        };
        let Ok(state) = fe.registry().store(&store_id).map(|s| s.state) else {
            continue;
        };
        match state {
            ConnectionState::Connecting if owner.attempt.is_none() => {
                tracing::warn!(%store_id, "a connection's outcome was not recorded; connecting again");
                start_connect(fe, &mut owner, &store_id);
            }
            ConnectionState::Disconnecting => {
                tracing::warn!(%store_id, "finishing a disconnection whose end was not recorded");
                complete_disconnect(fe, &mut owner, &store_id).await;
            }
            ConnectionState::Connected
                if owner.attempt.is_none() && !fe.hsm.logged_in(&store_id).await =>
            {
                tracing::warn!(%store_id, "a CONNECTED store has no sessions; connecting again");
                match transition(fe, &owner, &store_id, ConnectionOp::Reconnect).await {
                    Ok(_) => start_connect(fe, &mut owner, &store_id),
                    Err(e) => {
                        tracing::error!(%store_id, error = %e, "cannot record the reconnection; retrying")
                    }
                }
            }
            _ => {}
        }
    }
}

/// Records the kmsuser passwords of a store, if `generation` is still the store's.
pub async fn set_passwords(
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
    if fe.faults.connects_fail() {
        // Fault injection (`fail-connects`): KMS's own side fails, as a store that refuses the
        // write would; the connect protocol ends it as INTERNAL_ERROR.
        tracing::warn!(%store_id, "fault injection: the store's passwords are not saved");
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

/// Runs the connect protocol ([`ConnectAttempt`]): logs in as kmsuser and rotates its
/// password, the new password durable before the cluster has it (as pending) and after (as
/// current), so a crash never loses it. Each step's I/O runs here; the attempt decides.
pub async fn connect_to_cluster(
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
    let (mut attempt, mut step) =
        ConnectAttempt::start(current, pending, new_password(fe.entropy.as_ref()));
    loop {
        let event = match step {
            Step::Open { current, pending } => {
                match fe
                    .hsm
                    .open(store_id, generation, &cluster_id, current, pending)
                    .await
                {
                    Ok(opened) => Event::Opened(opened),
                    Err(code) => Event::OpenFailed(code),
                }
            }
            Step::Save { current, pending } => {
                match set_passwords(fe, store_id, generation, &current, pending.as_ref()).await {
                    Ok(()) => Event::Saved,
                    Err(_) => Event::SaveFailed,
                }
            }
            Step::Rotate(password) => match fe.hsm.rotate(store_id, generation, password).await {
                Ok(()) => Event::Rotated,
                Err(_) => Event::RotateFailed,
            },
            Step::Finish(outcome) => return outcome,
        };
        step = attempt.next(event);
    }
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
                    // Still CONNECTED, with no sessions: `settle` reconnects it once it can.
                    tracing::error!(%store_id, error = %e, "cannot record the reconnection");
                    return;
                }
                let generation = begin_attempt(&mut owner);
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

/// CreateKey with `Origin=AWS_CLOUDHSM`: the backing key is generated in the cluster first.
pub async fn create_key_in_store(
    fe: &Arc<Frontend>,
    store_id: &str,
    description: Option<String>,
    policy: Option<String>,
    tags: Vec<(String, String)>,
) -> Result<KeyRecord, KmsError> {
    // Counted as in flight until its record is durable, so the store cannot be deleted under it.
    let _creating = fe.store_owner(store_id).await?.begin_create();
    let (cluster_id, record) = {
        let reg = fe.registry();
        let store = reg.store(store_id)?;
        store.state.apply(ConnectionOp::CreateKey, store_id)?;
        let (_, record, _) = reg.new_key(
            crate::service::registry::NewKeyMaterial::CloudHsm,
            description,
            policy,
            tags,
            fe.now(),
            fe.entropy.as_ref(),
        )?;
        (store.cluster_id.clone(), record)
    };
    let cluster = fe
        .clusters
        .cluster(&cluster_id)
        .ok_or_else(|| KmsError::cluster_not_found(&cluster_id))?;
    if !cluster.has_two_zones() {
        return Err(KmsError::cluster_too_small(&cluster_id));
    }
    let arn = fe.registry().key_arn(&record.key_id);
    let (generated, uncertain) = fe.hsm.generate_key(store_id, &arn).await;
    let added = match generated {
        Ok(handle) => {
            let record =
                key_store_record(fe.entropy.as_ref(), record, store_id, &cluster_id, handle);
            fe.add_key(record.clone(), false).await.map(|()| record)
        }
        Err(e) => Err(e),
    };
    if uncertain || added.is_err() {
        // An attempt may have made a key that KMS does not record: clean the label up, once
        // replication has settled and once more after any straggler could have arrived.
        let keep = added.as_ref().ok().and_then(|r| r.origin.backing_handle());
        spawn_reconcile(fe.clone(), store_id.to_string(), arn, keep);
    }
    added
}

/// Creates the KMS record of a key store key whose backing key the cluster just made.
fn key_store_record(
    entropy: &dyn Entropy,
    mut record: KeyRecord,
    store_id: &str,
    cluster_id: &str,
    handle: u64,
) -> KeyRecord {
    let mut id = [0u8; 16];
    entropy.fill(&mut id);
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
