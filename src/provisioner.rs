//! The launcher's side of the CloudHSM service: a [`Provisioner`] over the clusters in the data
//! directory. It creates cluster secrets, provisions and starts HSM nodes (in-process, or as
//! supervised `hsm-node` processes, following the launcher's mode), removes them, and reads
//! backups from them over the node protocol with a node certificate of the cluster's CA.
//! The frontend gets views, images and TLS configurations, never the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hsm_node::backup::{self, Image};
use hsm_node::core::{Entry, Stored};
use hsm_node::{NodeHandle, NodeOptions};
use hsmkms_common::aead::Sealer;
use hsmkms_common::client::NodeClient;
use hsmkms_common::clock::Clock;
use hsmkms_common::tls::{self, CertKind};
use hsmkms_common::wire::{ObjectBody, ObjectId, Request, Role, UserRecord, Version};
use kms_frontend::cluster::{KeyObject, ProvisionedCluster, ProvisionedHsm, Provisioner, Snapshot};

use crate::cluster::{ClusterDir, ClusterSpec, CLUSTERS_DIR};
use crate::supervisor::{NodeProcess, Supervisor};

/// The admin password of a new cluster until `cluster activate` sets one, as CloudHSM's
/// unactivated admin has a default password.
pub const UNACTIVATED_ADMIN_PASSWORD: &str = "password";
/// Deadline of each call the service makes to an HSM.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a new HSM may take to catch up with its peers before CreateHsm fails.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
/// How long an HSM that starts again waits for a running peer to say what it holds: a peer
/// that does not answer by then (stalled) has nothing to catch it up with anyway.
const BASELINE_DEADLINE: Duration = Duration::from_secs(2);

/// How HSMs run: on threads of this process, or as child processes.
pub enum Runner {
    InProcess(Mutex<BTreeMap<String, (PathBuf, Option<NodeHandle>)>>),
    Processes(Supervisor),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runner::InProcess(_) => f.write_str("InProcess"),
            Runner::Processes(_) => f.write_str("Processes"),
        }
    }
}

/// An HSM's id and address.
type HsmAddress = (String, String);

/// One cluster the provisioner keeps.
#[derive(Debug)]
struct Kept {
    dir: ClusterDir,
    certificate: String,
    client_tls: Arc<rustls::ClientConfig>,
    /// A node identity of the cluster's CA: the service reads backups with it.
    service_tls: Arc<rustls::ClientConfig>,
}

impl Kept {
    fn open(dir: ClusterDir) -> Result<Self> {
        let ca = dir.ca()?;
        let service = ca.issue(CertKind::Node, "hsmkms-cloudhsm-service")?;
        Ok(Self {
            certificate: dir.trust_anchor()?,
            client_tls: dir.client_tls()?,
            service_tls: tls::client_config(&ca.identity.cert_pem, &service)?,
            dir,
        })
    }

    fn deleted(&self) -> bool {
        self.dir.info.state == "DELETED"
    }
}

/// The launcher's provisioner.
#[derive(Debug)]
pub struct LauncherProvisioner {
    data_dir: PathBuf,
    host: String,
    clock: Arc<dyn Clock>,
    runner: Runner,
    clusters: Mutex<BTreeMap<String, Kept>>,
    /// Creations and deletions of HSMs and clusters, one at a time (node numbers, ports).
    changes: Mutex<()>,
    /// Fault injection: the process dies in the next HSM deletion once the peers forgot it.
    crash_during_hsm_delete: AtomicBool,
    /// What the launcher's cluster is made from, for a reset to make it again.
    reset_spec: Option<ClusterSpec>,
}

/// Where clusters without a record are set aside (see [`Provisioner::discard_cluster`]).
pub const UNRECORDED_DIR: &str = "clusters-unrecorded";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small runtime for the async parts (provisioning, node calls) of a blocking call.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}

