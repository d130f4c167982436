//! A cluster as the CloudHSM service keeps it, and its life cycle (`ClusterState`): created
//! UNINITIALIZED, INITIALIZED by the customer's CA, ACTIVE once its admin is activated (or at
//! once, for a cluster restored from a backup), deleted in the background. One pure transition
//! decides what each event does to the state, and the record's methods say what else the
//! event changes in the record and what the runtime (`crate::cloudhsm`) must do afterwards.
//!
//! ```text
//! CREATE_IN_PROGRESS --Created--> UNINITIALIZED --Initialize--> INITIALIZED --Activated--> ACTIVE
//!                                 UNINITIALIZED (restored) --HsmCreated--> ACTIVE
//! any but *_IN_PROGRESS or DELETED --Delete (no HSMs)--> DELETE_IN_PROGRESS --DeleteFinished--> DELETED
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::CloudHsmError;
use super::hsm::{HsmChange, HsmChangeKind};
use super::MAX_HSMS_PER_CLUSTER;

/// CloudHSM's `ClusterState`. Stored in cluster records by variant index: new variants go at
/// the end. The emulator moves a cluster through CREATE_IN_PROGRESS, UNINITIALIZED,
/// INITIALIZED, ACTIVE, DELETE_IN_PROGRESS and DELETED; the others are AWS's, never entered
/// here, and kept so the names and indexes stay AWS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterState {
    CreateInProgress,
    Uninitialized,
    InitializeInProgress,
    Initialized,
    Active,
    UpdateInProgress,
    ModifyInProgress,
    RollbackInProgress,
    DeleteInProgress,
    Deleted,
    Degraded,
}

impl ClusterState {
    /// The AWS name, as DescribeClusters shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::CreateInProgress => "CREATE_IN_PROGRESS",
            ClusterState::Uninitialized => "UNINITIALIZED",
            ClusterState::InitializeInProgress => "INITIALIZE_IN_PROGRESS",
            ClusterState::Initialized => "INITIALIZED",
            ClusterState::Active => "ACTIVE",
            ClusterState::UpdateInProgress => "UPDATE_IN_PROGRESS",
            ClusterState::ModifyInProgress => "MODIFY_IN_PROGRESS",
            ClusterState::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
            ClusterState::DeleteInProgress => "DELETE_IN_PROGRESS",
            ClusterState::Deleted => "DELETED",
            ClusterState::Degraded => "DEGRADED",
        }
    }

    /// The one transition: the state after `op`, or the refusal the caller sees. Operations
    /// that only need the state to allow them (`AddHsm`, an HSM of a new cluster created)
    /// return it unchanged, so every check on the state runs through here. `cluster_id`
    /// names the cluster in a refusal.
    pub fn apply(self, op: ClusterOp, cluster_id: &str) -> Result<ClusterState, CloudHsmError> {
        use ClusterState::*;
        match (self, op) {
            (Deleted, op) => Err(does_not_apply(cluster_id, self, op)),

            (CreateInProgress, ClusterOp::Created) => Ok(Uninitialized),

            (Uninitialized, ClusterOp::Initialize { restored: false }) => Ok(Initialized),
            (_, ClusterOp::Initialize { restored }) => {
                Err(CloudHsmError::InvalidRequest(format!(
                    "Cluster {cluster_id} is {}{}; only an UNINITIALIZED cluster that was not created from a backup can be initialized.",
                    self.as_str(),
                    if restored { ", created from a backup" } else { "" }
                )))
            }

            (Initialized, ClusterOp::Activated) => Ok(Active),

            (Uninitialized, ClusterOp::AddHsm { hsms }) if hsms > 0 => {
                Err(CloudHsmError::InvalidRequest(format!(
                    "Cluster {cluster_id} is UNINITIALIZED and already has an HSM; initialize the cluster before adding more."
                )))
            }
            (Uninitialized | Initialized | Active | Degraded, ClusterOp::AddHsm { .. }) => {
                Ok(self)
            }
            (_, ClusterOp::AddHsm { .. }) => Err(CloudHsmError::InvalidRequest(format!(
                "Cluster {cluster_id} is {}; HSMs cannot be added now.",
                self.as_str()
            ))),

            // A restored cluster is initialized and activated already: its first HSM brings
            // the backup's users, keys and certificates.
            (Uninitialized, ClusterOp::HsmCreated { restored: true }) => Ok(Active),
            (_, ClusterOp::HsmCreated { .. }) => Ok(self),

            (CreateInProgress | DeleteInProgress, ClusterOp::Delete { .. }) => {
                Err(busy(cluster_id, self))
            }
            (_, ClusterOp::Delete { hsms }) if hsms > 0 => {
                Err(CloudHsmError::InvalidRequest(format!(
                    "Cluster {cluster_id} still has {hsms} HSM(s). Delete all HSMs in the cluster before deleting the cluster."
                )))
            }
            (_, ClusterOp::Delete { .. }) => Ok(DeleteInProgress),

            (DeleteInProgress, ClusterOp::DeleteFinished) => Ok(Deleted),

            (_, op) => Err(does_not_apply(cluster_id, self, op)),
        }
    }
}

