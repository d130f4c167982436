//! The frontend's shared state and the flows that span the registry, the store, the audit trail
//! and the cluster: what the API handlers call. One `Frontend` serves every HTTP worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use hsmkms_common::clock::Clock;
use hsmkms_common::entropy::Entropy;
use hsmkms_common::keyfile;
use hsmkms_common::secret::KeyMaterial;
use serde_json::{json, Value};

use crate::actors::HsmGateway;
use crate::audit::{Audit, Metrics};
use crate::cloudhsm::CloudHsm;
use crate::cluster::{ClusterDirectory, Provisioner};
use crate::locks::{Locks, Resource};
use crate::service::change::Change;
use crate::service::clock::{EmulatorClock, OFFSET_KEY};
use crate::service::error::KmsError;
use crate::service::key_ref::{Arns, KeyRef};
use crate::service::model::{DeletionTask, KeyRecord, KeyStoreRecord};
use crate::service::registry::{self, Registry};
use crate::store::{decode, Store, Table, Write};

/// Where the frontend keeps its files, inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const STORE_FILE: &str = "kms.redb";
pub const AUDIT_FILE: &str = "audit.jsonl";
pub const EVENTS_FILE: &str = "events.jsonl";

/// Deletions whose effects (backing-key deletes, records) run at once.
pub const DELETION_EFFECTS_AT_ONCE: usize = 16;

/// How the frontend is set up.
#[derive(Debug, Clone)]
pub struct FrontendOptions {
    /// The frontend's own directory (the launcher uses `<data-dir>/kms`).
    pub dir: PathBuf,
    pub region: String,
    pub account_id: String,
    /// Runs the HSMs of the CloudHSM service.
    pub provisioner: Arc<dyn Provisioner>,
    pub base_clock: Arc<dyn Clock>,
    /// Total cap on the audit trail's files (and, apart, on the events').
    pub audit_max_bytes: u64,
    /// Where ids, key material, passwords and data keys come from.
    pub entropy: Arc<dyn Entropy>,
    /// Longest one KMS or CloudHSM request may take before it is answered with a timeout.
    pub request_deadline: std::time::Duration,
    /// The CloudHSM account quotas (clusters, HSMs) per Region.
    pub cloudhsm_quotas: crate::service::cloudhsm::Quotas,
    /// Seeded keys (`--seed-file`), made at start if missing and again by a reset.
    pub seed: Option<Arc<crate::service::seed::Seed>>,
}

