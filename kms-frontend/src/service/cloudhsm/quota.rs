//! The limits the CloudHSM service enforces, as pure checks on its records: the account quotas
//! CloudHSM has per Region (clusters, HSMs), its fixed HSMs per cluster, and the emulator's own
//! cap on backups. The runtime runs each check in the same turn as the change it allows, so
//! concurrent calls cannot pass a limit together.

use super::error::CloudHsmError;
use super::{BackupRecord, ClusterRecord, ClusterState};

/// HSMs per cluster (a fixed quota of CloudHSM).
pub const MAX_HSMS_PER_CLUSTER: usize = 28;
/// CloudHSM's default account quotas per Region (adjustable on AWS, options here).
pub const DEFAULT_MAX_CLUSTERS: usize = 4;
pub const DEFAULT_MAX_HSMS: usize = 6;
/// Backups that still hold data, every Region together. AWS documents no backup quota; the
/// emulator needs one, since NeverExpires backups, copies (which have no retention policy)
/// and HSMs added and removed in a loop are not bounded by the retention policy.
pub const MAX_BACKUPS: usize = 1_000;

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

impl Quotas {
    /// Whether CreateCluster may add a cluster to `clusters` (every record of the Region):
    /// DELETED ones do not count.
    pub fn admit_cluster<'a>(
        &self,
        clusters: impl IntoIterator<Item = &'a ClusterRecord>,
        region: &str,
    ) -> Result<(), CloudHsmError> {
        let live = clusters
            .into_iter()
            .filter(|c| c.state != ClusterState::Deleted)
            .count();
        if live >= self.clusters {
            return Err(CloudHsmError::Service(format!(
                "Cluster quota exceeded: this account already has {live} clusters in {region}, its quota is {} (delete one, or raise the quota with --max-clusters).",
                self.clusters
            )));
        }
        Ok(())
    }

    /// Whether CreateHsm may add an HSM, given every cluster's record with the number of HSMs
    /// it has (those being created or deleted included): HSMs of DELETED clusters do not count.
    pub fn admit_hsm<'a>(
        &self,
        clusters: impl IntoIterator<Item = (&'a ClusterRecord, usize)>,
        region: &str,
    ) -> Result<(), CloudHsmError> {
        let in_account: usize = clusters
            .into_iter()
            .filter(|(c, _)| c.state != ClusterState::Deleted)
            .map(|(_, hsms)| hsms)
            .sum();
        if in_account >= self.hsms {
            return Err(CloudHsmError::Service(format!(
                "HSM quota exceeded: this account already has {in_account} HSMs in {region}, its quota is {} (delete one, or raise the quota with --max-hsms).",
                self.hsms
            )));
        }
        Ok(())
    }
}

/// Whether one more backup fits [`MAX_BACKUPS`], given every backup (all Regions): only those
/// that still hold data count.
pub fn admit_backup<'a>(
    backups: impl IntoIterator<Item = &'a BackupRecord>,
) -> Result<(), CloudHsmError> {
    let holding = backups.into_iter().filter(|b| b.holds_data()).count();
    if holding >= MAX_BACKUPS {
        return Err(CloudHsmError::Service(format!(
            "Backup limit reached: {holding} backups hold data, the most this emulator keeps is {MAX_BACKUPS}; delete some (DeleteBackup) first."
        )));
    }
    Ok(())
}
