//! The node's durable store: a redb file, written by one storage thread that commits whole
//! batches (group commit), so many acknowledged writes share one fsync and no actor ever waits
//! on the disk. Key material is wrapped under the node's storage key before it is written; the
//! file alone never reveals it.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use hsmkms_common::aead::Sealer;
use hsmkms_common::group_commit::Committer;
use hsmkms_common::quiet::catch_quietly;
use hsmkms_common::reopen::Reopening;
use hsmkms_common::store_file::{self, CommitFaults, Missing, OpenError};
use hsmkms_common::wire::{Object, ObjectBody, ObjectId};
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use thiserror::Error;

use crate::core::{supersedes, Entry, Stored};
use crate::material::{self, Place};

/// Objects by [`row`]: their kind, then their id in an order-preserving encoding.
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects_by_kind");
/// The table of stores written before [`row`], keyed by the postcard encoding of the id, whose
/// varints scatter consecutive key handles across the B-tree. Moved to [`OBJECTS`] on open.
const OLD_OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");

/// An object's row key: a byte for its kind, then the key handle big-endian or the name's bytes.
/// Handles are handed out in increasing order, so a new key lands at the end of the B-tree and
/// a commit rewrites a few pages on its right edge rather than a leaf anywhere in it.
fn row(id: &ObjectId) -> Vec<u8> {
    let (kind, rest): (u8, &[u8]) = match id {
        ObjectId::Member(name) => (0, name.as_bytes()),
        ObjectId::User(name) => (1, name.as_bytes()),
        ObjectId::Key(handle) => {
            let mut out = Vec::with_capacity(9);
            out.push(2);
            out.extend_from_slice(&handle.to_be_bytes());
            return out;
        }
        ObjectId::LoginState(name) => (3, name.as_bytes()),
    };
    let mut out = Vec::with_capacity(1 + rest.len());
    out.push(kind);
    out.extend_from_slice(rest);
    out
}

/// Moves the rows of a store written before [`row`] to their new rows, in the transaction that
/// opens the file: a crash leaves either layout whole.
fn relayout(txn: &redb::WriteTransaction) -> Result<(), store_file::PrepareError> {
    let exists = txn
        .list_tables()
        .map_err(store_file::boxed)?
        .any(|t| t.name() == OLD_OBJECTS.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(OLD_OBJECTS).map_err(store_file::boxed)?;
        let mut new = txn.open_table(OBJECTS).map_err(store_file::boxed)?;
        for item in old.iter().map_err(store_file::boxed)? {
            let (key, value) = item.map_err(store_file::boxed)?;
            let id: ObjectId = postcard::from_bytes(key.value())
                .map_err(|e| Box::new(redb::Error::Corrupted(format!("an object id: {e}"))))?;
            new.insert(row(&id).as_slice(), value.value())
                .map_err(store_file::boxed)?;
        }
    }
    txn.delete_table(OLD_OBJECTS).map_err(store_file::boxed)?;
    Ok(())
}

