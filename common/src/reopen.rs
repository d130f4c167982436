//! A database handle that recovers from a failed write by itself. Some storage engines (redb
//! among them) answer every later transaction with the same error after one I/O error, until
//! the file is opened again; so after a failure the next write reopens the file first, and the
//! store works again as soon as the cause (a full disk, say) is gone, with no restart. Until a
//! write succeeds again the handle says why it is failing, for health reports.
//!
//! Generic over the database type and its error, so that no storage engine's types appear in
//! this crate's interface; each store says how to open its file.

use std::fmt;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// How a [`Reopening`] opens its file again.
type Opener<D, E> = Box<dyn Fn() -> Result<D, E> + Send + Sync>;
/// The error of a write that could not use the file, saying why: it was closed (another
/// thread's reopen failed), or the engine panicked in the middle of the write.
type Unusable<E> = Box<dyn Fn(&str) -> E + Send + Sync>;

/// Why a closed file cannot be used.
const CLOSED: &str = "the store could not be reopened after an I/O error";

/// An open database, reopened before the next write after a failed one.
pub struct Reopening<D, E> {
    open: Opener<D, E>,
    unusable: Unusable<E>,
    /// `None` while the file is closed for a reopen, or after a reopen failed.
    db: RwLock<Option<D>>,
    /// Why the last write failed, while the store cannot write; `None` once one succeeds.
    failing: Mutex<Option<String>>,
}

impl<D, E> fmt::Debug for Reopening<D, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reopening")
            .field("failing", &*lock(&self.failing))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D, E: fmt::Display> Reopening<D, E> {
    /// Wraps a database just opened; `open` opens the same file again, `unusable` is the
    /// error of a write or read that cannot use it, given why (its reopen failed and has not
    /// been retried, or the engine panicked during the write).
    pub fn new(
        db: D,
        open: impl Fn() -> Result<D, E> + Send + Sync + 'static,
        unusable: impl Fn(&str) -> E + Send + Sync + 'static,
    ) -> Self {
        Self {
            open: Box::new(open),
            unusable: Box::new(unusable),
            db: RwLock::new(Some(db)),
            failing: Mutex::new(None),
        }
    }

    /// The database for reading, as last opened; `None` while it could not be reopened.
    pub fn read(&self) -> RwLockReadGuard<'_, Option<D>> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one read on the database as last opened.
    pub fn reading<T>(&self, read: impl FnOnce(&D) -> Result<T, E>) -> Result<T, E> {
        match &*self.read() {
            Some(db) => read(db),
            None => Err((self.unusable)(CLOSED)),
        }
    }

    /// Runs one write. If the last one failed (or the file is closed), the file is reopened
    /// first: closed, then opened again, since an engine may refuse a second open of a file
    /// the process still holds. The outcome is recorded for [`Reopening::failing`].
    ///
    /// An engine that panics in the middle of a write (redb asserts on some I/O failures, a
    /// full disk among them) fails that write like an I/O error: the file is reopened before
    /// the next one, and the thread that wrote carries on.
    pub fn write<T>(&self, write: impl FnOnce(&D) -> Result<T, E>) -> Result<T, E> {
        let result = self.reopen_if_needed().and_then(|()| match &*self.read() {
            Some(db) => crate::quiet::catch_quietly(|| write(db)).unwrap_or_else(|panic| {
                Err((self.unusable)(&format!(
                    "the storage engine failed in the middle of a write ({panic})"
                )))
            }),
            None => Err((self.unusable)(CLOSED)),
        });
        *lock(&self.failing) = result.as_ref().err().map(|e| e.to_string());
        result
    }

    /// Records a write that failed without reaching the database (fault injection): the
    /// store reports it, and the next write reopens the file as after a real failure.
    pub fn record_failure(&self, why: impl fmt::Display) {
        *lock(&self.failing) = Some(why.to_string());
    }

    /// Why the store cannot write now, if the last write failed.
    pub fn failing(&self) -> Option<String> {
        lock(&self.failing).clone()
    }

    fn reopen_if_needed(&self) -> Result<(), E> {
        let needed = lock(&self.failing).is_some() || self.read().is_none();
        if !needed {
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        *db = None;
        *db = Some((self.open)()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A "database" that is the number of times it was opened; a write fails while `broken`.
    fn counting(opens: Arc<AtomicU32>) -> Reopening<u32, String> {
        let again = opens.clone();
        Reopening::new(
            opens.fetch_add(1, Ordering::SeqCst) + 1,
            move || Ok(again.fetch_add(1, Ordering::SeqCst) + 1),
            |why: &str| why.to_string(),
        )
    }

    #[test]
    fn a_failed_write_reopens_the_file_before_the_next_and_health_follows() {
        let opens = Arc::new(AtomicU32::new(0));
        let db = counting(opens.clone());
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Ok(1));
        assert_eq!(db.failing(), None);
        assert_eq!(
            db.write(|_| Err::<u32, _>("disk full".into())),
            Err("disk full".into())
        );
        assert_eq!(db.failing(), Some("disk full".into()));
        // The next write runs on a database opened again, and health is restored.
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Ok(2));
        assert_eq!(db.failing(), None);
        assert_eq!(db.reading(|d| Ok::<_, String>(*d)), Ok(2));
        // An injected failure is reported and reopens too.
        db.record_failure("injected");
        assert_eq!(db.failing(), Some("injected".into()));
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Ok(3));
        assert_eq!(opens.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_write_that_panics_fails_and_the_next_write_reopens() {
        let opens = Arc::new(AtomicU32::new(0));
        let db = counting(opens.clone());
        let failed = db.write(|_| -> Result<u32, String> { panic!("assertion in the engine") });
        assert!(
            failed
                .as_ref()
                .is_err_and(|e| e.contains("assertion in the engine")),
            "{failed:?}"
        );
        assert!(db.failing().is_some());
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Ok(2));
        assert_eq!(db.failing(), None);
    }

    #[test]
    fn a_reopen_that_fails_is_tried_again_by_the_next_write() {
        let fail = Arc::new(AtomicU32::new(0));
        let failing = fail.clone();
        let db = Reopening::new(
            0u32,
            move || {
                if failing.load(Ordering::SeqCst) > 0 {
                    failing.fetch_sub(1, Ordering::SeqCst);
                    Err("still full".to_string())
                } else {
                    Ok(7)
                }
            },
            |why: &str| why.to_string(),
        );
        db.record_failure("disk full");
        fail.store(1, Ordering::SeqCst);
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Err("still full".into()));
        assert_eq!(db.reading(|d| Ok::<_, String>(*d)), Err(CLOSED.into()));
        assert_eq!(db.write(|d| Ok::<_, String>(*d)), Ok(7));
        assert_eq!(db.failing(), None);
    }
}
