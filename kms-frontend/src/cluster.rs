//! What the frontend knows of CloudHSM clusters. KMS sees a [`ClusterDirectory`]: clusters, their
//! HSMs and how to open a TLS connection to them, as a real KMS sees the CloudHSM service. The
//! CloudHSM service runs HSMs through a [`Provisioner`] the launcher implements. The frontend
//! never reaches into the launcher's files or the node library.

use std::sync::Arc;

pub use crate::service::cloudhsm::hsm::HsmState;

/// One HSM as the cluster directory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmView {
    pub hsm_id: String,
    pub availability_zone: String,
    /// `host:port` of the HSM's listener.
    pub address: String,
    /// CloudHSM's HsmState.
    pub state: HsmState,
}

/// One cluster as the directory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    /// CloudHSM's ClusterState name: ACTIVE, UNINITIALIZED, ...
    pub state: String,
    pub hsm_type: String,
    pub hsms: Vec<HsmView>,
    /// The trust anchor (`customerCA.crt`), PEM.
    pub trust_anchor: String,
    pub created_at_millis: u64,
    pub vpc_id: String,
    pub security_group: String,
    /// Availability Zone to subnet id.
    pub subnet_mapping: Vec<(String, String)>,
    pub backup_retention_days: u32,
}

impl ClusterView {
    /// HSMs in the ACTIVE state.
    pub fn active_hsms(&self) -> Vec<&HsmView> {
        self.hsms
            .iter()
            .filter(|h| h.state == HsmState::Active)
            .collect()
    }

    /// Whether it has active HSMs in at least two Availability Zones, as KMS requires for
    /// creating keys and key stores.
    pub fn has_two_zones(&self) -> bool {
        let mut zones: Vec<&str> = self
            .active_hsms()
            .iter()
            .map(|h| h.availability_zone.as_str())
            .collect();
        zones.sort();
        zones.dedup();
        zones.len() >= 2
    }
}

/// The clusters KMS can use, as the CloudHSM service describes them.
pub trait ClusterDirectory: Send + Sync + std::fmt::Debug {
    /// Every cluster of the account and Region that is not deleted.
    fn clusters(&self) -> Vec<ClusterView>;

    /// One cluster by id.
    fn cluster(&self, cluster_id: &str) -> Option<ClusterView> {
        self.clusters()
            .into_iter()
            .find(|c| c.cluster_id == cluster_id)
    }

    /// The TLS configuration for talking to a cluster's HSMs (its CA, a client certificate).
    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>>;
}

/// A key object a cluster or a backup holds, without its material.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyObject {
    pub handle: u64,
    pub label: String,
    pub owner: String,
}

/// A backup as the provisioner takes it: a sealed image (opaque to the frontend) and the key
/// objects in it, for the reports.
#[derive(Debug)]
pub struct Snapshot {
    pub image: Vec<u8>,
    pub keys: Vec<KeyObject>,
    /// Whether the cluster's admin has been activated (`cluster activate`).
    pub activated: bool,
}

/// An HSM the provisioner runs (or ran: a stopped one is `running: false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedHsm {
    pub hsm_id: String,
    pub availability_zone: String,
    pub address: String,
    pub running: bool,
}

/// A cluster whose secrets and HSMs the provisioner keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedCluster {
    pub cluster_id: String,
    /// The certificate of the cluster's CA: what clusters that share a backup history share.
    pub certificate: String,
    pub created_at_millis: u64,
    pub hsms: Vec<ProvisionedHsm>,
    /// Made by the launcher itself on first start, not through CreateCluster: the service
    /// adopts it as ACTIVE when it has no record of it. Any other cluster exists only through
    /// its record.
    pub launcher_made: bool,
}

