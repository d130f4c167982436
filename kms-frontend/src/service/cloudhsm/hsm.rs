//! An HSM's life cycle as CloudHSM shows it (`HsmState`): created in the background, ACTIVE
//! while its node runs, DEGRADED while it does not, deleted in the background. One pure
//! transition decides what each event does; the runtime (`crate::cloudhsm`) only records the
//! pending creates and deletes and asks the provisioner whether the node runs.

use serde::{Deserialize, Serialize};

use super::error::CloudHsmError;
use crate::faults::EniError;

/// CloudHSM's `HsmState`. Cluster records of the layout before [`HsmChangeKind`] stored it by
/// variant index (the runtime still reads them): new variants go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HsmState {
    CreateInProgress,
    Active,
    Degraded,
    DeleteInProgress,
    Deleted,
}

/// What happens to an HSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmOp {
    /// The provisioner finished creating it; it runs (or not).
    Created { running: bool },
    /// Its node stopped or came back (a fault, or a restart).
    Running(bool),
    /// DeleteHsm.
    Delete,
    /// The provisioner finished deleting it.
    DeleteFinished,
}

impl HsmState {
    /// The AWS name, as DescribeClusters shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            HsmState::CreateInProgress => "CREATE_IN_PROGRESS",
            HsmState::Active => "ACTIVE",
            HsmState::Degraded => "DEGRADED",
            HsmState::DeleteInProgress => "DELETE_IN_PROGRESS",
            HsmState::Deleted => "DELETED",
        }
    }

    /// The state of an HSM whose node exists: a create or delete under way shows as such;
    /// otherwise ACTIVE while the node runs and DEGRADED while it does not.
    pub fn observed(pending: Option<HsmState>, running: bool) -> HsmState {
        match pending {
            Some(p) => p,
            None if running => HsmState::Active,
            None => HsmState::Degraded,
        }
    }

    /// The one transition. `hsm_id` names the HSM in a refusal.
    pub fn apply(self, op: HsmOp, hsm_id: &str) -> Result<HsmState, CloudHsmError> {
        use HsmState::*;
        match (self, op) {
            (CreateInProgress, HsmOp::Created { running }) => Ok(Self::observed(None, running)),
            (Active | Degraded, HsmOp::Running(running)) => Ok(Self::observed(None, running)),
            // A create or delete under way shows as such whatever the node does meanwhile.
            (CreateInProgress | DeleteInProgress, HsmOp::Running(_)) => Ok(self),
            (Active | Degraded, HsmOp::Delete) => Ok(DeleteInProgress),
            (CreateInProgress | DeleteInProgress, HsmOp::Delete) => Err(busy(hsm_id, self)),
            (DeleteInProgress, HsmOp::DeleteFinished) => Ok(Deleted),
            (state, op) => Err(CloudHsmError::InvalidRequest(format!(
                "HSM {hsm_id} is {}; {op:?} does not apply.",
                state.as_str()
            ))),
        }
    }
}

/// An HSM being created or deleted, as its cluster's record keeps it until the provisioner is
/// done: durable before the provisioner is asked, so a restart finishes (or fails) it instead
/// of finding an HSM that nothing settles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmChange {
    /// Where the HSM is (or was): shown while the provisioner has no node for it yet, and
    /// where a create that a restart finishes puts it.
    pub availability_zone: String,
    pub kind: HsmChangeKind,
}

/// Which change is under way.
///
/// Persisted by variant index: append new variants at the end, never reorder. `Create` is
/// index 0 with one bool, as a create was in the older layout (`HsmState` index 0 and
/// `had_peers`); an older delete (index 3) is refused by this enum and read by the runtime's
/// older layout instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HsmChangeKind {
    /// CreateHsm. `had_peers`: whether the cluster had other HSMs then (a new HSM of an ACTIVE
    /// cluster that had some is followed by a backup, as on CloudHSM).
    Create { had_peers: bool },
    /// DeleteHsm.
    Delete,
}

impl HsmChange {
    /// CreateHsm's change, in a cluster that has `peers` HSMs already.
    pub fn create(availability_zone: &str, peers: usize) -> HsmChange {
        HsmChange {
            availability_zone: availability_zone.into(),
            kind: HsmChangeKind::Create {
                had_peers: peers > 0,
            },
        }
    }

    /// DeleteHsm's change of an HSM that is `state` now, if the HSM's state allows it.
    pub fn delete(
        hsm_id: &str,
        state: HsmState,
        availability_zone: &str,
    ) -> Result<HsmChange, CloudHsmError> {
        state.apply(HsmOp::Delete, hsm_id)?;
        Ok(HsmChange {
            availability_zone: availability_zone.into(),
            kind: HsmChangeKind::Delete,
        })
    }

    /// The state the HSM shows while the change is under way.
    pub fn state(&self) -> HsmState {
        match self.kind {
            HsmChangeKind::Create { .. } => HsmState::CreateInProgress,
            HsmChangeKind::Delete => HsmState::DeleteInProgress,
        }
    }
}

