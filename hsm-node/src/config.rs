//! A node's directory: its configuration, its certificates and keys, and its store. Everything
//! a node needs to start is in that one directory, so a node can be provisioned on one machine
//! and copied to another.
//!
//! ```text
//! node.json     cluster id, HSM id, Availability Zone, addresses, node number, join list
//! ca.crt        the cluster's trust anchor
//! node.crt      this node's certificate (server and peer-client)
//! node.key      its private key                                   (mode 0600)
//! sync.key      the cluster's synchronisation key (wire wrapping)  (mode 0600)
//! storage.key   this node's storage key (wrapping at rest)         (mode 0600)
//! node.redb     the store
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use hsmkms_common::aead::Sealer;
use hsmkms_common::keyfile;
use hsmkms_common::secret::KeyMaterial;
use hsmkms_common::tls::{self, CertKind, ClusterCa, Identity};
use hsmkms_common::wire::MemberRecord;
use serde::{Deserialize, Serialize};

use crate::core::Stored;
use crate::store::Store;

pub const CONFIG_FILE: &str = "node.json";
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "node.crt";
pub const KEY_FILE: &str = "node.key";
pub const SYNC_KEY_FILE: &str = "sync.key";
pub const STORAGE_KEY_FILE: &str = "storage.key";
pub const STORE_FILE: &str = "node.redb";
/// Held (an exclusive lock on it) by the node serving the directory, so two processes never
/// serve one HSM: a node left over from a launcher that was killed finishes stopping before
/// the next one starts.
pub const LOCK_FILE: &str = "node.lock";

/// How long a node waits for the node that served its directory before to let go of it.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the node directory's lock, waiting up to `wait` for a previous holder (a node
/// process still stopping) to exit. The lock is held as long as the returned file is open.
pub fn lock(dir: &Path, wait: std::time::Duration) -> Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another node still serves {} after {wait:?}; stop it first",
                dir.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Waits until no node serves `dir` (a node process of a launcher that was killed may still be
/// stopping), for at most `wait`.
pub fn wait_unlocked(dir: &Path, wait: std::time::Duration) -> Result<()> {
    lock(dir, wait).map(drop)
}

/// A node's settings, as kept in `node.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub cluster_id: String,
    pub hsm_id: String,
    pub availability_zone: String,
    /// Address the node's TLS listener binds.
    pub listen: String,
    /// Address peers and clients use to reach it (defaults to `listen`).
    pub advertise: String,
    /// Unique in the cluster; prefixes the handles of keys this node generates.
    pub node_number: u32,
    /// Addresses of nodes to introduce itself to at start (for a node joining by address).
    #[serde(default)]
    pub join: Vec<String>,
}

impl NodeConfig {
    /// The member record this node announces.
    pub fn member(&self) -> MemberRecord {
        MemberRecord {
            hsm_id: self.hsm_id.clone(),
            availability_zone: self.availability_zone.clone(),
            address: self.advertise.clone(),
            node_number: self.node_number,
        }
    }
}

/// Everything loaded from a node directory that the node needs to run.
pub struct LoadedNode {
    pub dir: PathBuf,
    pub config: NodeConfig,
    pub ca_pem: String,
    pub identity: Identity,
    pub sync: Arc<Sealer>,
    pub storage: Arc<Sealer>,
}

impl std::fmt::Debug for LoadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedNode")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Reads a node directory.
pub fn load(dir: &Path) -> Result<LoadedNode> {
    let read = |name: &str| {
        fs::read_to_string(dir.join(name))
            .with_context(|| format!("reading {}", dir.join(name).display()))
    };
    let config: NodeConfig = serde_json::from_str(&read(CONFIG_FILE)?)
        .with_context(|| format!("parsing {}", dir.join(CONFIG_FILE).display()))?;
    let identity = Identity {
        cert_pem: read(CERT_FILE)?,
        key_pem: keyfile::read_secret_text(&dir.join(KEY_FILE))
            .with_context(|| format!("reading {}", dir.join(KEY_FILE).display()))?,
    };
    let sync = keyfile::read_key(&dir.join(SYNC_KEY_FILE)).context("reading the sync key")?;
    let storage =
        keyfile::read_key(&dir.join(STORAGE_KEY_FILE)).context("reading the storage key")?;
    Ok(LoadedNode {
        dir: dir.to_path_buf(),
        ca_pem: read(CA_FILE)?,
        config,
        identity,
        sync: Arc::new(Sealer::new(&sync)),
        storage: Arc::new(Sealer::new(&storage)),
    })
}

/// Records a new listening address for the node (its port was taken): `listen`, and the port
/// of `advertise`, in `node.json` (atomically) and in `config`. The advertised host stays (a
/// node listening on `0.0.0.0` advertises the address peers reach it by); its port follows
/// the listener's when it was the listener's port, since peers would otherwise keep dialling
/// the old one. An advertised port other than the listener's (a port forward) is kept.
pub fn set_address(dir: &Path, config: &mut NodeConfig, address: &str) -> Result<()> {
    config.advertise = moved_advertise(&config.advertise, &config.listen, address);
    config.listen = address.to_string();
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_string_pretty(config)?)?;
    fs::rename(&tmp, dir.join(CONFIG_FILE))?;
    Ok(())
}

