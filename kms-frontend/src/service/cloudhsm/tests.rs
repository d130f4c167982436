use super::*;

fn backup(id: &str, created_day: u64, state: BackupState, never_expires: bool) -> BackupRecord {
    BackupRecord {
        backup_id: id.into(),
        region: "us-east-1".into(),
        cluster_id: Some("cluster-aaaaaaaaaaa".into()),
        lineage: "cluster-aaaaaaaaaaa".into(),
        state,
        created_at_millis: created_day * DAY_MILLIS,
        delete_at_millis: None,
        never_expires,
        hsm_type: "hsm1.medium".into(),
        source_region: None,
        source_backup: None,
        source_cluster: None,
        copied_at_millis: None,
        tags: BTreeMap::new(),
        keys: vec![],
    }
}

#[test]
fn a_backup_is_due_once_a_day() {
    assert!(backup_due(None, 0));
    assert!(!backup_due(Some(1000), 1000 + BACKUP_INTERVAL_MILLIS - 1));
    assert!(backup_due(Some(1000), 1000 + BACKUP_INTERVAL_MILLIS));
}

#[test]
fn retention_purges_old_backups_but_never_the_newest_nor_never_expires() {
    let old = backup("backup-old", 0, BackupState::Ready, false);
    let kept = backup("backup-kept", 1, BackupState::Ready, true);
    let recent = backup("backup-recent", 95, BackupState::Ready, false);
    let all = [&old, &kept, &recent];
    assert_eq!(
        retention_purges(&all, 90, 100 * DAY_MILLIS),
        vec!["backup-old"]
    );
    // A day short of the policy, nothing goes.
    assert!(retention_purges(&all, 90, 90 * DAY_MILLIS).is_empty());
}

#[test]
fn the_last_backup_is_never_purged() {
    let only = backup("backup-only", 0, BackupState::Ready, false);
    assert!(retention_purges(&[&only], 7, 1000 * DAY_MILLIS).is_empty());
    // The newest counts even when it is itself past the policy.
    let older = backup("backup-older", 0, BackupState::Ready, false);
    let newer = backup("backup-newer", 1, BackupState::Ready, false);
    assert_eq!(
        retention_purges(&[&older, &newer], 7, 1000 * DAY_MILLIS),
        vec!["backup-older"]
    );
}

#[test]
fn pending_deletion_lasts_seven_days() {
    let mut b = backup("backup-x", 0, BackupState::PendingDeletion, false);
    b.delete_at_millis = Some(10 * DAY_MILLIS);
    assert!(restorable(&b, 16 * DAY_MILLIS));
    assert!(!deletion_expired(&b, 16 * DAY_MILLIS));
    assert!(deletion_expired(&b, 17 * DAY_MILLIS));
    assert!(!restorable(&b, 17 * DAY_MILLIS));
    let ready = backup("backup-y", 0, BackupState::Ready, false);
    assert!(!restorable(&ready, 0));
}

fn cluster(id: &str, state: ClusterState) -> ClusterRecord {
    ClusterRecord {
        cluster_id: id.into(),
        state,
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
fn deleted_clusters_and_backups_are_pruned_after_their_retention() {
    let mut gone = cluster("cluster-aaaaaaaaaaa", ClusterState::Deleted);
    gone.deleted_at_millis = Some(10 * DAY_MILLIS);
    assert!(!cluster_prunable(&gone, &[], 39 * DAY_MILLIS));
    assert!(cluster_prunable(&gone, &[], 40 * DAY_MILLIS));
    // A backup that can still be restored keeps the record it needs.
    let kept = backup("backup-kept", 0, BackupState::Ready, false);
    assert!(!cluster_prunable(&gone, &[&kept], 400 * DAY_MILLIS));
    let live = cluster("cluster-ccccccccccc", ClusterState::Active);
    assert!(!cluster_prunable(&live, &[], 400 * DAY_MILLIS));

    let mut deleted = backup("backup-x", 0, BackupState::Deleted, false);
    deleted.delete_at_millis = Some(DAY_MILLIS);
    assert!(!backup_prunable(&deleted, 37 * DAY_MILLIS));
    assert!(backup_prunable(&deleted, 38 * DAY_MILLIS));
    let pending = backup("backup-y", 0, BackupState::PendingDeletion, false);
    assert!(!backup_prunable(&pending, 400 * DAY_MILLIS));
}
