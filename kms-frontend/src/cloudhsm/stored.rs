//! How the CloudHSM service's records are read from the store, older layouts included. The
//! service layer defines the records; which layouts a data directory may hold is the store
//! side's business, so it lives here, beside the runtime that loads them.
//!
//! postcard writes no field names and no version, so a record is tried in the current layout
//! first, then in each older one, newest first. The order matters: V1 is a prefix of the later
//! layouts, so a later record would also read as V1, with its later fields dropped.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cluster::KeyObject;
use crate::service::cloudhsm::hsm::{HsmChange, HsmChangeKind, HsmState};
use crate::service::cloudhsm::{BackupRecord, BackupState, ClusterRecord, ClusterState};
use crate::store::{decode, StoreError};

/// A cluster record as stores wrote it before `hsm_changes` and `deleted_at_millis`.
#[derive(Deserialize)]
struct ClusterRecordV1 {
    cluster_id: String,
    state: ClusterState,
    state_message: String,
    hsm_type: String,
    created_at_millis: u64,
    vpc_id: String,
    security_group: String,
    subnet_mapping: BTreeMap<String, String>,
    retention_days: u32,
    source_backup_id: Option<String>,
    cluster_certificate: Option<String>,
    trust_anchor: Option<String>,
    cluster_csr: Option<String>,
    tags: BTreeMap<String, String>,
}

impl From<ClusterRecordV1> for ClusterRecord {
    fn from(old: ClusterRecordV1) -> Self {
        ClusterRecord {
            cluster_id: old.cluster_id,
            state: old.state,
            state_message: old.state_message,
            hsm_type: old.hsm_type,
            created_at_millis: old.created_at_millis,
            vpc_id: old.vpc_id,
            security_group: old.security_group,
            subnet_mapping: old.subnet_mapping,
            retention_days: old.retention_days,
            source_backup_id: old.source_backup_id,
            cluster_certificate: old.cluster_certificate,
            trust_anchor: old.trust_anchor,
            cluster_csr: old.cluster_csr,
            tags: old.tags,
            // Nothing was under way then that a record kept; a V1 DELETED cluster counts
            // from its creation (see `cluster_prunable`).
            hsm_changes: BTreeMap::new(),
            deleted_at_millis: None,
        }
    }
}

/// A cluster record as stores wrote it while an HSM change kept a whole `HsmState` (only
/// CREATE_IN_PROGRESS or DELETE_IN_PROGRESS were ever written) and a `had_peers` that a
/// delete ignored. postcard writes a nested struct as its fields in order, so `v1` followed
/// by the two later fields is that flat layout.
#[derive(Deserialize)]
struct ClusterRecordV2 {
    v1: ClusterRecordV1,
    hsm_changes: BTreeMap<String, HsmChangeV2>,
    deleted_at_millis: Option<u64>,
}

#[derive(Deserialize)]
struct HsmChangeV2 {
    availability_zone: String,
    state: HsmState,
    had_peers: bool,
}

impl From<HsmChangeV2> for HsmChange {
    fn from(old: HsmChangeV2) -> Self {
        let kind = match old.state {
            HsmState::DeleteInProgress => HsmChangeKind::Delete,
            _ => HsmChangeKind::Create {
                had_peers: old.had_peers,
            },
        };
        HsmChange {
            availability_zone: old.availability_zone,
            kind,
        }
    }
}

impl From<ClusterRecordV2> for ClusterRecord {
    fn from(old: ClusterRecordV2) -> Self {
        ClusterRecord {
            hsm_changes: old
                .hsm_changes
                .into_iter()
                .map(|(id, change)| (id, change.into()))
                .collect(),
            deleted_at_millis: old.deleted_at_millis,
            ..old.v1.into()
        }
    }
}

/// Reads a stored cluster record, in the current layout or an older one. If none fits, the
/// error is the current layout's.
///
/// A V2 record without HSM changes, or with creates only, is also a current one, with the
/// same meaning; one with a delete is not (its `HsmState` index 3 is no `HsmChangeKind`), so
/// it falls through to V2.
pub fn decode_cluster(bytes: &[u8]) -> Result<ClusterRecord, StoreError> {
    decode::<ClusterRecord>(bytes).or_else(|current| {
        decode::<ClusterRecordV2>(bytes)
            .map(ClusterRecord::from)
            .or_else(|_| decode::<ClusterRecordV1>(bytes).map(ClusterRecord::from))
            .map_err(|_| current)
    })
}

/// A backup record as stores wrote it before `resource_policy`.
#[derive(Deserialize)]
struct BackupRecordV1 {
    backup_id: String,
    region: String,
    cluster_id: Option<String>,
    lineage: String,
    state: BackupState,
    created_at_millis: u64,
    delete_at_millis: Option<u64>,
    never_expires: bool,
    hsm_type: String,
    source_region: Option<String>,
    source_backup: Option<String>,
    source_cluster: Option<String>,
    copied_at_millis: Option<u64>,
    tags: BTreeMap<String, String>,
    keys: Vec<KeyObject>,
}

