//! The CloudHSM service's own records: clusters, backups and their life cycles, as plain data
//! and pure decisions (when a backup is due, which ones the retention policy purges, when a
//! deleted backup is gone for good). The shell that runs them is `crate::cloudhsm`.
//!
//! # Layout
//!
//! - [`cluster`]: a cluster's record and its state machine (`ClusterState::apply`), and what
//!   each event (CreateHsm done, DeleteCluster, InitializeCluster, ...) changes in the record.
//! - [`hsm`]: an HSM's state machine and the record of an HSM being created or deleted.
//! - [`backup`]: a backup's state machine (`BackupRecord::apply`).
//! - [`quota`]: the account quotas and the backup cap, checked on the records.
//! - [`resource_policy`]: the ARN and policy document of the resource policy operations.
//! - here: backups, their retention and the pruning of deleted resources.

pub mod backup;
pub mod cluster;
pub mod error;
pub mod hsm;
pub mod quota;
pub mod resource_policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::KeyObject;
pub use backup::{BackupOp, Use};
pub use cluster::{ClusterOp, ClusterRecord, ClusterState, HsmCreated, Unfinished};
pub use quota::{
    Quotas, DEFAULT_MAX_CLUSTERS, DEFAULT_MAX_HSMS, MAX_BACKUPS, MAX_HSMS_PER_CLUSTER,
};

/// Backups are taken at least this often (of emulator time), per cluster.
pub const BACKUP_INTERVAL_MILLIS: u64 = 24 * 3600 * 1000;
/// A deleted backup can be restored for this long, then it is gone.
pub const PENDING_DELETION_MILLIS: u64 = 7 * 24 * 3600 * 1000;
/// The retention policy's bounds and default, in days.
pub const MIN_RETENTION_DAYS: u32 = 7;
pub const MAX_RETENTION_DAYS: u32 = 379;
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// How long a DELETED cluster or backup is still listed (emulator time) before it is gone for
/// good, as AWS stops showing deleted resources after a while.
pub const DELETED_RETENTION_MILLIS: u64 = 30 * DAY_MILLIS;
const DAY_MILLIS: u64 = 24 * 3600 * 1000;

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
    /// Its resource policy (PutResourcePolicy), as the caller sent it. It stays while the
    /// backup is pending deletion (a RestoreBackup gives back the backup as it was) and goes
    /// with the backup's data. Stored last: older records end before it (see
    /// `crate::cloudhsm::stored`).
    pub resource_policy: Option<String>,
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

/// Whether the daily clockwork takes a backup of `cluster` now, given when its newest backup
/// was taken and whether the backup of an HSM change of it is still to come (`hsm_backup_owed`:
/// an HSM was added and its backup is being taken). As on CloudHSM, a backup is taken when an
/// HSM is added or removed and at least once a day: the clockwork backs up only an ACTIVE
/// cluster with no HSM being added or removed and no such backup owed (that change takes one
/// of its own, which counts as the day's), and none taken for a day. The shell asks twice: to
/// plan a backup, and again as it records it, so a change that started or a backup that
/// landed meanwhile makes it skip the day's rather than add a second.
pub fn daily_backup_due(
    cluster: &ClusterRecord,
    newest: Option<u64>,
    hsm_backup_owed: bool,
    now: u64,
) -> bool {
    cluster.state == ClusterState::Active
        && cluster.hsm_changes.is_empty()
        && !hsm_backup_owed
        && backup_due(newest, now)
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
