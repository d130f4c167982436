//! The CloudHSM service's own records: clusters, backups and their life cycles, as plain data
//! and pure decisions (when a backup is due, which ones the retention policy purges, when a
//! deleted backup is gone for good). The shell that runs them is `crate::cloudhsm`.

pub mod error;
pub mod hsm;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::KeyObject;
use hsm::HsmChange;

/// Backups are taken at least this often (of emulator time), per cluster.
pub const BACKUP_INTERVAL_MILLIS: u64 = 24 * 3600 * 1000;
/// A deleted backup can be restored for this long, then it is gone.
pub const PENDING_DELETION_MILLIS: u64 = 7 * 24 * 3600 * 1000;
/// The retention policy's bounds and default, in days.
pub const MIN_RETENTION_DAYS: u32 = 7;
pub const MAX_RETENTION_DAYS: u32 = 379;
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// HSMs per cluster (a fixed quota of CloudHSM).
pub const MAX_HSMS_PER_CLUSTER: usize = 28;
/// CloudHSM's default account quotas per Region (adjustable on AWS, options here).
pub const DEFAULT_MAX_CLUSTERS: usize = 4;
pub const DEFAULT_MAX_HSMS: usize = 6;
/// Backups that still hold data, every Region together. AWS documents no backup quota; the
/// emulator needs one, since NeverExpires backups, copies (which have no retention policy)
/// and HSMs added and removed in a loop are not bounded by the retention policy.
pub const MAX_BACKUPS: usize = 1_000;
/// How long a DELETED cluster or backup is still listed (emulator time) before it is gone for
/// good, as AWS stops showing deleted resources after a while.
pub const DELETED_RETENTION_MILLIS: u64 = 30 * DAY_MILLIS;
const DAY_MILLIS: u64 = 24 * 3600 * 1000;

/// CloudHSM's `ClusterState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterState {
    CreateInProgress,
    Uninitialized,
    InitializeInProgress,
    Initialized,
    Active,
    UpdateInProgress,
    ModifyInProgress,
    RollbackInProgress,
    DeleteInProgress,
    Deleted,
    Degraded,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::CreateInProgress => "CREATE_IN_PROGRESS",
            ClusterState::Uninitialized => "UNINITIALIZED",
            ClusterState::InitializeInProgress => "INITIALIZE_IN_PROGRESS",
            ClusterState::Initialized => "INITIALIZED",
            ClusterState::Active => "ACTIVE",
            ClusterState::UpdateInProgress => "UPDATE_IN_PROGRESS",
            ClusterState::ModifyInProgress => "MODIFY_IN_PROGRESS",
            ClusterState::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
            ClusterState::DeleteInProgress => "DELETE_IN_PROGRESS",
            ClusterState::Deleted => "DELETED",
            ClusterState::Degraded => "DEGRADED",
        }
    }
}

/// CloudHSM's `BackupState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupState {
    CreateInProgress,
    Ready,
    PendingDeletion,
    Deleted,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::CreateInProgress => "CREATE_IN_PROGRESS",
            BackupState::Ready => "READY",
            BackupState::PendingDeletion => "PENDING_DELETION",
            BackupState::Deleted => "DELETED",
        }
    }
}

/// A cluster as the CloudHSM service keeps it. Its HSMs are the provisioner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub state: ClusterState,
    pub state_message: String,
    pub hsm_type: String,
    pub created_at_millis: u64,
    pub vpc_id: String,
    pub security_group: String,
    /// Availability Zone to subnet id.
    pub subnet_mapping: BTreeMap<String, String>,
    pub retention_days: u32,
    pub source_backup_id: Option<String>,
    /// The certificate the cluster was initialized with (`ClusterCertificate`).
    pub cluster_certificate: Option<String>,
    /// The trust anchor (`customerCA.crt`) clients and KMS check.
    pub trust_anchor: Option<String>,
    /// The certificate signing request of an UNINITIALIZED cluster with an HSM.
    pub cluster_csr: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// HSMs being created or deleted, by HSM id (see [`HsmChange`]).
    pub hsm_changes: BTreeMap<String, HsmChange>,
    /// When the cluster was deleted (DELETED clusters are listed for a while, then pruned).
    pub deleted_at_millis: Option<u64>,
}