/// The operations GetKeyLastUsage tracks (the model's `KeyLastUsageTrackingOperation`).
pub const TRACKED_OPERATIONS: [&str; 12] = [
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// The kmsuser passwords of a seeded store, wrapped, carried across a KMS-only reset.
#[derive(Debug)]
struct CarriedPasswords {
    cluster_id: String,
    wrapped: Vec<u8>,
    wrapped_pending: Option<Vec<u8>>,
}

/// A key's last successful cryptographic operation (GetKeyLastUsage).
#[derive(Debug, Clone)]
pub struct KeyLastUsage {
    pub operation: &'static str,
    pub at_millis: u64,
    pub event_id: uuid::Uuid,
    pub request_id: uuid::Uuid,
}

/// Everything the API handlers share.
#[derive(Debug)]
pub struct Frontend {
    registry: RwLock<Registry>,
    /// Each key's last successful cryptographic operation since this process started (its
    /// `TrackingStartDate`); held in memory, as the audit trail already keeps the history.
    last_usage: Mutex<HashMap<uuid::Uuid, KeyLastUsage>>,
    /// When tracking began: this process's start, on the emulator clock.
    pub tracking_start_millis: u64,
    pub store: Store,
    pub clock: Arc<EmulatorClock>,
    pub audit: Audit,
    pub metrics: Metrics,
    /// The CloudHSM service, which is also the cluster directory KMS uses.
    pub clusters: Arc<CloudHsm>,
    pub hsm: HsmGateway,
    /// The faults in force and the emulated network they act on (the control API).
    pub faults: Arc<crate::faults::Faults>,
    pub arns: Arns,
    /// The home scope, shared by every request of it.
    pub home_scope: Arc<Arns>,
    /// Where ids, key material, passwords and data keys come from (injected, like the clock).
    pub entropy: Arc<dyn Entropy>,
    /// Longest one KMS or CloudHSM request may take before it is answered with a timeout.
    pub request_deadline: std::time::Duration,
    /// Changes still running after their callers gave up (see [`crate::api::deadline`]).
    pub overdue: Arc<crate::api::deadline::Overdue>,
    events: Audit,
    deletions: tokio::sync::Mutex<()>,
    /// One automatic rotation run at a time.
    rotations: tokio::sync::Mutex<()>,
    /// The owner of each custom key store's record (see [`StoreOwner`]); one entry per store
    /// that exists, so at most [`crate::service::registry::MAX_KEY_STORES`].
    owners: Mutex<HashMap<String, Arc<tokio::sync::Mutex<StoreOwner>>>>,
    /// Store names are unique: CreateCustomKeyStore and renames take turns.
    pub store_names: tokio::sync::Mutex<()>,
    /// One change at a time to each key and alias.
    locks: Locks,
    /// Keys being created whose records are not durable yet, counted against the quota.
    creating_keys: std::sync::atomic::AtomicUsize,
    /// Clock advances take turns, so none is lost.
    clock_advances: tokio::sync::Mutex<()>,
    /// Changes hold it shared; the reset holds it alone, so no change straddles a reset.
    reset_gate: tokio::sync::RwLock<()>,
    /// Seeded keys (`--seed-file`).
    seed: Option<Arc<crate::service::seed::Seed>>,
    /// Fault injection: the process dies right after the next key deletion is committed,
    /// before its effects run (the crash the deletion task exists for).
    pub crash_after_deletion_commit: std::sync::atomic::AtomicBool,
}

/// What the one owner of a custom key store's record keeps: whoever holds it may change the
/// record; changes take turns in the order they asked.
#[derive(Debug, Default)]
pub struct StoreOwner {
    /// Bumped by every connect and disconnect: a connect attempt whose generation is no
    /// longer the store's was overtaken and changes nothing.
    pub generation: u64,
    /// Keys being created in the store whose records are not durable yet.
    creating: Arc<std::sync::atomic::AtomicUsize>,
    /// The generation of the connect attempt running in the background, until it has taken
    /// the owner to record its outcome. A CONNECTING store with none lost its outcome to a
    /// failed commit, and [`crate::key_stores::settle`] starts it again.
    pub attempt: Option<u64>,
}

/// A key creation in flight in a store; counted until dropped.
#[derive(Debug)]
pub struct Creating(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Creating {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StoreOwner {
    /// Counts a key creation in the store until the returned guard is dropped.
    pub fn begin_create(&self) -> Creating {
        self.creating
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Creating(self.creating.clone())
    }

    /// Key creations in flight.
    pub fn creating(&self) -> usize {
        self.creating.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// ISO 8601 time of a millisecond timestamp, as CloudTrail writes `eventTime`.
pub fn iso8601(millis: u64) -> String {
    chrono::DateTime::from_timestamp_millis(millis as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Epoch seconds (fractional), as the KMS JSON protocol writes timestamps.
pub fn epoch_seconds(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Removes what a reset empties from the frontend's directory `dir` (its store, the audit
/// trail's and the events' files; the master key stays), for a launcher that finishes, before
/// the frontend opens, a cluster reset a stop interrupted. The next open starts empty.
pub fn remove_state_files(dir: &Path) -> std::io::Result<()> {
    let mut files = vec![dir.join(STORE_FILE)];
    for trail in [AUDIT_FILE, EVENTS_FILE] {
        files.extend(crate::audit::segments(&dir.join(trail)));
    }
    for file in files {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if dir.is_dir() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn master_key(dir: &Path) -> Result<KeyMaterial> {
    let path = dir.join(MASTER_KEY_FILE);
    if !path.exists() {
        keyfile::write_secret(&path, KeyMaterial::generate().expose())
            .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(keyfile::read_key(&path)?)
}

impl Frontend {
    /// Opens the frontend's state in `options.dir`; returns it and the storage thread.
    pub fn open(options: FrontendOptions) -> Result<(Arc<Self>, JoinHandle<()>)> {
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let master = master_key(&options.dir)?;
        let (store, mut loaded, thread) = Store::open(&options.dir.join(STORE_FILE))?;
        let arns = Arns {
            region: options.region.clone(),
            account_id: options.account_id.clone(),
        };
        let relayout = registry::key_rows_to_relayout(&loaded)?;
        let registry = Registry::load(arns.clone(), &master, &mut loaded)?;
        let offset = loaded
            .meta
            .iter()
            .find(|(k, _)| k == OFFSET_KEY)
            .map(|(_, v)| decode::<u64>(v))
            .transpose()?
            .unwrap_or(0);
        let clock = Arc::new(EmulatorClock::new(options.base_clock.clone(), offset));
        let faults = Arc::new(crate::faults::Faults::default());
        let (cloudhsm, adopted) = CloudHsm::open(
            options.provisioner.clone(),
            store.clone(),
            &loaded,
            clock.clone(),
            options.entropy.clone(),
            &options.region,
            options.cloudhsm_quotas,
            faults.clone(),
        )?;
        // Clusters the launcher made before the service knew them; recorded before serving.
        futures::executor::block_on(store.commit(adopted))
            .context("recording the launcher's clusters")?;
        if !relayout.is_empty() {
            futures::executor::block_on(store.commit(relayout))
                .context("moving the keys table to its new layout")?;
        }
        let clusters = Arc::new(cloudhsm);
        let directory: Arc<dyn ClusterDirectory> = clusters.clone();
        let tracking_start_millis = clock.now_millis();
        let frontend = Arc::new(Self {
            registry: RwLock::new(registry),
            last_usage: Mutex::new(HashMap::new()),
            tracking_start_millis,
            store,
            clock,
            audit: Audit::open(&options.dir.join(AUDIT_FILE), options.audit_max_bytes)?,
            metrics: Metrics::default(),
            hsm: HsmGateway::new(directory, faults.clone()),
            faults,
            clusters,
            home_scope: Arc::new(arns.clone()),
            arns,
            entropy: options.entropy.clone(),
            request_deadline: options.request_deadline,
            overdue: Arc::default(),
            events: Audit::open(&options.dir.join(EVENTS_FILE), options.audit_max_bytes)?,
            deletions: tokio::sync::Mutex::new(()),
            rotations: tokio::sync::Mutex::new(()),
            owners: Mutex::new(HashMap::new()),
            store_names: tokio::sync::Mutex::new(()),
            locks: Locks::default(),
            creating_keys: std::sync::atomic::AtomicUsize::new(0),
            clock_advances: tokio::sync::Mutex::new(()),
            reset_gate: tokio::sync::RwLock::new(()),
            seed: options.seed.clone(),
            crash_after_deletion_commit: std::sync::atomic::AtomicBool::new(false),
        });
        Ok((frontend, thread))
    }

    /// Takes the owner of a store's record, waiting for the change before to finish.
    /// CustomKeyStoreNotFoundException if there is no such store.
    pub async fn store_owner(
        &self,
        store_id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<StoreOwner>, KmsError> {
        let owner = self.owner_entry(store_id)?;
        let guard = owner.clone().lock_owned().await;
        self.still_there(store_id, &owner)?;
        Ok(guard)
    }

    /// The owner of a store's record if nobody holds it now (see [`Frontend::store_owner`]).
    pub fn try_store_owner(
        &self,
        store_id: &str,
    ) -> Option<tokio::sync::OwnedMutexGuard<StoreOwner>> {
        let owner = self.owner_entry(store_id).ok()?;
        let guard = owner.clone().try_lock_owned().ok()?;
        self.still_there(store_id, &owner).ok()?;
        Some(guard)
    }

    /// The owner entry of a store that exists (made on first use).
    fn owner_entry(&self, store_id: &str) -> Result<Arc<tokio::sync::Mutex<StoreOwner>>, KmsError> {
        self.registry().store(store_id)?;
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        Ok(owners.entry(store_id.to_string()).or_default().clone())
    }

    /// Checks, once its owner is held, that the store was not deleted meanwhile. If it was, the
    /// deletion forgot the owner and this caller may have put it back in the table: it is taken
    /// out again, so the table holds only stores that exist.
    fn still_there(
        &self,
        store_id: &str,
        owner: &Arc<tokio::sync::Mutex<StoreOwner>>,
    ) -> Result<(), KmsError> {
        let Err(e) = self.registry().store(store_id).map(|_| ()) else {
            return Ok(());
        };
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if owners.get(store_id).is_some_and(|o| Arc::ptr_eq(o, owner)) {
            owners.remove(store_id);
        }
        Err(e)
    }

    /// Forgets a deleted store's owner and its sessions' actor.
    pub fn forget_store(&self, store_id: &str) {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(store_id);
        self.hsm.forget(store_id);
    }

    /// Rebuilds, before the emulator serves, what must be running: HSMs and clusters being
    /// created or deleted finish (so stores connect to the HSMs the cluster really has), custom
    /// key stores that were connected connect again, then backing-key deletions that a stop
    /// interrupted finish.
    pub async fn recover(self: &Arc<Self>) {
        self.clusters.recover().await;
        crate::key_stores::recover(self).await;
        self.finish_interrupted_deletions().await;
    }

    /// Reads the registry. Never held across an await.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        // A panic while holding the lock would be a bug; the data is still consistent (every
        // change is applied whole), so carry on with it.
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the registry. Never held across an await.
    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one change to the registry: takes the locks of `resources`, plans the change with
    /// `plan` (a pure function of the registry), makes it durable, installs it, and answers.
    /// If the commit fails, the registry is exactly as before and the caller gets
    /// KMSInternalException.
    pub async fn change<T>(
        &self,
        resources: Vec<Resource>,
        plan: impl FnOnce(&Registry) -> Result<(Vec<Change>, T), KmsError>,
    ) -> Result<T, KmsError> {
        let _gate = self.reset_gate.read().await;
        self.change_ungated(resources, plan).await
    }

    /// [`Frontend::change`] for whoever already holds the reset gate, or runs before serving.
    async fn change_ungated<T>(
        &self,
        resources: Vec<Resource>,
        plan: impl FnOnce(&Registry) -> Result<(Vec<Change>, T), KmsError>,
    ) -> Result<T, KmsError> {
        let _held = self.locks.acquire(resources).await;
        let (changes, answer, writes) = {
            let registry = self.registry();
            let (changes, answer) = plan(&registry)?;
            let writes = registry.writes(&changes);
            (changes, answer, writes)
        };
        self.commit(writes).await?;
        self.registry_mut().install(changes).map_err(|e| {
            KmsError::KmsInternal(format!("The change could not be installed: {e}"))
        })?;
        Ok(answer)
    }

    /// The lock a change to the key `key_id` names takes, if it names one well-formed key (a
    /// malformed id takes none: the plan answers its error).
    pub fn key_resource(&self, key_id: &str) -> Option<Resource> {
        let scope = crate::service::key_ref::request_scope();
        match scope.as_deref().unwrap_or(&self.arns).parse(key_id, false) {
            // A multi-Region key's primary and replicas take one lock, their family's.
            Ok(KeyRef::Key(id) | KeyRef::MultiRegion(id)) => Some(Resource::Key(id)),
            _ => None,
        }
    }

    /// Adds a new key, counted against the quota from the plan until it is installed, so
    /// concurrent creations cannot pass the quota together.
    pub async fn add_key(&self, record: KeyRecord, multi_region: bool) -> Result<(), KmsError> {
        use std::sync::atomic::Ordering;
        let in_flight = self.creating_keys.fetch_add(1, Ordering::SeqCst);
        let result = self
            .change(vec![Resource::Key(record.key_id)], |reg| {
                if reg.key_count() + in_flight >= crate::service::registry::MAX_KEYS {
                    return Err(KmsError::LimitExceeded(format!(
                        "The request was rejected because the number of KMS keys in this account and Region exceeds {}.",
                        crate::service::registry::MAX_KEYS
                    )));
                }
                Ok((reg.insert_key(record, multi_region)?, ()))
            })
            .await;
        self.creating_keys.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Puts KMS's state back to a fresh start: no keys, aliases, grants, custom key stores or
    /// pending deletions, the clock's offset zero, an empty audit trail, metrics at zero. No
    /// change runs meanwhile (they wait for the reset, or the reset for them), connected stores'
    /// sessions close first, and the state is gone from the store in one commit before it is
    /// from memory: a request sees the old state or the new, and a kill -9 at any point leaves
    /// one of them.
    ///
    /// Without `cluster`, the cluster is left as it is (the backing keys of deleted store keys
    /// become orphaned material, as after any deletion with a disconnected store). With it, the
    /// CloudHSM side goes back too (see [`CloudHsm::prepare_reset`]): its records are cleared
    /// in the same commit as KMS's, after the provisioner has made the launcher's cluster anew
    /// and recorded the decision (a kill -9 from there on is finished by the next start), and
    /// every fault is cleared.
    pub async fn reset(self: &Arc<Self>, cluster: bool) -> Result<(), KmsError> {
        let _gate = self.reset_gate.write().await;
        let _deletions = self.deletions.lock().await;
        let _rotations = self.rotations.lock().await;
        let _clock = self.clock_advances.lock().await;
        let _names = self.store_names.lock().await;
        // The new cluster is made before anything of the old state is touched: if that fails,
        // the reset is refused and everything serves on.
        let mut prepared = if cluster {
            // The store's own injected faults first, so they cannot fail the reset's commit.
            self.store.stall_commits(std::time::Duration::ZERO);
            self.store.fail_next_commits(0, 0);
            Some(self.clusters.prepare_reset().await.map_err(|e| {
                KmsError::KmsInternal(format!("The clusters could not be reset: {e}"))
            })?)
        } else {
            None
        };
        // Every store's owner, so no connection is in flight; then their sessions close.
        let store_ids = self.registry().all_store_ids();
        let mut owners = Vec::with_capacity(store_ids.len());
        for id in &store_ids {
            if let Ok(owner) = self.store_owner(id).await {
                owners.push((id.clone(), owner));
            }
        }
        for (id, owner) in owners.iter_mut() {
            owner.generation += 1;
            self.hsm.close(id, owner.generation).await;
        }
        // Seeded stores are made again below; without a cluster reset, with the kmsuser
        // passwords KMS last set (it rotates them on every connect), so they connect again.
        let carried: HashMap<String, CarriedPasswords> = if cluster {
            HashMap::new()
        } else {
            let reg = self.registry();
            self.seed
                .iter()
                .flat_map(|seed| seed.stores.iter())
                .filter_map(|s| reg.store(&s.id).ok())
                .map(|r| {
                    let carried = CarriedPasswords {
                        cluster_id: r.cluster_id.clone(),
                        wrapped: r.wrapped_password.clone(),
                        wrapped_pending: r.wrapped_pending_password.clone(),
                    };
                    (r.id.clone(), carried)
                })
                .collect()
        };
        let mut writes: Vec<Write> = [
            Table::Keys,
            Table::Aliases,
            Table::KeyStores,
            Table::Deletions,
            Table::Grants,
            Table::Rotations,
            Table::Places,
            Table::Imports,
        ]
        .into_iter()
        .map(|table| Write::Clear { table })
        .collect();
        writes.push(self.clock.reset_write());
        if let Some(prepared) = prepared.as_mut() {
            writes.append(&mut prepared.writes);
        }
        if let Err(e) = self.commit(writes).await {
            if let Some(prepared) = prepared {
                self.clusters.abandon_reset(prepared).await;
            }
            return Err(e);
        }
        self.registry_mut().clear();
        self.clock.reset_offset();
        drop(owners);
        for id in &store_ids {
            self.forget_store(id);
        }
        self.last_usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.audit.clear();
        self.events.clear();
        self.metrics.reset();
        if let Some(prepared) = prepared {
            // Stopped and stalled HSMs go with the old cluster; nothing is left to revert.
            self.faults.clear();
            self.crash_after_deletion_commit
                .store(false, std::sync::atomic::Ordering::SeqCst);
            self.clusters.finish_reset(prepared).await.map_err(|e| {
                KmsError::KmsInternal(format!(
                    "KMS is reset, but the clusters could not be put in place ({e}); the next start finishes the reset"
                ))
            })?;
        }
        let seeded = self.apply_seed_ungated(&carried).await?;
        tracing::info!(stores = store_ids.len(), seeded, cluster, "state reset");
        Ok(())
    }

    /// Makes the seeded custom key stores (connecting those the file says) and then the seeded
    /// keys that do not exist (by id), keys with their aliases, rotation and state; run before
    /// the frontend serves, and by a reset. Stores and keys that exist are left as they are, so
    /// applying the seed again changes nothing. Returns how many stores and keys it made.
    pub async fn apply_seed(self: &Arc<Self>) -> Result<usize, KmsError> {
        let _gate = self.reset_gate.write().await;
        self.apply_seed_ungated(&HashMap::new()).await
    }

    async fn apply_seed_ungated(
        self: &Arc<Self>,
        carried: &HashMap<String, CarriedPasswords>,
    ) -> Result<usize, KmsError> {
        let Some(seed) = self.seed.clone() else {
            return Ok(0);
        };
        let mut made = 0;
        for store in &seed.stores {
            if self.apply_seed_store(store, carried.get(&store.id)).await? {
                made += 1;
            }
        }
        for key in &seed.keys {
            let scope = Arc::new(Arns {
                region: key
                    .region
                    .clone()
                    .unwrap_or_else(|| self.arns.region.clone()),
                account_id: key
                    .account
                    .clone()
                    .unwrap_or_else(|| self.arns.account_id.clone()),
            });
            if crate::service::key_ref::in_request_scope(scope, self.apply_seed_key(key)).await? {
                made += 1;
            }
        }
        Ok(made)
    }

    /// One seeded custom key store; false if it exists already. Made DISCONNECTED with the
    /// checks of CreateCustomKeyStore (the cluster ACTIVE with HSMs in two zones, backing no
    /// other store, the trust anchor its own), then connected, to the end, if the file says so.
    async fn apply_seed_store(
        self: &Arc<Self>,
        store: &crate::service::seed::SeedStore,
        carried: Option<&CarriedPasswords>,
    ) -> Result<bool, KmsError> {
        use crate::api::kms::checks::{check_cluster, same_certificate};
        use crate::service::connection_state::ConnectionState;
        if self.registry().store(&store.id).is_ok() {
            return Ok(false);
        }
        let at = |member: &str, why: String| {
            KmsError::KmsInternal(format!(
                "the seed file's customKeyStores ({}): {member}: {why}",
                store.id
            ))
        };
        let cluster_id = match &store.cluster_id {
            Some(id) => id.clone(),
            None => self
                .clusters
                .launcher_cluster_id()
                .ok_or_else(|| at("clusterId", "the launcher has no cluster".into()))?,
        };
        if self.registry().store_by_name(&store.name).is_some() {
            return Err(at("name", format!("a store named '{}' exists", store.name)));
        }
        self.registry()
            .check_store_quota()
            .map_err(|e| at("id", e.message()))?;
        let cluster =
            check_cluster(self, &cluster_id, None).map_err(|e| at("clusterId", e.message()))?;
        let trust_anchor = store
            .trust_anchor
            .clone()
            .unwrap_or_else(|| cluster.trust_anchor.clone());
        if !same_certificate(&cluster.trust_anchor, &trust_anchor) {
            return Err(at(
                "trustAnchor",
                format!("not the trust anchor of cluster {cluster_id}"),
            ));
        }
        let password = store
            .kmsuser_password
            .as_ref()
            .ok_or_else(|| at("kmsuserPassword", "none given".into()))?;
        let (wrapped_password, wrapped_pending_password) =
            match carried.filter(|c| c.cluster_id == cluster_id) {
                Some(c) => (c.wrapped.clone(), c.wrapped_pending.clone()),
                None => (self.registry().wrap_password(&store.id, password), None),
            };
        let record = KeyStoreRecord {
            id: store.id.clone(),
            name: store.name.clone(),
            cluster_id,
            trust_anchor,
            wrapped_password,
            wrapped_pending_password,
            state: ConnectionState::Disconnected,
            created_at_millis: self.now(),
        };
        crate::key_stores::persist(self, record).await?;
        if store.connected {
            let state = crate::key_stores::connect_and_wait(self, &store.id).await?;
            if state == ConnectionState::Connected {
                tracing::info!(store_id = %store.id, "seeded custom key store CONNECTED");
            } else {
                tracing::warn!(store_id = %store.id, state = ?state, "a seeded custom key store did not connect");
            }
        }
        Ok(true)
    }

    /// One seeded key, in its scope; false if it exists already.
    async fn apply_seed_key(&self, key: &crate::service::seed::SeedKey) -> Result<bool, KmsError> {
        use crate::service::key_spec::KeySpec;
        use crate::service::registry::NewKeyMaterial;
        if self.registry().by_id(&key.id).is_some() {
            return Ok(false);
        }
        let material = if key.spec == KeySpec::SymmetricDefault {
            NewKeyMaterial::symmetric_given(&key.material)?
        } else {
            NewKeyMaterial::Typed {
                spec: key.spec,
                usage: key.usage,
                material: hsmkms_common::secret::SecretBytes::new(key.material.expose().to_vec()),
            }
        };
        let now = self.now();
        let (_, record, _) = self.registry().new_key_with_id(
            Some(key.id),
            material,
            key.description.clone(),
            key.policy.clone(),
            key.tags.clone(),
            now,
            self.entropy.as_ref(),
        )?;
        self.change_ungated(vec![Resource::Key(key.id)], |reg| {
            Ok((reg.insert_key(record, false)?, ()))
        })
        .await?;
        let id = key.id.to_string();
        for alias in &key.aliases {
            let result = self
                .change_ungated(vec![Resource::Alias(alias.clone())], |reg| {
                    Ok((reg.create_alias(alias, &id, now)?, ()))
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(key_id = %id, %alias, error = %e, "a seeded alias was not made");
            }
        }
        if let Some(rotation) = key.rotation.filter(|r| r.enabled) {
            self.change_ungated(vec![Resource::Key(key.id)], |reg| {
                Ok((reg.enable_rotation(&id, rotation.period_days, now)?, ()))
            })
            .await?;
        }
        if !key.enabled {
            self.change_ungated(vec![Resource::Key(key.id)], |reg| {
                Ok((reg.set_enabled(&id, false)?, ()))
            })
            .await?;
        }
        Ok(true)
    }

    /// Moves the emulator's clock forward by `by_millis`: the new offset is durable before
    /// anyone reads the clock at it.
    pub async fn advance_clock(&self, by_millis: u64) -> Result<(), KmsError> {
        let _one_at_a_time = self.clock_advances.lock().await;
        let (offset, write) = self.clock.advanced(by_millis);
        self.commit(vec![write]).await?;
        self.clock.set_offset(offset);
        Ok(())
    }

    /// Makes writes durable; an acknowledged change must have passed here.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), KmsError> {
        self.store
            .commit(writes)
            .await
            .map_err(KmsError::not_stored)
    }

    pub fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Service events (`KMS CMK Deletion`), newest last.
    pub fn events(&self, limit: usize) -> Vec<Value> {
        self.events.read(None, None, limit)
    }

    /// Deletes every key whose waiting period has ended: the KMS key and its aliases first
    /// (durably, with a [`DeletionTask`] in the same commit), then the task's effects: a
    /// best-effort delete of the backing key on every HSM of its cluster, the CloudTrail
    /// `DeleteKey` record and the `KMS CMK Deletion` event.
    ///
    /// The KMS side is committed key by key; the effects then run side by side (at most
    /// [`DELETION_EFFECTS_AT_ONCE`]), so an HSM that does not answer costs one call's deadline
    /// for the whole run rather than one per key.
    pub async fn run_due_deletions(&self) -> usize {
        // One run at a time: the timer and a clock advance may both ask.
        let _running = self.deletions.lock().await;
        let due = self.registry().due_for_deletion(self.now());
        let mut tasks = Vec::new();
        for id in due {
            let _held = self.locks.acquire(vec![Resource::Key(id)]).await;
            // Cancelled or rescheduled while this run waited for the key's lock: not planned.
            let Some(planned) = self.registry().plan_delete_key(&id, self.now()) else {
                continue;
            };
            // Persist, then install: a failed commit leaves the key as it was, and the next
            // run retries it.
            if let Err(e) = self.commit(planned.writes).await {
                tracing::error!(key_id = %id, error = %e, "cannot record a key deletion; retrying later");
                continue;
            }
            self.registry_mut().remove_key(&id, &planned.aliases);
            self.last_usage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            drop(_held);
            if self
                .crash_after_deletion_commit
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::error!(key_id = %id, "fault injection: the process dies after the deletion's commit");
                std::process::abort();
            }
            self.metrics.count_deletion();
            tracing::info!(key_id = %id, "KMS key deleted at the end of its waiting period");
            tasks.push(planned.task);
        }
        let done = tasks.len();
        self.finish_deletions(tasks).await;
        done
    }

    /// Notes a key's successful cryptographic operation (GetKeyLastUsage).
    pub fn note_key_use(
        &self,
        id: uuid::Uuid,
        operation: &'static str,
        at_millis: u64,
        event_id: uuid::Uuid,
        request_id: &str,
    ) {
        // Ids kept as 16 bytes, not strings: no allocation on the hot path. Request ids are
        // the UUIDs this frontend makes.
        let Ok(request_id) = uuid::Uuid::parse_str(request_id) else {
            return;
        };
        let usage = KeyLastUsage {
            operation,
            at_millis,
            event_id,
            request_id,
        };
        self.last_usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, usage);
    }

    /// A key's last successful cryptographic operation since tracking began, if any.
    pub fn key_last_usage(&self, id: &uuid::Uuid) -> Option<KeyLastUsage> {
        self.last_usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Rotates every key whose automatic rotation is due (see
    /// [`Registry::plan_automatic_rotation`]), key by key: persisted, then installed. Returns
    /// how many rotations it made.
    pub async fn run_due_rotations(&self) -> usize {
        let _running = self.rotations.lock().await;
        let mut done = 0;
        // A clock moved past several periods rotates a key once per period; bounded, so one
        // call ends whatever the clock did.
        for _ in 0..64 {
            let due = self.registry().due_for_rotation(self.now());
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for id in due {
                let _held = self.locks.acquire(vec![Resource::Key(id)]).await;
                let planned =
                    self.registry()
                        .plan_automatic_rotation(&id, self.now(), self.entropy.as_ref());
                let Some(changes) = planned else { continue };
                let writes = self.registry().writes(&changes);
                if let Err(e) = self.commit(writes).await {
                    tracing::error!(key_id = %id, error = %e, "cannot record a key rotation; retrying later");
                    continue;
                }
                if let Err(e) = self.registry_mut().install(changes) {
                    tracing::error!(key_id = %id, error = %e, "cannot install a key rotation");
                    continue;
                }
                tracing::info!(key_id = %id, "KMS key rotated automatically");
                done += 1;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        done
    }

    /// Deletes imported key material whose ValidTo passed on the emulator clock (the keys go
    /// to PendingImport, as KMS does); returns how many.
    pub async fn run_due_expirations(&self) -> usize {
        let mut done = 0;
        // Collected first: the registry's read guard must be gone before a change installs.
        let due = self.registry().due_expirations(self.now());
        for id in due {
            let result = self
                .change(vec![Resource::Key(id)], |reg| {
                    // Reimported meanwhile with a later ValidTo, or deleted: nothing to do.
                    // One key's check: a scan of every key for each due one was O(n·m).
                    match reg.plan_expire(&id, self.now()) {
                        Some(changes) => Ok((changes, true)),
                        None => Ok((vec![], false)),
                    }
                })
                .await;
            match result {
                Ok(true) => {
                    tracing::info!(key_id = %id, "imported key material expired and was deleted");
                    done += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(key_id = %id, error = %e, "cannot delete expired key material; retrying later")
                }
            }
        }
        done
    }

    /// Runs the effects of deletions side by side, a bounded number at a time.
    async fn finish_deletions(&self, tasks: Vec<DeletionTask>) {
        use futures::StreamExt;
        futures::stream::iter(tasks)
            .for_each_concurrent(DELETION_EFFECTS_AT_ONCE, |task| self.finish_deletion(task))
            .await;
    }

    /// Deletion tasks a stop interrupted, from the store.
    fn pending_deletions(&self) -> Vec<DeletionTask> {
        match self.store.list(Table::Deletions) {
            Ok(rows) => rows
                .iter()
                .filter_map(|(key, value)| match decode_task(value) {
                    Ok(task) => Some(task),
                    Err(e) => {
                        tracing::error!(%key, error = %e, "an unreadable deletion task is skipped");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the deletion tasks");
                vec![]
            }
        }
    }

    /// Finishes the deletions a stop interrupted between the KMS commit and their effects.
    pub async fn finish_interrupted_deletions(&self) {
        let _running = self.deletions.lock().await;
        let tasks = self.pending_deletions();
        for task in &tasks {
            tracing::info!(key_id = %task.key_id, "finishing a key deletion a stop interrupted");
        }
        self.finish_deletions(tasks).await;
    }

    /// The effects of one deletion, then the task's removal from the store. The record and
    /// the event name the key as it was: its own ARN, Region and account (the key's place is
    /// gone from the registry with it, so they come from the task).
    async fn finish_deletion(&self, task: DeletionTask) {
        let id = task.key_id;
        let place = task.place.as_ref();
        let arn = registry::key_arn_at(&self.arns, &id, place);
        let (region, account_id) = place.map_or(
            (self.arns.region.as_str(), self.arns.account_id.as_str()),
            |p| (p.region.as_str(), p.account_id.as_str()),
        );
        let mut additional = json!({});
        if let Some(b) = &task.backing {
            let statuses = self
                .hsm
                .delete_backing_key(
                    &b.custom_key_store_id,
                    &b.cluster_id,
                    b.backing_key.key_handle,
                )
                .await;
            let backing = json!([{"keyHandle": b.backing_key.key_handle.to_string(), "backingKeyId": b.backing_key.backing_key_id}]);
            let status: Vec<Value> = statuses
                .iter()
                .map(|(hsm_id, ok)| {
                    json!({
                        "keyHandle": b.backing_key.key_handle.to_string(),
                        "backingKeyId": b.backing_key.backing_key_id,
                        "hsmId": hsm_id,
                        "deletionStatus": if *ok { "SUCCESS" } else { "FAILURE" },
                    })
                })
                .collect();
            additional = json!({
                "customKeyStoreId": b.custom_key_store_id,
                "clusterId": b.cluster_id,
                "backingKeys": backing.to_string(),
                "backingKeysDeletionStatus": Value::Array(status).to_string(),
            });
        }
        let now = iso8601(task.deleted_at_millis);
        self.audit.record(
            &self.metrics,
            json!({
                "eventVersion": "1.08",
                "eventSource": "kms.amazonaws.com",
                "eventType": "AwsServiceEvent",
                "eventName": "DeleteKey",
                "eventTime": now,
                "userIdentity": {"accountId": account_id, "invokedBy": "AWS Internal"},
                "requestParameters": null,
                "responseElements": {"keyId": arn},
                "resources": [{"ARN": arn, "type": "AWS::KMS::Key"}],
                "additionalEventData": additional,
                "deletedAliases": task.deleted_aliases,
            }),
        );
        self.events.record(
            &self.metrics,
            json!({
                "version": "0",
                "id": uuid::Uuid::new_v4().to_string(),
                "detail-type": "KMS CMK Deletion",
                "source": "aws.kms",
                "account": account_id,
                "time": now,
                "region": region,
                "resources": [arn],
                "detail": {"key-id": registry::key_id_text_at(&id, place)},
            }),
        );
        if let Err(e) = self
            .commit(vec![Write::delete(Table::Deletions, id.to_string())])
            .await
        {
            // The next start runs it again: a second delete of the backing key finds nothing.
            tracing::warn!(key_id = %id, error = %e, "cannot remove a finished deletion task");
        }
    }
}

/// A deletion task as stores wrote it before it kept the key's place.
#[derive(serde::Deserialize)]
struct DeletionTaskV1 {
    key_id: uuid::Uuid,
    backing: Option<crate::service::model::DeletedBacking>,
    deleted_aliases: Vec<String>,
    deleted_at_millis: u64,
}

/// Reads a deletion task, in its current layout or the one before `place`. postcard writes no
/// field names, so the current layout is tried first: an older task ends before `place` and
/// fails it, while a current one would read as the older layout with its place dropped.
fn decode_task(bytes: &[u8]) -> Result<DeletionTask, crate::store::StoreError> {
    decode::<DeletionTask>(bytes).or_else(|e| match decode::<DeletionTaskV1>(bytes) {
        Ok(old) => Ok(DeletionTask {
            key_id: old.key_id,
            backing: old.backing,
            deleted_aliases: old.deleted_aliases,
            deleted_at_millis: old.deleted_at_millis,
            // Keys of other scopes were named by the home scope then, too.
            place: None,
        }),
        Err(_) => Err(e),
    })
}

#[cfg(test)]
mod deletion_task_tests {
    use super::*;
    use crate::service::model::KeyPlace;

    #[test]
    fn a_task_written_before_it_kept_the_place_still_reads() {
        #[derive(serde::Serialize)]
        struct Old {
            key_id: uuid::Uuid,
            backing: Option<crate::service::model::DeletedBacking>,
            deleted_aliases: Vec<String>,
            deleted_at_millis: u64,
        }
        let id = uuid::Uuid::new_v4();
        let old = postcard::to_stdvec(&Old {
            key_id: id,
            backing: None,
            deleted_aliases: vec!["alias/a".into()],
            deleted_at_millis: 7,
        })
        .unwrap();
        let task = decode_task(&old).unwrap();
        assert_eq!(task.key_id, id);
        assert_eq!(task.deleted_aliases, vec!["alias/a".to_string()]);
        assert_eq!(task.deleted_at_millis, 7);
        assert_eq!(task.place, None);

        // A current one keeps its place.
        let place = KeyPlace {
            region: "eu-west-1".into(),
            account_id: "222233334444".into(),
            multi_region: None,
            primary: false,
        };
        let new = DeletionTask {
            place: Some(place.clone()),
            ..task
        };
        let read = decode_task(&postcard::to_stdvec(&new).unwrap()).unwrap();
        assert_eq!(read.place, Some(place));
        assert!(decode_task(b"").is_err());
    }
}
