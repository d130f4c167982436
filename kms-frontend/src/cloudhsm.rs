//! The CloudHSM service: clusters, their HSMs and their backups, over the HSMs the launcher
//! provisions. It keeps its records in the frontend's store, takes backups on the emulator's
//! clock (daily, on activation, when an HSM is added or removed), applies the retention policy,
//! and is the [`ClusterDirectory`] KMS sees.
//!
//! Every call into the provisioner blocks (it starts nodes, reads HSMs), so it runs on a
//! blocking thread; the service's own lock is never held across one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use hsmkms_common::clock::Clock;
use hsmkms_common::ids;
use sha2::{Digest, Sha256};

use crate::cluster::{ClusterDirectory, ClusterView, HsmView, KeyObject, Provisioner};
use crate::service::cloudhsm::error::CloudHsmError;
use crate::service::cloudhsm::hsm::{HsmOp, HsmState};
use crate::service::cloudhsm::{
    backup_due, deletion_expired, restorable, retention_purges, BackupRecord, BackupState,
    ClusterRecord, ClusterState, DEFAULT_RETENTION_DAYS, MAX_HSMS_PER_CLUSTER, MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
};
use crate::store::{decode, Loaded, Store, Table, Write};
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

/// An HSM being created or deleted: shown with that state until the provisioner is done.
#[derive(Debug, Clone)]
struct Pending {
    cluster_id: String,
    availability_zone: String,
    state: HsmState,
}