/// Where a node advertises itself once its listener moved from `old_listen` to `new_listen`.
fn moved_advertise(advertise: &str, old_listen: &str, new_listen: &str) -> String {
    if advertise == old_listen {
        return new_listen.to_string();
    }
    let port = |address: &str| address.rsplit_once(':').map(|(_, p)| p.to_string());
    match (
        advertise.rsplit_once(':'),
        port(old_listen),
        port(new_listen),
    ) {
        (Some((host, advertised_port)), Some(old_port), Some(new_port))
            if advertised_port == old_port =>
        {
            format!("{host}:{new_port}")
        }
        _ => advertise.to_string(),
    }
}

/// The address a node directory's node advertises (`node.json`).
pub fn advertised_address(dir: &Path) -> Result<String> {
    let path = dir.join(CONFIG_FILE);
    let config: NodeConfig = serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    Ok(config.advertise)
}

/// Adds `addresses` to the join list in a node directory's `node.json` (kept, so every later
/// start introduces itself to them too), writing the file atomically. Its own address is
/// never added.
pub fn add_join(dir: &Path, addresses: &[String]) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let mut config: NodeConfig = serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let before = config.join.len();
    for address in addresses {
        if *address != config.advertise && !config.join.contains(address) {
            config.join.push(address.clone());
        }
    }
    if config.join.len() != before {
        let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(&config)?)?;
        fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// Creates a node directory: certificate from the cluster CA, fresh storage key, the cluster's
/// sync key, and a store holding `seeds` (the cluster's users and members, for the founding
/// nodes; nothing for a node that will catch up from its peers).
pub async fn provision(
    dir: &Path,
    config: &NodeConfig,
    ca: &ClusterCa,
    sync_key: &KeyMaterial,
    seeds: Vec<Stored>,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let identity = ca.issue(CertKind::Node, &config.hsm_id)?;
    fs::write(dir.join(CA_FILE), &ca.identity.cert_pem)?;
    fs::write(dir.join(CERT_FILE), &identity.cert_pem)?;
    keyfile::write_secret(&dir.join(KEY_FILE), identity.key_pem.expose().as_bytes())?;
    keyfile::write_secret(&dir.join(SYNC_KEY_FILE), sync_key.expose())?;
    let storage = KeyMaterial::generate();
    keyfile::write_secret(&dir.join(STORAGE_KEY_FILE), storage.expose())?;
    let (store, _, thread) = Store::open(
        &dir.join(STORE_FILE),
        Arc::new(Sealer::new(&storage)),
        &config.cluster_id,
    )?;
    store.commit(seeds).await?;
    drop(store);
    // The storage thread ends once its handle is gone; wait so the file is closed.
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    // The config goes last: a directory without it is an unfinished provisioning.
    fs::write(dir.join(CONFIG_FILE), serde_json::to_string_pretty(config)?)?;
    Ok(())
}

/// The TLS configurations of a node: its server side and its client side (for peer links).
pub fn tls_configs(
    node: &LoadedNode,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> {
    Ok((
        tls::server_config(&node.ca_pem, &node.identity)?,
        tls::client_config(&node.ca_pem, &node.identity)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, advertise: &str) -> NodeConfig {
        NodeConfig {
            cluster_id: "cluster-abcdefghijk".into(),
            hsm_id: "hsm-abcdefghijk".into(),
            availability_zone: "us-east-1a".into(),
            listen: listen.into(),
            advertise: advertise.into(),
            node_number: 1,
            join: vec![],
        }
    }

    #[test]
    fn a_moved_port_moves_the_advertised_port_too() {
        let dir = tempfile::tempdir().unwrap();
        // Advertised as listened: both move.
        let mut same = config("127.0.0.1:4700", "127.0.0.1:4700");
        set_address(dir.path(), &mut same, "127.0.0.1:4711").unwrap();
        assert_eq!(same.advertise, "127.0.0.1:4711");
        assert_eq!(advertised_address(dir.path()).unwrap(), "127.0.0.1:4711");
        // Listening on every interface, advertised by the host's name: the port moves, the
        // host stays.
        let mut wildcard = config("0.0.0.0:4700", "hsm-a.example:4700");
        set_address(dir.path(), &mut wildcard, "0.0.0.0:4711").unwrap();
        assert_eq!(wildcard.listen, "0.0.0.0:4711");
        assert_eq!(wildcard.advertise, "hsm-a.example:4711");
        assert_eq!(
            advertised_address(dir.path()).unwrap(),
            "hsm-a.example:4711"
        );
        let mut v6 = config("[::]:4700", "[fd00::5]:4700");
        set_address(dir.path(), &mut v6, "[::]:4711").unwrap();
        assert_eq!(v6.advertise, "[fd00::5]:4711");
        // A port forward (another advertised port) is kept.
        let mut forwarded = config("0.0.0.0:4700", "gateway.example:9000");
        set_address(dir.path(), &mut forwarded, "0.0.0.0:4711").unwrap();
        assert_eq!(forwarded.advertise, "gateway.example:9000");
    }
}