/// What the CloudHSM service asks of the host that runs HSMs (the launcher: in-process nodes
/// or `hsm-node` processes). Every call may block for a while; the frontend calls them off its
/// HTTP workers. Errors are plain messages for the log and the state message.
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    /// Every cluster it keeps, with its HSMs.
    fn clusters(&self) -> Vec<ProvisionedCluster>;

    /// Creates a cluster's secrets: a CA, a synchronisation key, a client identity. With
    /// `restored_from`, the new cluster shares that cluster's CA and synchronisation key, as a
    /// cluster created from one of its backups does; without, it gets its own.
    fn create_cluster(&self, cluster_id: &str, restored_from: Option<&str>) -> Result<(), String>;

    /// Removes a cluster that has no HSMs left.
    fn delete_cluster(&self, cluster_id: &str) -> Result<(), String>;

    /// Sets aside the files of a cluster that no record backs (a CreateCluster that never
    /// finished), stopping its HSMs if it has any, so it never serves; nothing is destroyed.
    fn discard_cluster(&self, cluster_id: &str) -> Result<(), String>;

    /// Removes the files of a deleted cluster for good, once nothing can be restored from it.
    fn purge_cluster(&self, cluster_id: &str) -> Result<(), String>;

    /// Provisions and starts a new HSM from `image` (the latest backup, or none for the first
    /// HSM of a new cluster), and returns once it has caught up with its peers. An HSM already
    /// provisioned (a create that a stop interrupted) is only started and waited for, so the
    /// service can finish an interrupted create by asking again. On failure the HSM is gone.
    fn create_hsm(
        &self,
        cluster_id: &str,
        hsm_id: &str,
        availability_zone: &str,
        image: Option<&[u8]>,
    ) -> Result<(), String>;

    /// Stops an HSM, removes it from the cluster's membership and deletes its files; an HSM
    /// that is already gone is fine, so an interrupted delete finishes by asking again.
    fn delete_hsm(&self, cluster_id: &str, hsm_id: &str) -> Result<(), String>;

    /// Takes a backup from a running HSM of the cluster.
    fn snapshot(&self, cluster_id: &str) -> Result<Snapshot, String>;

    /// The key objects of a running HSM of the cluster (no image).
    fn key_objects(&self, cluster_id: &str) -> Result<Vec<KeyObject>, String> {
        self.snapshot(cluster_id).map(|s| s.keys)
    }

    /// The client TLS configuration for the cluster's HSMs.
    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>>;

    /// A reset of the CloudHSM side (`POST /_hsmkms/reset {"cluster": true}`), step one: makes
    /// the launcher's cluster anew beside the old one, as a first start makes it (its HSMs,
    /// only the users a first start has, with their initial passwords, no keys; its id kept),
    /// and records the decision durably: from here on a restart finishes the reset rather than
    /// serving a mix. Returns the new cluster (its HSMs not running yet). Nothing that serves
    /// changes yet.
    fn prepare_reset(&self) -> Result<ProvisionedCluster, String> {
        Err("this emulator cannot reset its clusters".into())
    }

    /// Step two, once the service's records of the reset are durable: stops every HSM of every
    /// cluster, puts the new cluster's files in place of all the clusters' files (other
    /// clusters, backups' leftovers and orphaned material go with them), starts the new HSMs,
    /// waits until they serve, and forgets the decision.
    fn finish_reset(&self) -> Result<(), String> {
        Err("this emulator cannot reset its clusters".into())
    }

    /// Undoes a prepared reset whose records could not be stored: the new files go, and the
    /// clusters serve on as they were.
    fn abandon_reset(&self) -> Result<(), String> {
        Ok(())
    }

    /// Fault injection: stops (`running = false`) or restarts an HSM. A stopped HSM is
    /// DEGRADED and unreachable, as a failed HSM is.
    fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        let _ = (hsm_id, running);
        Err("this emulator does not support fault injection".into())
    }

    /// Fault injection: the process dies during the next HSM deletion, once the HSM's peers
    /// have forgotten it and before the cluster's files say it is gone.
    fn crash_during_next_hsm_delete(&self) -> Result<(), String> {
        Err("this emulator does not support fault injection".into())
    }

    /// Fault injection: stalls an HSM (`stalled = true`): alive and ACTIVE, its connections
    /// open, but it answers nothing until it runs again, as a process under SIGSTOP.
    fn set_hsm_stalled(&self, hsm_id: &str, stalled: bool) -> Result<(), String> {
        let _ = (hsm_id, stalled);
        Err("this emulator does not support fault injection".into())
    }
}
