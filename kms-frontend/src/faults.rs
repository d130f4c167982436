//! The faults in force (the control API's `/_hsmkms/faults`), and the emulated network they
//! act on: which subnets of the clusters' VPCs exist and have free addresses, which HSMs the
//! frontend can reach, and whether KMS's own side of a connect works. KMS's connect path asks
//! this network what a real KMS would find (a subnet that is gone, no address for its network
//! interface, an HSM it cannot reach), so each fault produces its ConnectionErrorCode through
//! the path that decides it, never as a canned answer. CloudHSM's CreateHsm asks it too: a new
//! HSM's network interface needs its zone's subnet and a free address in it.
//!
//! Stopping and stalling an HSM act on the HSM itself (through the provisioner); this module
//! only remembers them, so they can be listed and cleared. Nothing here is persisted: a restart
//! clears every fault.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{json, Value};

/// Most faults of each kind held at once (the ids come from clients).
pub const MAX_FAULTS: usize = 1_000;

/// Why KMS could not create its network interface in a cluster's subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EniError {
    /// The subnet no longer exists.
    SubnetNotFound(String),
    /// The subnet has no free IP address.
    NoFreeAddress(String),
}

/// An HSM stalled on purpose: until when (on the host's monotonic clock, not the emulator's,
/// which jumps), or for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Distinguishes this stall from a later one of the same HSM, so the timer of an earlier
    /// stall never ends a later one.
    pub token: u64,
    pub until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    stopped: BTreeSet<String>,
    stalled: BTreeMap<String, Stall>,
    cut: BTreeSet<String>,
    deleted_subnets: BTreeSet<String>,
    full_subnets: BTreeSet<String>,
    fail_connects: bool,
    next_token: u64,
}

/// Every fault in force.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    /// Whether any HSM's network path is cut: every call to an HSM asks, and without this
    /// every call would take the lock to learn that none is. Written under the lock.
    any_cut: AtomicBool,
}

/// A fault could not be recorded: too many of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany;