#[derive(Debug, Default)]
struct State {
    clusters: BTreeMap<String, ClusterRecord>,
    backups: BTreeMap<String, BackupRecord>,
    pending: BTreeMap<String, Pending>,
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
    /// Changes to existing cluster and backup records take turns: each reads the record as the
    /// previous change left it, persists, installs, and only then lets the next one read.
    records: tokio::sync::Mutex<()>,
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
    /// Loads the service's records; clusters the provisioner has but the records lack (the
    /// launcher's first cluster) are adopted as ACTIVE.
    pub fn open(
        provisioner: Arc<dyn Provisioner>,
        store: Store,
        loaded: &Loaded,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        region: &str,
    ) -> anyhow::Result<(Self, Vec<Write>)> {
        let mut state = State::default();
        for (id, bytes) in &loaded.clusters {
            state.clusters.insert(id.clone(), decode(bytes)?);
        }
        for (id, bytes) in &loaded.backups {
            state.backups.insert(id.clone(), decode(bytes)?);
        }
        let mut writes = Vec::new();
        for provisioned in provisioner.clusters() {
            if state.clusters.contains_key(&provisioned.cluster_id) {
                continue;
            }
            let id = provisioned.cluster_id.clone();
            let mut subnet_zones: BTreeSet<String> = zones(region).into_iter().take(3).collect();
            subnet_zones.extend(provisioned.hsms.iter().map(|h| h.availability_zone.clone()));
            let record = ClusterRecord {
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
            };
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
            },
            writes,
        ))
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
        let pending = self.state().pending.clone();
        let subnet = |az: &str| record.subnet_mapping.get(az).cloned().unwrap_or_default();
        let mut hsms: Vec<HsmInfo> = provisioned
            .into_iter()
            .map(|h| {
                let state = HsmState::observed(pending.get(&h.hsm_id).map(|p| p.state), h.running);
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
        for (hsm_id, p) in pending.iter() {
            if p.cluster_id == record.cluster_id && !hsms.iter().any(|h| &h.view.hsm_id == hsm_id) {
                hsms.push(HsmInfo {
                    subnet_id: subnet(&p.availability_zone),
                    view: HsmView {
                        hsm_id: hsm_id.clone(),
                        availability_zone: p.availability_zone.clone(),
                        address: String::new(),
                        state: p.state,
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
        let _turn = self.records.lock().await;
        let mut record = self.live_cluster(cluster_id)?;
        let out = change(&mut record)?;
        self.put_cluster(&record, more).await?;
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
    async fn update_backup(
        &self,
        backup_id: &str,
        region: &str,
        change: impl FnOnce(&mut BackupRecord) -> Result<(), CloudHsmError>,
    ) -> Result<BackupRecord, CloudHsmError> {
        let _turn = self.records.lock().await;
        let mut backup = self.backup(backup_id, region)?;
        change(&mut backup)?;
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
                if backup.state != BackupState::Ready {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Backup {id} is {}; a cluster can only be created from a READY backup.",
                        backup.state.as_str()
                    )));
                }
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
        {
            let provisioner = self.provisioner.clone();
            let id = cluster_id.clone();
            let lineage = source.as_ref().map(|b| b.lineage.clone());
            blocking(move || provisioner.create_cluster(&id, lineage.as_deref()))
                .await
                .map_err(CloudHsmError::InternalFailure)?;
        }
        let record = ClusterRecord {
            cluster_id: cluster_id.clone(),
            state: ClusterState::Uninitialized,
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
        self.put_cluster(&record, writes).await?;
        Ok(record)
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

    /// DeleteCluster: only a cluster without HSMs.
    pub async fn delete_cluster(&self, cluster_id: &str) -> Result<ClusterRecord, CloudHsmError> {
        let record = self.live_cluster(cluster_id)?;
        let hsms = self.hsms_of(&record);
        if !hsms.is_empty() {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Cluster {cluster_id} still has {} HSM(s). Delete all HSMs in the cluster before deleting the cluster.",
                hsms.len()
            )));
        }
        {
            let provisioner = self.provisioner.clone();
            let id = cluster_id.to_string();
            blocking(move || provisioner.delete_cluster(&id))
                .await
                .map_err(CloudHsmError::InternalFailure)?;
        }
        let seed = Write::delete(Table::BackupImages, seed_key(cluster_id));
        let (record, ()) = self
            .update_cluster(cluster_id, vec![seed], |r| {
                r.state = ClusterState::Deleted;
                Ok(())
            })
            .await?;
        Ok(record)
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
                if record.state != ClusterState::Uninitialized || record.source_backup_id.is_some() {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Cluster {cluster_id} is {}{}; only an UNINITIALIZED cluster that was not created from a backup can be initialized.",
                        record.state.as_str(),
                        if record.source_backup_id.is_some() { ", created from a backup" } else { "" }
                    )));
                }
                let Some(csr) = record.cluster_csr.clone() else {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Cluster {cluster_id} has no active HSM yet; create one and wait until it is ACTIVE."
                    )));
                };
                hsmkms_common::tls::verify_signed_csr(&csr, signed_cert, trust_anchor).map_err(
                    |e| CloudHsmError::InvalidRequest(format!("Invalid certificates: {e}.")),
                )?;
                record.state = ClusterState::Initialized;
                record.state_message =
                    "Cluster initialized; activate it with `hsm-cli cluster activate`.".into();
                record.cluster_certificate = Some(signed_cert.to_string());
                record.trust_anchor = Some(trust_anchor.to_string());
                Ok(())
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

    /// CreateHsm: answers at once with the HSM CREATE_IN_PROGRESS; the node is provisioned
    /// from the latest backup, starts, catches up with its peers, and turns ACTIVE.
    pub async fn create_hsm(
        self: &Arc<Self>,
        cluster_id: &str,
        availability_zone: &str,
    ) -> Result<HsmInfo, CloudHsmError> {
        let record = self.live_cluster(cluster_id)?;
        let Some(subnet_id) = record.subnet_mapping.get(availability_zone).cloned() else {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Cluster {cluster_id} has no subnet in Availability Zone {availability_zone}; its subnets are in {}.",
                record.subnet_mapping.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let hsms = self.hsms_of(&record);
        if hsms.len() >= MAX_HSMS_PER_CLUSTER {
            return Err(CloudHsmError::ResourceLimitExceeded(format!(
                "Cluster {cluster_id} already has {MAX_HSMS_PER_CLUSTER} HSMs, the most a cluster can have."
            )));
        }
        match record.state {
            ClusterState::Uninitialized if !hsms.is_empty() => {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Cluster {cluster_id} is UNINITIALIZED and already has an HSM; initialize the cluster before adding more."
                )))
            }
            ClusterState::Uninitialized
            | ClusterState::Initialized
            | ClusterState::Active
            | ClusterState::Degraded => {}
            other => {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Cluster {cluster_id} is {}; HSMs cannot be added now.",
                    other.as_str()
                )))
            }
        }
        let hsm_id = ids::new_hsm_id(&mut EntropyRng(self.entropy.as_ref()));
        self.state().pending.insert(
            hsm_id.clone(),
            Pending {
                cluster_id: cluster_id.into(),
                availability_zone: availability_zone.into(),
                state: HsmState::CreateInProgress,
            },
        );
        let service = self.clone();
        let (cluster, hsm, zone) = (
            cluster_id.to_string(),
            hsm_id.clone(),
            availability_zone.to_string(),
        );
        let had_hsms = !hsms.is_empty();
        tokio::spawn(async move {
            service
                .finish_create_hsm(cluster, hsm, zone, had_hsms)
                .await;
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

    async fn finish_create_hsm(
        self: Arc<Self>,
        cluster_id: String,
        hsm_id: String,
        zone: String,
        had_hsms: bool,
    ) {
        let image = match self.latest_image(&cluster_id).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(%cluster_id, error = %e, "cannot read the latest backup");
                None
            }
        };
        let provisioner = self.provisioner.clone();
        let (c, h) = (cluster_id.clone(), hsm_id.clone());
        let created =
            blocking(move || provisioner.create_hsm(&c, &h, &zone, image.as_deref())).await;
        if let Err(e) = created {
            self.state().pending.remove(&hsm_id);
            tracing::error!(%cluster_id, %hsm_id, error = %e, "CreateHsm failed; the HSM is removed");
            return;
        }
        // The cluster's record as the last change left it: a restored cluster turns ACTIVE
        // with its first HSM; a new cluster's first HSM offers the CSR.
        let settled = self
            .update_cluster(&cluster_id, vec![], |record| {
                let restored_activation = record.state == ClusterState::Uninitialized
                    && record.source_backup_id.is_some();
                let backup =
                    restored_activation || (record.state == ClusterState::Active && had_hsms);
                if restored_activation {
                    // A restored cluster is initialized and activated already: its first HSM
                    // brings the backup's users, keys and certificates.
                    record.state = ClusterState::Active;
                } else if record.state == ClusterState::Uninitialized
                    && record.cluster_csr.is_none()
                {
                    match hsmkms_common::tls::cluster_csr(&cluster_id, &hsm_id) {
                        Ok(csr) => record.cluster_csr = Some(csr),
                        Err(e) => {
                            tracing::error!(%cluster_id, error = %e, "cannot make the cluster's CSR")
                        }
                    }
                }
                Ok(backup)
            })
            .await;
        let backup = match settled {
            Ok((_, backup)) => backup,
            Err(e) => {
                tracing::error!(%cluster_id, error = %e, "cannot record the cluster");
                false
            }
        };
        // The cluster's state is settled before the HSM shows ACTIVE.
        self.state().pending.remove(&hsm_id);
        tracing::info!(%cluster_id, %hsm_id, "HSM ACTIVE");
        if backup {
            if let Err(e) = self.take_backup(&cluster_id).await {
                tracing::warn!(%cluster_id, error = %e, "no backup after adding an HSM");
            }
        }
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

    /// DeleteHsm by HSM id, ENI id or ENI IP: a backup first, then the HSM leaves (at once it
    /// is DELETE_IN_PROGRESS and no longer serves KMS), then its node is removed.
    pub async fn delete_hsm(
        self: &Arc<Self>,
        cluster_id: &str,
        hsm_id: Option<&str>,
        eni_id: Option<&str>,
        eni_ip: Option<&str>,
    ) -> Result<String, CloudHsmError> {
        let record = self.live_cluster(cluster_id)?;
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
        let deleting = hsm.view.state.apply(HsmOp::Delete, &hsm.view.hsm_id)?;
        let hsm_id = hsm.view.hsm_id.clone();
        // Deleting an HSM forces a backup, taken while the HSM is still there.
        if record.state == ClusterState::Active {
            if let Err(e) = self.take_backup(cluster_id).await {
                tracing::warn!(%cluster_id, error = %e, "no backup before DeleteHsm");
            }
        }
        self.state().pending.insert(
            hsm_id.clone(),
            Pending {
                cluster_id: cluster_id.into(),
                availability_zone: hsm.view.availability_zone.clone(),
                state: deleting,
            },
        );
        let service = self.clone();
        let (c, h) = (cluster_id.to_string(), hsm_id.clone());
        tokio::spawn(async move {
            let provisioner = service.provisioner.clone();
            let (c2, h2) = (c.clone(), h.clone());
            let deleted = blocking(move || provisioner.delete_hsm(&c2, &h2)).await;
            service.state().pending.remove(&h);
            match deleted {
                Ok(()) => tracing::info!(cluster_id = %c, hsm_id = %h, "HSM deleted"),
                Err(e) => {
                    tracing::error!(cluster_id = %c, hsm_id = %h, error = %e, "DeleteHsm failed")
                }
            }
        });
        Ok(hsm_id)
    }

    /// Fault injection on an HSM (the control API).
    pub async fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        let provisioner = self.provisioner.clone();
        let id = hsm_id.to_string();
        blocking(move || provisioner.set_hsm_running(&id, running)).await
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
        };
        self.commit(vec![
            Write::put(Table::Backups, backup.backup_id.clone(), &backup),
            Write::Put {
                table: Table::BackupImages,
                key: backup.backup_id.clone(),
                value: snapshot.image,
            },
        ])
        .await?;
        tracing::info!(%cluster_id, backup_id = %backup.backup_id, keys = backup.keys.len(), "backup taken");
        self.state()
            .backups
            .insert(backup.backup_id.clone(), backup.clone());
        Ok(backup)
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
        self.update_backup(backup_id, region, |backup| {
            if backup.state != BackupState::Ready {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Backup {backup_id} is {}; only a READY backup can be deleted.",
                    backup.state.as_str()
                )));
            }
            backup.state = BackupState::PendingDeletion;
            backup.delete_at_millis = Some(now);
            Ok(())
        })
        .await
    }

    /// RestoreBackup: a backup pending deletion, within its 7 days, is READY again.
    pub async fn restore_backup(
        &self,
        backup_id: &str,
        region: &str,
    ) -> Result<BackupRecord, CloudHsmError> {
        let now = self.now();
        self.update_backup(backup_id, region, |backup| {
            if !restorable(backup, now) {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Backup {backup_id} is {}; only a backup pending deletion, within 7 days of its deletion, can be restored.",
                    backup.state.as_str()
                )));
            }
            backup.state = BackupState::Ready;
            backup.delete_at_millis = None;
            Ok(())
        })
        .await
    }

    /// ModifyBackupAttributes: NeverExpires.
    pub async fn set_never_expires(
        &self,
        backup_id: &str,
        region: &str,
        never_expires: bool,
    ) -> Result<BackupRecord, CloudHsmError> {
        self.update_backup(backup_id, region, |backup| {
            if backup.state == BackupState::Deleted {
                return Err(CloudHsmError::InvalidRequest(format!(
                    "Backup {backup_id} is DELETED."
                )));
            }
            backup.never_expires = never_expires;
            Ok(())
        })
        .await
    }

    /// CopyBackupToRegion: a copy in another Region, linked to no cluster, without retention.
    pub async fn copy_backup(
        &self,
        backup_id: &str,
        region: &str,
        destination: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<BackupRecord, CloudHsmError> {
        let source = self.backup(backup_id, region)?;
        check_tags(&tags)?;
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
        if source.state != BackupState::Ready {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Backup {backup_id} is {}; only a READY backup can be copied.",
                source.state.as_str()
            )));
        }
        let image = self.image(backup_id).await?;
        let now = self.now();
        let copy = BackupRecord {
            backup_id: ids::new_backup_id(&mut EntropyRng(self.entropy.as_ref())),
            region: destination.into(),
            cluster_id: None,
            lineage: source.lineage.clone(),
            state: BackupState::Ready,
            created_at_millis: now,
            delete_at_millis: None,
            never_expires: false,
            hsm_type: source.hsm_type.clone(),
            source_region: Some(region.into()),
            source_backup: Some(source.backup_id.clone()),
            source_cluster: source.cluster_id.clone(),
            copied_at_millis: Some(now),
            tags,
            keys: source.keys.clone(),
        };
        self.commit(vec![
            Write::put(Table::Backups, copy.backup_id.clone(), &copy),
            Write::Put {
                table: Table::BackupImages,
                key: copy.backup_id.clone(),
                value: image,
            },
        ])
        .await?;
        self.state()
            .backups
            .insert(copy.backup_id.clone(), copy.clone());
        Ok(copy)
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
        self.update_backup(resource_id, region, |b| {
            change(&mut b.tags);
            check_tags(&b.tags)
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
    pub async fn run_due(&self) {
        let _one_at_a_time = self.jobs.lock().await;
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
                if c.state == ClusterState::Active {
                    let newest = mine.iter().map(|b| b.created_at_millis).max();
                    if backup_due(newest, now) {
                        due.push(c.cluster_id.clone());
                    }
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
            let has_running = self
                .describe(&cluster_id)
                .is_some_and(|(_, hsms)| hsms.iter().any(|h| h.view.state == HsmState::Active));
            if has_running {
                if let Err(e) = self.take_backup(&cluster_id).await {
                    tracing::warn!(%cluster_id, error = %e, "the daily backup failed");
                }
            }
        }
        for backup_id in purges {
            let Some(region) = self.region_of(&backup_id) else {
                continue;
            };
            let purged = self
                .update_backup(&backup_id, &region, |b| {
                    // Still READY: a call meanwhile may have deleted or kept it.
                    if b.state == BackupState::Ready && !b.never_expires {
                        b.state = BackupState::PendingDeletion;
                        b.delete_at_millis = Some(now);
                    }
                    Ok(())
                })
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
                .update_backup(&backup_id, &region, |b| {
                    // Still expired: a RestoreBackup meanwhile brings it back instead.
                    if deletion_expired(b, now) {
                        b.state = BackupState::Deleted;
                        b.keys.clear();
                    }
                    Ok(())
                })
                .await;
            if gone.is_ok() {
                tracing::info!(%backup_id, "a deleted backup is gone for good");
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
                .update_cluster(&id, vec![], |r| {
                    if r.state != ClusterState::Initialized {
                        return Err(CloudHsmError::InvalidRequest(
                            "no longer INITIALIZED".into(),
                        ));
                    }
                    r.state = ClusterState::Active;
                    r.state_message = String::new();
                    Ok(())
                })
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