/// CreateHsm's refusal when the new HSM's network interface cannot be made in its zone's
/// subnet: the subnet is gone, or has no free address. CloudHSM makes the interface in the
/// customer's subnet (EC2's CreateNetworkInterface) and documents no error of its own for
/// either case; the nearest shape its model lists for CreateHsm is
/// CloudHsmInvalidRequestException (the customer's VPC must change, a retry alone does not
/// help), with EC2's own text for the condition (`InvalidSubnetID.NotFound`,
/// `InsufficientFreeAddressesInSubnet`).
pub fn eni_refused(error: &EniError) -> CloudHsmError {
    CloudHsmError::InvalidRequest(match error {
        EniError::SubnetNotFound(subnet) => format!("The subnet ID '{subnet}' does not exist"),
        EniError::NoFreeAddress(_) => {
            "The specified subnet does not have enough free addresses to satisfy the request."
                .into()
        }
    })
}

/// DeleteHsm while a create or delete of the HSM is under way.
fn busy(hsm_id: &str, state: HsmState) -> CloudHsmError {
    CloudHsmError::InvalidRequest(match state {
        HsmState::DeleteInProgress => {
            format!("HSM {hsm_id} is DELETE_IN_PROGRESS; it is being deleted already.")
        }
        _ => format!(
            "HSM {hsm_id} is {}; try again once that is done.",
            state.as_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::HsmOp::*;
    use super::HsmState::*;
    use super::*;

    #[test]
    fn every_state_and_event() {
        let ok = |s: HsmState, op| s.apply(op, "hsm-abcdefghijk").unwrap();
        let refused = |s: HsmState, op| s.apply(op, "hsm-abcdefghijk").is_err();
        assert_eq!(ok(CreateInProgress, Created { running: true }), Active);
        assert_eq!(ok(CreateInProgress, Created { running: false }), Degraded);
        assert_eq!(ok(Active, Running(false)), Degraded);
        assert_eq!(ok(Degraded, Running(true)), Active);
        assert_eq!(ok(CreateInProgress, Running(false)), CreateInProgress);
        assert_eq!(ok(DeleteInProgress, Running(true)), DeleteInProgress);
        assert_eq!(ok(Active, Delete), DeleteInProgress);
        assert_eq!(ok(Degraded, Delete), DeleteInProgress);
        assert_eq!(ok(DeleteInProgress, DeleteFinished), Deleted);
        assert!(refused(CreateInProgress, Delete));
        assert!(refused(DeleteInProgress, Delete));
        assert!(refused(Active, DeleteFinished));
        assert!(refused(Deleted, Running(true)));
        assert!(refused(Deleted, Delete));
        assert!(refused(Active, Created { running: true }));
        assert_eq!(
            CreateInProgress
                .apply(Delete, "hsm-abcdefghijk")
                .unwrap_err()
                .to_string(),
            "HSM hsm-abcdefghijk is CREATE_IN_PROGRESS; try again once that is done."
        );
    }

    #[test]
    fn a_change_shows_as_its_in_progress_state_and_a_delete_asks_the_transition() {
        let create = HsmChange::create("us-east-1a", 1);
        assert_eq!(create.kind, HsmChangeKind::Create { had_peers: true });
        assert_eq!(create.state(), CreateInProgress);
        assert_eq!(
            HsmChange::create("us-east-1a", 0).kind,
            HsmChangeKind::Create { had_peers: false }
        );
        let delete = HsmChange::delete("hsm-abcdefghijk", Degraded, "us-east-1b").unwrap();
        assert_eq!(delete.kind, HsmChangeKind::Delete);
        assert_eq!(delete.state(), DeleteInProgress);
        assert!(HsmChange::delete("hsm-abcdefghijk", CreateInProgress, "us-east-1b").is_err());
    }

    #[test]
    fn a_missing_or_full_subnet_refuses_as_ec2_words_it() {
        let gone = eni_refused(&EniError::SubnetNotFound("subnet-0123456789abcdef0".into()));
        assert_eq!(gone.type_name(), "CloudHsmInvalidRequestException");
        assert_eq!(
            gone.message(),
            "The subnet ID 'subnet-0123456789abcdef0' does not exist"
        );
        let full = eni_refused(&EniError::NoFreeAddress("subnet-0123456789abcdef0".into()));
        assert_eq!(full.type_name(), "CloudHsmInvalidRequestException");
        assert_eq!(full.status(), 400);
    }

    #[test]
    fn observed_state_is_the_pending_one_or_whether_the_node_runs() {
        assert_eq!(
            HsmState::observed(Some(DeleteInProgress), true),
            DeleteInProgress
        );
        assert_eq!(HsmState::observed(None, true), Active);
        assert_eq!(HsmState::observed(None, false), Degraded);
    }
}