impl From<BackupRecordV1> for BackupRecord {
    fn from(old: BackupRecordV1) -> Self {
        BackupRecord {
            backup_id: old.backup_id,
            region: old.region,
            cluster_id: old.cluster_id,
            lineage: old.lineage,
            state: old.state,
            created_at_millis: old.created_at_millis,
            delete_at_millis: old.delete_at_millis,
            never_expires: old.never_expires,
            hsm_type: old.hsm_type,
            source_region: old.source_region,
            source_backup: old.source_backup,
            source_cluster: old.source_cluster,
            copied_at_millis: old.copied_at_millis,
            tags: old.tags,
            keys: old.keys,
            // Resource policies did not exist then.
            resource_policy: None,
        }
    }
}

/// Reads a stored backup record, in the current layout or the one before resource policies.
/// A V1 record ends where the current layout's `resource_policy` would start, so it never
/// reads as a current one; a current record would read as V1 (its policy dropped), which is
/// why the current layout is tried first. If neither fits, the error is the current layout's.
pub fn decode_backup(bytes: &[u8]) -> Result<BackupRecord, StoreError> {
    decode::<BackupRecord>(bytes).or_else(|current| {
        decode::<BackupRecordV1>(bytes)
            .map(BackupRecord::from)
            .map_err(|_| current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterRecord {
        ClusterRecord {
            cluster_id: "cluster-aaaaaaaaaaa".into(),
            state: ClusterState::Uninitialized,
            state_message: String::new(),
            hsm_type: "hsm1.medium".into(),
            created_at_millis: 0,
            vpc_id: "vpc-1".into(),
            security_group: "sg-1".into(),
            subnet_mapping: BTreeMap::from([("us-east-1a".into(), "subnet-1".into())]),
            retention_days: 90,
            source_backup_id: None,
            cluster_certificate: None,
            trust_anchor: None,
            cluster_csr: Some("csr".into()),
            tags: BTreeMap::from([("k".into(), "v".into())]),
            hsm_changes: BTreeMap::new(),
            deleted_at_millis: None,
        }
    }

    #[test]
    fn a_cluster_record_of_the_layout_before_hsm_changes_still_reads() {
        // The layout stores wrote before the record kept HSM changes and its deletion time.
        #[derive(serde::Serialize)]
        struct V1<'a> {
            cluster_id: &'a str,
            state: ClusterState,
            state_message: &'a str,
            hsm_type: &'a str,
            created_at_millis: u64,
            vpc_id: &'a str,
            security_group: &'a str,
            subnet_mapping: BTreeMap<String, String>,
            retention_days: u32,
            source_backup_id: Option<String>,
            cluster_certificate: Option<String>,
            trust_anchor: Option<String>,
            cluster_csr: Option<String>,
            tags: BTreeMap<String, String>,
        }
        let expected = cluster();
        let old = postcard::to_stdvec(&V1 {
            cluster_id: &expected.cluster_id,
            state: expected.state,
            state_message: "",
            hsm_type: &expected.hsm_type,
            created_at_millis: 0,
            vpc_id: &expected.vpc_id,
            security_group: &expected.security_group,
            subnet_mapping: expected.subnet_mapping.clone(),
            retention_days: 90,
            source_backup_id: None,
            cluster_certificate: None,
            trust_anchor: None,
            cluster_csr: expected.cluster_csr.clone(),
            tags: expected.tags.clone(),
        })
        .unwrap();
        assert_eq!(decode_cluster(&old).unwrap(), expected);
    }

    #[test]
    fn a_cluster_record_whose_hsm_changes_kept_a_state_still_reads() {
        // The layout before HsmChangeKind: each change kept an HsmState and had_peers.
        #[derive(serde::Serialize)]
        struct ChangeV2 {
            availability_zone: &'static str,
            state: HsmState,
            had_peers: bool,
        }
        #[derive(serde::Serialize)]
        struct V2<'a> {
            cluster_id: &'a str,
            state: ClusterState,
            state_message: &'a str,
            hsm_type: &'a str,
            created_at_millis: u64,
            vpc_id: &'a str,
            security_group: &'a str,
            subnet_mapping: BTreeMap<String, String>,
            retention_days: u32,
            source_backup_id: Option<String>,
            cluster_certificate: Option<String>,
            trust_anchor: Option<String>,
            cluster_csr: Option<String>,
            tags: BTreeMap<String, String>,
            hsm_changes: BTreeMap<String, ChangeV2>,
            deleted_at_millis: Option<u64>,
        }
        let mut expected = cluster();
        expected.hsm_changes = BTreeMap::from([
            (
                "hsm-bbbbbbbbbbb".to_string(),
                HsmChange::create("us-east-1a", 1),
            ),
            (
                "hsm-ccccccccccc".to_string(),
                HsmChange {
                    availability_zone: "us-east-1b".into(),
                    kind: HsmChangeKind::Delete,
                },
            ),
        ]);
        expected.deleted_at_millis = Some(9);
        let old = |changes: BTreeMap<String, ChangeV2>| {
            postcard::to_stdvec(&V2 {
                cluster_id: &expected.cluster_id,
                state: expected.state,
                state_message: "",
                hsm_type: &expected.hsm_type,
                created_at_millis: 0,
                vpc_id: &expected.vpc_id,
                security_group: &expected.security_group,
                subnet_mapping: expected.subnet_mapping.clone(),
                retention_days: 90,
                source_backup_id: None,
                cluster_certificate: None,
                trust_anchor: None,
                cluster_csr: expected.cluster_csr.clone(),
                tags: expected.tags.clone(),
                hsm_changes: changes,
                deleted_at_millis: Some(9),
            })
            .unwrap()
        };
        let create = || ChangeV2 {
            availability_zone: "us-east-1a",
            state: HsmState::CreateInProgress,
            had_peers: true,
        };
        let both = old(BTreeMap::from([
            ("hsm-bbbbbbbbbbb".to_string(), create()),
            (
                "hsm-ccccccccccc".to_string(),
                ChangeV2 {
                    availability_zone: "us-east-1b",
                    state: HsmState::DeleteInProgress,
                    had_peers: true,
                },
            ),
        ]));
        assert_eq!(decode_cluster(&both).unwrap(), expected);

        // Creates only: the bytes are a current record with the same meaning.
        let creates = old(BTreeMap::from([("hsm-bbbbbbbbbbb".to_string(), create())]));
        expected.hsm_changes.remove("hsm-ccccccccccc");
        assert_eq!(decode::<ClusterRecord>(&creates).unwrap(), expected);
        assert_eq!(decode_cluster(&creates).unwrap(), expected);
    }

    #[test]
    fn the_current_layout_round_trips_and_garbage_is_an_error() {
        let mut current = cluster();
        current.hsm_changes.insert(
            "hsm-bbbbbbbbbbb".into(),
            HsmChange {
                availability_zone: "us-east-1a".into(),
                kind: HsmChangeKind::Delete,
            },
        );
        current.deleted_at_millis = Some(7);
        let bytes = postcard::to_stdvec(&current).unwrap();
        assert_eq!(decode_cluster(&bytes).unwrap(), current);
        assert!(decode_cluster(&[0xff, 0xff, 0xff]).is_err());
    }

    fn backup() -> BackupRecord {
        BackupRecord {
            backup_id: "backup-aaaaaaaaaaa".into(),
            region: "us-east-1".into(),
            cluster_id: Some("cluster-aaaaaaaaaaa".into()),
            lineage: "cluster-aaaaaaaaaaa".into(),
            state: BackupState::PendingDeletion,
            created_at_millis: 5,
            delete_at_millis: Some(6),
            never_expires: true,
            hsm_type: "hsm1.medium".into(),
            source_region: None,
            source_backup: None,
            source_cluster: None,
            copied_at_millis: None,
            tags: BTreeMap::from([("k".into(), "v".into())]),
            keys: vec![],
            resource_policy: None,
        }
    }

    #[test]
    fn a_backup_record_from_before_resource_policies_still_reads() {
        // The layout stores wrote before the record kept a resource policy.
        #[derive(serde::Serialize)]
        struct V1<'a> {
            backup_id: &'a str,
            region: &'a str,
            cluster_id: Option<&'a str>,
            lineage: &'a str,
            state: BackupState,
            created_at_millis: u64,
            delete_at_millis: Option<u64>,
            never_expires: bool,
            hsm_type: &'a str,
            source_region: Option<&'a str>,
            source_backup: Option<&'a str>,
            source_cluster: Option<&'a str>,
            copied_at_millis: Option<u64>,
            tags: BTreeMap<String, String>,
            keys: Vec<KeyObject>,
        }
        let expected = backup();
        let old = postcard::to_stdvec(&V1 {
            backup_id: &expected.backup_id,
            region: &expected.region,
            cluster_id: expected.cluster_id.as_deref(),
            lineage: &expected.lineage,
            state: expected.state,
            created_at_millis: 5,
            delete_at_millis: Some(6),
            never_expires: true,
            hsm_type: &expected.hsm_type,
            source_region: None,
            source_backup: None,
            source_cluster: None,
            copied_at_millis: None,
            tags: expected.tags.clone(),
            keys: vec![],
        })
        .unwrap();
        assert!(
            decode::<BackupRecord>(&old).is_err(),
            "not a current record"
        );
        assert_eq!(decode_backup(&old).unwrap(), expected);
    }

    #[test]
    fn a_backup_record_keeps_its_policy_and_garbage_is_an_error() {
        let mut current = backup();
        current.resource_policy = Some(r#"{"Statement":[]}"#.into());
        let bytes = postcard::to_stdvec(&current).unwrap();
        assert_eq!(decode_backup(&bytes).unwrap(), current);
        assert!(decode_backup(&[0xff, 0xff, 0xff]).is_err());
    }
}
