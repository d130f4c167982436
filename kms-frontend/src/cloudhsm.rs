//! The CloudHSM service: clusters, their HSMs and their backups, over the HSMs the launcher
//! provisions. It keeps its records in the frontend's store, takes backups on the emulator's
//! clock (daily, on activation, when an HSM is added or removed), applies the retention policy,
//! and is the [`ClusterDirectory`] KMS sees.
//!
//! What each event means for a record (the cluster's state machine, the quotas, what
//! finishing a CreateHsm needs) is decided in [`crate::service::cloudhsm`], as pure functions
//! on the records; this runtime takes the turn, reads the records, asks those functions,
//! commits, installs and then does the I/O they call for (the provisioner, backups).
//!
//! Every call into the provisioner blocks (it starts nodes, reads HSMs), so it runs on a
//! blocking thread; the service's own lock is never held across one. `stored` reads the
//! records a data directory holds, in older layouts too.

mod gate;
mod stored;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hsmkms_common::clock::Clock;
use hsmkms_common::ids;
use sha2::{Digest, Sha256};

use crate::cluster::ProvisionedCluster;
use crate::cluster::{ClusterDirectory, ClusterView, HsmView, KeyObject, Provisioner};
use crate::faults::Faults;
use crate::service::cloudhsm::cluster::busy;
use crate::service::cloudhsm::error::CloudHsmError;
use crate::service::cloudhsm::hsm::{eni_refused, HsmChange, HsmState};
use crate::service::cloudhsm::quota::admit_backup;
use crate::service::cloudhsm::{
    backup_prunable, cluster_prunable, daily_backup_due, deletion_expired, retention_purges,
    BackupOp, BackupRecord, BackupState, ClusterRecord, ClusterState, Quotas, Unfinished, Use,
    DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS,
};
use crate::store::{Loaded, Store, Table, Write};
pub use gate::{Closed, Pass};
use hsmkms_common::entropy::{Entropy, EntropyRng};

/// Key of a restored cluster's starting image in the image table, until it has backups.
fn seed_key(cluster_id: &str) -> String {
    format!("seed:{cluster_id}")
}

/// Stable synthetic ids (VPC, subnets, security group) derived from a seed, so the same
/// cluster always reports the same network.
pub fn synthetic(kind: &str, seed: &str, len: usize) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}-{}", &hex[..len])
}

/// The Availability Zones of a Region the emulator offers: `a` to `f`.
pub fn zones(region: &str) -> Vec<String> {
    "abcdef".chars().map(|c| format!("{region}{c}")).collect()
}

/// How often settling an HSM change tries to record its outcome before it leaves the retry to
/// the periodic work, and how long that waits after a failed attempt.
const SETTLE_ATTEMPTS: u32 = 5;
const SETTLE_BACKOFF: Duration = Duration::from_millis(200);
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The wait after failed attempt `attempt` (from 0), doubling from [`SETTLE_BACKOFF`]; none
/// after the last, which leaves the retry to the periodic settling at once.
fn settle_backoff(attempt: u32) -> Option<Duration> {
    (attempt + 1 < SETTLE_ATTEMPTS).then(|| SETTLE_BACKOFF * 2u32.pow(attempt))
}

#[derive(Debug, Default)]
struct State {
    clusters: BTreeMap<String, ClusterRecord>,
    backups: BTreeMap<String, BackupRecord>,
    /// Ids of the HSMs and clusters whose create or delete a task of this process is carrying
    /// out now (at most one per HSM change and cluster being created or deleted): the periodic
    /// settling leaves those alone and finishes the others (after a stop, or a failed attempt).
    working: BTreeSet<String>,
    /// When the periodic settling may try a change again after an attempt that failed.
    retry_at: BTreeMap<String, tokio::time::Instant>,
    /// Clusters an HSM was just added to, with how many of those additions' backups are still
    /// to be taken: the daily backup gives way to them ([`daily_backup_due`]).
    hsm_backups_owed: BTreeMap<String, u32>,
}

/// The backup after adding an HSM to a cluster, still to be taken (counted in
/// `State::hsm_backups_owed`); dropping it says it is over (taken, failed, or not needed).
struct OwedBackup {
    service: Arc<CloudHsm>,
    cluster_id: String,
}

impl Drop for OwedBackup {
    fn drop(&mut self) {
        let mut state = self.service.state();
        if let Some(n) = state.hsm_backups_owed.get_mut(&self.cluster_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.hsm_backups_owed.remove(&self.cluster_id);
            }
        }
    }
}

/// A reset of the CloudHSM side between its two steps (see [`CloudHsm::prepare_reset`]): the
/// gate stays closed while it exists.
#[derive(Debug)]
pub struct PreparedReset {
    _closed: Closed,
    record: ClusterRecord,
    /// What puts the records in the new state, to commit with the caller's own writes.
    pub writes: Vec<Write>,
}

/// One HSM as DescribeClusters shows it.
#[derive(Debug, Clone)]
pub struct HsmInfo {
    pub view: HsmView,
    pub subnet_id: String,
}

/// The CloudHSM service.
#[derive(Debug)]
pub struct CloudHsm {
    provisioner: Arc<dyn Provisioner>,
    store: Store,
    clock: Arc<dyn Clock>,
    /// Where cluster, HSM and backup ids come from (injected, like the clock).
    entropy: Arc<dyn Entropy>,
    pub region: String,
    state: Mutex<State>,
    /// One run of the periodic work at a time.
    jobs: tokio::sync::Mutex<()>,
    /// Changes to cluster and backup records take turns: each reads the records as the
    /// previous change left them, persists, installs, and only then lets the next one read. So
    /// a check that spans records (a quota, one HSM per UNINITIALIZED cluster, an HSM being
    /// deleted, a cluster without HSMs) and the change it allows are one step.
    records: tokio::sync::Mutex<()>,
    quotas: Quotas,
    /// The emulated network of the clusters' VPCs (and its faults): a new HSM's network
    /// interface needs its zone's subnet, with a free address.
    network: Arc<Faults>,
    /// Fault injection: the process dies once the next new HSM serves, before the service
    /// records it ACTIVE (the crash the start-up recovery of HSM changes exists for).
    pub crash_during_hsm_create: AtomicBool,
    /// Held by every call, periodic run and task they leave running; a reset closes it (see
    /// [`gate`]).
    gate: Arc<gate::Gate>,
}

fn not_found(what: &str, id: &str) -> CloudHsmError {
    CloudHsmError::ResourceNotFound(format!("{what} {id} not found."))
}

fn store_error(e: impl std::fmt::Display) -> CloudHsmError {
    CloudHsmError::InternalFailure(format!("The change could not be stored: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the provisioner failed: {e}"))?
}

