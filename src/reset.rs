//! The launcher's side of a cluster reset (`POST /_hsmkms/reset {"cluster": true}`): the
//! launcher's cluster is made anew beside the old one, the decision is recorded, and only then
//! do the files change. A start that finds a decision finishes the reset before anything opens;
//! one that finds a new cluster without a decision removes it. So a kill -9 at any point leaves
//! the old state or the new one, never a mix.
//!
//! ```text
//! <data-dir>/reset/           the new cluster while it is made: cluster.json, customerCA.crt,
//!                             cluster/ (its secrets), hsms/<hsm-id>/ (its HSMs)
//! <data-dir>/reset.decided    the reset is decided: the next start finishes it
//! ```
//!
//! Finishing puts `reset/`'s parts in place of the data directory's (every other cluster,
//! set-aside cluster and HSM directory goes), and, at a start, removes KMS's store and trails
//! (a running frontend clears them in its own commit instead).

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hsmkms_common::clock::Clock;

use crate::cluster::{ClusterDir, ClusterSpec, CLUSTERS_DIR, CLUSTER_FILE, TRUST_ANCHOR_FILE};
use crate::provisioner::UNRECORDED_DIR;

/// Where the new cluster is made.
pub const STAGING_DIR: &str = "reset";
/// Written (durably) once the new cluster is complete: the reset is decided.
pub const DECIDED_FILE: &str = "reset.decided";

/// fsyncs a directory, so the renames and removals in it are durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// fsyncs every file and directory under `root` (the new cluster: a few dozen files).
fn sync_tree(root: &Path) -> Result<()> {
    // Bounded by the tree's depth: a cluster directory is three levels deep.
    for entry in fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
    }
    sync_dir(root)
}

fn remove_dir_if_there(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Makes the launcher's cluster anew in `reset/`, as a first start makes it but with the id
/// `cluster_id`, makes it durable, and records the decision. Returns the new cluster as it
/// will be once in place (its root the data directory).
pub async fn prepare(
    data_dir: &Path,
    cluster_id: &str,
    spec: &ClusterSpec,
    clock: &dyn Clock,
) -> Result<ClusterDir> {
    let staging = data_dir.join(STAGING_DIR);
    // Leftovers of a reset that was undone or never decided.
    remove_dir_if_there(&staging)?;
    let made = ClusterDir::create_as(&staging, cluster_id, spec, clock).await?;
    sync_tree(&staging)?;
    sync_dir(data_dir)?;
    let decided = data_dir.join(DECIDED_FILE);
    let tmp = data_dir.join(format!("{DECIDED_FILE}.tmp"));
    let record = serde_json::json!({
        "clusterId": cluster_id,
        "decidedAtMillis": clock.now_millis(),
    });
    let mut file = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(record.to_string().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, &decided).with_context(|| format!("writing {}", decided.display()))?;
    sync_dir(data_dir)?;
    Ok(ClusterDir {
        root: data_dir.to_path_buf(),
        info: made.info,
    })
}

/// Whether a reset is decided and not yet finished.
pub fn decided(data_dir: &Path) -> bool {
    data_dir.join(DECIDED_FILE).exists()
}

/// Puts the new cluster in place of every cluster of the data directory. Every step looks at
/// what is left to do, so a switch that a stop interrupted finishes by running it again.
/// The HSMs of the old clusters must have stopped.
pub fn switch(data_dir: &Path) -> Result<()> {
    let staging = data_dir.join(STAGING_DIR);
    remove_dir_if_there(&data_dir.join(CLUSTERS_DIR))?;
    remove_dir_if_there(&data_dir.join(UNRECORDED_DIR))?;
    for part in ["hsms", "cluster"] {
        let new = staging.join(part);
        if new.exists() {
            remove_dir_if_there(&data_dir.join(part))?;
            fs::rename(&new, data_dir.join(part))
                .with_context(|| format!("moving {} into place", new.display()))?;
        }
    }
    // cluster.json last: until it moves, the old one names HSM directories that are gone,
    // and only a start that finishes the reset opens the directory meanwhile.
    for file in [TRUST_ANCHOR_FILE, CLUSTER_FILE] {
        let new = staging.join(file);
        if new.exists() {
            fs::rename(&new, data_dir.join(file))
                .with_context(|| format!("moving {} into place", new.display()))?;
        }
    }
    sync_dir(data_dir)?;
    remove_dir_if_there(&staging)
}

/// Forgets a decision once the reset's files are in place.
pub fn forget(data_dir: &Path) -> Result<()> {
    match fs::remove_file(data_dir.join(DECIDED_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the reset's decision"),
    }
    sync_dir(data_dir)
}

/// Undoes a prepared reset: the decision first (so a stop midway leaves no decision), then the
/// new cluster's files.
pub fn abandon(data_dir: &Path) -> Result<()> {
    forget(data_dir)?;
    remove_dir_if_there(&data_dir.join(STAGING_DIR))
}

/// On start, before any cluster opens: a decided reset is finished (the files are switched,
/// KMS's store and trails removed, so the frontend opens empty and adopts the new cluster);
/// a new cluster without a decision is removed. Returns whether a reset was finished.
pub fn finish_at_start(data_dir: &Path) -> Result<bool> {
    if !decided(data_dir) {
        if data_dir.join(STAGING_DIR).exists() {
            tracing::warn!(
                "removing a cluster reset that was never decided; the clusters stay as they were"
            );
            remove_dir_if_there(&data_dir.join(STAGING_DIR))?;
        }
        return Ok(false);
    }
    tracing::warn!("finishing a cluster reset a stop interrupted");
    // HSM processes of a launcher that was killed may still be stopping in the old
    // directories: they let go of them before the directories go.
    if let Ok(clusters) = ClusterDir::discover(data_dir) {
        for cluster in clusters {
            for hsm in cluster.info.hsms.iter().filter(|h| !h.external) {
                let dir = cluster.node_dir(hsm);
                if dir.is_dir() {
                    hsm_node::config::wait_unlocked(&dir, hsm_node::config::LOCK_WAIT)?;
                }
            }
        }
    }
    switch(data_dir)?;
    kms_frontend::frontend::remove_state_files(&data_dir.join("kms"))
        .context("removing KMS's state")?;
    forget(data_dir)?;
    Ok(true)
}
