//! The launcher's cluster, as the KMS frontend sees it: a [`ClusterDirectory`] over the cluster
//! in the data directory. The frontend gets views and a TLS configuration, never the files.

use std::sync::Arc;

use kms_frontend::cluster::{ClusterDirectory, ClusterView, HsmView};
use sha2::{Digest, Sha256};

use crate::cluster::ClusterDir;

/// Stable synthetic ids (VPC, subnets, security group) derived from the cluster id, so the
/// same cluster always reports the same network.
fn synthetic(kind: &str, seed: &str, len: usize) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}-{}", &hex[..len])
}

/// The launcher's cluster directory.
#[derive(Debug)]
pub struct LauncherClusters {
    view: ClusterView,
    tls: Arc<rustls::ClientConfig>,
}

impl LauncherClusters {
    pub fn new(cluster: &ClusterDir) -> anyhow::Result<Self> {
        let info = &cluster.info;
        let mut zones: Vec<String> = info
            .hsms
            .iter()
            .map(|h| h.availability_zone.clone())
            .collect();
        zones.sort();
        zones.dedup();
        let view = ClusterView {
            cluster_id: info.cluster_id.clone(),
            state: info.state.clone(),
            hsm_type: "hsm1.medium".into(),
            hsms: info
                .hsms
                .iter()
                .map(|h| HsmView {
                    hsm_id: h.hsm_id.clone(),
                    availability_zone: h.availability_zone.clone(),
                    address: h.address.clone(),
                    state: "ACTIVE".into(),
                })
                .collect(),
            trust_anchor: cluster.trust_anchor()?,
            created_at_millis: info.created_at_millis,
            vpc_id: synthetic("vpc", &info.cluster_id, 17),
            security_group: synthetic("sg", &format!("{}/sg", info.cluster_id), 17),
            subnet_mapping: zones
                .iter()
                .map(|z| {
                    (
                        z.clone(),
                        synthetic("subnet", &format!("{}/{z}", info.cluster_id), 17),
                    )
                })
                .collect(),
            backup_retention_days: 90,
        };
        Ok(Self {
            view,
            tls: cluster.client_tls()?,
        })
    }
}

impl ClusterDirectory for LauncherClusters {
    fn clusters(&self) -> Vec<ClusterView> {
        vec![self.view.clone()]
    }

    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>> {
        (cluster_id == self.view.cluster_id).then(|| self.tls.clone())
    }
}