impl CloudHsm {
    /// Loads the service's records. The launcher's first cluster, if the records lack it, is
    /// adopted as ACTIVE; any other cluster the provisioner has without a record (a
    /// CreateCluster that never finished) is set aside, never served. `network` is the
    /// emulated network KMS's connects meet too.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        provisioner: Arc<dyn Provisioner>,
        store: Store,
        loaded: &Loaded,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        region: &str,
        quotas: Quotas,
        network: Arc<Faults>,
    ) -> anyhow::Result<(Self, Vec<Write>)> {
        let mut state = State::default();
        for (id, bytes) in &loaded.clusters {
            state
                .clusters
                .insert(id.clone(), stored::decode_cluster(bytes)?);
        }
        for (id, bytes) in &loaded.backups {
            state
                .backups
                .insert(id.clone(), stored::decode_backup(bytes)?);
        }
        let mut writes = Vec::new();
        for provisioned in provisioner.clusters() {
            if state.clusters.contains_key(&provisioned.cluster_id) {
                continue;
            }
            let id = provisioned.cluster_id.clone();
            if !provisioned.launcher_made {
                tracing::warn!(cluster_id = %id, "a cluster without a record (its CreateCluster never finished) is set aside");
                provisioner
                    .discard_cluster(&id)
                    .map_err(|e| anyhow::anyhow!("setting aside cluster {id}: {e}"))?;
                continue;
            }
            let record = adopted(&provisioned, region);
            writes.push(Write::put(Table::Clusters, id.clone(), &record));
            state.clusters.insert(id, record);
        }
        Ok((
            Self {
                provisioner,
                store,
                clock,
                entropy,
                region: region.to_string(),
                state: Mutex::new(state),
                jobs: tokio::sync::Mutex::new(()),
                records: tokio::sync::Mutex::new(()),
                quotas,
                network,
                crash_during_hsm_create: AtomicBool::new(false),
                gate: Arc::default(),
            },
            writes,
        ))
    }

    /// Rebuilds, before the emulator serves, what the records say is under way: HSMs being
    /// created finish (or, if they cannot, are removed), HSMs and clusters being deleted
    /// finish, and clusters whose creation was never acknowledged are removed.
    pub async fn recover(self: &Arc<Self>) {
        let pass = self.enter().await;
        self.settle_changes(&pass, true).await;
        self.first_backups().await;
    }

    /// Takes, before the emulator serves, the first backup of every ACTIVE cluster that has
    /// never had one (the launcher's cluster on a first start: its activation's backup). The
    /// clock's first tick would otherwise take it a moment after the start, racing whatever a
    /// client does first (a DeleteHsm's own backup, say); taken here, it is there before any
    /// call, and the next one is a day away.
    async fn first_backups(&self) {
        let now = self.now();
        let never: Vec<String> = {
            let state = self.state();
            state
                .clusters
                .values()
                .filter(|c| {
                    !state
                        .backups
                        .values()
                        .any(|b| b.cluster_id.as_deref() == Some(c.cluster_id.as_str()))
                })
                .filter(|c| Self::daily_due(&state, &c.cluster_id, now))
                .map(|c| c.cluster_id.clone())
                .collect()
        };
        for cluster_id in never.into_iter().filter(|c| self.has_active_hsm(c)) {
            if let Err(e) = self.take_daily_backup(&cluster_id).await {
                tracing::warn!(%cluster_id, error = %e, "the cluster's first backup failed; the clock takes it later");
            }
        }
    }

    /// The launcher's own cluster (made on its first start, or anew by a reset).
    pub fn launcher_cluster_id(&self) -> Option<String> {
        self.provisioner
            .clusters()
            .into_iter()
            .find(|c| c.launcher_made)
            .map(|c| c.cluster_id)
    }

    /// A pass to act on the service's state: every CloudHSMv2 call and periodic run holds one
    /// (see [`gate`]); it waits while a reset runs.
    pub async fn enter(&self) -> Pass {
        self.gate.enter().await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is applied whole under the lock; a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), CloudHsmError> {
        self.store.commit(writes).await.map_err(store_error)
    }

    /// Records a cluster durably (with `more` writes in the same commit), then in memory.
    async fn put_cluster(
        &self,
        record: &ClusterRecord,
        more: Vec<Write>,
    ) -> Result<(), CloudHsmError> {
        let mut writes = vec![Write::put(
            Table::Clusters,
            record.cluster_id.clone(),
            record,
        )];
        writes.extend(more);
        self.commit(writes).await?;
        self.state()
            .clusters
            .insert(record.cluster_id.clone(), record.clone());
        Ok(())
    }

    /// One sealed image from the store (a backup's, or a restored cluster's seed).
    async fn read_image(&self, key: String) -> Result<Option<Vec<u8>>, CloudHsmError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.get(Table::BackupImages, &key))
            .await
            .map_err(store_error)?
            .map_err(store_error)
    }

    // ---- reading ----------------------------------------------------------------------

    /// A cluster's record and HSMs, deleted clusters included.
    pub fn describe(&self, cluster_id: &str) -> Option<(ClusterRecord, Vec<HsmInfo>)> {
        let record = self.state().clusters.get(cluster_id).cloned()?;
        let hsms = self.hsms_of(&record);
        Some((record, hsms))
    }

    /// Every cluster with its HSMs, deleted ones included.
    pub fn describe_all(&self) -> Vec<(ClusterRecord, Vec<HsmInfo>)> {
        let records: Vec<ClusterRecord> = self.state().clusters.values().cloned().collect();
        records
            .into_iter()
            .map(|r| {
                let hsms = self.hsms_of(&r);
                (r, hsms)
            })
            .collect()
    }

    fn hsms_of(&self, record: &ClusterRecord) -> Vec<HsmInfo> {
        let provisioned = self
            .provisioner
            .clusters()
            .into_iter()
            .find(|c| c.cluster_id == record.cluster_id)
            .map(|c| c.hsms)
            .unwrap_or_default();
        let changes = &record.hsm_changes;
        let subnet = |az: &str| record.subnet_mapping.get(az).cloned().unwrap_or_default();
        let mut hsms: Vec<HsmInfo> = provisioned
            .into_iter()
            .map(|h| {
                let state =
                    HsmState::observed(changes.get(&h.hsm_id).map(HsmChange::state), h.running);
                HsmInfo {
                    subnet_id: subnet(&h.availability_zone),
                    view: HsmView {
                        hsm_id: h.hsm_id,
                        availability_zone: h.availability_zone,
                        address: h.address,
                        state,
                    },
                }
            })
            .collect();
        for (hsm_id, p) in changes {
            if !hsms.iter().any(|h| &h.view.hsm_id == hsm_id) {
                hsms.push(HsmInfo {
                    subnet_id: subnet(&p.availability_zone),
                    view: HsmView {
                        hsm_id: hsm_id.clone(),
                        availability_zone: p.availability_zone.clone(),
                        address: String::new(),
                        state: p.state(),
                    },
                });
            }
        }
        hsms
    }

    fn view(record: &ClusterRecord, hsms: Vec<HsmInfo>) -> ClusterView {
        ClusterView {
            cluster_id: record.cluster_id.clone(),
            state: record.state.as_str().into(),
            hsm_type: record.hsm_type.clone(),
            hsms: hsms.into_iter().map(|h| h.view).collect(),
            trust_anchor: record.trust_anchor.clone().unwrap_or_default(),
            created_at_millis: record.created_at_millis,
            vpc_id: record.vpc_id.clone(),
            security_group: record.security_group.clone(),
            subnet_mapping: record
                .subnet_mapping
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            backup_retention_days: record.retention_days,
        }
    }

    /// Backups in `region` (every Region with `None`), in id order.
    pub fn backups(&self, region: Option<&str>) -> Vec<BackupRecord> {
        self.state()
            .backups
            .values()
            .filter(|b| region.is_none_or(|r| b.region == r))
            .cloned()
            .collect()
    }

    pub fn backup(&self, backup_id: &str, region: &str) -> Result<BackupRecord, CloudHsmError> {
        self.state()
            .backups
            .get(backup_id)
            .filter(|b| b.region == region)
            .cloned()
            .ok_or_else(|| not_found("Backup", backup_id))
    }

    /// Changes one live cluster's record: `change` sees it as the last change left it (and may
    /// refuse); the result is durable (with `more` in the same commit), then installed.
    async fn update_cluster<T>(
        &self,
        cluster_id: &str,
        more: Vec<Write>,
        change: impl FnOnce(&mut ClusterRecord) -> Result<T, CloudHsmError>,
    ) -> Result<(ClusterRecord, T), CloudHsmError> {
        self.update_cluster_releasing(cluster_id, None, more, change)
            .await
    }

    /// [`Self::update_cluster`] for the commit that ends a change this task owns: `release`
    /// leaves `working` once the record is installed, in the same turn. Claims are taken in a
    /// turn too, so none sees the record done while the change is still owned (a claim that
    /// found it owned would otherwise be dropped by the late release, and the periodic
    /// settling would run the claimed change a second time).
    async fn update_cluster_releasing<T>(
        &self,
        cluster_id: &str,
        release: Option<&str>,
        more: Vec<Write>,
        change: impl FnOnce(&mut ClusterRecord) -> Result<T, CloudHsmError>,
    ) -> Result<(ClusterRecord, T), CloudHsmError> {
        let _turn = self.records.lock().await;
        let mut record = self.live_cluster(cluster_id)?;
        let out = change(&mut record)?;
        self.put_cluster(&record, more).await?;
        if let Some(id) = release {
            self.state().working.remove(id);
        }
        Ok((record, out))
    }

    /// The Region a backup lives in, if it exists.
    fn region_of(&self, backup_id: &str) -> Option<String> {
        self.state()
            .backups
            .get(backup_id)
            .map(|b| b.region.clone())
    }

    /// Changes one backup's record, the same way.
    /// Applies `op` to a backup as the last change left it (changes take turns), then makes
    /// the result durable and installs it.
    async fn update_backup(
        &self,
        backup_id: &str,
        region: &str,
        op: BackupOp,
        now: u64,
    ) -> Result<BackupRecord, CloudHsmError> {
        self.change_backup(backup_id, region, |b| b.apply(op, now))
            .await
    }

    /// Makes the change `change` plans from a backup as the last change left it durable, then
    /// installs it.
    async fn change_backup(
        &self,
        backup_id: &str,
        region: &str,
        change: impl FnOnce(&BackupRecord) -> Result<BackupRecord, CloudHsmError>,
    ) -> Result<BackupRecord, CloudHsmError> {
        let _turn = self.records.lock().await;
        let backup = change(&self.backup(backup_id, region)?)?;
        self.put_backup(backup).await
    }

    fn live_cluster(&self, cluster_id: &str) -> Result<ClusterRecord, CloudHsmError> {
        self.state()
            .clusters
            .get(cluster_id)
            .filter(|c| c.state != ClusterState::Deleted)
            .cloned()
            .ok_or_else(|| not_found("Cluster", cluster_id))
    }

    // ---- clusters ---------------------------------------------------------------------

    /// CreateCluster: a new cluster, UNINITIALIZED, or restored from a backup (sharing the
    /// backup's cluster certificate, so it is related to the original).
    pub async fn create_cluster(
        self: &Arc<Self>,
        hsm_type: String,
        subnet_ids: Vec<String>,
        source_backup_id: Option<String>,
        retention_days: Option<u32>,
        tags: BTreeMap<String, String>,
    ) -> Result<ClusterRecord, CloudHsmError> {
        if !matches!(hsm_type.as_str(), "hsm1.medium" | "hsm2m.medium") {
            return Err(CloudHsmError::InvalidRequest(format!(
                "HsmType {hsm_type} is not supported; use hsm1.medium or hsm2m.medium."
            )));
        }
        if subnet_ids.is_empty() || subnet_ids.len() > 10 {
            return Err(CloudHsmError::InvalidRequest(
                "SubnetIds must name 1 to 10 subnets.".into(),
            ));
        }
        let retention = check_retention(retention_days)?;
        check_tags(&tags)?;
        let mapping = self.subnet_zones(&subnet_ids)?;
        let source = match &source_backup_id {
            None => None,
            Some(id) => {
                let id = id.rsplit('/').next().unwrap_or(id).to_string();
                let backup = self.backup(&id, &self.region.clone())?;
                backup.apply(BackupOp::Use(Use::CreateCluster), self.now())?;
                Some(backup)
            }
        };
        let cluster_id = ids::new_cluster_id(&mut EntropyRng(self.entropy.as_ref()));
        let (certificate, trust_anchor) = match &source {
            Some(b) => {
                let origin = self.state().clusters.get(&b.lineage).cloned();
                (
                    origin.as_ref().and_then(|o| o.cluster_certificate.clone()),
                    origin.and_then(|o| o.trust_anchor),
                )
            }
            None => (None, None),
        };
        let mut writes = vec![];
        if let Some(b) = &source {
            // The restored cluster keeps its own copy: the backup may be deleted meanwhile.
            let image = self.image(&b.backup_id).await?;
            writes.push(Write::Put {
                table: Table::BackupImages,
                key: seed_key(&cluster_id),
                value: image,
            });
        }
        let record = ClusterRecord {
            cluster_id: cluster_id.clone(),
            state: ClusterState::CreateInProgress,
            state_message: String::new(),
            hsm_type,
            created_at_millis: self.now(),
            vpc_id: synthetic("vpc", &subnet_ids.join(","), 17),
            security_group: synthetic("sg", &format!("{cluster_id}/sg"), 17),
            subnet_mapping: mapping,
            retention_days: retention.unwrap_or(DEFAULT_RETENTION_DAYS),
            source_backup_id: source.as_ref().map(|b| b.backup_id.clone()),
            cluster_certificate: certificate,
            trust_anchor,
            cluster_csr: None,
            tags,
            hsm_changes: BTreeMap::new(),
            deleted_at_millis: None,
        };
        // The record first (CREATE_IN_PROGRESS), counted against the quota in the same turn:
        // the cluster exists only through it, so files the provisioner makes next are never
        // a cluster nobody recorded.
        {
            let _turn = self.records.lock().await;
            self.quotas
                .admit_cluster(self.state().clusters.values(), &self.region)?;
            self.state().working.insert(cluster_id.clone());
            if let Err(e) = self.put_cluster(&record, writes).await {
                self.state().working.remove(&cluster_id);
                return Err(e);
            }
        }
        let provisioned = {
            let provisioner = self.provisioner.clone();
            let id = cluster_id.clone();
            let lineage = source.as_ref().map(|b| b.lineage.clone());
            blocking(move || provisioner.create_cluster(&id, lineage.as_deref())).await
        };
        let created = match provisioned {
            Ok(()) => self
                .update_cluster_releasing(&cluster_id, Some(&cluster_id), vec![], |r| r.created())
                .await
                .map(|(r, ())| r),
            Err(e) => Err(CloudHsmError::InternalFailure(format!(
                "The cluster could not be created: {e}"
            ))),
        };
        match created {
            Ok(r) => Ok(r),
            Err(e) => {
                // Never acknowledged: the cluster goes again (now, or, if that fails too, from
                // the periodic work once this is no longer its owner).
                self.abandon_cluster(&cluster_id).await;
                self.state().working.remove(&cluster_id);
                Err(e)
            }
        }
    }

    /// Removes a cluster whose CreateCluster was never acknowledged: its record (durably),
    /// then its files. If the record cannot be removed now, the next settling tries again.
    async fn abandon_cluster(&self, cluster_id: &str) {
        let writes = vec![
            Write::delete(Table::Clusters, cluster_id),
            Write::delete(Table::BackupImages, seed_key(cluster_id)),
        ];
        {
            let _turn = self.records.lock().await;
            if let Err(e) = self.commit(writes).await {
                tracing::error!(%cluster_id, error = %e, "cannot remove an unfinished cluster; retrying later");
                self.retry_later(cluster_id);
                return;
            }
            self.state().clusters.remove(cluster_id);
        }
        let provisioner = self.provisioner.clone();
        let id = cluster_id.to_string();
        // Files made for it, if the provisioner got that far.
        let discarded = blocking(move || provisioner.discard_cluster(&id)).await;
        match discarded {
            Ok(()) => tracing::warn!(%cluster_id, "an unfinished CreateCluster is undone"),
            Err(e) => {
                tracing::error!(%cluster_id, error = %e, "cannot set aside an unfinished cluster's files")
            }
        }
    }

    /// Which Availability Zone each subnet is in: a subnet of an existing cluster keeps its
    /// zone; others take the zones `a`, `b`, `c`, ... in the order given.
    fn subnet_zones(
        &self,
        subnet_ids: &[String],
    ) -> Result<BTreeMap<String, String>, CloudHsmError> {
        let known: BTreeMap<String, String> = self
            .state()
            .clusters
            .values()
            .flat_map(|c| c.subnet_mapping.iter().map(|(z, s)| (s.clone(), z.clone())))
            .collect();
        let mut free = zones(&self.region).into_iter();
        let mut mapping = BTreeMap::new();
        for subnet in subnet_ids {
            let valid = subnet.strip_prefix("subnet-").is_some_and(|h| {
                (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !valid {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Invalid subnet id {subnet}: expected subnet- and 8 to 17 hex digits."
                )));
            }
            let zone = match known.get(subnet) {
                Some(z) => z.clone(),
                None => loop {
                    let Some(z) = free.next() else {
                        return Err(CloudHsmError::InvalidRequest(
                            "The subnets must be in different Availability Zones.".into(),
                        ));
                    };
                    if !mapping.contains_key(&z) {
                        break z;
                    }
                },
            };
            if mapping.insert(zone.clone(), subnet.clone()).is_some() {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "The subnets must be in different Availability Zones; two are in {zone}."
                )));
            }
        }
        Ok(mapping)
    }

    /// DeleteCluster: only a cluster without HSMs. The check and DELETE_IN_PROGRESS are one
    /// durable step, so no CreateHsm slips in between; then the provisioner removes the
    /// cluster's HSM homes and the cluster is DELETED (a stop in between is finished on start).
    pub async fn delete_cluster(
        self: &Arc<Self>,
        cluster_id: &str,
    ) -> Result<ClusterRecord, CloudHsmError> {
        // This call owns the delete from before DELETE_IN_PROGRESS is installed, so the
        // periodic settling never finishes it alongside; a failed commit gives it up.
        let mut claimed = false;
        let updated = self
            .update_cluster(cluster_id, vec![], |record| {
                let before = record.state;
                record.delete(self.hsms_of(record).len())?;
                // In this turn nothing else owns a cluster that is not being created or
                // deleted (owners release in the turn that ends their change).
                if !self.state().working.insert(cluster_id.to_string()) {
                    return Err(busy(cluster_id, before));
                }
                claimed = true;
                Ok(())
            })
            .await;
        let (record, ()) = match updated {
            Ok(done) => done,
            Err(e) => {
                if claimed {
                    self.state().working.remove(cluster_id);
                }
                return Err(e);
            }
        };
        self.finish_delete_cluster(cluster_id).await;
        self.state().working.remove(cluster_id);
        Ok(record)
    }

    /// The rest of a DeleteCluster whose DELETE_IN_PROGRESS is durable: the provisioner's
    /// part, then DELETED. A failure leaves it DELETE_IN_PROGRESS for the next settling.
    async fn finish_delete_cluster(&self, cluster_id: &str) {
        let provisioner = self.provisioner.clone();
        let id = cluster_id.to_string();
        if let Err(e) = blocking(move || provisioner.delete_cluster(&id)).await {
            tracing::error!(%cluster_id, error = %e, "DeleteCluster failed; retrying later");
            self.retry_later(cluster_id);
            return;
        }
        let seed = Write::delete(Table::BackupImages, seed_key(cluster_id));
        let now = self.now();
        let done = self
            .update_cluster(cluster_id, vec![seed], |r| r.deleted(now))
            .await;
        if let Err(e) = done {
            tracing::error!(%cluster_id, error = %e, "cannot record a cluster DELETED; retrying later");
            self.retry_later(cluster_id);
        }
    }

    /// Leaves a change that failed to the periodic settling, a while from now.
    fn retry_later(&self, id: &str) {
        self.state()
            .retry_at
            .insert(id.to_string(), tokio::time::Instant::now() + RETRY_AFTER);
    }

    /// InitializeCluster: the customer's CA signed the cluster's CSR; the cluster is
    /// INITIALIZED, and turns ACTIVE once its admin is activated (`hsm-cli cluster activate`).
    pub async fn initialize_cluster(
        &self,
        cluster_id: &str,
        signed_cert: &str,
        trust_anchor: &str,
    ) -> Result<ClusterRecord, CloudHsmError> {
        let (record, ()) = self
            .update_cluster(cluster_id, vec![], |record| {
                record.initialize(signed_cert, trust_anchor)
            })
            .await?;
        Ok(record)
    }

    /// ModifyCluster: the backup retention policy.
    pub async fn modify_cluster(
        &self,
        cluster_id: &str,
        retention_days: Option<u32>,
    ) -> Result<ClusterRecord, CloudHsmError> {
        let days = check_retention(retention_days)?;
        let (record, ()) = self
            .update_cluster(cluster_id, vec![], |record| {
                if let Some(days) = days {
                    record.retention_days = days;
                }
                Ok(())
            })
            .await?;
        Ok(record)
    }

    // ---- HSMs -------------------------------------------------------------------------

    /// Every cluster's record with its HSMs, those being created or deleted included (the
    /// account quota).
    fn hsm_counts(&self) -> Vec<(ClusterRecord, usize)> {
        let records: Vec<ClusterRecord> = self.state().clusters.values().cloned().collect();
        records
            .into_iter()
            .map(|r| {
                let hsms = self.hsms_of(&r).len();
                (r, hsms)
            })
            .collect()
    }

    /// CreateHsm: answers at once with the HSM CREATE_IN_PROGRESS, durable in the cluster's
    /// record; the node is provisioned from the latest backup, starts, catches up with its
    /// peers, and turns ACTIVE. The checks (one HSM while UNINITIALIZED, 28 per cluster, the
    /// account quota, the HSM's network interface in its zone's subnet) and the record of the
    /// new HSM are one turn, so concurrent calls cannot pass them together; a refusal changes
    /// nothing.
    pub async fn create_hsm(
        self: &Arc<Self>,
        pass: &Pass,
        cluster_id: &str,
        availability_zone: &str,
    ) -> Result<HsmInfo, CloudHsmError> {
        let hsm_id = ids::new_hsm_id(&mut EntropyRng(self.entropy.as_ref()));
        let turn = self.records.lock().await;
        let mut record = self.live_cluster(cluster_id)?;
        let hsms = self.hsms_of(&record).len();
        let subnet_id = record.add_hsm(&hsm_id, availability_zone, hsms)?;
        let counts = self.hsm_counts();
        self.quotas
            .admit_hsm(counts.iter().map(|(r, n)| (r, *n)), &self.region)?;
        // The HSM's network interface goes in the zone's subnet before anything is recorded,
        // as CloudHSM makes it: a subnet deleted or without a free address refuses the call.
        self.network
            .create_enis([subnet_id.as_str()])
            .map_err(|e| eni_refused(&e))?;
        // This call owns the change from before it is durable, so the periodic settling never
        // runs it a second time alongside.
        self.state().working.insert(hsm_id.clone());
        if let Err(e) = self.put_cluster(&record, vec![]).await {
            self.state().working.remove(&hsm_id);
            return Err(e);
        }
        drop(turn);
        let service = self.clone();
        let (cluster, hsm, zone) = (
            cluster_id.to_string(),
            hsm_id.clone(),
            availability_zone.to_string(),
        );
        let pass = pass.clone();
        tokio::spawn(async move {
            service.finish_create_hsm(cluster, hsm, zone).await;
            drop(pass);
        });
        Ok(HsmInfo {
            subnet_id,
            view: HsmView {
                hsm_id,
                availability_zone: availability_zone.into(),
                address: String::new(),
                state: HsmState::CreateInProgress,
            },
        })
    }

    /// The rest of a CreateHsm whose CREATE_IN_PROGRESS is durable (the caller owns it in
    /// `working`, and gives it up in [`Self::settle`]): the provisioner creates the HSM (or finds it created before a stop), then
    /// the cluster's record settles in one commit: the change goes, a restored cluster turns
    /// ACTIVE, a new cluster's first HSM offers the CSR; then the backup after adding an HSM.
    /// If the provisioner fails, the HSM is gone and so is the change. A commit that fails is
    /// retried, then left to the periodic settling.
    async fn finish_create_hsm(
        self: Arc<Self>,
        cluster_id: String,
        hsm_id: String,
        availability_zone: String,
    ) {
        let image = match self.latest_image(&cluster_id).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(%cluster_id, error = %e, "cannot read the latest backup");
                None
            }
        };
        let provisioner = self.provisioner.clone();
        let (c, h, zone) = (cluster_id.clone(), hsm_id.clone(), availability_zone);
        let created =
            blocking(move || provisioner.create_hsm(&c, &h, &zone, image.as_deref())).await;
        if created.is_ok() && self.crash_during_hsm_create.swap(false, Ordering::SeqCst) {
            tracing::error!(%cluster_id, %hsm_id, "fault injection: the process dies before the new HSM is recorded");
            std::process::abort();
        }
        // The backup after adding an HSM is owed from before the change is recorded done, so
        // the daily backup never slips in between and makes the day's second.
        let owed = created.is_ok().then(|| self.owe_hsm_backup(&cluster_id));
        let settled = match &created {
            Ok(()) => {
                self.settle(&cluster_id, &hsm_id, |record| {
                    let Some(done) = record.hsm_created(&hsm_id)? else {
                        return Ok(false);
                    };
                    if done.make_csr {
                        match hsmkms_common::tls::cluster_csr(&cluster_id, &hsm_id) {
                            Ok(csr) => record.cluster_csr = Some(csr),
                            Err(e) => {
                                tracing::error!(%cluster_id, error = %e, "cannot make the cluster's CSR")
                            }
                        }
                    }
                    Ok(done.backup)
                })
                .await
            }
            Err(e) => {
                tracing::error!(%cluster_id, %hsm_id, error = %e, "CreateHsm failed; the HSM is removed");
                self.settle(&cluster_id, &hsm_id, |record| {
                    record.hsm_gone(&hsm_id);
                    Ok(false)
                })
                .await
            }
        };
        if created.is_ok() && settled.is_some() {
            tracing::info!(%cluster_id, %hsm_id, "HSM ACTIVE");
        }
        if settled == Some(true) {
            if let Err(e) = self.take_backup(&cluster_id).await {
                tracing::warn!(%cluster_id, error = %e, "no backup after adding an HSM");
            }
        }
        drop(owed);
    }

    /// Records that the backup after adding an HSM to `cluster_id` is to come, until the
    /// answer is dropped.
    fn owe_hsm_backup(self: &Arc<Self>, cluster_id: &str) -> OwedBackup {
        *self
            .state()
            .hsm_backups_owed
            .entry(cluster_id.to_string())
            .or_default() += 1;
        OwedBackup {
            service: self.clone(),
            cluster_id: cluster_id.to_string(),
        }
    }

    /// Records how an HSM change ended, with `change` on the cluster's record as the last
    /// change left it; retried a few times, then left to the periodic settling (`None`). The
    /// caller's ownership of the change ends here either way: with the commit that records
    /// the end, or once the retry is left to the periodic settling.
    async fn settle<T>(
        &self,
        cluster_id: &str,
        hsm_id: &str,
        change: impl Fn(&mut ClusterRecord) -> Result<T, CloudHsmError>,
    ) -> Option<T> {
        for attempt in 0..SETTLE_ATTEMPTS {
            match self
                .update_cluster_releasing(cluster_id, Some(hsm_id), vec![], &change)
                .await
            {
                Ok((_, out)) => return Some(out),
                Err(CloudHsmError::ResourceNotFound(_)) => {
                    self.state().working.remove(hsm_id);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(%cluster_id, %hsm_id, attempt, error = %e, "cannot record the end of an HSM change");
                    if let Some(wait) = settle_backoff(attempt) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        tracing::error!(%cluster_id, %hsm_id, "the end of an HSM change is not recorded yet; retrying later");
        self.retry_later(hsm_id);
        self.state().working.remove(hsm_id);
        None
    }

    /// The image a new HSM of the cluster starts from: its newest backup, or the backup it was
    /// restored from.
    async fn latest_image(&self, cluster_id: &str) -> Result<Option<Vec<u8>>, CloudHsmError> {
        let newest = self
            .state()
            .backups
            .values()
            .filter(|b| b.cluster_id.as_deref() == Some(cluster_id) && b.holds_data())
            .max_by_key(|b| b.created_at_millis)
            .map(|b| b.backup_id.clone());
        self.read_image(newest.unwrap_or_else(|| seed_key(cluster_id)))
            .await
    }

    async fn image(&self, backup_id: &str) -> Result<Vec<u8>, CloudHsmError> {
        self.read_image(backup_id.to_string())
            .await?
            .ok_or_else(|| {
                CloudHsmError::InternalFailure(format!("Backup {backup_id} has no data."))
            })
    }

    /// DeleteHsm by HSM id, ENI id or ENI IP: the HSM is DELETE_IN_PROGRESS (no longer used by
    /// KMS), durable in the cluster's record, in the same turn as the check that it may be
    /// deleted (so of concurrent calls one wins, the others see it being deleted); then a
    /// backup, taken while the HSM is still there; then its node is removed in the background.
    pub async fn delete_hsm(
        self: &Arc<Self>,
        pass: &Pass,
        cluster_id: &str,
        hsm_id: Option<&str>,
        eni_id: Option<&str>,
        eni_ip: Option<&str>,
    ) -> Result<String, CloudHsmError> {
        let turn = self.records.lock().await;
        let mut record = self.live_cluster(cluster_id)?;
        let hsms = self.hsms_of(&record);
        let found = hsms.iter().find(|h| {
            hsm_id.is_some_and(|id| id == h.view.hsm_id)
                || eni_id.is_some_and(|id| id == eni_of(&h.view.hsm_id))
                || eni_ip.is_some_and(|ip| Some(ip) == h.view.address.split(':').next())
        });
        let Some(hsm) = found else {
            let what = hsm_id.or(eni_id).or(eni_ip).unwrap_or("(none given)");
            return Err(not_found(&format!("HSM in cluster {cluster_id}:"), what));
        };
        let change = HsmChange::delete(
            &hsm.view.hsm_id,
            hsm.view.state,
            &hsm.view.availability_zone,
        )?;
        let hsm_id = hsm.view.hsm_id.clone();
        record.hsm_changes.insert(hsm_id.clone(), change);
        self.state().working.insert(hsm_id.clone());
        if let Err(e) = self.put_cluster(&record, vec![]).await {
            self.state().working.remove(&hsm_id);
            return Err(e);
        }
        drop(turn);
        // Deleting an HSM forces a backup, taken while the HSM is still there.
        if record.state == ClusterState::Active {
            if let Err(e) = self.take_backup(cluster_id).await {
                tracing::warn!(%cluster_id, error = %e, "no backup before DeleteHsm");
            }
        }
        let service = self.clone();
        let (c, h) = (cluster_id.to_string(), hsm_id.clone());
        let pass = pass.clone();
        tokio::spawn(async move {
            service.finish_delete_hsm(c, h).await;
            drop(pass);
        });
        Ok(hsm_id)
    }

    /// The rest of a DeleteHsm whose DELETE_IN_PROGRESS is durable (the caller owns it in
    /// `working`, and gives it up here): the provisioner removes the HSM (or finds it removed
    /// before a stop), then the change goes from the record. A delete always finishes: a
    /// failure is retried later.
    async fn finish_delete_hsm(self: Arc<Self>, cluster_id: String, hsm_id: String) {
        let provisioner = self.provisioner.clone();
        let (c, h) = (cluster_id.clone(), hsm_id.clone());
        match blocking(move || provisioner.delete_hsm(&c, &h)).await {
            Ok(()) => {
                let settled = self
                    .settle(&cluster_id, &hsm_id, |record| {
                        record.hsm_gone(&hsm_id);
                        Ok(())
                    })
                    .await;
                if settled.is_some() {
                    tracing::info!(%cluster_id, %hsm_id, "HSM deleted");
                }
            }
            Err(e) => {
                tracing::error!(%cluster_id, %hsm_id, error = %e, "DeleteHsm failed; retrying later");
                self.retry_later(&hsm_id);
                self.state().working.remove(&hsm_id);
            }
        }
    }

    /// Finishes (or undoes) every change no task of this process owns: HSMs being created or
    /// deleted, clusters being deleted, and clusters whose CreateCluster was never
    /// acknowledged. On start (`wait`) it runs them to the end before the emulator serves;
    /// from the periodic work it starts them in the background.
    pub async fn settle_changes(self: &Arc<Self>, pass: &Pass, wait: bool) {
        let now = tokio::time::Instant::now();
        let work: Vec<(String, Unfinished)> = {
            let mut state = self.state();
            let State {
                clusters,
                working,
                retry_at,
                ..
            } = &mut *state;
            retry_at.retain(|_, at| *at > now);
            let mut work = Vec::new();
            for c in clusters.values() {
                for item in c.unfinished() {
                    let id = item.owner_id(&c.cluster_id);
                    // Free: no task owns it and no failed attempt asks for a pause.
                    if !working.contains(id) && !retry_at.contains_key(id) {
                        working.insert(id.to_string());
                        work.push((c.cluster_id.clone(), item));
                    }
                }
            }
            work
        };
        for (c, item) in work {
            let service = self.clone();
            let pass = pass.clone();
            let run = async move {
                match item {
                    Unfinished::CreateHsm {
                        hsm_id: h,
                        availability_zone,
                    } => {
                        tracing::info!(cluster_id = %c, hsm_id = %h, "finishing an interrupted CreateHsm");
                        service.finish_create_hsm(c, h, availability_zone).await
                    }
                    Unfinished::DeleteHsm { hsm_id: h } => {
                        tracing::info!(cluster_id = %c, hsm_id = %h, "finishing an interrupted DeleteHsm");
                        service.finish_delete_hsm(c, h).await
                    }
                    Unfinished::DeleteCluster => {
                        tracing::info!(cluster_id = %c, "finishing an interrupted DeleteCluster");
                        service.finish_delete_cluster(&c).await;
                        service.state().working.remove(&c);
                    }
                    Unfinished::AbandonCluster => {
                        service.abandon_cluster(&c).await;
                        service.state().working.remove(&c);
                    }
                }
                drop(pass);
            };
            if wait {
                run.await;
            } else {
                tokio::spawn(run);
            }
        }
    }

    // ---- reset ------------------------------------------------------------------------

    /// A reset of the CloudHSM side, step one: closes the gate (every call, periodic run and
    /// task of the old state has ended; new ones wait), has the provisioner make the
    /// launcher's cluster anew beside the old one (decided durably from here: a restart
    /// finishes the reset), and returns the writes that put the records in the new state
    /// (every cluster, backup and image gone, the new cluster adopted as on a first start),
    /// for the caller to commit with its own. Then [`Self::finish_reset`], or, if the commit
    /// fails, [`Self::abandon_reset`].
    pub async fn prepare_reset(&self) -> Result<PreparedReset, String> {
        let closed = self.gate.close().await;
        let provisioner = self.provisioner.clone();
        let cluster = blocking(move || provisioner.prepare_reset()).await?;
        let record = adopted(&cluster, &self.region);
        let writes = vec![
            Write::Clear {
                table: Table::Clusters,
            },
            Write::Clear {
                table: Table::Backups,
            },
            Write::Clear {
                table: Table::BackupImages,
            },
            Write::put(Table::Clusters, record.cluster_id.clone(), &record),
        ];
        Ok(PreparedReset {
            _closed: closed,
            record,
            writes,
        })
    }

    /// Step two, once the prepared writes are durable: the records are the new ones, the
    /// provisioner puts the new cluster in place of every cluster and starts its HSMs, its
    /// first backup is taken (as on a first start), and the gate opens when this returns. An
    /// error here leaves the decision on disk: the next start finishes the reset.
    pub async fn finish_reset(&self, prepared: PreparedReset) -> Result<(), String> {
        {
            let mut state = self.state();
            *state = State::default();
            state
                .clusters
                .insert(prepared.record.cluster_id.clone(), prepared.record.clone());
        }
        self.crash_during_hsm_create.store(false, Ordering::SeqCst);
        let provisioner = self.provisioner.clone();
        let done = blocking(move || provisioner.finish_reset()).await;
        if done.is_ok() {
            // As on a first start: the new cluster's first backup before anyone calls.
            self.first_backups().await;
        }
        drop(prepared);
        done
    }

    /// A prepared reset whose writes could not be stored: the provisioner undoes it, the
    /// clusters serve on as they were, and the gate opens.
    pub async fn abandon_reset(&self, prepared: PreparedReset) {
        let provisioner = self.provisioner.clone();
        if let Err(e) = blocking(move || provisioner.abandon_reset()).await {
            tracing::error!(error = %e, "cannot undo a cluster reset; the next start finishes it");
        }
        drop(prepared);
    }

    /// Fault injection on an HSM (the control API).
    pub async fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        let provisioner = self.provisioner.clone();
        let id = hsm_id.to_string();
        blocking(move || provisioner.set_hsm_running(&id, running)).await
    }

    /// Fault injection: the process dies during the next HSM deletion (the control API).
    pub fn crash_during_next_hsm_delete(&self) -> Result<(), String> {
        self.provisioner.crash_during_next_hsm_delete()
    }

    /// Fault injection: stalls an HSM, or lets it run again (the control API).
    pub async fn set_hsm_stalled(&self, hsm_id: &str, stalled: bool) -> Result<(), String> {
        let provisioner = self.provisioner.clone();
        let id = hsm_id.to_string();
        blocking(move || provisioner.set_hsm_stalled(&id, stalled)).await
    }

    // ---- backups ----------------------------------------------------------------------

    /// Takes a backup of the cluster now.
    pub async fn take_backup(&self, cluster_id: &str) -> Result<BackupRecord, CloudHsmError> {
        let (backup, image) = self.snapshot_backup(cluster_id).await?;
        self.add_backup(&backup, image, false).await?;
        tracing::info!(%cluster_id, backup_id = %backup.backup_id, keys = backup.keys.len(), "backup taken");
        Ok(backup)
    }

    /// Takes the cluster's daily backup, unless, by the time it is recorded, it is no longer
    /// due ([`daily_backup_due`]): an HSM change started meanwhile, or its backup landed.
    /// Answers the backup, or `None` if it gave way.
    async fn take_daily_backup(
        &self,
        cluster_id: &str,
    ) -> Result<Option<BackupRecord>, CloudHsmError> {
        let (backup, image) = self.snapshot_backup(cluster_id).await?;
        if !self.add_backup(&backup, image, true).await? {
            tracing::info!(%cluster_id, "the daily backup gives way to an HSM change's");
            return Ok(None);
        }
        tracing::info!(%cluster_id, backup_id = %backup.backup_id, keys = backup.keys.len(), "daily backup taken");
        Ok(Some(backup))
    }

    /// Whether the daily clockwork backs `cluster_id` up now, on the records as they are.
    fn daily_due(state: &State, cluster_id: &str, now: u64) -> bool {
        let Some(cluster) = state.clusters.get(cluster_id) else {
            return false;
        };
        let newest = state
            .backups
            .values()
            .filter(|b| b.cluster_id.as_deref() == Some(cluster_id))
            .map(|b| b.created_at_millis)
            .max();
        let owed = state
            .hsm_backups_owed
            .get(cluster_id)
            .is_some_and(|n| *n > 0);
        daily_backup_due(cluster, newest, owed, now)
    }

    /// Whether an HSM of the cluster is ACTIVE (a backup reads one).
    fn has_active_hsm(&self, cluster_id: &str) -> bool {
        self.describe(cluster_id)
            .is_some_and(|(_, hsms)| hsms.iter().any(|h| h.view.state == HsmState::Active))
    }

    /// A new backup of the cluster (not yet recorded) and its image.
    async fn snapshot_backup(
        &self,
        cluster_id: &str,
    ) -> Result<(BackupRecord, Vec<u8>), CloudHsmError> {
        let record = self.live_cluster(cluster_id)?;
        let provisioner = self.provisioner.clone();
        let id = cluster_id.to_string();
        let snapshot = blocking(move || provisioner.snapshot(&id))
            .await
            .map_err(CloudHsmError::InternalFailure)?;
        let backup = BackupRecord {
            backup_id: ids::new_backup_id(&mut EntropyRng(self.entropy.as_ref())),
            region: self.region.clone(),
            cluster_id: Some(cluster_id.into()),
            lineage: cluster_id.into(),
            state: BackupState::Ready,
            created_at_millis: self.now(),
            delete_at_millis: None,
            never_expires: false,
            hsm_type: record.hsm_type.clone(),
            source_region: None,
            source_backup: None,
            source_cluster: None,
            copied_at_millis: None,
            tags: BTreeMap::new(),
            keys: snapshot.keys,
            resource_policy: None,
        };
        Ok((backup, snapshot.image))
    }

    /// Records a new backup and its image, within [`MAX_BACKUPS`]: the count and the insert
    /// are one turn, so concurrent backups cannot pass the bound together. A `daily` backup is
    /// recorded only if it is still due in that turn (answers `false` otherwise), so it never
    /// lands beside an HSM change's.
    async fn add_backup(
        &self,
        backup: &BackupRecord,
        image: Vec<u8>,
        daily: bool,
    ) -> Result<bool, CloudHsmError> {
        let _turn = self.records.lock().await;
        if daily {
            let cluster_id = backup.cluster_id.as_deref().unwrap_or_default();
            if !Self::daily_due(&self.state(), cluster_id, self.now()) {
                return Ok(false);
            }
        }
        admit_backup(self.state().backups.values())?;
        self.commit(vec![
            Write::put(Table::Backups, backup.backup_id.clone(), backup),
            Write::Put {
                table: Table::BackupImages,
                key: backup.backup_id.clone(),
                value: image,
            },
        ])
        .await?;
        self.state()
            .backups
            .insert(backup.backup_id.clone(), backup.clone());
        Ok(true)
    }

    async fn put_backup(&self, backup: BackupRecord) -> Result<BackupRecord, CloudHsmError> {
        let mut writes = vec![Write::put(
            Table::Backups,
            backup.backup_id.clone(),
            &backup,
        )];
        if backup.state == BackupState::Deleted {
            writes.push(Write::delete(Table::BackupImages, backup.backup_id.clone()));
        }
        self.commit(writes).await?;
        self.state()
            .backups
            .insert(backup.backup_id.clone(), backup.clone());
        Ok(backup)
    }

    /// DeleteBackup: PENDING_DELETION for 7 days.
    pub async fn delete_backup(
        &self,
        backup_id: &str,
        region: &str,
    ) -> Result<BackupRecord, CloudHsmError> {
        let now = self.now();
        self.update_backup(backup_id, region, BackupOp::Delete, now)
            .await
    }

    /// RestoreBackup: a backup pending deletion, within its 7 days, is READY again.
    pub async fn restore_backup(
        &self,
        backup_id: &str,
        region: &str,
    ) -> Result<BackupRecord, CloudHsmError> {
        let now = self.now();
        self.update_backup(backup_id, region, BackupOp::Restore, now)
            .await
    }

    /// ModifyBackupAttributes: NeverExpires.
    pub async fn set_never_expires(
        &self,
        backup_id: &str,
        region: &str,
        never_expires: bool,
    ) -> Result<BackupRecord, CloudHsmError> {
        let now = self.now();
        self.update_backup(
            backup_id,
            region,
            BackupOp::SetNeverExpires(never_expires),
            now,
        )
        .await
    }

    /// CopyBackupToRegion: a copy in another Region, linked to no cluster, without retention.
    /// `tags` given are the copy's only tags; without them it takes the source's, as AWS
    /// documents ("If you do not specify tags, the service copies tags from the source
    /// backup"). Its CreateTimestamp is the source's ("CreateTimestamp of the destination
    /// backup will be the same as that of the source backup"); CopyTimestamp says when it was
    /// copied. A resource policy is not copied: it shares one backup, not its copies.
    pub async fn copy_backup(
        &self,
        backup_id: &str,
        region: &str,
        destination: &str,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<BackupRecord, CloudHsmError> {
        let source = self.backup(backup_id, region)?;
        if let Some(tags) = &tags {
            check_tags(tags)?;
        }
        if destination == region {
            return Err(CloudHsmError::InvalidRequest(format!(
                "The destination Region must differ from the backup's Region {region}."
            )));
        }
        if !is_region(destination) {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Invalid destination Region {destination}."
            )));
        }
        let now = self.now();
        source.apply(BackupOp::Use(Use::Copy), now)?;
        let image = self.image(backup_id).await?;
        let copy = BackupRecord {
            backup_id: ids::new_backup_id(&mut EntropyRng(self.entropy.as_ref())),
            region: destination.into(),
            cluster_id: None,
            lineage: source.lineage.clone(),
            state: BackupState::Ready,
            created_at_millis: source.created_at_millis,
            delete_at_millis: None,
            never_expires: false,
            hsm_type: source.hsm_type.clone(),
            source_region: Some(region.into()),
            source_backup: Some(source.backup_id.clone()),
            source_cluster: source.cluster_id.clone(),
            copied_at_millis: Some(now),
            tags: tags.unwrap_or_else(|| source.tags.clone()),
            keys: source.keys.clone(),
            resource_policy: None,
        };
        self.add_backup(&copy, image, false).await?;
        Ok(copy)
    }

    // ---- resource policies ------------------------------------------------------------

    /// GetResourcePolicy: a backup's policy, if it has one (in any state).
    pub fn resource_policy(
        &self,
        backup_id: &str,
        region: &str,
    ) -> Result<Option<String>, CloudHsmError> {
        Ok(self.backup(backup_id, region)?.resource_policy)
    }

    /// PutResourcePolicy: a READY backup's policy is `policy` (checked by the caller) from
    /// now, durably.
    pub async fn put_resource_policy(
        &self,
        backup_id: &str,
        region: &str,
        policy: String,
    ) -> Result<BackupRecord, CloudHsmError> {
        let now = self.now();
        self.update_backup(backup_id, region, BackupOp::PutPolicy(policy), now)
            .await
    }

    /// DeleteResourcePolicy: the backup has no policy from now; answers the one it had. A
    /// backup without one is left as it is, unwritten.
    pub async fn delete_resource_policy(
        &self,
        backup_id: &str,
        region: &str,
    ) -> Result<Option<String>, CloudHsmError> {
        let _turn = self.records.lock().await;
        let backup = self.backup(backup_id, region)?;
        let Some(previous) = backup.resource_policy.clone() else {
            return Ok(None);
        };
        self.put_backup(backup.apply(BackupOp::DeletePolicy, self.now())?)
            .await?;
        Ok(Some(previous))
    }

    // ---- tags -------------------------------------------------------------------------

    fn tags_of(
        &self,
        resource_id: &str,
        region: &str,
    ) -> Result<BTreeMap<String, String>, CloudHsmError> {
        let state = self.state();
        if let Some(c) = state
            .clusters
            .get(resource_id)
            .filter(|c| c.state != ClusterState::Deleted)
        {
            return Ok(c.tags.clone());
        }
        if let Some(b) = state
            .backups
            .get(resource_id)
            .filter(|b| b.region == region)
        {
            return Ok(b.tags.clone());
        }
        Err(not_found("Resource", resource_id))
    }

    /// Changes a cluster's or a backup's tags with `change`, on the tags as the last change
    /// left them.
    async fn change_tags(
        &self,
        resource_id: &str,
        region: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<(), CloudHsmError> {
        let is_cluster = self
            .state()
            .clusters
            .get(resource_id)
            .is_some_and(|c| c.state != ClusterState::Deleted);
        if is_cluster {
            self.update_cluster(resource_id, vec![], |c| {
                change(&mut c.tags);
                check_tags(&c.tags)
            })
            .await?;
            return Ok(());
        }
        self.tags_of(resource_id, region)?;
        self.change_backup(resource_id, region, |b| {
            let mut b = b.clone();
            change(&mut b.tags);
            check_tags(&b.tags)?;
            Ok(b)
        })
        .await
        .map(|_| ())
    }

    pub fn list_tags(
        &self,
        resource_id: &str,
        region: &str,
    ) -> Result<BTreeMap<String, String>, CloudHsmError> {
        self.tags_of(resource_id, region)
    }

    pub async fn tag(
        &self,
        resource_id: &str,
        region: &str,
        add: BTreeMap<String, String>,
    ) -> Result<(), CloudHsmError> {
        self.change_tags(resource_id, region, |tags| tags.extend(add))
            .await
    }

    pub async fn untag(
        &self,
        resource_id: &str,
        region: &str,
        keys: &[String],
    ) -> Result<(), CloudHsmError> {
        self.change_tags(resource_id, region, |tags| {
            for k in keys {
                tags.remove(k);
            }
        })
        .await
    }

    // ---- periodic work ----------------------------------------------------------------

    /// The service's clockwork, run every tick and after the clock moves: daily backups,
    /// the retention policy, and backups whose 7 days of pending deletion are over.
    pub async fn run_due(self: &Arc<Self>) {
        let pass = self.enter().await;
        let _one_at_a_time = self.jobs.lock().await;
        self.settle_changes(&pass, false).await;
        self.check_activations().await;
        let now = self.now();
        let (due, purges, expired) = {
            let state = self.state();
            let mut due = Vec::new();
            let mut purges = Vec::new();
            for c in state.clusters.values() {
                let mine: Vec<&BackupRecord> = state
                    .backups
                    .values()
                    .filter(|b| b.cluster_id.as_deref() == Some(c.cluster_id.as_str()))
                    .collect();
                if Self::daily_due(&state, &c.cluster_id, now) {
                    due.push(c.cluster_id.clone());
                }
                purges.extend(retention_purges(&mine, c.retention_days, now));
            }
            let expired: Vec<String> = state
                .backups
                .values()
                .filter(|b| deletion_expired(b, now))
                .map(|b| b.backup_id.clone())
                .collect();
            (due, purges, expired)
        };
        for cluster_id in due {
            if self.has_active_hsm(&cluster_id) {
                if let Err(e) = self.take_daily_backup(&cluster_id).await {
                    tracing::warn!(%cluster_id, error = %e, "the daily backup failed");
                }
            }
        }
        for backup_id in purges {
            let Some(region) = self.region_of(&backup_id) else {
                continue;
            };
            let purged = self
                .update_backup(&backup_id, &region, BackupOp::Retire, now)
                .await;
            if purged.is_ok() {
                tracing::info!(%backup_id, "the retention policy deletes a backup");
            }
        }
        for backup_id in expired {
            let Some(region) = self.region_of(&backup_id) else {
                continue;
            };
            let gone = self
                .update_backup(&backup_id, &region, BackupOp::Expire, now)
                .await;
            if gone.is_ok() {
                tracing::info!(%backup_id, "a deleted backup is gone for good");
            }
        }
        self.prune_deleted(now).await;
    }

    /// DELETED backups and clusters that have been listed long enough go from the records
    /// (and a cluster's files with it), so what deleted resources take stays bounded.
    async fn prune_deleted(&self, now: u64) {
        let (backups, clusters) = {
            let _turn = self.records.lock().await;
            let (backups, clusters): (Vec<String>, Vec<String>) = {
                let state = self.state();
                let all: Vec<&BackupRecord> = state.backups.values().collect();
                (
                    all.iter()
                        .filter(|b| backup_prunable(b, now))
                        .map(|b| b.backup_id.clone())
                        .collect(),
                    state
                        .clusters
                        .values()
                        .filter(|c| cluster_prunable(c, &all, now))
                        .map(|c| c.cluster_id.clone())
                        .collect(),
                )
            };
            if backups.is_empty() && clusters.is_empty() {
                return;
            }
            let writes = backups
                .iter()
                .map(|id| Write::delete(Table::Backups, id.clone()))
                .chain(
                    clusters
                        .iter()
                        .map(|id| Write::delete(Table::Clusters, id.clone())),
                )
                .collect();
            if let Err(e) = self.commit(writes).await {
                tracing::warn!(error = %e, "cannot prune deleted clusters and backups; retrying later");
                return;
            }
            let mut state = self.state();
            for id in &backups {
                state.backups.remove(id);
            }
            for id in &clusters {
                state.clusters.remove(id);
            }
            (backups, clusters)
        };
        tracing::info!(
            backups = backups.len(),
            clusters = clusters.len(),
            "deleted resources pruned"
        );
        for cluster_id in clusters {
            let provisioner = self.provisioner.clone();
            let id = cluster_id.clone();
            if let Err(e) = blocking(move || provisioner.purge_cluster(&id)).await {
                tracing::warn!(%cluster_id, error = %e, "cannot remove a pruned cluster's files");
            }
        }
    }

    /// INITIALIZED clusters whose admin has been activated turn ACTIVE, with a backup.
    async fn check_activations(&self) {
        let initialized: Vec<ClusterRecord> = self
            .state()
            .clusters
            .values()
            .filter(|c| c.state == ClusterState::Initialized)
            .cloned()
            .collect();
        for record in initialized {
            let provisioner = self.provisioner.clone();
            let id = record.cluster_id.clone();
            let activated = blocking(move || provisioner.snapshot(&id).map(|s| s.activated)).await;
            if activated != Ok(true) {
                continue;
            }
            let id = record.cluster_id.clone();
            let activated = self
                // Still INITIALIZED: the transition refuses it otherwise.
                .update_cluster(&id, vec![], |r| r.activated())
                .await;
            if activated.is_ok() {
                tracing::info!(cluster_id = %id, "cluster activated: ACTIVE");
                let _ = self.take_backup(&id).await;
            }
        }
    }

    // ---- reports ----------------------------------------------------------------------

    /// The kmsuser-owned key objects of each live cluster whose label `is_kms_key` rejects.
    pub async fn orphans(
        &self,
        is_kms_key: impl Fn(&str) -> bool,
    ) -> Vec<(String, Result<Vec<KeyObject>, String>)> {
        let clusters: Vec<String> = self
            .state()
            .clusters
            .values()
            .filter(|c| c.state != ClusterState::Deleted)
            .map(|c| c.cluster_id.clone())
            .collect();
        let mut out = Vec::new();
        for cluster_id in clusters {
            let has_hsm = self
                .describe(&cluster_id)
                .is_some_and(|(_, hsms)| hsms.iter().any(|h| h.view.state == HsmState::Active));
            if !has_hsm {
                out.push((cluster_id, Ok(vec![])));
                continue;
            }
            let provisioner = self.provisioner.clone();
            let id = cluster_id.clone();
            let keys = blocking(move || provisioner.key_objects(&id)).await;
            let orphans = keys.map(|keys| {
                keys.into_iter()
                    .filter(|k| k.owner == "kmsuser" && !is_kms_key(&k.label))
                    .collect()
            });
            out.push((cluster_id, orphans));
        }
        out
    }
}

