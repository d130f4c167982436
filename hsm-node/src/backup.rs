//! Cluster backups, as CloudHSM takes them: every object one HSM holds (users, keys with their
//! material, tombstones, members), read over the node protocol by the cluster service and
//! sealed whole under the cluster's synchronisation key. Key material inside stays wrapped as
//! it travels on the wire, so a backup is encrypted twice and opens only with the sync key of
//! its cluster, which a cluster restored from it shares.
//!
//! A new HSM starts from the latest backup ([`seeds`]) and catches up from its peers; a cluster
//! created from a backup gets the backup's users and keys, not its members.

use std::time::Duration;

use hsmkms_common::aead::Sealer;
use hsmkms_common::client::NodeClient;
use hsmkms_common::wire::{
    Object, ObjectBody, ObjectId, Request, Response, Version, DIGEST_BUCKETS, MAX_OBJECTS_PER_CALL,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::Stored;
use crate::material::{self, Place};

/// Associated data of a sealed backup; a backup cannot be opened as anything else.
const BACKUP_AAD: &[u8] = b"hsmkms/backup/v1";

/// What a sealed backup holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    /// The cluster the objects were read from (their wire wrapping is bound to it).
    pub cluster_id: String,
    pub objects: Vec<Object>,
}

/// A key object in a backup or on an HSM, without its material: what the orphan and backup
/// reports need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub handle: u64,
    pub label: String,
    pub owner: String,
}

/// Why a backup could not be taken, opened or restored.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error("reading the HSM failed: {0}")]
    Read(String),
    #[error("the backup does not open with this cluster's key")]
    Sealed,
    #[error("the backup is unreadable: {0}")]
    Corrupt(String),
}

impl Image {
    /// Seals the image under the cluster's synchronisation key.
    pub fn seal(&self, sync: &Sealer) -> Vec<u8> {
        // Encoding our own plain records into a Vec cannot fail.
        let plain = postcard::to_stdvec(self).unwrap_or_default();
        sync.seal(&plain, BACKUP_AAD)
    }

    /// Opens a sealed image.
    pub fn open(sealed: &[u8], sync: &Sealer) -> Result<Self, BackupError> {
        let plain = sync
            .open(sealed, BACKUP_AAD)
            .map_err(|_| BackupError::Sealed)?;
        postcard::from_bytes(plain.expose()).map_err(|e| BackupError::Corrupt(e.to_string()))
    }

    /// The live key objects, without material.
    pub fn keys(&self) -> Vec<KeySummary> {
        self.objects
            .iter()
            .filter_map(|o| match &o.body {
                ObjectBody::Key(k) => Some(KeySummary {
                    handle: k.attributes.handle,
                    label: k.attributes.label.clone(),
                    owner: k.attributes.owner.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Highest node number that minted a handle or a version in the image: a new HSM takes
    /// a higher one, so its handles never collide with restored keys.
    pub fn highest_node_number(&self) -> u32 {
        self.objects
            .iter()
            .flat_map(|o| {
                let minted = match o.id {
                    ObjectId::Key(handle) => (handle >> 32) as u32,
                    _ => 0,
                };
                [minted, o.version.node]
            })
            .max()
            .unwrap_or(0)
    }

    /// The objects a new HSM starts with, unwrapped. Member records are kept only for the
    /// HSMs in `members` (the cluster's current HSMs): a restore into another cluster, or a
    /// cluster whose HSMs were deleted since the backup, must not link to HSMs that are gone
    /// or count them in its quorum.
    pub fn seeds(
        self,
        sync: &Sealer,
        members: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<Stored>, BackupError> {
        self.objects
            .into_iter()
            .filter(|o| match (&o.id, &o.body) {
                (ObjectId::Member(id), ObjectBody::Member(_)) => members.contains(id),
                _ => true,
            })
            .map(|o| {
                material::unwrap(o, sync, Place::Wire, &self.cluster_id)
                    .map_err(|e| BackupError::Corrupt(e.message))
            })
            .collect()
    }
}

/// Reads every object of the node at the other end of `client`, which must be connected with
/// a peer (node) certificate: the entries of every bucket, then the objects in chunks.
pub async fn read_all(client: &NodeClient, deadline: Duration) -> Result<Vec<Object>, BackupError> {
    let ids = entries(client, deadline).await?;
    let mut objects = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_OBJECTS_PER_CALL) {
        let ids = chunk.iter().map(|(id, _)| id.clone()).collect();
        match client
            .call(Request::Fetch { ids }, deadline)
            .await
            .map_err(|e| BackupError::Read(e.to_string()))?
        {
            Response::Objects(o) => objects.extend(o),
            other => return Err(BackupError::Read(format!("unexpected answer: {other:?}"))),
        }
    }
    Ok(objects)
}

/// Ids and versions of every object a node holds.
pub async fn entries(
    client: &NodeClient,
    deadline: Duration,
) -> Result<Vec<(ObjectId, Version)>, BackupError> {
    let buckets: Vec<u16> = (0..DIGEST_BUCKETS as u16).collect();
    match client
        .call(Request::ListEntries { buckets }, deadline)
        .await
        .map_err(|e| BackupError::Read(e.to_string()))?
    {
        Response::Entries(entries) => Ok(entries),
        other => Err(BackupError::Read(format!("unexpected answer: {other:?}"))),
    }
}
