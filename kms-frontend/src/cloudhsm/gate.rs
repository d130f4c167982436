//! The CloudHSM service's reset gate: every CloudHSMv2 call, every run of the periodic work and
//! every task they leave running (an HSM being created or deleted) holds a [`Pass`]; a reset
//! closes the gate, waits until no pass is left, and reopens it once the new state is in
//! place. So a request sees the clusters and backups as they were or as the reset left them,
//! never a mix, and no task of the old state writes into the new one.
//!
//! A holder hands a clone of its pass to the tasks it starts: a clone never waits (the gate
//! cannot be closed past a pass that exists), so a task started while a reset waits cannot
//! deadlock against it, as a second read of a fair `RwLock` would.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    passes: usize,
    closed: bool,
}

/// The gate; see the module's documentation.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
    changed: Notify,
}

/// Leave to act on the service's state as it is; the gate stays open while one exists.
#[derive(Debug)]
pub struct Pass(Arc<Gate>);

/// The gate closed, with no pass left; it opens again when this is dropped.
#[derive(Debug)]
pub struct Closed(Arc<Gate>);

impl Gate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pass, once the gate is open (at once, unless a reset runs).
    pub async fn enter(self: &Arc<Self>) -> Pass {
        // Bounded by the reset holding the gate closed; each wake-up re-checks.
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if !state.closed {
                    state.passes += 1;
                    return Pass(self.clone());
                }
            }
            changed.await;
        }
    }

    /// Closes the gate (after any other closer has opened it again) and waits until every
    /// pass is gone.
    pub async fn close(self: &Arc<Self>) -> Closed {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if !state.closed {
                    state.closed = true;
                }
                // Only this closer can get here with no pass: new ones wait for it.
                if state.passes == 0 {
                    return Closed(self.clone());
                }
            }
            changed.await;
        }
    }
}

impl Clone for Pass {
    fn clone(&self) -> Self {
        self.0.state().passes += 1;
        Pass(self.0.clone())
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.state();
            state.passes -= 1;
            state.passes == 0
        };
        if last {
            self.0.changed.notify_waiters();
        }
    }
}

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.state().closed = false;
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reset_waits_for_passes_and_their_clones_and_new_passes_wait_for_it() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().await;
        let task_pass = pass.clone();
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A clone made while the reset waits does not wait itself.
        let late_clone = task_pass.clone();
        let entering = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await }
        });
        drop((pass, task_pass));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "a clone still holds the gate");
        drop(late_clone);
        let closed = tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!entering.is_finished(), "no pass while the gate is closed");
        drop(closed);
        let _pass = tokio::time::timeout(Duration::from_secs(5), entering)
            .await
            .unwrap()
            .unwrap();
    }
}