fn seed_user(username: &str, role: Role, password: &str) -> Result<Stored> {
    Ok(Stored {
        id: ObjectId::User(username.into()),
        version: Version {
            counter: 1,
            node: 0,
        },
        entry: Entry::User(Box::new(UserRecord {
            username: username.into(),
            role,
            password_hash: hsm_node::password::hash(password).map_err(anyhow::Error::msg)?,
            failed_logins: 0,
            locked: false,
        })),
    })
}

impl LauncherProvisioner {
    /// Opens every cluster in the data directory and starts its HSMs.
    pub fn start(
        data_dir: &Path,
        host: &str,
        clock: Arc<dyn Clock>,
        runner: Runner,
    ) -> Result<Self> {
        let provisioner = Self {
            data_dir: data_dir.to_path_buf(),
            host: host.to_string(),
            clock,
            runner,
            clusters: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(()),
            crash_during_hsm_delete: AtomicBool::new(false),
            reset_spec: None,
        };
        for dir in ClusterDir::discover(data_dir)? {
            provisioner.start_cluster(dir)?;
        }
        Ok(provisioner)
    }

    /// Lets a reset make the launcher's cluster again from `spec` (without one, a reset of the
    /// clusters is refused).
    pub fn with_reset_spec(mut self, spec: ClusterSpec) -> Self {
        self.reset_spec = Some(spec);
        self
    }

    /// Starts a cluster's HSMs and keeps it.
    fn start_cluster(&self, dir: ClusterDir) -> Result<()> {
        let kept = Kept::open(dir)?;
        // An HSM whose DeleteHsm a stop interrupted never serves again; the service
        // finishes its delete.
        for hsm in kept
            .dir
            .info
            .hsms
            .iter()
            .filter(|h| !h.external && !h.leaving)
        {
            // Each HSM knows its peers' addresses outside its store too, so one whose
            // store is unreadable can rebuild from them.
            let peers: Vec<String> = kept
                .dir
                .info
                .hsms
                .iter()
                .filter(|h| h.hsm_id != hsm.hsm_id && !h.leaving)
                .map(|h| h.address.clone())
                .collect();
            hsm_node::config::add_join(&kept.dir.node_dir(hsm), &peers)?;
            self.start_node(&hsm.hsm_id, &kept.dir.node_dir(hsm))?;
        }
        lock(&self.clusters).insert(kept.dir.info.cluster_id.clone(), kept);
        Ok(())
    }

    /// Stops every HSM this launcher runs, stalled ones included (a reset).
    fn stop_all(&self) {
        match &self.runner {
            Runner::InProcess(nodes) => {
                let all = std::mem::take(&mut *lock(nodes));
                for (_, handle) in all.into_values() {
                    if let Some(handle) = handle {
                        handle.set_stalled(false);
                        handle.shutdown();
                    }
                }
            }
            Runner::Processes(supervisor) => supervisor.remove_all_blocking(),
        }
    }

    /// The rest of a reset once the service's records are durable (see
    /// [`Provisioner::finish_reset`]).
    fn finish_reset_inner(&self) -> Result<()> {
        self.crash_during_hsm_delete.store(false, Ordering::SeqCst);
        self.stop_all();
        lock(&self.clusters).clear();
        crate::reset::switch(&self.data_dir)?;
        // In place: a stop from here on starts the new cluster as it is.
        crate::reset::forget(&self.data_dir)?;
        let dir = ClusterDir::open(&self.data_dir)?;
        self.start_cluster(ClusterDir {
            root: dir.root.clone(),
            info: dir.info.clone(),
        })?;
        block_on(crate::launcher::wait_until_serving(&dir))??;
        self.refresh_addresses()
    }

    /// Takes the addresses the HSMs now listen on from their node directories (see
    /// [`ClusterDir::refresh_addresses`]).
    pub fn refresh_addresses(&self) -> Result<()> {
        for kept in lock(&self.clusters).values_mut().filter(|k| !k.deleted()) {
            kept.dir.refresh_addresses()?;
        }
        Ok(())
    }

