//! What the frontend knows of CloudHSM clusters: a directory the launcher provides. The frontend
//! never reaches into the launcher's files or the node library; it sees clusters, their HSMs
//! and how to open a TLS connection to them, as a real KMS sees the CloudHSM service.

use std::sync::Arc;

/// One HSM as the cluster directory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmView {
    pub hsm_id: String,
    pub availability_zone: String,
    /// `host:port` of the HSM's listener.
    pub address: String,
    /// CloudHSM's HsmState name: ACTIVE, CREATE_IN_PROGRESS, DEGRADED, DELETE_IN_PROGRESS, ...
    pub state: String,
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
        self.hsms.iter().filter(|h| h.state == "ACTIVE").collect()
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

/// The clusters the frontend can use.
pub trait ClusterDirectory: Send + Sync + std::fmt::Debug {
    /// Every cluster of the account and Region.
    fn clusters(&self) -> Vec<ClusterView>;

    /// One cluster by id.
    fn cluster(&self, cluster_id: &str) -> Option<ClusterView> {
        self.clusters()
            .into_iter()
            .find(|c| c.cluster_id == cluster_id)
    }

    /// The TLS configuration for talking to a cluster's HSMs (its CA, a client certificate).
    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>>;

    /// Fault injection: stops (`running = false`) or restarts an HSM. A stopped HSM is
    /// DEGRADED and unreachable, as a failed HSM is. Blocks until done.
    fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        let _ = (hsm_id, running);
        Err("this cluster does not support fault injection".into())
    }
}
