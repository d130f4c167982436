//! A backup's state machine: one pure transition for every event that moves a backup (or
//! needs it in a state), so the checks and what each event changes live in one place.
//!
//! ```text
//! READY --DeleteBackup / retention--> PENDING_DELETION --7 days--> DELETED (data gone)
//!   ^                                        |
//!   +-------------RestoreBackup (within 7 days)
//! ```
//!
//! A resource policy can be put on a READY backup only (AWS: "to share a backup, it must be in
//! the READY state"); it stays through PENDING_DELETION and a restore, and goes at DELETED
//! with the data. Removing it works in every state.

use super::error::CloudHsmError;
use super::{deletion_expired, restorable, BackupRecord, BackupState};

/// What happens to a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupOp {
    /// DeleteBackup: a READY backup is PENDING_DELETION from now.
    Delete,
    /// RestoreBackup: a backup pending deletion, within its 7 days, is READY again.
    Restore,
    /// The retention policy: a READY backup that does not NeverExpire is PENDING_DELETION
    /// from now; any other is left as it is (a call meanwhile deleted or kept it).
    Retire,
    /// The 7 days are over: a backup still pending deletion is DELETED and its data gone;
    /// any other is left as it is (a RestoreBackup meanwhile brought it back).
    Expire,
    /// ModifyBackupAttributes (NeverExpires): any backup but a DELETED one.
    SetNeverExpires(bool),
    /// CopyBackupToRegion or CreateCluster from it: only a READY backup; it is unchanged.
    Use(Use),
    /// PutResourcePolicy (a checked document): only a READY backup; replaces any policy.
    PutPolicy(String),
    /// DeleteResourcePolicy: any backup; it has no policy after.
    DeletePolicy,
}

/// What a backup is used for (for the error's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Copy,
    CreateCluster,
}

impl BackupRecord {
    /// The record after `op` at `now` (epoch millis), or the error AWS answers.
    pub fn apply(&self, op: BackupOp, now: u64) -> Result<BackupRecord, CloudHsmError> {
        let id = &self.backup_id;
        let state = self.state.as_str();
        let mut next = self.clone();
        match op {
            BackupOp::Delete => {
                if self.state != BackupState::Ready {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Backup {id} is {state}; only a READY backup can be deleted."
                    )));
                }
                next.state = BackupState::PendingDeletion;
                next.delete_at_millis = Some(now);
            }
            BackupOp::Restore => {
                if !restorable(self, now) {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Backup {id} is {state}; only a backup pending deletion, within 7 days of its deletion, can be restored."
                    )));
                }
                next.state = BackupState::Ready;
                next.delete_at_millis = None;
            }
            BackupOp::Retire => {
                if self.state == BackupState::Ready && !self.never_expires {
                    next.state = BackupState::PendingDeletion;
                    next.delete_at_millis = Some(now);
                }
            }
            BackupOp::Expire => {
                if deletion_expired(self, now) {
                    next.state = BackupState::Deleted;
                    next.keys.clear();
                    next.resource_policy = None;
                }
            }
            BackupOp::SetNeverExpires(never) => {
                if self.state == BackupState::Deleted {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Backup {id} is DELETED."
                    )));
                }
                next.never_expires = never;
            }
            BackupOp::Use(purpose) => {
                if self.state != BackupState::Ready {
                    return Err(CloudHsmError::InvalidRequest(match purpose {
                        Use::Copy => {
                            format!("Backup {id} is {state}; only a READY backup can be copied.")
                        }
                        Use::CreateCluster => format!(
                            "Backup {id} is {state}; a cluster can only be created from a READY backup."
                        ),
                    }));
                }
            }
            BackupOp::PutPolicy(policy) => {
                if self.state != BackupState::Ready {
                    return Err(CloudHsmError::InvalidRequest(format!(
                        "Backup {id} is {state}; a resource policy can only be put on a READY backup."
                    )));
                }
                next.resource_policy = Some(policy);
            }
            BackupOp::DeletePolicy => next.resource_policy = None,
        }
        Ok(next)
    }
}
