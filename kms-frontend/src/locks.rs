//! Locks on the registry's resources (keys and aliases), so one change to a resource runs at a
//! time: it plans from the registry as the previous change left it, is made durable, and is
//! installed before the next one plans. Changes to different resources run side by side and
//! share group commits. Locks are taken all at once in one global order (aliases before keys,
//! each by name or id), so two changes never wait on each other in a circle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// Something a change locks. The variant order is the lock order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Alias(String),
    Key(Uuid),
}

/// The lock table: one entry per resource someone holds or waits for, so it holds at most as
/// many entries as there are changes in flight.
#[derive(Debug, Default)]
pub struct Locks {
    table: Mutex<HashMap<Resource, Arc<tokio::sync::Mutex<()>>>>,
}

/// Locks held by one change; released (and forgotten when nobody waits) on drop.
#[derive(Debug)]
pub struct Held<'a> {
    locks: &'a Locks,
    held: Vec<(Resource, OwnedMutexGuard<()>)>,
}

impl Locks {
    fn entry(&self, resource: &Resource) -> Arc<tokio::sync::Mutex<()>> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.entry(resource.clone()).or_default().clone()
    }

    /// Takes every lock of `resources`, in the global order.
    pub async fn acquire(&self, mut resources: Vec<Resource>) -> Held<'_> {
        resources.sort();
        resources.dedup();
        let mut held = Vec::with_capacity(resources.len());
        for resource in resources {
            let guard = self.entry(&resource).lock_owned().await;
            held.push((resource, guard));
        }
        Held { locks: self, held }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut table = self.locks.table.lock().unwrap_or_else(|e| e.into_inner());
        for (resource, guard) in self.held.drain(..) {
            drop(guard);
            // Only the table's own reference left: nobody holds or waits for it.
            if table
                .get(&resource)
                .is_some_and(|m| Arc::strong_count(m) == 1)
            {
                table.remove(&resource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resource_is_changed_by_one_holder_at_a_time_and_forgotten_after() {
        let locks = Arc::new(Locks::default());
        let key = Resource::Key(Uuid::new_v4());
        let first = locks.acquire(vec![key.clone()]).await;
        let waiting = {
            let locks = locks.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let _second = locks
                    .acquire(vec![key, Resource::Alias("alias/a".into())])
                    .await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "the second holder waits for the first"
        );
        drop(first);
        waiting.await.unwrap();
        assert!(
            locks.table.lock().unwrap().is_empty(),
            "nothing held, nothing kept"
        );
    }
}
