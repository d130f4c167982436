//! The frontend's durable state: a redb file of a few tables, written by one storage thread that
//! commits whole batches (group commit): an acknowledged change is on disk (fsync'd) before the
//! API answers, and concurrent changes share fsyncs. Nothing here is secret in the clear: key
//! material and passwords arrive already wrapped.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hsmkms_common::group_commit::Committer;
use hsmkms_common::quiet::catch_quietly;
use hsmkms_common::reopen::Reopening;
use hsmkms_common::store_file::{self, CommitFaults, Missing, OpenError};
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
    /// Grants, by `<key id>/<grant id>`.
    Grants,
    /// Keys' rotation schedules and rotated materials, by key id.
    Rotations,
    /// Where keys live that are not in the home Region and account, or are multi-Region keys,
    /// by key id.
    Places,
    /// The imported materials of symmetric EXTERNAL keys besides their current one, by key id.
    Imports,
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
            Table::Grants => TableDefinition::new("grants"),
            Table::Rotations => TableDefinition::new("rotations"),
            Table::Places => TableDefinition::new("places"),
            Table::Imports => TableDefinition::new("imports"),
        }
    }

    const ALL: [Table; 12] = [
        Table::Keys,
        Table::Aliases,
        Table::KeyStores,
        Table::Meta,
        Table::Clusters,
        Table::Backups,
        Table::BackupImages,
        Table::Deletions,
        Table::Grants,
        Table::Rotations,
        Table::Places,
        Table::Imports,
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
    /// Every row of the table goes (a reset), in the transaction of the writes beside it.
    Clear {
        table: Table,
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
/// 100,000 keys); every record is in the registry's memory anyway, and new rows append at the
/// B-trees' right edge, so the cache only needs their upper pages and that edge for writes.
/// 8 MiB (was 16): 6 MiB less resident memory after creating 100,000 keys, measured, with the
/// same CreateKey rate.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

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
    pub grants: Vec<(String, Vec<u8>)>,
    pub rotations: Vec<(String, Vec<u8>)>,
    pub places: Vec<(String, Vec<u8>)>,
    pub imports: Vec<(String, Vec<u8>)>,
}

/// A handle to the storage thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    committer: Committer<Write, StoreError>,
    shared: Arc<Shared>,
}

/// What the storage thread and the readers share: the open database (reopened after an I/O
/// error, which redb requires before it writes again), the health of the last commit, and the
/// fault injection switch.
struct Shared {
    db: Reopening<Database, StoreError>,
    /// Commits to let through, then to fail on purpose (fault injection).
    faults: CommitFaults,
    /// Fault injection: commits wait until then, as on a disk that hangs.
    stall_until: Mutex<Option<std::time::Instant>>,
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

/// Opens the store file (creating a missing one only on a first start, not on a reopen) with
/// its tables. A file that holds no whole store (empty, damaged) and one the system would not
/// let us use are both refused, naming the file, but with different advice: only the first
/// may be moved away; see [`store_file`].
fn open_file(path: &Path, missing: Missing) -> Result<Database, StoreError> {
    store_file::open(path, CACHE_BYTES, missing, |db| {
        let txn = db.begin_write().map_err(store_file::boxed)?;
        for table in Table::ALL {
            txn.open_table(table.definition())
                .map_err(store_file::boxed)?;
        }
        txn.commit().map_err(store_file::boxed)?;
        Ok(())
    })
    .map_err(|e| match e {
        OpenError::Damaged(why) => StoreError::Corrupt(format!(
            "{why}: the keys, key stores and clusters it held cannot be read. Restore it from \
             a copy; if this data directory never served, move it away to start afresh"
        )),
        OpenError::Unusable(why) => StoreError::Storage(format!(
            "{why}. The file was left as it is: fix the cause (permissions, the disk, \
             another hsmkms using this data directory) and start again"
        )),
    })
}

/// Reads every table but the images (which stay on disk until a restore needs one).
fn load(db: &Database) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
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
            Table::Grants => &mut loaded.grants,
            Table::Rotations => &mut loaded.rotations,
            Table::Places => &mut loaded.places,
            Table::Imports => &mut loaded.imports,
            Table::BackupImages => continue,
        };
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
    }
    Ok(loaded)
}

impl Store {
    /// Opens (or creates) the store and reads everything in it. The thread ends once every
    /// handle is dropped, after its last commit; join it to be sure the file is closed.
    pub fn open(path: &Path) -> Result<(Store, Loaded, JoinHandle<()>), StoreError> {
        let db = open_file(path, Missing::Create)?;
        let loaded = catch_quietly(|| load(&db))
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "{} is damaged; restore it from a copy, or move it away to start afresh",
                    path.display()
                ))
            })?
            .map_err(|e| StoreError::Corrupt(format!("{} cannot be read: {e}", path.display())))?;
        let reopen_path = path.to_path_buf();
        let shared = Arc::new(Shared {
            db: Reopening::new(
                db,
                move || open_file(&reopen_path, Missing::Refuse),
                |why: &str| StoreError::Storage(why.into()),
            ),
            faults: CommitFaults::default(),
            stall_until: Mutex::new(None),
        });
        let writer = shared.clone();
        let (committer, thread) =
            Committer::spawn("kms-store", move |batch: &[Vec<Write>]| writer.write(batch))
                .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((Store { committer, shared }, loaded, thread))
    }

    /// Reads one record as last committed (blocking: a disk read).
    pub fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.db.reading(|db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(table.definition())?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    /// Every record of a table as last committed (blocking: a disk read; for small tables).
    pub fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.shared.db.reading(|db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(table.definition())?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Makes `writes` durable, in one transaction with whatever else is waiting.
    pub fn commit(
        &self,
        writes: Vec<Write>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        self.committer.commit(writes, StoreError::Stopped)
    }

    /// Why the store cannot commit now, if it cannot (the last commit failed).
    pub fn failing(&self) -> Option<String> {
        self.shared.db.failing()
    }

    /// Fault injection: commits hang for `for_time` from now (the batch being written and
    /// every one after it), as on a disk that stops answering for a while.
    pub fn stall_commits(&self, for_time: std::time::Duration) {
        *lock(&self.shared.stall_until) = Some(std::time::Instant::now() + for_time);
    }

    /// Fault injection: after `after` more commits, the next `count` fail, as if the disk had
    /// refused them.
    pub fn fail_next_commits(&self, count: u32, after: u32) {
        self.shared.faults.fail_after(after, count);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// One batch, on the storage thread. After an I/O error redb refuses every later write
    /// until the database is reopened; [`Reopening`] reopens it before the next batch, so the
    /// store recovers by itself once the cause (a full disk, say) is gone.
    fn write(&self, batch: &[Vec<Write>]) -> Result<(), StoreError> {
        let stalled = lock(&self.stall_until).take();
        if let Some(until) = stalled {
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        }
        if self.faults.take() {
            let e = StoreError::Storage("the commit failed (fault injection)".into());
            self.db.record_failure(&e);
            return Err(e);
        }
        self.db.write(|db| write_batch(db, batch))
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
            Write::Clear { table } => {
                txn.open_table(table.definition())?.retain(|_, _| false)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}
