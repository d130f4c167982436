//! One deadline per request. A call that changes nothing (a read, a crypto call: the hot path)
//! is simply dropped at the deadline, which leaves nothing half done. A call that may commit a
//! change runs as a task of its own that the deadline does not cancel, so a change that was
//! committed is always installed and its effects run, whether or not its caller still waits:
//! as on AWS, a call that timed out may still have happened.
//!
//! Tasks whose caller has given up are counted; past [`MAX_OVERDUE`] of them (a disk or a
//! cluster that stopped answering, and clients that retry) new changes are refused at once
//! rather than piling up.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Changes still running after their caller gave up, past which new ones are refused.
pub const MAX_OVERDUE: usize = 64;

/// Why a call has no answer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// The deadline passed; a change may still take effect.
    Timeout,
    /// Too many changes are still running after their callers gave up; nothing was started.
    Busy,
    /// The task ended without an answer (it panicked).
    Lost,
}

/// The changes running after their callers gave up.
#[derive(Debug, Default)]
pub struct Overdue(AtomicUsize);

impl Overdue {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a detached call stands: its caller waits, gave up, or it finished.
const WAITING: u8 = 0;
const ABANDONED: u8 = 1;
const DONE: u8 = 2;

/// Runs a call that changes nothing within `deadline`.
pub async fn inline<T>(deadline: Duration, work: impl Future<Output = T>) -> Result<T, Late> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| Late::Timeout)
}

/// Runs a call that may change something as a task the deadline does not cancel (on the
/// current worker's runtime); answers its result if it ends within `deadline`.
pub async fn detached<T: 'static>(
    deadline: Duration,
    overdue: &Arc<Overdue>,
    work: impl Future<Output = T> + 'static,
) -> Result<T, Late> {
    if overdue.count() >= MAX_OVERDUE {
        return Err(Late::Busy);
    }
    let state = Arc::new(AtomicU8::new(WAITING));
    let (task_state, task_overdue) = (state.clone(), overdue.clone());
    let mut task = actix::spawn(async move {
        let answer = work.await;
        if task_state.swap(DONE, Ordering::SeqCst) == ABANDONED {
            task_overdue.0.fetch_sub(1, Ordering::SeqCst);
        }
        answer
    });
    let answer = match tokio::time::timeout(deadline, &mut task).await {
        Ok(done) => done,
        Err(_) => {
            let gave_up = state
                .compare_exchange(WAITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if gave_up {
                overdue.0.fetch_add(1, Ordering::SeqCst);
                return Err(Late::Timeout);
            }
            // It finished just as the deadline passed: its answer is there.
            task.await
        }
    };
    answer.map_err(|_| Late::Lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_late_change_finishes_and_is_counted_until_it_does() {
        let overdue = Arc::new(Overdue::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let late = detached(Duration::from_millis(20), &overdue, async move {
            let _ = rx.await;
            7
        })
        .await;
        assert_eq!(late, Err(Late::Timeout));
        assert_eq!(overdue.count(), 1, "the change still runs");
        tx.send(()).unwrap();
        for _ in 0..100 {
            if overdue.count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(overdue.count(), 0, "it finished and is no longer counted");
        assert_eq!(
            detached(Duration::from_secs(1), &overdue, async { 8 }).await,
            Ok(8)
        );
    }

    #[actix_rt::test]
    async fn past_the_bound_of_overdue_changes_new_ones_are_refused() {
        let overdue = Arc::new(Overdue::default());
        overdue.0.store(MAX_OVERDUE, Ordering::SeqCst);
        assert_eq!(
            detached(Duration::from_secs(1), &overdue, async { 1 }).await,
            Err(Late::Busy)
        );
    }
}