/// The record of a cluster the launcher made (on first start, or anew by a reset), which the
/// service adopts as ACTIVE: subnets in the Region's first three zones and its HSMs' zones,
/// a network derived from its id (so the same id always shows the same subnets).
fn adopted(provisioned: &ProvisionedCluster, region: &str) -> ClusterRecord {
    let id = provisioned.cluster_id.clone();
    let mut subnet_zones: BTreeSet<String> = zones(region).into_iter().take(3).collect();
    subnet_zones.extend(provisioned.hsms.iter().map(|h| h.availability_zone.clone()));
    ClusterRecord {
        cluster_id: id.clone(),
        state: ClusterState::Active,
        state_message: String::new(),
        hsm_type: "hsm1.medium".into(),
        created_at_millis: provisioned.created_at_millis,
        vpc_id: synthetic("vpc", &id, 17),
        security_group: synthetic("sg", &format!("{id}/sg"), 17),
        subnet_mapping: subnet_zones
            .into_iter()
            .map(|z| {
                let subnet = synthetic("subnet", &format!("{id}/{z}"), 17);
                (z, subnet)
            })
            .collect(),
        retention_days: DEFAULT_RETENTION_DAYS,
        source_backup_id: None,
        cluster_certificate: Some(provisioned.certificate.clone()),
        trust_anchor: Some(provisioned.certificate.clone()),
        cluster_csr: None,
        tags: BTreeMap::new(),
        hsm_changes: BTreeMap::new(),
        deleted_at_millis: None,
    }
}

