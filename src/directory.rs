//! The launcher's cluster, as the KMS frontend sees it: a [`ClusterDirectory`] over the cluster
//! in the data directory. The frontend gets views and a TLS configuration, never the files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hsm_node::{NodeHandle, NodeOptions};
use hsmkms_common::clock::Clock;

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

/// In-process HSMs by id, with their node directories: `None` while stopped by a fault.
pub type InProcessNodes = Arc<Mutex<BTreeMap<String, (PathBuf, Option<NodeHandle>)>>>;

/// The launcher's cluster directory.
#[derive(Debug)]
pub struct LauncherClusters {
    view: ClusterView,
    tls: Arc<rustls::ClientConfig>,
    /// The in-process HSMs, for fault injection (absent with `--hsm-processes`).
    nodes: Option<(InProcessNodes, Arc<dyn Clock>)>,
}

impl LauncherClusters {
    pub fn new(
        cluster: &ClusterDir,
        nodes: Option<(InProcessNodes, Arc<dyn Clock>)>,
    ) -> anyhow::Result<Self> {
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
            nodes,
        })
    }
}

impl ClusterDirectory for LauncherClusters {
    fn clusters(&self) -> Vec<ClusterView> {
        let mut view = self.view.clone();
        if let Some((nodes, _)) = &self.nodes {
            let nodes = nodes.lock().unwrap_or_else(|e| e.into_inner());
            for hsm in &mut view.hsms {
                if matches!(nodes.get(&hsm.hsm_id), Some((_, None))) {
                    hsm.state = "DEGRADED".into();
                }
            }
        }
        vec![view]
    }

    fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        let Some((nodes, clock)) = &self.nodes else {
            return Err(
                "fault injection needs in-process HSMs (run without --hsm-processes)".into(),
            );
        };
        let mut nodes = nodes.lock().unwrap_or_else(|e| e.into_inner());
        let Some((dir, handle)) = nodes.get_mut(hsm_id) else {
            return Err(format!("no HSM {hsm_id} runs in this emulator"));
        };
        match (running, handle.is_some()) {
            (false, true) => {
                if let Some(h) = handle.take() {
                    h.shutdown();
                }
            }
            (true, false) => {
                let started = NodeHandle::start(dir, NodeOptions::default(), clock.clone())
                    .map_err(|e| format!("cannot restart {hsm_id}: {e:#}"))?;
                *handle = Some(started);
            }
            _ => {}
        }
        Ok(())
    }

    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>> {
        (cluster_id == self.view.cluster_id).then(|| self.tls.clone())
    }
}