/// Why the store failed. Storage failures are fatal to the call that met them.
#[derive(Debug, Error, Clone)]
pub enum StoreError {
    #[error("storage failed: {0}")]
    Storage(String),
    /// The file holds no whole store (empty, truncated, damaged): moving it aside and
    /// rebuilding from peers loses nothing they hold.
    #[error("stored object is unreadable: {0}")]
    Corrupt(String),
    /// The file could not be opened or read (permissions, an I/O error, not a file, another
    /// process holding it): it may well be whole, so it is left where it is.
    #[error("cannot use the store file: {0}")]
    Io(String),
    #[error("the storage thread has stopped")]
    Stopped,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A handle to the storage thread; cheap to clone. The thread stops when the last handle goes.
#[derive(Clone)]
pub struct Store {
    committer: Committer<Stored, StoreError>,
    faults: StoreFaults,
    /// The database, shared with the storage thread, which reopens it after a failed commit.
    db: Arc<Reopening<Database, StoreError>>,
}

/// Fault injection on a store: makes its next commits fail as if the disk had refused them.
/// Apart from [`Store`] because it does not keep the storage thread alive: whoever stops the
/// node (its handle) may hold one.
pub type StoreFaults = CommitFaults;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// redb's page cache. Its default (1 GiB) lets the cache grow to the whole file; every object
/// is in the core's memory anyway, so the cache only needs the B-tree's upper pages for writes.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// What opening a store yields: the handle, every object it holds, and the thread to join on
/// shutdown (it ends once every handle is dropped, after its last commit).
pub type Opened = (Store, Vec<Stored>, JoinHandle<()>);

impl Store {
    /// Opens (or creates) the store at `path` and loads everything in it.
    pub fn open(
        path: &Path,
        storage_key: Arc<Sealer>,
        cluster_id: &str,
    ) -> Result<Opened, StoreError> {
        let db = open_file(path, Missing::Create)?;
        let loaded =
            catch_quietly(|| load(path, &db, &storage_key, cluster_id)).map_err(|panic| {
                StoreError::Corrupt(format!("{} is damaged: {panic}", path.display()))
            })??;
        let reopen_path = path.to_path_buf();
        let db = Arc::new(Reopening::new(
            db,
            move || open_file(&reopen_path, Missing::Refuse),
            |why: &str| StoreError::Storage(why.into()),
        ));
        let cluster_id = cluster_id.to_string();
        let faults = StoreFaults::default();
        let injected = faults.clone();
        let writer = db.clone();
        let (committer, thread) = Committer::spawn("hsm-store", move |batch: &[Vec<Stored>]| {
            if injected.take() {
                let e = StoreError::Storage("injected fault: commit refused".into());
                writer.record_failure(&e);
                return Err(e);
            }
            // After an I/O error redb refuses every later transaction until the file is
            // opened again: the write reopens it first, so the node recovers by itself once
            // the cause (a full disk, say) is gone.
            writer.write(|db| write_batch(db, batch, &storage_key, &cluster_id))
        })
        .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((
            Store {
                committer,
                faults,
                db,
            },
            loaded,
            thread,
        ))
    }

    /// Why the store cannot commit now, if its last commit failed; `None` once one succeeds.
    pub fn failing(&self) -> Option<String> {
        self.db.failing()
    }

    /// The store's fault injection switch.
    pub fn faults(&self) -> StoreFaults {
        self.faults.clone()
    }

    /// Fault injection: the next `count` batches fail, as if the disk had refused them.
    pub fn fail_next_commits(&self, count: u32) {
        self.faults.fail_after(0, count);
    }

