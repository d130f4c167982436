//! The frontend's durable state: a redb file of a few tables, written by one storage thread that
//! commits whole batches (group commit): an acknowledged change is on disk (fsync'd) before the
//! API answers, and concurrent changes share fsyncs. Nothing here is secret in the clear: key
//! material and passwords arrive already wrapped.

use std::path::Path;
use std::thread::JoinHandle;

use hsmkms_common::group_commit::Committer;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Keys,
    Aliases,
    KeyStores,
    Meta,
    /// The CloudHSM service's clusters.
    Clusters,
    /// Backup records (without their images).
    Backups,
    /// Sealed backup images, read only when an HSM is restored from one.
    BackupImages,
    /// Deletions of KMS keys whose effects (the backing key's delete, the audit record, the
    /// event) have not all run yet: written with the key's removal, removed once they have.
    Deletions,
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Keys => TableDefinition::new("keys"),
            Table::Aliases => TableDefinition::new("aliases"),
            Table::KeyStores => TableDefinition::new("key_stores"),
            Table::Meta => TableDefinition::new("meta"),
            Table::Clusters => TableDefinition::new("clusters"),
            Table::Backups => TableDefinition::new("backups"),
            Table::BackupImages => TableDefinition::new("backup_images"),
            Table::Deletions => TableDefinition::new("deletions"),
        }
    }

    const ALL: [Table; 8] = [
        Table::Keys,
        Table::Aliases,
        Table::KeyStores,
        Table::Meta,
        Table::Clusters,
        Table::Backups,
        Table::BackupImages,
        Table::Deletions,
    ];
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
}

impl Write {
    /// A put of `value`, postcard-encoded.
    pub fn put<T: Serialize>(table: Table, key: impl Into<String>, value: &T) -> Self {
        Write::Put {
            table,
            key: key.into(),
            // Encoding our own plain records into a Vec cannot fail.
            value: postcard::to_stdvec(value).unwrap_or_default(),
        }
    }

    pub fn delete(table: Table, key: impl Into<String>) -> Self {
        Write::Delete {
            table,
            key: key.into(),
        }
    }
}

/// Why the store failed.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the storage thread has stopped")]
    Stopped,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// redb's page cache. Its default (1 GiB) lets the cache grow to the whole file (70 MB at
/// 100,000 keys); every record is in the registry's memory anyway, so the cache only needs the
/// B-trees' upper pages for writes.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Everything in the store at start, table by table.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys: Vec<(String, Vec<u8>)>,
    pub aliases: Vec<(String, Vec<u8>)>,
    pub key_stores: Vec<(String, Vec<u8>)>,
    pub meta: Vec<(String, Vec<u8>)>,
    pub clusters: Vec<(String, Vec<u8>)>,
    pub backups: Vec<(String, Vec<u8>)>,
    pub deletions: Vec<(String, Vec<u8>)>,
}

/// A handle to the storage thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    committer: Committer<Write, StoreError>,
    db: std::sync::Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Opens (or creates) the store and reads everything in it. The thread ends once every
    /// handle is dropped, after its last commit; join it to be sure the file is closed.
    pub fn open(path: &Path) -> Result<(Store, Loaded, JoinHandle<()>), StoreError> {
        let db = std::sync::Arc::new(
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(path)?,
        );
        let txn = db.begin_write()?;
        for table in Table::ALL {
            txn.open_table(table.definition())?;
        }
        txn.commit()?;
        let mut loaded = Loaded::default();
        {
            let txn = db.begin_read()?;
            for table in Table::ALL {
                let t = txn.open_table(table.definition())?;
                let out = match table {
                    Table::Keys => &mut loaded.keys,
                    Table::Aliases => &mut loaded.aliases,
                    Table::KeyStores => &mut loaded.key_stores,
                    Table::Meta => &mut loaded.meta,
                    Table::Clusters => &mut loaded.clusters,
                    Table::Backups => &mut loaded.backups,
                    Table::Deletions => &mut loaded.deletions,
                    // Images stay on disk until a restore needs one.
                    Table::BackupImages => continue,
                };
                for item in t.iter()? {
                    let (k, v) = item?;
                    out.push((k.value().to_string(), v.value().to_vec()));
                }
            }
        }
        let writer = db.clone();
        let (committer, thread) = Committer::spawn("kms-store", move |batch: &[Vec<Write>]| {
            write_batch(&writer, batch)
        })
        .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((Store { committer, db }, loaded, thread))
    }

    /// Reads one record as last committed (blocking: a disk read).
    pub fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.definition())?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every record of a table as last committed (blocking: a disk read; for small tables).
    pub fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.definition())?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Makes `writes` durable, in one transaction with whatever else is waiting.
    pub fn commit(
        &self,
        writes: Vec<Write>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        self.committer.commit(writes, StoreError::Stopped)
    }
}

fn write_batch(db: &Database, batch: &[Vec<Write>]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    for write in batch.iter().flatten() {
        match write {
            Write::Put { table, key, value } => {
                txn.open_table(table.definition())?
                    .insert(key.as_str(), value.as_slice())?;
            }
            Write::Delete { table, key } => {
                txn.open_table(table.definition())?.remove(key.as_str())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}