    /// Every cluster directory that is not deleted, without its leaving HSMs (for waiting
    /// until they serve).
    pub fn cluster_dirs(&self) -> Vec<ClusterDir> {
        lock(&self.clusters)
            .values()
            .filter(|k| !k.deleted())
            .map(|k| {
                let mut info = k.dir.info.clone();
                info.hsms.retain(|h| !h.leaving);
                ClusterDir {
                    root: k.dir.root.clone(),
                    info,
                }
            })
            .collect()
    }

    fn start_node(&self, hsm_id: &str, dir: &Path) -> Result<()> {
        // A node of a launcher that was killed may still be stopping: let it finish first, so
        // nothing talks to it as if it were the new one.
        hsm_node::config::wait_unlocked(dir, hsm_node::config::LOCK_WAIT)?;
        match &self.runner {
            Runner::InProcess(nodes) => {
                let handle = NodeHandle::start(dir, NodeOptions::default(), self.clock.clone())?;
                lock(nodes).insert(hsm_id.into(), (dir.to_path_buf(), Some(handle)));
            }
            Runner::Processes(supervisor) => supervisor.add(NodeProcess {
                hsm_id: hsm_id.into(),
                node_dir: dir.to_path_buf(),
            }),
        }
        Ok(())
    }

    fn stop_node(&self, hsm_id: &str) {
        match &self.runner {
            Runner::InProcess(nodes) => {
                let removed = lock(nodes).remove(hsm_id);
                if let Some((_, Some(handle))) = removed {
                    handle.shutdown();
                }
            }
            Runner::Processes(supervisor) => supervisor.remove_blocking(hsm_id),
        }
    }

    fn running(&self, hsm_id: &str) -> bool {
        match &self.runner {
            Runner::InProcess(nodes) => matches!(lock(nodes).get(hsm_id), Some((_, Some(_)))),
            Runner::Processes(supervisor) => supervisor.contains(hsm_id),
        }
    }

    /// For an HSM about to start again: what it must hold before it answers (see [`Rejoin`]).
    /// `None` if no cluster has the HSM.
    fn rejoin_baseline(&self, hsm_id: &str) -> Option<Rejoin> {
        let (cluster_id, address) = lock(&self.clusters).values().find_map(|k| {
            let h = k.dir.info.hsms.iter().find(|h| h.hsm_id == hsm_id)?;
            Some((k.dir.info.cluster_id.clone(), h.address.clone()))
        })?;
        let (peers, tls) = self.reachable(&cluster_id).ok()?;
        let peers: Vec<String> = peers
            .into_iter()
            .filter(|(id, _)| id != hsm_id)
            .map(|(_, a)| a)
            .collect();
        let asked = tls.clone();
        let baseline = block_on(async move {
            for address in peers {
                let entries = async {
                    let client =
                        NodeClient::connect(&address, asked.clone(), BASELINE_DEADLINE).await?;
                    Ok::<_, anyhow::Error>(backup::entries(&client, BASELINE_DEADLINE).await?)
                };
                if let Ok(entries) = entries.await {
                    return entries;
                }
            }
            vec![]
        })
        .unwrap_or_default();
        Some(Rejoin {
            address,
            tls,
            baseline,
        })
    }

    /// Stops every HSM (at shutdown).
    pub async fn shutdown(&self) {
        match &self.runner {
            Runner::InProcess(nodes) => {
                let handles: Vec<NodeHandle> = lock(nodes)
                    .values_mut()
                    .filter_map(|(_, h)| h.take())
                    .collect();
                let _ = tokio::task::spawn_blocking(move || {
                    for h in handles {
                        h.shutdown();
                    }
                })
                .await;
            }
            Runner::Processes(supervisor) => supervisor.shutdown().await,
        }
    }