    /// Makes `objects` durable; resolves once they are on disk (fsync'd). The future does not
    /// borrow the store, so it can outlive the caller's borrow of its actor.
    pub fn commit(
        &self,
        objects: Vec<Stored>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        self.committer.commit(objects, StoreError::Stopped)
    }
}

/// Opens the store file (creating a missing one only on a first start, not on a reopen) with
/// its table; see [`store_file`] for what counts as damaged.
fn open_file(path: &Path, missing: Missing) -> Result<Database, StoreError> {
    store_file::open(path, CACHE_BYTES, missing, |db| {
        let txn = db.begin_write().map_err(store_file::boxed)?;
        txn.open_table(OBJECTS).map_err(store_file::boxed)?;
        relayout(&txn)?;
        txn.commit().map_err(store_file::boxed)?;
        Ok(())
    })
    .map_err(opening)
}

/// A store file that could not be opened: a damaged one may be moved aside and rebuilt, one
/// the system would not let us use is left where it is.
fn opening(e: OpenError) -> StoreError {
    match e {
        OpenError::Damaged(why) => StoreError::Corrupt(why),
        OpenError::Unusable(why) => StoreError::Io(why),
    }
}

fn classify(path: &Path, e: redb::Error) -> StoreError {
    opening(store_file::classify(path, e))
}

/// Every object in the store.
fn load(
    path: &Path,
    db: &Database,
    storage_key: &Sealer,
    cluster_id: &str,
) -> Result<Vec<Stored>, StoreError> {
    let redb = |e: redb::Error| classify(path, e);
    let corrupt = |why: String| StoreError::Corrupt(format!("{}: {why}", path.display()));
    let mut loaded = Vec::new();
    let txn = db.begin_read().map_err(|e| redb(e.into()))?;
    let table = txn.open_table(OBJECTS).map_err(|e| redb(e.into()))?;
    for item in table.iter().map_err(|e| redb(e.into()))? {
        let (_, value) = item.map_err(|e| redb(e.into()))?;
        let object: Object =
            postcard::from_bytes(value.value()).map_err(|e| corrupt(e.to_string()))?;
        let stored = material::unwrap(object, storage_key, Place::Disk, cluster_id)
            .map_err(|e| corrupt(e.message))?;
        loaded.push(stored);
    }
    Ok(loaded)
}

fn write_batch(
    db: &Database,
    batch: &[Vec<Stored>],
    storage_key: &Sealer,
    cluster_id: &str,
) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(OBJECTS)?;
        for stored in batch.iter().flatten() {
            let key = row(&stored.id);
            // The disk never trades a copy for one that lost to it (an older version, or a
            // live key over its tombstone), whatever order the writes came in: memory installs
            // only winners, and the disk must hold what memory holds.
            let new = (stored.version, matches!(stored.entry, Entry::Tombstone));
            let replaces = match table.get(key.as_slice())? {
                Some(old) => match postcard::from_bytes::<Object>(old.value()) {
                    Ok(old) => supersedes(
                        &stored.id,
                        new,
                        (old.version, matches!(old.body, ObjectBody::Tombstone)),
                    ),
                    // An unreadable copy is replaced by a readable one.
                    Err(_) => true,
                },
                None => true,
            };
            if !replaces {
                continue;
            }
            let object = material::wrap(stored, storage_key, Place::Disk, cluster_id);
            let value =
                postcard::to_stdvec(&object).map_err(|e| StoreError::Storage(e.to_string()))?;
            table.insert(key.as_slice(), value.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use hsmkms_common::secret::KeyMaterial;
    use hsmkms_common::wire::{ObjectId, Version};

    use super::*;

    fn tombstone(n: u64) -> Stored {
        Stored {
            id: ObjectId::Key(n),
            version: Version {
                counter: n,
                node: 1,
            },
            entry: Entry::Tombstone,
        }
    }

    fn live_key(n: u64, counter: u64) -> Stored {
        use hsmkms_common::wire::{KeyAttributes, KeyClass, KeyType};
        let attributes = KeyAttributes {
            handle: n,
            label: "k".into(),
            owner: "kmsuser".into(),
            class: KeyClass::SecretKey,
            key_type: KeyType::Aes,
            length_bytes: 32,
            extractable: false,
            token: true,
            created_at_millis: 0,
        };
        Stored {
            id: ObjectId::Key(n),
            version: Version { counter, node: 3 },
            entry: Entry::Key(Arc::new(crate::core::KeyEntry::new(
                attributes,
                KeyMaterial::generate(),
            ))),
        }
    }

    fn member_at(counter: u64, address: &str) -> Stored {
        let record = hsmkms_common::wire::MemberRecord {
            hsm_id: "hsm-abcdefghijk".into(),
            availability_zone: "us-east-1a".into(),
            address: address.into(),
            node_number: 1,
        };
        Stored {
            id: ObjectId::Member(record.hsm_id.clone()),
            version: Version { counter, node: 1 },
            entry: Entry::Member(Box::new(record)),
        }
    }

    #[test]
    fn a_write_never_replaces_a_newer_copy_or_a_tombstone_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let key = Arc::new(Sealer::new(&KeyMaterial::generate()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (store, _, thread) = Store::open(&path, key.clone(), "c").unwrap();
        // A tombstone v6 is written, then (a pull that raced it) the live key v5: then the
        // same key at v9, which is newer but still a live copy of a deleted key.
        let tomb = Stored {
            version: Version {
                counter: 6,
                node: 2,
            },
            ..tombstone(7)
        };
        runtime.block_on(store.commit(vec![tomb])).unwrap();
        runtime
            .block_on(store.commit(vec![live_key(7, 5)]))
            .unwrap();
        runtime
            .block_on(store.commit(vec![live_key(7, 9)]))
            .unwrap();
        // Other objects: the newer version stays, in one batch or in two.
        runtime
            .block_on(store.commit(vec![member_at(8, "new:1"), member_at(4, "old:1")]))
            .unwrap();
        runtime
            .block_on(store.commit(vec![member_at(3, "older:1")]))
            .unwrap();
        drop(store);
        thread.join().unwrap();
        let (_, loaded, thread) = Store::open(&path, key, "c").unwrap();
        thread.join().unwrap();
        let key7 = loaded.iter().find(|s| s.id == ObjectId::Key(7)).unwrap();
        assert!(
            matches!(key7.entry, Entry::Tombstone),
            "the deleted key came back on disk"
        );
        assert_eq!(key7.version.counter, 6);
        let member = loaded
            .iter()
            .find(|s| matches!(s.id, ObjectId::Member(_)))
            .unwrap();
        assert_eq!(
            member.version.counter, 8,
            "an older copy replaced a newer one"
        );
    }

    #[test]
    fn only_an_empty_or_damaged_file_is_called_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(Sealer::new(&KeyMaterial::generate()));
        let open = |name: &str| Store::open(&dir.path().join(name), key.clone(), "c").err();
        std::fs::write(dir.path().join("empty.redb"), b"").unwrap();
        assert!(matches!(open("empty.redb"), Some(StoreError::Corrupt(_))));
        std::fs::write(dir.path().join("short.redb"), b"redb but not really").unwrap();
        assert!(matches!(open("short.redb"), Some(StoreError::Corrupt(_))));
        std::fs::write(dir.path().join("garbage.redb"), vec![0x5a; 64 * 1024]).unwrap();
        assert!(matches!(open("garbage.redb"), Some(StoreError::Corrupt(_))));
        std::fs::create_dir(dir.path().join("dir.redb")).unwrap();
        assert!(matches!(open("dir.redb"), Some(StoreError::Io(_))));
        let looped = dir.path().join("loop.redb");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert!(matches!(open("loop.redb"), Some(StoreError::Io(_))));
    }

    #[test]
    fn an_injected_fault_fails_one_commit_writes_nothing_and_the_next_commit_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let key = Arc::new(Sealer::new(&KeyMaterial::generate()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (store, loaded, thread) = Store::open(&path, key.clone(), "c").unwrap();
        assert!(loaded.is_empty());
        store.fail_next_commits(1);
        assert!(runtime.block_on(store.commit(vec![tombstone(1)])).is_err());
        assert!(runtime.block_on(store.commit(vec![tombstone(2)])).is_ok());
        drop(store);
        thread.join().unwrap();
        // Only the second write reached the disk.
        let (_, loaded, thread) = Store::open(&path, key, "c").unwrap();
        let ids: Vec<ObjectId> = loaded.into_iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![ObjectId::Key(2)]);
        thread.join().unwrap();
    }

    #[test]
    fn a_store_of_the_old_layout_opens_with_every_object_and_is_moved_to_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let key = Arc::new(Sealer::new(&KeyMaterial::generate()));
        // Written as stores were before rows by kind: postcard ids in the "objects" table.
        let objects = vec![
            member_at(2, "a:1"),
            live_key(300, 1),
            live_key(4, 2),
            tombstone(5),
        ];
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(OLD_OBJECTS).unwrap();
                for stored in &objects {
                    let object = material::wrap(stored, &key, Place::Disk, "c");
                    table
                        .insert(
                            postcard::to_stdvec(&stored.id).unwrap().as_slice(),
                            postcard::to_stdvec(&object).unwrap().as_slice(),
                        )
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let (_, loaded, thread) = Store::open(&path, key.clone(), "c").unwrap();
            thread.join().unwrap();
            let mut ids: Vec<ObjectId> = loaded.into_iter().map(|s| s.id).collect();
            ids.sort();
            let mut want: Vec<ObjectId> = objects.iter().map(|s| s.id.clone()).collect();
            want.sort();
            assert_eq!(ids, want);
        }
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(names, vec!["objects_by_kind".to_string()]);
    }

    #[test]
    fn rows_sort_by_kind_then_by_handle() {
        let ids = [
            ObjectId::Member("hsm-z".into()),
            ObjectId::User("admin".into()),
            ObjectId::Key(1),
            ObjectId::Key(255),
            ObjectId::Key(256),
            ObjectId::Key(4_294_967_298),
            ObjectId::LoginState("admin".into()),
        ];
        let rows: Vec<Vec<u8>> = ids.iter().map(row).collect();
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows, sorted);
    }
}