/// The account quotas the service enforces (per account and Region, as CloudHSM's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Clusters that are not DELETED.
    pub clusters: usize,
    /// HSMs in every cluster together, those being created or deleted included.
    pub hsms: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            clusters: DEFAULT_MAX_CLUSTERS,
            hsms: DEFAULT_MAX_HSMS,
        }
    }
}

/// A backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub backup_id: String,
    /// The Region it lives in (a copy lives in its destination Region).
    pub region: String,
    /// The cluster it was taken of; `None` for a copy in another Region.
    pub cluster_id: Option<String>,
    /// The cluster whose secrets open it (the one it was taken of, also for copies).
    pub lineage: String,
    pub state: BackupState,
    pub created_at_millis: u64,
    pub delete_at_millis: Option<u64>,
    pub never_expires: bool,
    pub hsm_type: String,
    pub source_region: Option<String>,
    pub source_backup: Option<String>,
    pub source_cluster: Option<String>,
    pub copied_at_millis: Option<u64>,
    pub tags: BTreeMap<String, String>,
    /// The key objects in it (labels, owners, handles), for the backup report.
    pub keys: Vec<KeyObject>,
}

impl BackupRecord {
    /// Whether it still holds its data (it can be restored from, or undeleted).
    pub fn holds_data(&self) -> bool {
        matches!(
            self.state,
            BackupState::Ready | BackupState::PendingDeletion | BackupState::CreateInProgress
        )
    }
}

/// Whether a cluster whose newest backup was taken at `newest` needs one now.
pub fn backup_due(newest: Option<u64>, now: u64) -> bool {
    newest.is_none_or(|t| now.saturating_sub(t) >= BACKUP_INTERVAL_MILLIS)
}

/// The backups of one cluster that its retention policy moves to PENDING_DELETION now: READY,
/// not NeverExpires, older than the policy, and never the cluster's newest backup.
pub fn retention_purges(backups: &[&BackupRecord], retention_days: u32, now: u64) -> Vec<String> {
    let newest = backups
        .iter()
        .filter(|b| b.holds_data())
        .max_by_key(|b| (b.created_at_millis, b.backup_id.clone()))
        .map(|b| b.backup_id.clone());
    let limit = u64::from(retention_days) * DAY_MILLIS;
    backups
        .iter()
        .filter(|b| b.state == BackupState::Ready && !b.never_expires)
        .filter(|b| now.saturating_sub(b.created_at_millis) > limit)
        .filter(|b| Some(&b.backup_id) != newest.as_ref())
        .map(|b| b.backup_id.clone())
        .collect()
}

/// Whether a backup pending deletion is past its 7 days and gone for good.
pub fn deletion_expired(backup: &BackupRecord, now: u64) -> bool {
    backup.state == BackupState::PendingDeletion
        && backup
            .delete_at_millis
            .is_some_and(|t| now.saturating_sub(t) >= PENDING_DELETION_MILLIS)
}

/// Whether a DELETED cluster is gone for good now: deleted for [`DELETED_RETENTION_MILLIS`],
/// and no backup that holds data needs its record (a restore takes the cluster's certificate
/// and trust anchor from it). A record from before `deleted_at_millis` counts from its creation.
pub fn cluster_prunable(cluster: &ClusterRecord, backups: &[&BackupRecord], now: u64) -> bool {
    let since = cluster
        .deleted_at_millis
        .unwrap_or(cluster.created_at_millis);
    cluster.state == ClusterState::Deleted
        && now.saturating_sub(since) >= DELETED_RETENTION_MILLIS
        && !backups
            .iter()
            .any(|b| b.lineage == cluster.cluster_id && b.holds_data())
}

/// Whether a DELETED backup (its data gone 7 days after its deletion) is no longer listed.
pub fn backup_prunable(backup: &BackupRecord, now: u64) -> bool {
    let since = backup.delete_at_millis.unwrap_or(backup.created_at_millis);
    backup.state == BackupState::Deleted
        && now.saturating_sub(since) >= PENDING_DELETION_MILLIS + DELETED_RETENTION_MILLIS
}

/// Whether a backup can be restored (RestoreBackup) now.
pub fn restorable(backup: &BackupRecord, now: u64) -> bool {
    backup.state == BackupState::PendingDeletion && !deletion_expired(backup, now)
}

#[cfg(test)]
mod tests;