    /// Addresses of the cluster's running HSMs, and the service's TLS configuration.
    fn reachable(&self, cluster_id: &str) -> Result<(Vec<HsmAddress>, Arc<rustls::ClientConfig>)> {
        let clusters = lock(&self.clusters);
        let kept = clusters
            .get(cluster_id)
            .filter(|k| !k.deleted())
            .ok_or_else(|| anyhow!("no cluster {cluster_id}"))?;
        let hsms = kept
            .dir
            .info
            .hsms
            .iter()
            .filter(|h| !h.leaving && (h.external || self.running(&h.hsm_id)))
            .map(|h| (h.hsm_id.clone(), h.address.clone()))
            .collect();
        Ok((hsms, kept.service_tls.clone()))
    }

    /// Reads every object from the first HSM of the cluster that answers.
    fn read_cluster(&self, cluster_id: &str) -> Result<Vec<hsmkms_common::wire::Object>> {
        let (hsms, tls) = self.reachable(cluster_id)?;
        if hsms.is_empty() {
            bail!("cluster {cluster_id} has no running HSM");
        }
        block_on(async move {
            let mut last = anyhow!("no HSM answered");
            for (hsm_id, address) in hsms {
                let read = async {
                    let client = NodeClient::connect(&address, tls.clone(), CALL_DEADLINE).await?;
                    Ok::<_, anyhow::Error>(backup::read_all(&client, CALL_DEADLINE).await?)
                };
                match read.await {
                    Ok(objects) => return Ok(objects),
                    Err(e) => last = e.context(format!("reading {hsm_id}")),
                }
            }
            Err(last)
        })?
    }

