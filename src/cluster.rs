//! The launcher's cluster: created once in the data directory, reopened on every later start.
//!
//! ```text
//! <data-dir>/cluster.json       the cluster's description: id, region, HSMs and their homes
//! <data-dir>/customerCA.crt     the cluster's trust anchor (what KMS and clients check)
//! <data-dir>/cluster/ca.key     the CA's private key                     (mode 0600)
//! <data-dir>/cluster/sync.key   the key that wraps material between HSMs  (mode 0600)
//! <data-dir>/cluster/client.*   the client identity of the frontend and the CLI
//! <data-dir>/hsms/<hsm-id>/     one node directory per HSM
//! <data-dir>/clusters/<id>/     every later cluster (CreateCluster), laid out the same way
//! ```

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hsm_node::config::{self as node_config, NodeConfig};
use hsm_node::core::{Entry, Stored};
use hsmkms_common::clock::Clock;
use hsmkms_common::ids;
use hsmkms_common::keyfile;
use hsmkms_common::secret::{KeyMaterial, SecretString};
use hsmkms_common::tls::{self, CertKind, ClusterCa, Identity};
use hsmkms_common::wire::{MemberRecord, ObjectId, Role, UserRecord, Version};
use serde::{Deserialize, Serialize};

pub const CLUSTER_FILE: &str = "cluster.json";
pub const TRUST_ANCHOR_FILE: &str = "customerCA.crt";
const CA_KEY_FILE: &str = "cluster/ca.key";
const SYNC_KEY_FILE: &str = "cluster/sync.key";
const CLIENT_CERT_FILE: &str = "cluster/client.crt";
const CLIENT_KEY_FILE: &str = "cluster/client.key";
/// Where clusters after the first live, one directory each.
pub const CLUSTERS_DIR: &str = "clusters";

/// One HSM of the cluster, as the launcher records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmEntry {
    pub hsm_id: String,
    pub availability_zone: String,
    pub address: String,
    pub node_number: u32,
    /// The node directory, relative to the data directory.
    pub dir: PathBuf,
    /// Provisioned for another host (`hsmkms add-hsm`); the launcher does not start it.
    #[serde(default)]
    pub external: bool,
    /// Being deleted (DeleteHsm): recorded before its node is stopped and its peers forget it,
    /// so a launcher that stops midway never starts it again; the service finishes the delete.
    #[serde(default)]
    pub leaving: bool,
}

/// The cluster's description, kept in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub region: String,
    pub account_id: String,
    pub state: String,
    pub created_at_millis: u64,
    pub hsms: Vec<HsmEntry>,
    /// The highest node number any HSM of the cluster ever had: a deleted HSM's number is
    /// never reused, so its key handles stay unique.
    #[serde(default)]
    pub highest_node_number: u32,
}

/// What a new cluster is made with.
#[derive(Debug)]
pub struct ClusterSpec {
    pub region: String,
    pub account_id: String,
    pub hsms: usize,
    pub admin_password: SecretString,
    pub kmsuser_password: SecretString,
    /// Host the HSM listeners bind (loopback by default).
    pub host: String,
}

impl ClusterSpec {
    /// The same spec, its passwords copied (a reset makes the cluster again from it).
    pub fn duplicate(&self) -> Self {
        Self {
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            hsms: self.hsms,
            admin_password: self.admin_password.duplicate(),
            kmsuser_password: self.kmsuser_password.duplicate(),
            host: self.host.clone(),
        }
    }
}

/// An opened cluster directory.
#[derive(Debug)]
pub struct ClusterDir {
    pub root: PathBuf,
    pub info: ClusterInfo,
}

/// The Availability Zone of the `i`-th HSM: `a`, `b`, `c`, ... of the region, round robin.
pub fn availability_zone(region: &str, i: usize) -> String {
    let letters = b"abcdef";
    format!("{region}{}", letters[i % letters.len()] as char)
}

