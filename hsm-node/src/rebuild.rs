//! Rebuilding a store from the peers: when it may end. A node whose store was unreadable
//! starts empty and serves no client until it has caught up. One round with one peer is not
//! enough: with three or more HSMs, a key this node generated may be held only by another
//! peer (its quorum was this node and that one), and serving before it is back would let the
//! node mint that key's handle again. So the rebuild ends once an anti-entropy round has
//! completed with every peer the node knows of, or, when some peer does not answer, after a
//! bounded wait (with at least one peer caught up), with the handle counter moved well past
//! anything that peer could hold.

use std::collections::BTreeSet;
use std::time::Duration;

/// How far the handle counter jumps when a rebuild ends without every peer: more keys than
/// one HSM generates in more than an hour at full speed, so a handle minted before the store
/// was lost, and held only by the peer that did not answer, is not minted again.
pub const HANDLE_GAP_AFTER_PARTIAL_REBUILD: u64 = 1 << 24;

/// A rebuild in progress: when it began and which peers it has caught up with.
#[derive(Debug, Clone)]
pub struct Rebuild {
    started_millis: u64,
    caught_up: BTreeSet<String>,
}

/// Whether a rebuild may end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildCheck {
    /// Some peer is still to be caught up with, and the wait is not over.
    Waiting,
    /// Every peer has been caught up with.
    Complete,
    /// The wait is over; these peers were never caught up with.
    Partial { missing: Vec<String> },
}

impl Rebuild {
    /// A rebuild that begins at `now_millis`.
    pub fn new(now_millis: u64) -> Self {
        Self {
            started_millis: now_millis,
            caught_up: BTreeSet::new(),
        }
    }

    /// An anti-entropy round with the peer at `address` completed.
    pub fn caught_up(&mut self, address: &str) {
        self.caught_up.insert(address.to_string());
    }

    /// Whether the rebuild may end, given the addresses of every peer the node knows of now
    /// (members and seeds) and how long it may wait for those that do not answer.
    pub fn check<'a>(
        &self,
        peers: impl IntoIterator<Item = &'a String>,
        now_millis: u64,
        wait: Duration,
    ) -> RebuildCheck {
        let missing: Vec<String> = peers
            .into_iter()
            .filter(|p| !self.caught_up.contains(*p))
            .cloned()
            .collect();
        if self.caught_up.is_empty() {
            // Nothing learned yet from anyone: serving now would serve an empty store.
            return RebuildCheck::Waiting;
        }
        if missing.is_empty() {
            return RebuildCheck::Complete;
        }
        let waited = now_millis.saturating_sub(self.started_millis);
        if u128::from(waited) >= wait.as_millis() {
            RebuildCheck::Partial { missing }
        } else {
            RebuildCheck::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_rebuild_ends_once_every_peer_is_caught_up_or_the_wait_is_over() {
        let wait = Duration::from_secs(10);
        let mut rebuild = Rebuild::new(1_000);
        let both = peers(&["b:1", "c:1"]);
        // Nobody yet: wait, even past the bound (there is nothing to serve from).
        assert_eq!(rebuild.check(&both, 1_000, wait), RebuildCheck::Waiting);
        assert_eq!(rebuild.check(&both, 60_000, wait), RebuildCheck::Waiting);
        // One peer of two: not enough while the wait lasts.
        rebuild.caught_up("c:1");
        assert_eq!(rebuild.check(&both, 5_000, wait), RebuildCheck::Waiting);
        // Both: done at once.
        let mut complete = rebuild.clone();
        complete.caught_up("b:1");
        assert_eq!(complete.check(&both, 5_000, wait), RebuildCheck::Complete);
        // The wait over with one still missing: it ends, naming the missing one.
        assert_eq!(
            rebuild.check(&both, 11_000, wait),
            RebuildCheck::Partial {
                missing: peers(&["b:1"])
            }
        );
        // A peer learned of later (a member record pulled from the first) is waited for too;
        // one that left is not.
        let three = peers(&["b:1", "c:1", "d:1"]);
        assert_eq!(complete.check(&three, 5_000, wait), RebuildCheck::Waiting);
        assert_eq!(
            complete.check(&peers(&["c:1"]), 5_000, wait),
            RebuildCheck::Complete
        );
    }
}