fn insert(set: &mut BTreeSet<String>, id: &str) -> Result<(), TooMany> {
    if set.len() >= MAX_FAULTS && !set.contains(id) {
        return Err(TooMany);
    }
    set.insert(id.to_string());
    Ok(())
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- what KMS's connect path sees -------------------------------------------------

    /// KMS creates a network interface in each of a cluster's subnets before it talks to the
    /// HSMs: a subnet that was deleted, or one without a free address, makes that fail.
    pub fn create_enis<'a>(
        &self,
        subnets: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EniError> {
        let state = self.state();
        let subnets: Vec<&str> = subnets.into_iter().collect();
        if let Some(s) = subnets.iter().find(|s| state.deleted_subnets.contains(**s)) {
            return Err(EniError::SubnetNotFound(s.to_string()));
        }
        if let Some(s) = subnets.iter().find(|s| state.full_subnets.contains(**s)) {
            return Err(EniError::NoFreeAddress(s.to_string()));
        }
        Ok(())
    }

    /// Whether the subnet is deleted (`delete-subnet`).
    pub fn subnet_deleted(&self, subnet_id: &str) -> bool {
        self.state().deleted_subnets.contains(subnet_id)
    }

    /// Whether the subnet has no free address (`exhaust-subnet`).
    pub fn subnet_full(&self, subnet_id: &str) -> bool {
        self.state().full_subnets.contains(subnet_id)
    }

    /// Whether the frontend's network path to the HSM is cut.
    pub fn is_cut(&self, hsm_id: &str) -> bool {
        self.any_cut.load(Ordering::Acquire) && self.state().cut.contains(hsm_id)
    }

    /// Whether KMS's own side of a connect fails (its record of the store cannot be saved).
    pub fn connects_fail(&self) -> bool {
        self.state().fail_connects
    }

    // ---- changing them ----------------------------------------------------------------

    pub fn set_stopped(&self, hsm_id: &str, stopped: bool) -> Result<(), TooMany> {
        let mut state = self.state();
        if stopped {
            insert(&mut state.stopped, hsm_id)?;
            state.stalled.remove(hsm_id);
        } else {
            state.stopped.remove(hsm_id);
        }
        Ok(())
    }

    /// Records a stall; returns its token (see [`Stall`]).
    pub fn stall(&self, hsm_id: &str, until: Option<Instant>) -> Result<u64, TooMany> {
        let mut state = self.state();
        if state.stalled.len() >= MAX_FAULTS && !state.stalled.contains_key(hsm_id) {
            return Err(TooMany);
        }
        state.next_token += 1;
        let token = state.next_token;
        state
            .stalled
            .insert(hsm_id.to_string(), Stall { token, until });
        Ok(token)
    }

    /// Forgets a stall; with a token, only that stall (a timed one that ran out).
    pub fn resume(&self, hsm_id: &str, token: Option<u64>) -> bool {
        let mut state = self.state();
        match (state.stalled.get(hsm_id), token) {
            (Some(s), Some(t)) if s.token != t => false,
            (Some(_), _) => {
                state.stalled.remove(hsm_id);
                true
            }
            (None, _) => false,
        }
    }

    pub fn set_cut(&self, hsm_id: &str, cut: bool) -> Result<(), TooMany> {
        let mut state = self.state();
        let done = if cut {
            insert(&mut state.cut, hsm_id)
        } else {
            state.cut.remove(hsm_id);
            Ok(())
        };
        self.any_cut.store(!state.cut.is_empty(), Ordering::Release);
        done
    }

    pub fn set_subnet_deleted(&self, subnet_id: &str, deleted: bool) -> Result<(), TooMany> {
        let mut state = self.state();
        if deleted {
            insert(&mut state.deleted_subnets, subnet_id)
        } else {
            state.deleted_subnets.remove(subnet_id);
            Ok(())
        }
    }

    pub fn set_subnet_full(&self, subnet_id: &str, full: bool) -> Result<(), TooMany> {
        let mut state = self.state();
        if full {
            insert(&mut state.full_subnets, subnet_id)
        } else {
            state.full_subnets.remove(subnet_id);
            Ok(())
        }
    }

    pub fn set_connects_fail(&self, fail: bool) {
        self.state().fail_connects = fail;
    }

    /// Forgets every network fault and returns the HSMs that were stopped and stalled, for
    /// the caller to start and resume.
    pub fn clear(&self) -> (Vec<String>, Vec<String>) {
        let mut state = self.state();
        let stopped = std::mem::take(&mut state.stopped).into_iter().collect();
        let stalled = std::mem::take(&mut state.stalled).into_keys().collect();
        state.cut.clear();
        self.any_cut.store(false, Ordering::Release);
        state.deleted_subnets.clear();
        state.full_subnets.clear();
        state.fail_connects = false;
        (stopped, stalled)
    }

    /// The faults in force, as `GET /_hsmkms/faults` lists them.
    pub fn list(&self) -> Vec<Value> {
        let state = self.state();
        let mut out = Vec::new();
        for h in &state.stopped {
            out.push(json!({"action": "stop", "hsmId": h, "produces": "HSM DEGRADED; INSUFFICIENT_CLOUDHSM_HSMS once none is active", "clearedBy": "start"}));
        }
        for (h, s) in &state.stalled {
            let mut f = json!({"action": "stall", "hsmId": h, "produces": "calls to the HSM time out; NETWORK_ERRORS once none answers", "clearedBy": "resume"});
            if let Some(until) = s.until {
                let left = until.saturating_duration_since(Instant::now());
                f["remainingSeconds"] = json!(left.as_secs_f64().ceil() as u64);
            }
            out.push(f);
        }
        for h in &state.cut {
            out.push(json!({"action": "cut-network", "hsmId": h, "produces": "NETWORK_ERRORS once no HSM is reachable", "clearedBy": "restore-network"}));
        }
        for s in &state.deleted_subnets {
            out.push(json!({"action": "delete-subnet", "subnetId": s, "produces": "SUBNET_NOT_FOUND; CreateHsm in its zone fails", "clearedBy": "restore-subnet"}));
        }
        for s in &state.full_subnets {
            out.push(json!({"action": "exhaust-subnet", "subnetId": s, "produces": "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET; CreateHsm in its zone fails", "clearedBy": "free-subnet"}));
        }
        if state.fail_connects {
            out.push(json!({"action": "fail-connects", "produces": "INTERNAL_ERROR", "clearedBy": "heal-connects"}));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_subnet_wins_over_a_full_one_and_restoring_heals() {
        let f = Faults::default();
        assert_eq!(f.create_enis(["subnet-a", "subnet-b"]), Ok(()));
        f.set_subnet_full("subnet-a", true).unwrap();
        f.set_subnet_deleted("subnet-b", true).unwrap();
        assert!(f.subnet_full("subnet-a") && !f.subnet_deleted("subnet-a"));
        assert!(f.subnet_deleted("subnet-b") && !f.subnet_full("subnet-b"));
        assert_eq!(
            f.create_enis(["subnet-a", "subnet-b"]),
            Err(EniError::SubnetNotFound("subnet-b".into()))
        );
        f.set_subnet_deleted("subnet-b", false).unwrap();
        assert_eq!(
            f.create_enis(["subnet-a", "subnet-b"]),
            Err(EniError::NoFreeAddress("subnet-a".into()))
        );
        assert_eq!(f.list().len(), 1);
        f.clear();
        assert_eq!(f.create_enis(["subnet-a", "subnet-b"]), Ok(()));
        assert!(f.list().is_empty());
    }

    #[test]
    fn a_timed_stall_ends_only_itself() {
        let f = Faults::default();
        let first = f.stall("hsm-1", Some(Instant::now())).unwrap();
        let second = f.stall("hsm-1", None).unwrap();
        assert!(!f.resume("hsm-1", Some(first)), "the first stall's timer");
        assert!(f.resume("hsm-1", Some(second)));
        assert!(!f.resume("hsm-1", None));
    }
}
