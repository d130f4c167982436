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
        resource_policy: None,
    }
}

#[test]
fn a_backup_is_due_once_a_day() {
    assert!(backup_due(None, 0));
    assert!(!backup_due(Some(1000), 1000 + BACKUP_INTERVAL_MILLIS - 1));
    assert!(backup_due(Some(1000), 1000 + BACKUP_INTERVAL_MILLIS));
}

#[test]
fn the_daily_backup_gives_way_to_an_hsm_changes_backup_so_a_day_gets_one_not_two() {
    let day = BACKUP_INTERVAL_MILLIS;
    let active = cluster("cluster-aaaaaaaaaaa", ClusterState::Active);
    // A fresh or restored cluster with no backup: due at once.
    assert!(daily_backup_due(&active, None, false, 0));
    // An activation's or an HSM change's backup counts as the day's.
    assert!(!daily_backup_due(&active, Some(5), false, 5 + day - 1));
    assert!(daily_backup_due(&active, Some(5), false, 5 + day));
    // An HSM being removed (its backup is taken while it is still there) or added (its backup
    // follows): the change's backup is the day's, so the clockwork takes none.
    let mut removing = active.clone();
    removing.hsm_changes.insert(
        "hsm-aaaaaaaaaaa".into(),
        hsm::HsmChange::delete("hsm-aaaaaaaaaaa", hsm::HsmState::Active, "us-east-1a").unwrap(),
    );
    assert!(!daily_backup_due(&removing, None, false, day * 10));
    let mut adding = active.clone();
    adding.hsm_changes.insert(
        "hsm-bbbbbbbbbbb".into(),
        hsm::HsmChange::create("us-east-1b", 1),
    );
    assert!(!daily_backup_due(&adding, None, false, day * 10));
    // The added HSM is recorded (the change is gone) and its backup is being taken.
    assert!(!daily_backup_due(&active, None, true, day * 10));
    // Only an ACTIVE cluster is backed up by the clock.
    for state in [
        ClusterState::Uninitialized,
        ClusterState::Initialized,
        ClusterState::Degraded,
        ClusterState::Deleted,
    ] {
        assert!(!daily_backup_due(
            &cluster("cluster-bbbbbbbbbbb", state),
            None,
            false,
            day
        ));
    }
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

// ---- the cluster state machine ------------------------------------------------------------

#[test]
fn every_cluster_state_and_event() {
    use ClusterOp::*;
    use ClusterState::*;
    let id = "cluster-aaaaaaaaaaa";
    let ok = |s: ClusterState, op| s.apply(op, id).unwrap();
    let refused = |s: ClusterState, op| s.apply(op, id).unwrap_err().to_string();

    assert_eq!(ok(CreateInProgress, Created), Uninitialized);
    assert_eq!(
        ok(Uninitialized, Initialize { restored: false }),
        Initialized
    );
    assert_eq!(ok(Initialized, Activated), Active);
    assert_eq!(ok(Uninitialized, HsmCreated { restored: true }), Active);
    assert_eq!(
        ok(Uninitialized, HsmCreated { restored: false }),
        Uninitialized
    );
    assert_eq!(ok(Active, HsmCreated { restored: true }), Active);
    for s in [Uninitialized, Initialized, Active, Degraded] {
        assert_eq!(ok(s, AddHsm { hsms: 0 }), s);
        assert_eq!(ok(s, Delete { hsms: 0 }), DeleteInProgress);
    }
    for s in [Initialized, Active, Degraded] {
        assert_eq!(ok(s, AddHsm { hsms: 3 }), s);
    }
    assert_eq!(ok(DeleteInProgress, DeleteFinished), Deleted);

    assert_eq!(
        refused(Uninitialized, Initialize { restored: true }),
        "Cluster cluster-aaaaaaaaaaa is UNINITIALIZED, created from a backup; only an UNINITIALIZED cluster that was not created from a backup can be initialized."
    );
    assert_eq!(
        refused(Active, Initialize { restored: false }),
        "Cluster cluster-aaaaaaaaaaa is ACTIVE; only an UNINITIALIZED cluster that was not created from a backup can be initialized."
    );
    assert_eq!(
        refused(Uninitialized, AddHsm { hsms: 1 }),
        "Cluster cluster-aaaaaaaaaaa is UNINITIALIZED and already has an HSM; initialize the cluster before adding more."
    );
    assert_eq!(
        refused(DeleteInProgress, AddHsm { hsms: 0 }),
        "Cluster cluster-aaaaaaaaaaa is DELETE_IN_PROGRESS; HSMs cannot be added now."
    );
    assert_eq!(
        refused(CreateInProgress, Delete { hsms: 0 }),
        "Cluster cluster-aaaaaaaaaaa is CREATE_IN_PROGRESS; try again once that is done."
    );
    assert_eq!(
        refused(DeleteInProgress, Delete { hsms: 0 }),
        "Cluster cluster-aaaaaaaaaaa is DELETE_IN_PROGRESS; try again once that is done."
    );
    assert_eq!(
        refused(Active, Delete { hsms: 2 }),
        "Cluster cluster-aaaaaaaaaaa still has 2 HSM(s). Delete all HSMs in the cluster before deleting the cluster."
    );
    // Events out of turn are refused, and a DELETED cluster takes none.
    assert!(Active.apply(Activated, id).is_err());
    assert!(Uninitialized.apply(Created, id).is_err());
    assert!(Active.apply(DeleteFinished, id).is_err());
    assert!(Deleted.apply(Delete { hsms: 0 }, id).is_err());
    assert!(Deleted.apply(HsmCreated { restored: false }, id).is_err());
}

#[test]
fn initialize_needs_the_csr_and_activation_clears_the_hint() {
    let mut c = cluster("cluster-aaaaaaaaaaa", ClusterState::Uninitialized);
    c.cluster_csr = None;
    assert_eq!(
        c.initialize("cert", "anchor").unwrap_err().to_string(),
        "Cluster cluster-aaaaaaaaaaa has no active HSM yet; create one and wait until it is ACTIVE."
    );
    // Certificates that do not match the CSR are refused, and nothing changes.
    c.cluster_csr = Some("csr".into());
    let before = c.clone();
    assert!(c
        .initialize("cert", "anchor")
        .unwrap_err()
        .to_string()
        .starts_with("Invalid certificates: "));
    assert_eq!(c, before);

    let mut initialized = cluster("cluster-aaaaaaaaaaa", ClusterState::Initialized);
    initialized.state_message = "activate it".into();
    initialized.activated().unwrap();
    assert_eq!(initialized.state, ClusterState::Active);
    assert_eq!(initialized.state_message, "");
    assert!(initialized.activated().is_err());
}

#[test]
fn add_hsm_checks_zone_room_and_state_then_records_the_create() {
    let mut c = cluster("cluster-aaaaaaaaaaa", ClusterState::Uninitialized);
    assert_eq!(
        c.add_hsm("hsm-bbbbbbbbbbb", "us-east-1c", 0)
            .unwrap_err()
            .to_string(),
        "Cluster cluster-aaaaaaaaaaa has no subnet in Availability Zone us-east-1c; its subnets are in us-east-1a."
    );
    assert!(matches!(
        c.add_hsm("hsm-bbbbbbbbbbb", "us-east-1a", MAX_HSMS_PER_CLUSTER),
        Err(error::CloudHsmError::ResourceLimitExceeded(_))
    ));
    assert!(c.add_hsm("hsm-bbbbbbbbbbb", "us-east-1a", 1).is_err());
    assert!(c.hsm_changes.is_empty());

    assert_eq!(
        c.add_hsm("hsm-bbbbbbbbbbb", "us-east-1a", 0).unwrap(),
        "subnet-1"
    );
    assert_eq!(
        c.hsm_changes["hsm-bbbbbbbbbbb"],
        hsm::HsmChange::create("us-east-1a", 0)
    );
    let mut active = cluster("cluster-ccccccccccc", ClusterState::Active);
    active.add_hsm("hsm-ddddddddddd", "us-east-1a", 2).unwrap();
    assert_eq!(
        active.hsm_changes["hsm-ddddddddddd"].kind,
        hsm::HsmChangeKind::Create { had_peers: true }
    );
}

#[test]
fn finishing_a_create_says_what_the_cluster_needs() {
    let created = |state: ClusterState, peers: usize, csr: Option<&str>, restored: bool| {
        let mut c = cluster("cluster-aaaaaaaaaaa", state);
        c.cluster_csr = csr.map(str::to_string);
        c.source_backup_id = restored.then(|| "backup-aaaaaaaaaaa".to_string());
        c.hsm_changes.insert(
            "hsm-bbbbbbbbbbb".into(),
            hsm::HsmChange::create("us-east-1a", peers),
        );
        let done = c.hsm_created("hsm-bbbbbbbbbbb").unwrap();
        assert!(c.hsm_changes.is_empty());
        (c.state, done)
    };
    let needs = |make_csr, backup| Some(HsmCreated { make_csr, backup });

    // A new cluster's first HSM: the CSR, no backup.
    assert_eq!(
        created(ClusterState::Uninitialized, 0, None, false),
        (ClusterState::Uninitialized, needs(true, false))
    );
    // Its CSR is made once.
    assert_eq!(
        created(ClusterState::Uninitialized, 0, Some("csr"), false),
        (ClusterState::Uninitialized, needs(false, false))
    );
    // A restored cluster turns ACTIVE with its first HSM, then takes a backup.
    assert_eq!(
        created(ClusterState::Uninitialized, 0, None, true),
        (ClusterState::Active, needs(false, true))
    );
    // An ACTIVE cluster that had HSMs takes a backup after adding one; one that had none, or
    // a cluster not yet ACTIVE, does not.
    assert_eq!(
        created(ClusterState::Active, 2, None, false),
        (ClusterState::Active, needs(false, true))
    );
    assert_eq!(
        created(ClusterState::Active, 0, None, false),
        (ClusterState::Active, needs(false, false))
    );
    assert_eq!(
        created(ClusterState::Initialized, 1, Some("csr"), false),
        (ClusterState::Initialized, needs(false, false))
    );

    // No create recorded (settled already, or a delete): nothing changes.
    let mut c = cluster("cluster-aaaaaaaaaaa", ClusterState::Uninitialized);
    c.hsm_changes.insert(
        "hsm-bbbbbbbbbbb".into(),
        hsm::HsmChange::delete("hsm-bbbbbbbbbbb", hsm::HsmState::Active, "us-east-1a").unwrap(),
    );
    let before = c.clone();
    assert_eq!(c.hsm_created("hsm-bbbbbbbbbbb").unwrap(), None);
    assert_eq!(c.hsm_created("hsm-ccccccccccc").unwrap(), None);
    assert_eq!(c, before);
    c.hsm_gone("hsm-bbbbbbbbbbb");
    assert!(c.hsm_changes.is_empty());
}

#[test]
fn delete_then_deleted_records_when() {
    let mut c = cluster("cluster-aaaaaaaaaaa", ClusterState::Active);
    assert!(c.delete(1).is_err());
    assert_eq!(c.state, ClusterState::Active);
    c.delete(0).unwrap();
    assert_eq!(c.state, ClusterState::DeleteInProgress);
    c.deleted(42).unwrap();
    assert_eq!(
        (c.state, c.deleted_at_millis),
        (ClusterState::Deleted, Some(42))
    );

    let mut new = cluster("cluster-ccccccccccc", ClusterState::CreateInProgress);
    new.created().unwrap();
    assert_eq!(new.state, ClusterState::Uninitialized);
}

#[test]
fn unfinished_work_is_the_clusters_own_change_then_its_hsms() {
    let mut c = cluster("cluster-aaaaaaaaaaa", ClusterState::DeleteInProgress);
    assert_eq!(c.unfinished(), vec![Unfinished::DeleteCluster]);
    c.state = ClusterState::CreateInProgress;
    assert_eq!(c.unfinished(), vec![Unfinished::AbandonCluster]);
    c.state = ClusterState::Active;
    c.hsm_changes.insert(
        "hsm-bbbbbbbbbbb".into(),
        hsm::HsmChange::create("us-east-1a", 1),
    );
    c.hsm_changes.insert(
        "hsm-ccccccccccc".into(),
        hsm::HsmChange::delete("hsm-ccccccccccc", hsm::HsmState::Active, "us-east-1b").unwrap(),
    );
    let work = c.unfinished();
    assert_eq!(
        work,
        vec![
            Unfinished::CreateHsm {
                hsm_id: "hsm-bbbbbbbbbbb".into(),
                availability_zone: "us-east-1a".into(),
            },
            Unfinished::DeleteHsm {
                hsm_id: "hsm-ccccccccccc".into(),
            },
        ]
    );
    // The owner of an HSM's change is the HSM; of the cluster's own, the cluster.
    assert_eq!(work[0].owner_id(&c.cluster_id), "hsm-bbbbbbbbbbb");
    assert_eq!(
        Unfinished::DeleteCluster.owner_id(&c.cluster_id),
        "cluster-aaaaaaaaaaa"
    );
}

// ---- quotas ---------------------------------------------------------------------------------

#[test]
fn quotas_count_what_is_not_deleted() {
    let quotas = Quotas {
        clusters: 2,
        hsms: 3,
    };
    let live = cluster("cluster-aaaaaaaaaaa", ClusterState::Active);
    let gone = cluster("cluster-bbbbbbbbbbb", ClusterState::Deleted);
    let deleting = cluster("cluster-ccccccccccc", ClusterState::DeleteInProgress);
    assert!(quotas.admit_cluster([&live, &gone], "us-east-1").is_ok());
    assert_eq!(
        quotas
            .admit_cluster([&live, &gone, &deleting], "us-east-1")
            .unwrap_err(),
        error::CloudHsmError::Service(
            "Cluster quota exceeded: this account already has 2 clusters in us-east-1, its quota is 2 (delete one, or raise the quota with --max-clusters).".into()
        )
    );

    assert!(quotas
        .admit_hsm([(&live, 2), (&gone, 5)], "us-east-1")
        .is_ok());
    assert_eq!(
        quotas
            .admit_hsm([(&live, 2), (&deleting, 1)], "us-east-1")
            .unwrap_err(),
        error::CloudHsmError::Service(
            "HSM quota exceeded: this account already has 3 HSMs in us-east-1, its quota is 3 (delete one, or raise the quota with --max-hsms).".into()
        )
    );
}

#[test]
fn the_backup_cap_counts_backups_that_hold_data() {
    let mut all: Vec<BackupRecord> = (0..MAX_BACKUPS - 1)
        .map(|i| backup(&format!("backup-{i}"), 0, BackupState::Ready, false))
        .collect();
    all.push(backup("backup-gone", 0, BackupState::Deleted, false));
    assert!(quota::admit_backup(&all).is_ok());
    all.push(backup(
        "backup-pending",
        0,
        BackupState::PendingDeletion,
        false,
    ));
    assert!(matches!(
        quota::admit_backup(&all),
        Err(error::CloudHsmError::Service(m)) if m.starts_with("Backup limit reached: 1000 backups hold data")
    ));
}

#[test]
fn a_backup_goes_ready_pending_deletion_deleted_and_can_come_back_within_seven_days() {
    let ready = backup("backup-life", 0, BackupState::Ready, false);
    let day = |d: u64| d * DAY_MILLIS;
    // Only a READY backup can be used, deleted or copied.
    assert!(ready.apply(BackupOp::Use(Use::Copy), day(1)).is_ok());
    let pending = ready.apply(BackupOp::Delete, day(1)).unwrap();
    assert_eq!(pending.state, BackupState::PendingDeletion);
    assert_eq!(pending.delete_at_millis, Some(day(1)));
    for op in [
        BackupOp::Delete,
        BackupOp::Use(Use::Copy),
        BackupOp::Use(Use::CreateCluster),
    ] {
        assert!(matches!(
            pending.apply(op, day(2)),
            Err(error::CloudHsmError::InvalidRequest(m)) if m.contains("PENDING_DELETION")
        ));
    }
    // Restored within its 7 days: READY again, with no deletion date.
    let back = pending.apply(BackupOp::Restore, day(7)).unwrap();
    assert_eq!(back.state, BackupState::Ready);
    assert_eq!(back.delete_at_millis, None);
    // Past them: Expire deletes it for good (and its key list with it); no restore then.
    assert_eq!(
        pending.apply(BackupOp::Expire, day(7)).unwrap().state,
        BackupState::PendingDeletion,
        "not yet"
    );
    let mut holding = pending.clone();
    holding.keys = vec![];
    let gone = holding.apply(BackupOp::Expire, day(8)).unwrap();
    assert_eq!(gone.state, BackupState::Deleted);
    assert!(pending.apply(BackupOp::Restore, day(8)).is_err());
    assert!(gone.apply(BackupOp::Restore, day(8)).is_err());
    assert!(gone.apply(BackupOp::SetNeverExpires(true), day(8)).is_err());
    // Expire leaves a backup restored meanwhile as it is.
    assert_eq!(back.apply(BackupOp::Expire, day(9)).unwrap(), back);
}

#[test]
fn retirement_spares_never_expires_and_backups_no_longer_ready() {
    let kept = backup("backup-kept", 0, BackupState::Ready, true);
    assert_eq!(kept.apply(BackupOp::Retire, DAY_MILLIS).unwrap(), kept);
    let ready = backup("backup-old", 0, BackupState::Ready, false);
    let retired = ready.apply(BackupOp::Retire, DAY_MILLIS).unwrap();
    assert_eq!(retired.state, BackupState::PendingDeletion);
    assert_eq!(
        retired.apply(BackupOp::Retire, 2 * DAY_MILLIS).unwrap(),
        retired
    );
    // NeverExpires can still be set while it is pending deletion.
    assert!(retired
        .apply(BackupOp::SetNeverExpires(true), DAY_MILLIS)
        .is_ok());
}

#[test]
fn a_policy_goes_on_a_ready_backup_survives_a_restore_and_goes_with_the_data() {
    let day = |d: u64| d * DAY_MILLIS;
    let policy = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*"}}"#.to_string();
    let ready = backup("backup-shared", 0, BackupState::Ready, false);
    let shared = ready
        .apply(BackupOp::PutPolicy(policy.clone()), day(1))
        .unwrap();
    assert_eq!(shared.resource_policy.as_deref(), Some(policy.as_str()));
    // Pending deletion: no new policy, but the old one stays, and a restore keeps it.
    let pending = shared.apply(BackupOp::Delete, day(1)).unwrap();
    assert!(matches!(
        pending.apply(BackupOp::PutPolicy("{}".into()), day(2)),
        Err(error::CloudHsmError::InvalidRequest(m)) if m.contains("PENDING_DELETION")
    ));
    assert_eq!(pending.resource_policy, shared.resource_policy);
    let back = pending.apply(BackupOp::Restore, day(2)).unwrap();
    assert_eq!(back.resource_policy, shared.resource_policy);
    // Removing it works in any state; at DELETED it goes with the data.
    assert_eq!(
        pending
            .apply(BackupOp::DeletePolicy, day(2))
            .unwrap()
            .resource_policy,
        None
    );
    let gone = pending.apply(BackupOp::Expire, day(8)).unwrap();
    assert_eq!(gone.state, BackupState::Deleted);
    assert_eq!(gone.resource_policy, None);
    assert!(gone.apply(BackupOp::PutPolicy(policy), day(8)).is_err());
}