/// What happens to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOp {
    /// The provisioner made the cluster's files (the end of CreateCluster).
    Created,
    /// InitializeCluster, of a cluster `restored` from a backup or not.
    Initialize { restored: bool },
    /// The cluster's admin was activated (`hsm-cli cluster activate`).
    Activated,
    /// CreateHsm, in a cluster that has `hsms` HSMs (being created or deleted included).
    AddHsm { hsms: usize },
    /// The provisioner created an HSM of a cluster `restored` from a backup or not.
    HsmCreated { restored: bool },
    /// DeleteCluster, of a cluster that has `hsms` HSMs.
    Delete { hsms: usize },
    /// The provisioner removed the cluster's files (the end of DeleteCluster).
    DeleteFinished,
}

/// DeleteCluster while the cluster's create or delete is under way (`state`).
pub fn busy(cluster_id: &str, state: ClusterState) -> CloudHsmError {
    CloudHsmError::InvalidRequest(format!(
        "Cluster {cluster_id} is {}; try again once that is done.",
        state.as_str()
    ))
}

/// The refusal of an event the state does not expect (the runtime's own events, which a
/// client never sees unless something is wrong).
fn does_not_apply(cluster_id: &str, state: ClusterState, op: ClusterOp) -> CloudHsmError {
    CloudHsmError::InvalidRequest(format!(
        "Cluster {cluster_id} is {}; {op:?} does not apply.",
        state.as_str()
    ))
}

/// A cluster as the CloudHSM service keeps it. Its HSMs are the provisioner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub state: ClusterState,
    pub state_message: String,
    pub hsm_type: String,
    pub created_at_millis: u64,
    pub vpc_id: String,
    pub security_group: String,
    /// Availability Zone to subnet id.
    pub subnet_mapping: BTreeMap<String, String>,
    pub retention_days: u32,
    pub source_backup_id: Option<String>,
    /// The certificate the cluster was initialized with (`ClusterCertificate`).
    pub cluster_certificate: Option<String>,
    /// The trust anchor (`customerCA.crt`) clients and KMS check.
    pub trust_anchor: Option<String>,
    /// The certificate signing request of an UNINITIALIZED cluster with an HSM.
    pub cluster_csr: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// HSMs being created or deleted, by HSM id (see [`HsmChange`]).
    pub hsm_changes: BTreeMap<String, HsmChange>,
    /// When the cluster was deleted (DELETED clusters are listed for a while, then pruned).
    pub deleted_at_millis: Option<u64>,
}

/// What the runtime must do once the provisioner has created an HSM and the record says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsmCreated {
    /// The cluster's first HSM of a new cluster: make the CSR it offers (with randomness, so
    /// the runtime makes it) and record it in the same commit.
    pub make_csr: bool,
    /// Take a backup once the record is durable: a restored cluster just turned ACTIVE, or an
    /// ACTIVE cluster that had HSMs got one more (as on CloudHSM).
    pub backup: bool,
}

/// A change a record says is under way, which the periodic settling (or the start) finishes
/// when no task owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfinished {
    /// A CreateCluster never acknowledged: the cluster goes.
    AbandonCluster,
    /// A DeleteCluster whose DELETE_IN_PROGRESS is durable: it finishes.
    DeleteCluster,
    /// A CreateHsm: it finishes, or the HSM goes.
    CreateHsm {
        hsm_id: String,
        availability_zone: String,
    },
    /// A DeleteHsm: it finishes.
    DeleteHsm { hsm_id: String },
}

impl Unfinished {
    /// The id its owner claims: the HSM's, or the cluster's.
    pub fn owner_id<'a>(&'a self, cluster_id: &'a str) -> &'a str {
        match self {
            Unfinished::CreateHsm { hsm_id, .. } | Unfinished::DeleteHsm { hsm_id } => hsm_id,
            Unfinished::AbandonCluster | Unfinished::DeleteCluster => cluster_id,
        }
    }
}

impl ClusterRecord {
    /// The provisioner made the cluster: UNINITIALIZED.
    pub fn created(&mut self) -> Result<(), CloudHsmError> {
        self.state = self.state.apply(ClusterOp::Created, &self.cluster_id)?;
        Ok(())
    }