/// A free port for an HSM's listener, below the kernel's ephemeral range (the source ports of
/// outgoing connections), so no connection this machine opens can take an HSM's recorded port
/// while it restarts. The port is recorded in the cluster's description, so the HSM keeps it
/// across restarts.
pub fn free_port(host: &str) -> Result<u16> {
    use rand::Rng;
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000u16;
    if ephemeral_start > low + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1_000 {
            let port = rng.gen_range(low..ephemeral_start);
            if TcpListener::bind((host, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((host, 0))?.local_addr()?.port())
}

fn check_password(what: &str, password: &SecretString, alphanumeric: bool) -> Result<()> {
    let p = password.expose();
    if !(7..=32).contains(&p.len()) {
        bail!("the {what} password must be 7 to 32 characters");
    }
    if alphanumeric && !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("the {what} password must be letters and digits only, as KMS requires of kmsuser");
    }
    Ok(())
}

fn seed(id: ObjectId, entry: Entry) -> Stored {
    // Founding objects carry the lowest version, so any later change wins over them.
    Stored {
        id,
        version: Version {
            counter: 1,
            node: 0,
        },
        entry,
    }
}

impl ClusterDir {
    /// Opens the cluster in `root`, creating it first if there is none.
    pub async fn open_or_create(
        root: &Path,
        spec: &ClusterSpec,
        clock: &dyn Clock,
    ) -> Result<Self> {
        if root.join(CLUSTER_FILE).exists() {
            return Self::open(root);
        }
        Self::create(root, spec, clock).await
    }

    /// Opens an existing cluster directory.
    pub fn open(root: &Path) -> Result<Self> {
        let path = root.join(CLUSTER_FILE);
        let info: ClusterInfo = serde_json::from_str(
            &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            info,
        })
    }

    /// Creates an initialized, ACTIVE cluster: CA, sync key, client identity, users `admin`
    /// and `kmsuser`, and `spec.hsms` node directories.
    pub async fn create(root: &Path, spec: &ClusterSpec, clock: &dyn Clock) -> Result<Self> {
        let cluster_id = ids::new_cluster_id(&mut rand::thread_rng());
        Self::create_as(root, &cluster_id, spec, clock).await
    }

    /// [`ClusterDir::create`] with a given cluster id (a reset keeps the launcher's).
    pub async fn create_as(
        root: &Path,
        cluster_id: &str,
        spec: &ClusterSpec,
        clock: &dyn Clock,
    ) -> Result<Self> {
        let cluster_id = cluster_id.to_string();
        check_password("admin", &spec.admin_password, false)?;
        check_password("kmsuser", &spec.kmsuser_password, true)?;
        if spec.hsms == 0 || spec.hsms > 28 {
            bail!("a cluster holds 1 to 28 HSMs, not {}", spec.hsms);
        }
        // Leftovers of a creation that was interrupted before `cluster.json` was written: no
        // HSM ever served from them, so nothing acknowledged is lost by starting afresh.
        for leftover in ["cluster", "hsms", CLUSTERS_DIR] {
            let path = root.join(leftover);
            if path.exists() {
                tracing::warn!(path = %path.display(), "removing an unfinished cluster");
                fs::remove_dir_all(&path)?;
            }
        }
        fs::create_dir_all(root.join("cluster"))
            .with_context(|| format!("creating {}", root.display()))?;
        let mut rng = rand::thread_rng();
        let ca = ClusterCa::generate(&cluster_id)?;
        let sync_key = KeyMaterial::generate();
        write_secrets(root, &ca, &sync_key)?;

        let hsms: Vec<HsmEntry> = (0..spec.hsms)
            .map(|i| {
                let hsm_id = ids::new_hsm_id(&mut rng);
                Ok(HsmEntry {
                    address: format!("{}:{}", spec.host, free_port(&spec.host)?),
                    availability_zone: availability_zone(&spec.region, i),
                    node_number: i as u32 + 1,
                    dir: PathBuf::from("hsms").join(&hsm_id),
                    hsm_id,
                    external: false,
                    leaving: false,
                })
            })
            .collect::<Result<_>>()?;

        let admin_hash =
            hsm_node::password::hash(spec.admin_password.expose()).map_err(anyhow::Error::msg)?;
        let kmsuser_hash =
            hsm_node::password::hash(spec.kmsuser_password.expose()).map_err(anyhow::Error::msg)?;
        let mut seeds = vec![
            seed(
                ObjectId::User("admin".into()),
                Entry::User(Box::new(UserRecord {
                    username: "admin".into(),
                    role: Role::CryptoOfficer,
                    password_hash: admin_hash,
                    failed_logins: 0,
                    locked: false,
                })),
            ),
            seed(
                ObjectId::User("kmsuser".into()),
                Entry::User(Box::new(UserRecord {
                    username: "kmsuser".into(),
                    role: Role::CryptoUser,
                    password_hash: kmsuser_hash,
                    failed_logins: 0,
                    locked: false,
                })),
            ),
        ];
        seeds.extend(hsms.iter().map(|h| {
            seed(
                ObjectId::Member(h.hsm_id.clone()),
                Entry::Member(Box::new(member(h))),
            )
        }));
        for hsm in &hsms {
            let config = NodeConfig {
                cluster_id: cluster_id.clone(),
                hsm_id: hsm.hsm_id.clone(),
                availability_zone: hsm.availability_zone.clone(),
                listen: hsm.address.clone(),
                advertise: hsm.address.clone(),
                node_number: hsm.node_number,
                join: vec![],
            };
            node_config::provision(&root.join(&hsm.dir), &config, &ca, &sync_key, seeds.clone())
                .await?;
        }
        let info = ClusterInfo {
            cluster_id,
            region: spec.region.clone(),
            account_id: spec.account_id.clone(),
            state: "ACTIVE".into(),
            created_at_millis: clock.now_millis(),
            highest_node_number: hsms.len() as u32,
            hsms,
        };
        let dir = Self {
            root: root.to_path_buf(),
            info,
        };
        // Written last: a directory without it holds no cluster, and the next start recreates.
        dir.save()?;
        Ok(dir)
    }

    /// Writes `cluster.json` (atomically, through a temporary file).
    pub fn save(&self) -> Result<()> {
        let tmp = self.root.join(format!("{CLUSTER_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(&self.info)?)?;
        fs::rename(&tmp, self.root.join(CLUSTER_FILE))?;
        Ok(())
    }

    /// Takes the addresses the launcher's HSMs advertise from their node directories (an HSM
    /// whose port was taken listens on another and records it there), and saves the cluster
    /// if one moved. Returns whether one did.
    pub fn refresh_addresses(&mut self) -> Result<bool> {
        let mut moved = false;
        for i in 0..self.info.hsms.len() {
            if self.info.hsms[i].external {
                continue;
            }
            let dir = self.node_dir(&self.info.hsms[i]);
            if let Ok(address) = node_config::advertised_address(&dir) {
                if address != self.info.hsms[i].address {
                    tracing::info!(hsm_id = %self.info.hsms[i].hsm_id, from = %self.info.hsms[i].address, to = %address, "an HSM moved to another port");
                    self.info.hsms[i].address = address;
                    moved = true;
                }
            }
        }
        if moved {
            self.save()?;
        }
        Ok(moved)
    }

    /// The node directory of an HSM.
    pub fn node_dir(&self, hsm: &HsmEntry) -> PathBuf {
        self.root.join(&hsm.dir)
    }

    /// The cluster's trust anchor certificate, in PEM.
    pub fn trust_anchor(&self) -> Result<String> {
        Ok(fs::read_to_string(self.root.join(TRUST_ANCHOR_FILE))?)
    }

    /// The client identity (frontend, CLI) and its TLS configuration.
    pub fn client_tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        let identity = Identity {
            cert_pem: fs::read_to_string(self.root.join(CLIENT_CERT_FILE))?,
            key_pem: keyfile::read_secret_text(&self.root.join(CLIENT_KEY_FILE))?,
        };
        Ok(tls::client_config(&self.trust_anchor()?, &identity)?)
    }

    /// The cluster's CA, to issue certificates with.
    pub fn ca(&self) -> Result<ClusterCa> {
        Ok(ClusterCa {
            identity: Identity {
                cert_pem: self.trust_anchor()?,
                key_pem: keyfile::read_secret_text(&self.root.join(CA_KEY_FILE))?,
            },
        })
    }

    /// The cluster's synchronisation key.
    pub fn sync_key(&self) -> Result<KeyMaterial> {
        Ok(keyfile::read_key(&self.root.join(SYNC_KEY_FILE))?)
    }

    /// A node number no HSM of the cluster has, above `at_least`.
    fn next_node_number(&mut self, at_least: u32) -> u32 {
        let next = self
            .info
            .hsms
            .iter()
            .map(|h| h.node_number)
            .max()
            .unwrap_or(0)
            .max(at_least)
            .max(self.info.highest_node_number)
            + 1;
        self.info.highest_node_number = next;
        next
    }

    /// Provisions a node directory for a new HSM of the cluster service (CreateHsm) in
    /// `hsms/<hsm-id>`, starting from `seeds` and joining the cluster's other HSMs, and
    /// records it. `min_node_number` keeps its handles clear of those in the seeds.
    pub async fn provision_hsm(
        &mut self,
        hsm_id: &str,
        availability_zone: &str,
        host: &str,
        seeds: Vec<Stored>,
        min_node_number: u32,
    ) -> Result<HsmEntry> {
        let address = format!("{host}:{}", free_port(host)?);
        let entry = HsmEntry {
            hsm_id: hsm_id.to_string(),
            availability_zone: availability_zone.to_string(),
            address: address.clone(),
            node_number: self.next_node_number(min_node_number),
            dir: PathBuf::from("hsms").join(hsm_id),
            external: false,
            leaving: false,
        };
        let config = NodeConfig {
            cluster_id: self.info.cluster_id.clone(),
            hsm_id: hsm_id.to_string(),
            availability_zone: availability_zone.to_string(),
            listen: address.clone(),
            advertise: address,
            node_number: entry.node_number,
            join: self.info.hsms.iter().map(|h| h.address.clone()).collect(),
        };
        let dir = self.node_dir(&entry);
        if dir.exists() {
            // Leftovers of a provisioning that was interrupted: nothing ever served from them.
            fs::remove_dir_all(&dir)?;
        }
        node_config::provision(&dir, &config, &self.ca()?, &self.sync_key()?, seeds).await?;
        self.info.hsms.push(entry.clone());
        self.save()?;
        Ok(entry)
    }

    /// Records that an HSM is leaving (DeleteHsm has begun), before anything else happens to it.
    pub fn mark_leaving(&mut self, hsm_id: &str) -> Result<()> {
        if let Some(entry) = self.info.hsms.iter_mut().find(|h| h.hsm_id == hsm_id) {
            if !entry.leaving {
                entry.leaving = true;
                self.save()?;
            }
        }
        Ok(())
    }

    /// Forgets an HSM (DeleteHsm) and deletes its node directory.
    pub fn remove_hsm(&mut self, hsm_id: &str) -> Result<()> {
        let Some(pos) = self.info.hsms.iter().position(|h| h.hsm_id == hsm_id) else {
            return Ok(());
        };
        let entry = self.info.hsms.remove(pos);
        self.save()?;
        let dir = self.node_dir(&entry);
        if !entry.external && dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Creates a cluster for the CloudHSM service (CreateCluster) in `root`, without HSMs: its
    /// own CA and synchronisation key, or, restored from a backup of `like`, that cluster's.
    pub fn create_for_service(
        root: &Path,
        cluster_id: &str,
        like: Option<&ClusterDir>,
        region: &str,
        account_id: &str,
        clock: &dyn Clock,
    ) -> Result<Self> {
        if root.exists() {
            fs::remove_dir_all(root)?;
        }
        fs::create_dir_all(root.join("cluster"))?;
        let (ca, sync_key) = match like {
            Some(other) => (other.ca()?, other.sync_key()?),
            None => (ClusterCa::generate(cluster_id)?, KeyMaterial::generate()),
        };
        write_secrets(root, &ca, &sync_key)?;
        let dir = Self {
            root: root.to_path_buf(),
            info: ClusterInfo {
                cluster_id: cluster_id.to_string(),
                region: region.to_string(),
                account_id: account_id.to_string(),
                state: "UNINITIALIZED".into(),
                created_at_millis: clock.now_millis(),
                hsms: vec![],
                highest_node_number: 0,
            },
        };
        dir.save()?;
        Ok(dir)
    }

    /// Every cluster in a data directory: the first one at its root, later ones under
    /// `clusters/`.
    pub fn discover(data_dir: &Path) -> Result<Vec<Self>> {
        let mut found = Vec::new();
        if data_dir.join(CLUSTER_FILE).exists() {
            found.push(Self::open(data_dir)?);
        }
        let more = data_dir.join(CLUSTERS_DIR);
        if more.is_dir() {
            let mut dirs: Vec<PathBuf> = fs::read_dir(&more)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(CLUSTER_FILE).exists())
                .collect();
            dirs.sort();
            for dir in dirs {
                found.push(Self::open(&dir)?);
            }
        }
        Ok(found)
    }

    /// Opens one cluster of a data directory by id, or the first one.
    pub fn open_in(data_dir: &Path, cluster_id: Option<&str>) -> Result<Self> {
        let Some(id) = cluster_id else {
            return Self::open(data_dir);
        };
        Self::discover(data_dir)?
            .into_iter()
            .find(|c| c.info.cluster_id == id)
            .ok_or_else(|| anyhow::anyhow!("no cluster {id} in {}", data_dir.display()))
    }

    /// Provisions a node directory for a new HSM that joins the running cluster by address
    /// (on this host or another), and records it.
    pub async fn add_hsm(
        &mut self,
        availability_zone: &str,
        listen: &str,
        advertise: Option<&str>,
        out: &Path,
    ) -> Result<HsmEntry> {
        if out.join(node_config::CONFIG_FILE).exists() {
            bail!("{} already holds a node", out.display());
        }
        let ca = self.ca()?;
        let sync_key = self.sync_key()?;
        let hsm_id = ids::new_hsm_id(&mut rand::thread_rng());
        let advertise = advertise.unwrap_or(listen).to_string();
        let node_number = self.next_node_number(0);
        let config = NodeConfig {
            cluster_id: self.info.cluster_id.clone(),
            hsm_id: hsm_id.clone(),
            availability_zone: availability_zone.to_string(),
            listen: listen.to_string(),
            advertise: advertise.clone(),
            node_number,
            join: self.info.hsms.iter().map(|h| h.address.clone()).collect(),
        };
        // It starts empty and catches up from its peers: users, members and keys.
        node_config::provision(out, &config, &ca, &sync_key, vec![]).await?;
        let entry = HsmEntry {
            hsm_id,
            availability_zone: availability_zone.to_string(),
            address: advertise,
            node_number,
            dir: std::path::absolute(out)?,
            external: true,
            leaving: false,
        };
        self.info.hsms.push(entry.clone());
        self.save()?;
        Ok(entry)
    }
}

/// Writes a cluster's CA, synchronisation key and client identity into `root`.
fn write_secrets(root: &Path, ca: &ClusterCa, sync_key: &KeyMaterial) -> Result<()> {
    fs::write(root.join(TRUST_ANCHOR_FILE), &ca.identity.cert_pem)?;
    keyfile::write_secret(
        &root.join(CA_KEY_FILE),
        ca.identity.key_pem.expose().as_bytes(),
    )?;
    keyfile::write_secret(&root.join(SYNC_KEY_FILE), sync_key.expose())?;
    let client = ca.issue(CertKind::Client, "hsmkms-client")?;
    fs::write(root.join(CLIENT_CERT_FILE), &client.cert_pem)?;
    keyfile::write_secret(
        &root.join(CLIENT_KEY_FILE),
        client.key_pem.expose().as_bytes(),
    )?;
    Ok(())
}

/// The member record of an HSM entry.
pub fn member(h: &HsmEntry) -> MemberRecord {
    MemberRecord {
        hsm_id: h.hsm_id.clone(),
        availability_zone: h.availability_zone.clone(),
        address: h.address.clone(),
        node_number: h.node_number,
    }
}
