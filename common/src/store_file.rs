//! Opening a redb store file, as both the frontend's store and each HSM's store do: a file
//! that holds no whole store (empty, truncated, damaged) is told apart from one the system
//! would not let us use (permissions, an I/O error, not a file, another process holding it),
//! because only the first may be moved aside or rebuilt; a file that is whole is never thrown
//! away over an error that says nothing about its content. Everything redb does with a file it
//! has not checked yet runs under the panic catcher: it asserts on some kinds of damage, and
//! an in-process store must not take the process down with it.
//!
//! A reopen after a failed write ([`crate::reopen`]) opens the existing file only: a store file
//! that vanished while the process ran is an error, not a new empty store.

use std::path::Path;

use redb::{Builder, Database};

use crate::quiet::catch_quietly;

/// Why a store file could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The file holds no whole store: empty, truncated or damaged. The message names it.
    Damaged(String),
    /// The file could not be used, but may well be whole. The message names it.
    Unusable(String),
}

/// Whether a missing file may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A first start: create it.
    Create,
    /// A reopen: it must be there.
    Refuse,
}

/// What a store's `prepare` step fails with (boxed: redb's error is large).
pub type PrepareError = Box<redb::Error>;

/// For `?` on redb's errors in a `prepare` step.
pub fn boxed(e: impl Into<redb::Error>) -> PrepareError {
    Box::new(e.into())
}

/// Opens (or creates) the store at `path` with a page cache of `cache_bytes`, then runs
/// `prepare` (creating its tables, say) in the same checks.
pub fn open(
    path: &Path,
    cache_bytes: usize,
    missing: Missing,
    prepare: impl FnOnce(&Database) -> Result<(), PrepareError>,
) -> Result<Database, OpenError> {
    let exists = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(OpenError::Unusable(format!(
                "{} is not a file",
                path.display()
            )))
        }
        Ok(m) if m.len() == 0 => {
            return Err(OpenError::Damaged(format!(
                "{} is empty (0 bytes)",
                path.display()
            )))
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(OpenError::Unusable(format!(
                "cannot look at {}: {e}",
                path.display()
            )))
        }
    };
    if !exists && missing == Missing::Refuse {
        return Err(OpenError::Unusable(format!(
            "{} is gone: it was removed while in use",
            path.display()
        )));
    }
    let mut builder = Builder::new();
    builder.set_cache_size(cache_bytes);
    let opened = catch_quietly(|| -> Result<Database, OpenError> {
        let db = if exists {
            builder.open(path)
        } else {
            builder.create(path)
        }
        .map_err(|e| classify(path, e.into()))?;
        prepare(&db).map_err(|e| classify(path, *e))?;
        Ok(db)
    });
    match opened {
        Ok(result) => result,
        Err(panic) => Err(OpenError::Damaged(format!(
            "{} is damaged: {panic}",
            path.display()
        ))),
    }
}

/// Tells a damaged file (its content is wrong) from one that could not be used (the system
/// refused).
pub fn classify(path: &Path, e: redb::Error) -> OpenError {
    use std::io::ErrorKind;
    let path = path.display();
    match e {
        redb::Error::Corrupted(why) => OpenError::Damaged(format!("{path} is damaged: {why}")),
        // A file shorter than its header says, or with impossible content.
        redb::Error::Io(io)
            if matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData) =>
        {
            OpenError::Damaged(format!("{path} is damaged: {io}"))
        }
        redb::Error::Io(io) => OpenError::Unusable(format!("{path}: {io}")),
        redb::Error::DatabaseAlreadyOpen => {
            OpenError::Unusable(format!("{path} is open in another process"))
        }
        redb::Error::UpgradeRequired(version) => OpenError::Unusable(format!(
            "{path} is in redb's file format {version}, which this build does not read"
        )),
        other => OpenError::Unusable(format!("{path}: {other}")),
    }
}

/// Fault injection on a store's commits, shared by the stores: the next `skip` batches
/// succeed, then `fail` batches fail as if the disk had refused them. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CommitFaults(std::sync::Arc<std::sync::Mutex<(u32, u32)>>);

impl CommitFaults {
    /// After `skip` more batches, the next `fail` fail.
    pub fn fail_after(&self, skip: u32, fail: u32) {
        *self.lock() = (skip, fail);
    }

    /// Whether this batch is to fail; counts down.
    pub fn take(&self) -> bool {
        let mut faults = self.lock();
        let (skip, fail) = &mut *faults;
        if *skip > 0 {
            *skip -= 1;
            return false;
        }
        if *fail > 0 {
            *fail -= 1;
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, u32)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("t");

    fn tables(db: &Database) -> Result<(), PrepareError> {
        let txn = db.begin_write().map_err(boxed)?;
        txn.open_table(TABLE).map_err(boxed)?;
        txn.commit().map_err(boxed)?;
        Ok(())
    }

    #[test]
    fn only_an_empty_or_damaged_file_is_called_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // Missing: created on a first start, refused on a reopen.
        assert!(matches!(
            open(&path, 1 << 20, Missing::Refuse, tables),
            Err(OpenError::Unusable(_))
        ));
        drop(open(&path, 1 << 20, Missing::Create, tables).unwrap());
        drop(open(&path, 1 << 20, Missing::Refuse, tables).unwrap());
        // A directory where the file should be: unusable, not damaged.
        let not_a_file = dir.path().join("d.redb");
        std::fs::create_dir(&not_a_file).unwrap();
        assert!(matches!(
            open(&not_a_file, 1 << 20, Missing::Create, tables),
            Err(OpenError::Unusable(_))
        ));
        // Empty, and garbage: damaged.
        let empty = dir.path().join("e.redb");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            open(&empty, 1 << 20, Missing::Create, tables),
            Err(OpenError::Damaged(m)) if m.contains("empty")
        ));
        let garbage = dir.path().join("g.redb");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            open(&garbage, 1 << 20, Missing::Create, tables),
            Err(OpenError::Damaged(_))
        ));
    }

    #[test]
    fn commit_faults_let_some_through_then_fail_some() {
        let faults = CommitFaults::default();
        faults.fail_after(1, 2);
        assert_eq!(
            (0..4).map(|_| faults.take()).collect::<Vec<_>>(),
            [false, true, true, false]
        );
    }
}