    fn create_hsm_inner(
        &self,
        cluster_id: &str,
        hsm_id: &str,
        zone: &str,
        image: Option<&[u8]>,
    ) -> Result<()> {
        let _one_at_a_time = lock(&self.changes);
        let (mut dir, sync) = {
            let clusters = lock(&self.clusters);
            let kept = clusters
                .get(cluster_id)
                .filter(|k| !k.deleted())
                .ok_or_else(|| anyhow!("no cluster {cluster_id}"))?;
            let dir = ClusterDir {
                root: kept.dir.root.clone(),
                info: kept.dir.info.clone(),
            };
            let sync = Sealer::new(&dir.sync_key()?);
            (dir, sync)
        };
        // What a peer holds now: the new HSM is ACTIVE once it holds at least that.
        let (peers, tls) = self.reachable(cluster_id)?;
        let peers: Vec<HsmAddress> = peers.into_iter().filter(|(id, _)| id != hsm_id).collect();
        let baseline: Vec<(ObjectId, Version)> = match peers.first() {
            None => vec![],
            Some((_, address)) => {
                let (address, tls) = (address.clone(), tls.clone());
                block_on(async move {
                    let client = NodeClient::connect(&address, tls, CALL_DEADLINE).await?;
                    Ok::<_, anyhow::Error>(backup::entries(&client, CALL_DEADLINE).await?)
                })??
            }
        };
        let provisioned = dir
            .info
            .hsms
            .iter()
            .find(|h| h.hsm_id == hsm_id && !h.leaving)
            .cloned();
        let entry = match provisioned {
            // Provisioned before a stop interrupted its create: it only needs to run and
            // catch up.
            Some(entry) => entry,
            None => {
                let (seeds, min_node_number) = match image {
                    Some(sealed) => {
                        let image = Image::open(sealed, &sync)?;
                        let min = image.highest_node_number();
                        let members = dir.info.hsms.iter().map(|h| h.hsm_id.clone()).collect();
                        (image.seeds(&sync, &members)?, min)
                    }
                    // No backup yet, but peers: it learns everything from them.
                    None if !peers.is_empty() => (vec![], 0),
                    // The first HSM of a new cluster: only the unactivated admin.
                    None => (
                        vec![seed_user(
                            "admin",
                            Role::CryptoOfficer,
                            UNACTIVATED_ADMIN_PASSWORD,
                        )?],
                        0,
                    ),
                };
                let host = self.host.clone();
                let entry =
                    block_on(dir.provision_hsm(hsm_id, zone, &host, seeds, min_node_number))??;
                if let Some(kept) = lock(&self.clusters).get_mut(cluster_id) {
                    kept.dir.info = dir.info.clone();
                }
                entry
            }
        };
        let node_dir = dir.node_dir(&entry);
        let started = if entry.external || self.running(hsm_id) {
            Ok(())
        } else {
            self.start_node(hsm_id, &node_dir)
        }
        .and_then(|()| wait_caught_up(&entry.address, &tls, &baseline));
        if let Err(e) = started {
            // It never served as a member; take it out again, peers' memberships included.
            self.stop_node(hsm_id);
            if let Err(forget) = self.forget_at_peers(cluster_id, hsm_id) {
                tracing::warn!(%hsm_id, error = %format!("{forget:#}"), "the peers of a failed HSM may still list it");
            }
            if let Some(kept) = lock(&self.clusters).get_mut(cluster_id) {
                let _ = kept.dir.remove_hsm(hsm_id);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Tells one running peer of `hsm_id` to forget it (membership replicates to the others),
    /// so they stop linking to it and count it out of the quorum.
    fn forget_at_peers(&self, cluster_id: &str, hsm_id: &str) -> Result<()> {
        let (others, tls) = self.reachable(cluster_id)?;
        let others: Vec<String> = others
            .into_iter()
            .filter(|(id, _)| id != hsm_id)
            .map(|(_, a)| a)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let id = hsm_id.to_string();
        block_on(async move {
            for address in others {
                let forget = async {
                    let client = NodeClient::connect(&address, tls.clone(), CALL_DEADLINE).await?;
                    client
                        .call(Request::Forget { hsm_id: id.clone() }, CALL_DEADLINE)
                        .await?;
                    Ok::<_, anyhow::Error>(())
                };
                if forget.await.is_ok() {
                    return Ok(());
                }
            }
            Err(anyhow!("no HSM of the cluster took the removal"))
        })?
    }

    fn delete_hsm_inner(&self, cluster_id: &str, hsm_id: &str) -> Result<()> {
        let _one_at_a_time = lock(&self.changes);
        {
            let mut clusters = lock(&self.clusters);
            let Some(kept) = clusters.get_mut(cluster_id) else {
                return Ok(());
            };
            // Gone already: a delete a stop interrupted after its last step.
            if !kept.dir.info.hsms.iter().any(|h| h.hsm_id == hsm_id) {
                return Ok(());
            }
            // Persist, then act: from here on a stop never starts it again.
            kept.dir.mark_leaving(hsm_id)?;
        }
        self.stop_node(hsm_id);
        self.forget_at_peers(cluster_id, hsm_id)?;
        if self.crash_during_hsm_delete.swap(false, Ordering::SeqCst) {
            tracing::error!(%hsm_id, "fault injection: the process dies after the peers forgot the HSM");
            std::process::abort();
        }
        let mut clusters = lock(&self.clusters);
        let kept = clusters
            .get_mut(cluster_id)
            .ok_or_else(|| anyhow!("no cluster {cluster_id}"))?;
        kept.dir.remove_hsm(hsm_id)
    }

    /// Stops a cluster's HSMs and takes it out of the provisioner's clusters.
    fn take_out(&self, cluster_id: &str) -> Option<Kept> {
        let kept = lock(&self.clusters).remove(cluster_id)?;
        for hsm in kept.dir.info.hsms.iter().filter(|h| !h.external) {
            self.stop_node(&hsm.hsm_id);
        }
        Some(kept)
    }
}

/// An HSM starting again: its address, the service's TLS configuration, and the entries a
/// running peer held as it started (none if no peer answered within [`BASELINE_DEADLINE`]: a
/// stalled or stopped peer has nothing to give it).
struct Rejoin {
    address: String,
    tls: Arc<rustls::ClientConfig>,
    baseline: Vec<(ObjectId, Version)>,
}

/// Waits until the node at `address` holds every object of `baseline` at least at its version.
fn wait_caught_up(
    address: &str,
    tls: &Arc<rustls::ClientConfig>,
    baseline: &[(ObjectId, Version)],
) -> Result<()> {
    let started = Instant::now();
    block_on(async {
        loop {
            let entries = async {
                let client = NodeClient::connect(address, tls.clone(), CALL_DEADLINE).await?;
                Ok::<_, anyhow::Error>(backup::entries(&client, CALL_DEADLINE).await?)
            }
            .await;
            if let Ok(entries) = entries {
                let have: BTreeMap<ObjectId, Version> = entries.into_iter().collect();
                let missing = baseline
                    .iter()
                    .filter(|(id, v)| have.get(id).is_none_or(|h| h < v))
                    .count();
                if missing == 0 {
                    return Ok(());
                }
                tracing::debug!(%address, missing, "new HSM catching up");
            }
            if started.elapsed() > CATCH_UP_DEADLINE {
                bail!("the new HSM did not catch up with its peers within {CATCH_UP_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?
}

fn message(e: anyhow::Error) -> String {
    format!("{e:#}")
}

impl Provisioner for LauncherProvisioner {
    fn clusters(&self) -> Vec<ProvisionedCluster> {
        lock(&self.clusters)
            .values()
            .filter(|k| !k.deleted())
            .map(|k| ProvisionedCluster {
                cluster_id: k.dir.info.cluster_id.clone(),
                certificate: k.certificate.clone(),
                created_at_millis: k.dir.info.created_at_millis,
                hsms: k
                    .dir
                    .info
                    .hsms
                    .iter()
                    .map(|h| ProvisionedHsm {
                        hsm_id: h.hsm_id.clone(),
                        availability_zone: h.availability_zone.clone(),
                        address: h.address.clone(),
                        running: !h.leaving && (h.external || self.running(&h.hsm_id)),
                    })
                    .collect(),
                launcher_made: k.dir.root == self.data_dir,
            })
            .collect()
    }

    fn create_cluster(&self, cluster_id: &str, restored_from: Option<&str>) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        let like = match restored_from {
            None => None,
            Some(id) => {
                let clusters = lock(&self.clusters);
                let kept = clusters
                    .get(id)
                    .ok_or_else(|| format!("the secrets of cluster {id} are gone"))?;
                Some(ClusterDir {
                    root: kept.dir.root.clone(),
                    info: kept.dir.info.clone(),
                })
            }
        };
        let root = self.data_dir.join(CLUSTERS_DIR).join(cluster_id);
        let (region, account) = {
            let clusters = lock(&self.clusters);
            clusters
                .values()
                .next()
                .map(|k| (k.dir.info.region.clone(), k.dir.info.account_id.clone()))
                .unwrap_or_default()
        };
        let dir = ClusterDir::create_for_service(
            &root,
            cluster_id,
            like.as_ref(),
            &region,
            &account,
            self.clock.as_ref(),
        )
        .map_err(message)?;
        let kept = Kept::open(dir).map_err(message)?;
        lock(&self.clusters).insert(cluster_id.into(), kept);
        Ok(())
    }

    fn delete_cluster(&self, cluster_id: &str) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        let mut clusters = lock(&self.clusters);
        // Nothing of it here (set aside, or never made): nothing to delete.
        let Some(kept) = clusters.get_mut(cluster_id) else {
            return Ok(());
        };
        if !kept.dir.info.hsms.is_empty() {
            return Err(format!("cluster {cluster_id} still has HSMs"));
        }
        // The secrets stay: backups of the cluster can still be restored into a new cluster.
        kept.dir.info.state = "DELETED".into();
        kept.dir
            .save()
            .map_err(|e| message(e.context("saving the cluster")))?;
        let hsms = kept.dir.root.join("hsms");
        if hsms.exists() {
            let _ = std::fs::remove_dir_all(hsms);
        }
        Ok(())
    }

    fn discard_cluster(&self, cluster_id: &str) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        let root = self.data_dir.join(CLUSTERS_DIR).join(cluster_id);
        if lock(&self.clusters)
            .get(cluster_id)
            .is_some_and(|k| k.dir.root == self.data_dir)
        {
            return Err("the launcher's own cluster is never set aside".into());
        }
        self.take_out(cluster_id);
        if !root.exists() {
            return Ok(());
        }
        // Set aside, not deleted: if kms.redb was replaced by an older copy, the cluster is
        // still there to recover by hand.
        let aside = self
            .data_dir
            .join(UNRECORDED_DIR)
            .join(format!("{cluster_id}-{}", self.clock.now_millis()));
        std::fs::create_dir_all(self.data_dir.join(UNRECORDED_DIR))
            .and_then(|()| std::fs::rename(&root, &aside))
            .map_err(|e| format!("moving {} to {}: {e}", root.display(), aside.display()))?;
        tracing::warn!(%cluster_id, path = %aside.display(), "a cluster without a record is set aside");
        Ok(())
    }

    fn purge_cluster(&self, cluster_id: &str) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        let root = {
            let clusters = lock(&self.clusters);
            let Some(kept) = clusters.get(cluster_id) else {
                return Ok(());
            };
            if !kept.deleted() {
                return Err(format!("cluster {cluster_id} is not deleted"));
            }
            // The launcher's own cluster lives at the data directory's root: its files stay,
            // so the next start does not take the directory for a new one.
            if kept.dir.root == self.data_dir {
                return Ok(());
            }
            kept.dir.root.clone()
        };
        self.take_out(cluster_id);
        std::fs::remove_dir_all(&root).map_err(|e| format!("removing {}: {e}", root.display()))
    }

    fn prepare_reset(&self) -> Result<ProvisionedCluster, String> {
        let _one_at_a_time = lock(&self.changes);
        let spec = self
            .reset_spec
            .as_ref()
            .ok_or("this launcher was started without what a reset makes its cluster from")?;
        let cluster_id = lock(&self.clusters)
            .values()
            .find(|k| k.dir.root == self.data_dir)
            .map(|k| k.dir.info.cluster_id.clone())
            .ok_or("the launcher's cluster is not here")?;
        let made = block_on(crate::reset::prepare(
            &self.data_dir,
            &cluster_id,
            spec,
            self.clock.as_ref(),
        ))
        .and_then(|r| r)
        .map_err(|e| message(e.context("making the cluster anew")))?;
        let certificate = std::fs::read_to_string(
            self.data_dir
                .join(crate::reset::STAGING_DIR)
                .join(crate::cluster::TRUST_ANCHOR_FILE),
        )
        .map_err(|e| format!("reading the new trust anchor: {e}"))?;
        tracing::info!(%cluster_id, "cluster reset decided");
        Ok(ProvisionedCluster {
            cluster_id,
            certificate,
            created_at_millis: made.info.created_at_millis,
            hsms: made
                .info
                .hsms
                .iter()
                .map(|h| ProvisionedHsm {
                    hsm_id: h.hsm_id.clone(),
                    availability_zone: h.availability_zone.clone(),
                    address: h.address.clone(),
                    running: false,
                })
                .collect(),
            launcher_made: true,
        })
    }

    fn finish_reset(&self) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        self.finish_reset_inner()
            .map_err(|e| message(e.context("putting the new cluster in place")))
    }

    fn abandon_reset(&self) -> Result<(), String> {
        let _one_at_a_time = lock(&self.changes);
        crate::reset::abandon(&self.data_dir).map_err(message)
    }

    fn crash_during_next_hsm_delete(&self) -> Result<(), String> {
        self.crash_during_hsm_delete.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn create_hsm(
        &self,
        cluster_id: &str,
        hsm_id: &str,
        availability_zone: &str,
        image: Option<&[u8]>,
    ) -> Result<(), String> {
        self.create_hsm_inner(cluster_id, hsm_id, availability_zone, image)
            .with_context(|| format!("creating {hsm_id}"))
            .map_err(message)
    }

    fn delete_hsm(&self, cluster_id: &str, hsm_id: &str) -> Result<(), String> {
        self.delete_hsm_inner(cluster_id, hsm_id)
            .with_context(|| format!("deleting {hsm_id}"))
            .map_err(message)
    }

    fn snapshot(&self, cluster_id: &str) -> Result<Snapshot, String> {
        let objects = self.read_cluster(cluster_id).map_err(message)?;
        let sync = {
            let clusters = lock(&self.clusters);
            let kept = clusters
                .get(cluster_id)
                .ok_or_else(|| format!("no cluster {cluster_id}"))?;
            Sealer::new(&kept.dir.sync_key().map_err(message)?)
        };
        let activated = objects.iter().any(|o| match &o.body {
            ObjectBody::User(u) => {
                u.username == "admin"
                    && !hsm_node::password::verify(&u.password_hash, UNACTIVATED_ADMIN_PASSWORD)
            }
            _ => false,
        });
        let image = Image {
            cluster_id: cluster_id.into(),
            objects,
        };
        let keys = image
            .keys()
            .into_iter()
            .map(|k| KeyObject {
                handle: k.handle,
                label: k.label,
                owner: k.owner,
            })
            .collect();
        Ok(Snapshot {
            image: image.seal(&sync),
            keys,
            activated,
        })
    }

    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>> {
        lock(&self.clusters)
            .get(cluster_id)
            .map(|k| k.client_tls.clone())
    }

    fn set_hsm_running(&self, hsm_id: &str, running: bool) -> Result<(), String> {
        // A stopped HSM that starts answers (as an HSM CloudHSM reports ACTIVE does) once it
        // serves and holds what a running peer held as it started: a change made while it
        // was down (kmsuser's password, say) is there before KMS logs in on it.
        let rejoin = if running && !self.running(hsm_id) {
            self.rejoin_baseline(hsm_id)
        } else {
            None
        };
        let changed: Result<(), String> = match &self.runner {
            Runner::InProcess(nodes) => {
                let mut nodes = lock(nodes);
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
                        let started =
                            NodeHandle::start(dir, NodeOptions::default(), self.clock.clone())
                                .map_err(|e| format!("cannot restart {hsm_id}: {e:#}"))?;
                        *handle = Some(started);
                    }
                    _ => {}
                }
                Ok(())
            }
            Runner::Processes(supervisor) => {
                // The HSM's node directory, if the emulator runs it (not one being deleted).
                let dir = lock(&self.clusters)
                    .values()
                    .filter(|k| !k.deleted())
                    .find_map(|k| {
                        k.dir
                            .info
                            .hsms
                            .iter()
                            .find(|h| h.hsm_id == hsm_id && !h.external && !h.leaving)
                            .map(|h| k.dir.node_dir(h))
                    })
                    .ok_or_else(|| format!("no HSM {hsm_id} runs in this emulator"))?;
                match (running, supervisor.contains(hsm_id)) {
                    // The process gets SIGTERM and is not restarted until `start`.
                    (false, true) => supervisor.remove_blocking(hsm_id),
                    (true, false) => supervisor.add(NodeProcess {
                        hsm_id: hsm_id.into(),
                        node_dir: dir,
                    }),
                    _ => {}
                }
                Ok(())
            }
        };
        changed?;
        match rejoin {
            Some(r) => wait_caught_up(&r.address, &r.tls, &r.baseline).map_err(message),
            None => Ok(()),
        }
    }

    fn set_hsm_stalled(&self, hsm_id: &str, stalled: bool) -> Result<(), String> {
        let nodes = match &self.runner {
            Runner::InProcess(nodes) => nodes,
            Runner::Processes(supervisor) => return supervisor.set_stalled(hsm_id, stalled),
        };
        let nodes = lock(nodes);
        match nodes.get(hsm_id) {
            Some((_, Some(handle))) => {
                handle.set_stalled(stalled);
                Ok(())
            }
            Some((_, None)) => Err(format!("HSM {hsm_id} is stopped; start it first")),
            None => Err(format!("no HSM {hsm_id} runs in this emulator")),
        }
    }
}