/// The ENI id CloudHSM would report for an HSM (stable, derived from its id).
pub fn eni_of(hsm_id: &str) -> String {
    synthetic("eni", hsm_id, 17)
}

fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_retention(days: Option<u32>) -> Result<Option<u32>, CloudHsmError> {
    match days {
        Some(d) if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&d) => {
            Err(CloudHsmError::InvalidRequest(format!(
                "BackupRetentionPolicy Value must be {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days, not {d}."
            )))
        }
        other => Ok(other),
    }
}

/// Tag rules of the model: at most 50, keys 1 to 128 characters, values up to 256.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), CloudHsmError> {
    if tags.len() > 50 {
        return Err(CloudHsmError::Tag(
            "A resource can have at most 50 tags.".into(),
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || k.starts_with("aws:") {
            return Err(CloudHsmError::Tag(format!(
                "Invalid tag key {k:?}: 1 to 128 characters, not starting with aws:."
            )));
        }
        if v.chars().count() > 256 {
            return Err(CloudHsmError::Tag(format!(
                "The value of tag {k:?} is longer than 256 characters."
            )));
        }
    }
    Ok(())
}

impl ClusterDirectory for CloudHsm {
    fn clusters(&self) -> Vec<ClusterView> {
        self.describe_all()
            .into_iter()
            .filter(|(r, _)| r.state != ClusterState::Deleted)
            .map(|(r, hsms)| Self::view(&r, hsms))
            .collect()
    }

    fn cluster(&self, cluster_id: &str) -> Option<ClusterView> {
        self.describe(cluster_id)
            .filter(|(r, _)| r.state != ClusterState::Deleted)
            .map(|(r, hsms)| Self::view(&r, hsms))
    }

    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>> {
        self.provisioner.client_tls(cluster_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_waits_between_attempts_only() {
        // None after the last attempt; the README's "about 3 s" is the sum of the others.
        assert_eq!(settle_backoff(SETTLE_ATTEMPTS - 1), None);
        let total: Duration = (0..SETTLE_ATTEMPTS).filter_map(settle_backoff).sum();
        assert_eq!(total, Duration::from_millis(3_000));
    }
}