    /// InitializeCluster: the customer's CA signed the cluster's CSR. The cluster is
    /// INITIALIZED with that certificate and trust anchor, and says how to activate it.
    pub fn initialize(
        &mut self,
        signed_cert: &str,
        trust_anchor: &str,
    ) -> Result<(), CloudHsmError> {
        let restored = self.source_backup_id.is_some();
        let state = self
            .state
            .apply(ClusterOp::Initialize { restored }, &self.cluster_id)?;
        let Some(csr) = &self.cluster_csr else {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Cluster {} has no active HSM yet; create one and wait until it is ACTIVE.",
                self.cluster_id
            )));
        };
        hsmkms_common::tls::verify_signed_csr(csr, signed_cert, trust_anchor)
            .map_err(|e| CloudHsmError::InvalidRequest(format!("Invalid certificates: {e}.")))?;
        self.state = state;
        self.state_message =
            "Cluster initialized; activate it with `hsm-cli cluster activate`.".into();
        self.cluster_certificate = Some(signed_cert.to_string());
        self.trust_anchor = Some(trust_anchor.to_string());
        Ok(())
    }

    /// The cluster's admin was activated: ACTIVE, without the hint InitializeCluster left.
    pub fn activated(&mut self) -> Result<(), CloudHsmError> {
        self.state = self.state.apply(ClusterOp::Activated, &self.cluster_id)?;
        self.state_message = String::new();
        Ok(())
    }

    /// CreateHsm's checks, in AWS's order (the zone has a subnet, the cluster has room, its
    /// state allows one more), for a cluster that has `hsms` HSMs; then the new HSM is
    /// recorded as being created. Returns the HSM's subnet. The account quota is the caller's
    /// to check (see `Quotas::admit_hsm`).
    pub fn add_hsm(
        &mut self,
        hsm_id: &str,
        availability_zone: &str,
        hsms: usize,
    ) -> Result<String, CloudHsmError> {
        let cluster_id = &self.cluster_id;
        let Some(subnet_id) = self.subnet_mapping.get(availability_zone).cloned() else {
            return Err(CloudHsmError::InvalidRequest(format!(
                "Cluster {cluster_id} has no subnet in Availability Zone {availability_zone}; its subnets are in {}.",
                self.subnet_mapping.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        if hsms >= MAX_HSMS_PER_CLUSTER {
            return Err(CloudHsmError::ResourceLimitExceeded(format!(
                "Cluster {cluster_id} already has {MAX_HSMS_PER_CLUSTER} HSMs, the most a cluster can have."
            )));
        }
        self.state.apply(ClusterOp::AddHsm { hsms }, cluster_id)?;
        self.hsm_changes.insert(
            hsm_id.to_string(),
            HsmChange::create(availability_zone, hsms),
        );
        Ok(subnet_id)
    }

    /// The provisioner created `hsm_id`: its change goes, a restored cluster turns ACTIVE, and
    /// the answer says what else the runtime must do. `None` if no create of it is recorded
    /// (then nothing changes).
    pub fn hsm_created(&mut self, hsm_id: &str) -> Result<Option<HsmCreated>, CloudHsmError> {
        let Some(HsmChangeKind::Create { had_peers }) =
            self.hsm_changes.get(hsm_id).map(|c| c.kind)
        else {
            return Ok(None);
        };
        let before = self.state;
        let restored = self.source_backup_id.is_some();
        self.state = before.apply(ClusterOp::HsmCreated { restored }, &self.cluster_id)?;
        self.hsm_changes.remove(hsm_id);
        let activated = self.state != before;
        Ok(Some(HsmCreated {
            make_csr: self.state == ClusterState::Uninitialized && self.cluster_csr.is_none(),
            backup: activated || (self.state == ClusterState::Active && had_peers),
        }))
    }

    /// An HSM change ended without the HSM (a create that failed, a delete that finished):
    /// the change goes.
    pub fn hsm_gone(&mut self, hsm_id: &str) {
        self.hsm_changes.remove(hsm_id);
    }

    /// DeleteCluster, of a cluster that has `hsms` HSMs: DELETE_IN_PROGRESS.
    pub fn delete(&mut self, hsms: usize) -> Result<(), CloudHsmError> {
        self.state = self
            .state
            .apply(ClusterOp::Delete { hsms }, &self.cluster_id)?;
        Ok(())
    }

    /// The provisioner removed the cluster's files: DELETED since `now`.
    pub fn deleted(&mut self, now: u64) -> Result<(), CloudHsmError> {
        self.state = self
            .state
            .apply(ClusterOp::DeleteFinished, &self.cluster_id)?;
        self.deleted_at_millis = Some(now);
        Ok(())
    }

    /// What the record says is under way, for the settling to finish: the cluster's own create
    /// or delete first, then its HSMs' changes.
    pub fn unfinished(&self) -> Vec<Unfinished> {
        let own = match self.state {
            ClusterState::CreateInProgress => Some(Unfinished::AbandonCluster),
            ClusterState::DeleteInProgress => Some(Unfinished::DeleteCluster),
            _ => None,
        };
        let hsms = self
            .hsm_changes
            .iter()
            .map(|(hsm_id, change)| match change.kind {
                HsmChangeKind::Create { .. } => Unfinished::CreateHsm {
                    hsm_id: hsm_id.clone(),
                    availability_zone: change.availability_zone.clone(),
                },
                HsmChangeKind::Delete => Unfinished::DeleteHsm {
                    hsm_id: hsm_id.clone(),
                },
            });
        own.into_iter().chain(hsms).collect()
    }
}
