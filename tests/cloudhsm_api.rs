//! The CloudHSMv2 API against the real `hsmkms` process, with the official SDK: HSMs that come
//! (and catch up under load) and go (and KMS notices), the backup retention policy, copies to
//! other Regions (with the source's tags unless told otherwise), and the same answers over AWS
//! JSON 1.1 and Smithy RPCv2 CBOR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudhsmv2::types::{BackupRetentionPolicy, BackupRetentionType, BackupState};
use aws_sdk_kms::primitives::Blob;
use kms_common::{
    assert_error, backups, create_store_key, describe_cluster, free_port, node_pids,
    wait_for_active_hsms, wait_until, Emulator, ADMIN_PASSWORD,
};
use serde_json::{json, Value};

const ONE_DAY_SECONDS: u64 = 24 * 3600;
/// Most keys the load creates, and longest it runs: it stops by itself either way.
const LOAD_MAX_KEYS: usize = 300;
const LOAD_MAX_TIME: Duration = Duration::from_secs(90);

/// Labels of the keys on one HSM, as the admin lists them there.
fn labels_on(emulator: &Emulator, hsm_id: &str) -> Vec<String> {
    let listed = emulator.hsm_cli(&[
        "--hsm",
        hsm_id,
        "--username",
        "admin",
        "--role",
        "admin",
        "--password",
        ADMIN_PASSWORD,
        "key",
        "list",
    ]);
    listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_created_in_a_third_zone_under_load_ends_up_with_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    let store = emulator.create_connected_store(&kms, "busy-store").await;
    for _ in 0..10 {
        create_store_key(&kms, &store).await;
    }

    // Keys keep being created while the new HSM is provisioned, joins and catches up.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (kms, store, stop) = (kms.clone(), store.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut arns = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && arns.len() < LOAD_MAX_KEYS
                && started.elapsed() < LOAD_MAX_TIME
            {
                arns.push(
                    create_store_key(&kms, &store)
                        .await
                        .arn()
                        .unwrap()
                        .to_string(),
                );
            }
            arns
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = hsm
        .create_hsm()
        .cluster_id(&cluster_id)
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap();
    let new_hsm = created.hsm().unwrap();
    assert_eq!(
        new_hsm.state(),
        Some(&aws_sdk_cloudhsmv2::types::HsmState::CreateInProgress)
    );
    assert_eq!(new_hsm.availability_zone(), Some("us-east-1c"));
    let new_id = new_hsm.hsm_id().to_string();
    let hsms = wait_for_active_hsms(&hsm, &cluster_id, 3).await;
    // Some more keys after it turned ACTIVE, then the load stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let arns = load.await.unwrap();
    assert!(
        arns.len() >= 5,
        "the load created keys meanwhile: {}",
        arns.len()
    );

    // Every key of the cluster is on the new HSM: those from before, during and after.
    let old = &hsms
        .iter()
        .find(|h| h.hsm_id() != new_id)
        .unwrap()
        .hsm_id()
        .to_string();
    let expected = labels_on(&emulator, old);
    assert_eq!(expected.len(), 10 + arns.len());
    wait_until(
        "the new HSM holds every key",
        Duration::from_secs(20),
        || {
            let mut on_new = labels_on(&emulator, &new_id);
            on_new.sort();
            let mut want = expected.clone();
            want.sort();
            (on_new == want).then_some(())
        },
    );
    // Adding an HSM to an active cluster takes a backup, which holds every key created before.
    let newest = backups(&hsm).await.into_iter().last().unwrap();
    assert_eq!(newest.cluster_id(), Some(cluster_id.as_str()));
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_one_of_two_hsms_stops_key_creation_until_an_hsm_is_added() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    let store = emulator
        .create_connected_store(&kms, "shrinking-store")
        .await;
    let key = create_store_key(&kms, &store).await;
    let backups_before = backups(&hsm).await.len();

    // DeleteHsm of the HSM in us-east-1b: one Availability Zone is left.
    let cluster = describe_cluster(&hsm, &cluster_id).await;
    let victim = cluster
        .hsms()
        .iter()
        .find(|h| h.availability_zone() == Some("us-east-1b"))
        .unwrap()
        .hsm_id()
        .to_string();
    let deleted = hsm
        .delete_hsm()
        .cluster_id(&cluster_id)
        .hsm_id(&victim)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.hsm_id(), Some(victim.as_str()));
    // Deleting an HSM forces a backup.
    assert_eq!(backups(&hsm).await.len(), backups_before + 1);

    // KMS refuses to create keys: the cluster no longer has HSMs in two zones.
    let err = kms
        .create_key()
        .custom_key_store_id(&store)
        .origin(aws_sdk_kms::types::OriginType::AwsCloudhsm)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmClusterInvalidConfigurationException", None);
    wait_for_active_hsms(&hsm, &cluster_id, 1).await;
    assert!(!emulator.hsm_ids().contains(&victim));

    // Existing keys still work on the HSM that is left.
    let sealed = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(b"still here".to_vec()))
        .send()
        .await
        .unwrap();
    let opened = kms
        .decrypt()
        .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"still here");

    // A new HSM in us-east-1b brings the cluster back to two zones, with the key on it.
    let added = hsm
        .create_hsm()
        .cluster_id(&cluster_id)
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap();
    let added_id = added.hsm().unwrap().hsm_id().to_string();
    wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    assert!(labels_on(&emulator, &added_id).contains(&key.arn().unwrap().to_string()));
    create_store_key(&kms, &store).await;
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_policy_purges_old_backups_but_never_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();

    // The policy is 7 to 379 days.
    for days in ["6", "380", "ninety"] {
        let err = hsm
            .modify_cluster()
            .cluster_id(&cluster_id)
            .backup_retention_policy(
                BackupRetentionPolicy::builder()
                    .r#type(BackupRetentionType::Days)
                    .value(days)
                    .build(),
            )
            .send()
            .await
            .unwrap_err();
        assert_error(&err, "CloudHsmInvalidRequestException", None);
    }
    let modified = hsm
        .modify_cluster()
        .cluster_id(&cluster_id)
        .backup_retention_policy(
            BackupRetentionPolicy::builder()
                .r#type(BackupRetentionType::Days)
                .value("7")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let policy = modified
        .cluster()
        .unwrap()
        .backup_retention_policy()
        .unwrap();
    assert_eq!(policy.value(), Some("7"));

    // One backup at start, then one a day for three days.
    wait_until("the backup taken at start", Duration::from_secs(15), || {
        Some(()).filter(|_| futures::executor::block_on(backups(&hsm)).len() == 1)
    });
    for _ in 0..3 {
        emulator.advance_clock(ONE_DAY_SECONDS);
    }
    let taken = backups(&hsm).await;
    assert_eq!(taken.len(), 4, "{taken:?}");
    let ids: Vec<String> = taken.iter().map(|b| b.backup_id().to_string()).collect();
    hsm.modify_backup_attributes()
        .backup_id(&ids[1])
        .never_expires(true)
        .send()
        .await
        .unwrap();

    // The HSMs fail, so no backup is taken any more; ten days on, the policy purges what is
    // older than 7 days, except the NeverExpires backup and the cluster's last backup.
    for h in emulator.hsm_ids() {
        emulator.fault(&h, "stop");
    }
    emulator.advance_clock(10 * ONE_DAY_SECONDS);
    let after = backups(&hsm).await;
    assert_eq!(after.len(), 4, "no new backup without a running HSM");
    let state_of = |id: &str| {
        after
            .iter()
            .find(|b| b.backup_id() == id)
            .unwrap()
            .backup_state()
            .cloned()
            .unwrap()
    };
    assert_eq!(state_of(&ids[0]), BackupState::PendingDeletion);
    assert_eq!(state_of(&ids[1]), BackupState::Ready, "NeverExpires");
    assert_eq!(state_of(&ids[2]), BackupState::PendingDeletion);
    assert_eq!(
        state_of(&ids[3]),
        BackupState::Ready,
        "the last backup stays"
    );

    // A purged backup can be restored like a deleted one, within 7 days.
    let restored = hsm
        .restore_backup()
        .backup_id(&ids[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        restored.backup().unwrap().backup_state(),
        Some(&BackupState::Ready)
    );
    emulator.stop();
}

/// A CBOR answer as JSON: tag-1 timestamps become numbers, as in the JSON protocol.
fn cbor_to_json(v: ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Null => Value::Null,
        C::Bool(b) => json!(b),
        C::Integer(i) => json!(i64::try_from(i128::from(i)).unwrap()),
        C::Float(f) => json!(f),
        C::Text(s) => json!(s),
        C::Tag(1, inner) => cbor_to_json(*inner),
        C::Array(items) => Value::Array(items.into_iter().map(cbor_to_json).collect()),
        C::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.into_text().unwrap(), cbor_to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected CBOR in an answer: {other:?}"),
    }
}

fn cbor(body: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(body, &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_cbor_requests_get_the_same_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let cluster_id = emulator.cluster_id();
    let hsm = emulator.cloudhsm();
    wait_until("the backup taken at start", Duration::from_secs(15), || {
        Some(()).filter(|_| !futures::executor::block_on(backups(&hsm)).is_empty())
    });
    let (status, tagged) = emulator.baldr_json(
        "TagResource",
        &json!({"ResourceId": cluster_id, "TagList": [{"Key": "team", "Value": "payments"}]}),
    );
    assert_eq!(status, 200, "{tagged}");

    let requests = [
        ("DescribeClusters", json!({})),
        (
            "DescribeClusters",
            json!({"Filters": {"clusterIds": [cluster_id]}, "MaxResults": 1}),
        ),
        ("DescribeBackups", json!({"SortAscending": true})),
        (
            "DescribeBackups",
            json!({"Filters": {"clusterIds": [cluster_id], "states": ["READY"]}}),
        ),
        ("ListTags", json!({"ResourceId": cluster_id})),
        // Errors too: the same shape and message.
        ("DescribeBackups", json!({"MaxResults": 51})),
        ("DeleteCluster", json!({"ClusterId": cluster_id})),
        ("DeleteBackup", json!({"BackupId": "backup-aaaaaaaaaaa"})),
        (
            "CreateHsm",
            json!({"ClusterId": cluster_id, "AvailabilityZone": "us-east-1f"}),
        ),
        ("NoSuchOperation", json!({})),
    ];
    for (op, body) in requests {
        let (json_status, json_answer) = emulator.baldr_json(op, &body);
        let (cbor_status, cbor_answer) = emulator.baldr_cbor(op, &cbor(&body));
        let mut cbor_answer = cbor_to_json(cbor_answer);
        assert_eq!(json_status, cbor_status, "{op} {body}");
        if json_status != 200 {
            // RPCv2 CBOR names errors by their shape id; the JSON protocol by the short name.
            let qualified = cbor_answer["__type"].as_str().unwrap().to_string();
            assert_eq!(
                qualified.rsplit('#').next(),
                json_answer["__type"].as_str(),
                "{op}"
            );
            cbor_answer["__type"] = json_answer["__type"].clone();
        }
        assert_eq!(json_answer, cbor_answer, "{op} {body}");
    }
    let described = describe_cluster(&hsm, &cluster_id).await;
    assert_eq!(described.tag_list().len(), 1);
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hsm_processes_hsms_come_and_go_as_processes_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start_with(&data, port, &["--hsm-processes"]);
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    assert_eq!(node_pids(&data).len(), 2);

    // CreateHsm starts an hsm-node process; DeleteHsm stops it and removes its directory.
    let added = hsm
        .create_hsm()
        .cluster_id(&cluster_id)
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap();
    let added_id = added.hsm().unwrap().hsm_id().to_string();
    wait_for_active_hsms(&hsm, &cluster_id, 3).await;
    let pids = node_pids(&data);
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(pids.iter().any(|(_, dir)| dir.contains(&added_id)));
    let first = emulator.hsm_ids()[0].clone();
    hsm.delete_hsm()
        .cluster_id(&cluster_id)
        .hsm_id(&first)
        .send()
        .await
        .unwrap();
    wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    wait_until(
        "the deleted HSM's process is gone",
        Duration::from_secs(20),
        || {
            let pids = node_pids(&data);
            (pids.len() == 2 && !pids.iter().any(|(_, dir)| dir.contains(&first))).then_some(())
        },
    );
    assert!(!data.join("hsms").join(&first).exists());
    let clusters_before = describe_cluster(&hsm, &cluster_id).await;
    let backups_before = backups(&hsm).await;

    // After a restart the cluster has the same HSMs, serving, and the same backups.
    emulator.stop();
    assert!(node_pids(&data).is_empty());
    let emulator = Emulator::start_with(&data, port, &["--hsm-processes"]);
    let hsm = emulator.cloudhsm();
    let hsms = wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    let mut ids: Vec<&str> = hsms.iter().map(|h| h.hsm_id()).collect();
    let mut ids_before: Vec<&str> = clusters_before.hsms().iter().map(|h| h.hsm_id()).collect();
    ids.sort();
    ids_before.sort();
    assert_eq!(ids, ids_before);
    assert_eq!(node_pids(&data).len(), 2);
    let backup_ids = |b: &[aws_sdk_cloudhsmv2::types::Backup]| {
        b.iter()
            .map(|b| b.backup_id().to_string())
            .collect::<Vec<_>>()
    };
    let after = backups(&hsm).await;
    assert_eq!(
        backup_ids(&after)[..backups_before.len()],
        backup_ids(&backups_before)[..]
    );
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_hsms_are_all_deleted_fails_kms_until_rebuilt_from_its_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    let store = emulator.create_connected_store(&kms, "rebuilt-store").await;
    let key = create_store_key(&kms, &store).await;
    let sealed = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(b"kept in the backup".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // Every HSM deleted (each deletion takes a backup first): crypto calls cannot reach the
    // cluster, and a reconnect finds no active HSM.
    for h in emulator.hsm_ids() {
        hsm.delete_hsm()
            .cluster_id(&cluster_id)
            .hsm_id(&h)
            .send()
            .await
            .unwrap();
    }
    wait_for_active_hsms(&hsm, &cluster_id, 0).await;
    let err = kms
        .decrypt()
        .ciphertext_blob(sealed.clone())
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "KMSInvalidStateException", None);
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    kms_common::wait_for_connection_state(
        &kms,
        &store,
        aws_sdk_kms::types::ConnectionStateType::Disconnected,
    )
    .await;
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    kms_common::wait_for_connection_state(
        &kms,
        &store,
        aws_sdk_kms::types::ConnectionStateType::Failed,
    )
    .await;
    assert_eq!(
        kms_common::describe_store(&kms, &store)
            .await
            .connection_error_code(),
        Some(&aws_sdk_kms::types::ConnectionErrorCodeType::InsufficientCloudhsmHsms)
    );

    // New HSMs start from the latest backup: the key is back, and the store connects.
    for zone in ["us-east-1a", "us-east-1b"] {
        hsm.create_hsm()
            .cluster_id(&cluster_id)
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
    }
    let hsms = wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    for h in &hsms {
        assert!(labels_on(&emulator, h.hsm_id()).contains(&key.arn().unwrap().to_string()));
    }
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    kms_common::wait_for_connection_state(
        &kms,
        &store,
        aws_sdk_kms::types::ConnectionStateType::Disconnected,
    )
    .await;
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    kms_common::wait_for_connection_state(
        &kms,
        &store,
        aws_sdk_kms::types::ConnectionStateType::Connected,
    )
    .await;
    let opened = kms.decrypt().ciphertext_blob(sealed).send().await.unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"kept in the backup");
    // The rebuilt HSMs know only each other: new keys reach the quorum of two.
    create_store_key(&kms, &store).await;
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_copied_to_another_region_lives_there_and_counts_as_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    let store = emulator.create_connected_store(&kms, "copied-store").await;
    let arn = create_store_key(&kms, &store)
        .await
        .arn()
        .unwrap()
        .to_string();
    emulator.advance_clock(ONE_DAY_SECONDS);
    let source = emulator.backups_containing(&arn)[0].clone();

    // Tags on a backup and on the cluster.
    let tag = |k: &str, v: &str| {
        aws_sdk_cloudhsmv2::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
            .unwrap()
    };
    hsm.tag_resource()
        .resource_id(&source)
        .tag_list(tag("retain", "audit"))
        .tag_list(tag("owner", "ops"))
        .send()
        .await
        .unwrap();
    hsm.untag_resource()
        .resource_id(&source)
        .tag_key_list("owner")
        .send()
        .await
        .unwrap();
    let tags = hsm.list_tags().resource_id(&source).send().await.unwrap();
    assert_eq!(tags.tag_list().len(), 1);
    assert_eq!(tags.tag_list()[0].key(), "retain");

    // The copy lives in eu-west-1, linked to no cluster, and says where it came from. It is
    // made an hour after the backup.
    emulator.advance_clock(3600);
    let copied = hsm
        .copy_backup_to_region()
        .backup_id(&source)
        .destination_region("eu-west-1")
        .send()
        .await
        .unwrap();
    let destination = copied.destination_backup().unwrap();
    assert_eq!(destination.source_backup(), Some(source.as_str()));
    assert_eq!(destination.source_cluster(), Some(cluster_id.as_str()));
    assert_eq!(destination.source_region(), Some("us-east-1"));
    let in_eu = backups(&emulator.cloudhsm_in("eu-west-1")).await;
    assert_eq!(in_eu.len(), 1, "{in_eu:?}");
    let copy = &in_eu[0];
    assert_eq!(copy.cluster_id(), None);
    assert_eq!(copy.source_backup(), Some(source.as_str()));
    assert!(copy
        .backup_arn()
        .unwrap()
        .starts_with("arn:aws:cloudhsm:eu-west-1:"));
    // Copied without a TagList, it has the source's tags; its CreateTimestamp is the source's
    // (AWS documents both), and CopyTimestamp says when it was copied.
    let original = backups(&hsm)
        .await
        .into_iter()
        .find(|b| b.backup_id() == source)
        .unwrap();
    let tags: Vec<(&str, &str)> = copy
        .tag_list()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("retain", "audit")]);
    assert_eq!(copy.create_timestamp(), original.create_timestamp());
    assert_eq!(destination.create_timestamp(), original.create_timestamp());
    let copied_after =
        copy.copy_timestamp().unwrap().secs() - original.create_timestamp().unwrap().secs();
    assert!((3600..3700).contains(&copied_after), "{copied_after}");
    assert!(!backups(&hsm)
        .await
        .iter()
        .any(|b| b.backup_id() == copy.backup_id()));

    // The backup report counts the copy as one more place the key's material is.
    let holding = emulator.backups_containing(&arn);
    assert!(
        holding.contains(&copy.backup_id().to_string()),
        "{holding:?}"
    );
    // Deleting it in its own Region; from here it is not found.
    let err = hsm
        .delete_backup()
        .backup_id(copy.backup_id())
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmResourceNotFoundException", None);
    emulator
        .cloudhsm_in("eu-west-1")
        .delete_backup()
        .backup_id(copy.backup_id())
        .send()
        .await
        .unwrap();

    // With a TagList, the copy has those tags only; a reserved key copies nothing.
    let err = hsm
        .copy_backup_to_region()
        .backup_id(&source)
        .destination_region("eu-central-1")
        .tag_list(tag("aws:reserved", "x"))
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmTagException", None);
    let frankfurt = emulator.cloudhsm_in("eu-central-1");
    assert!(backups(&frankfurt).await.is_empty());
    hsm.copy_backup_to_region()
        .backup_id(&source)
        .destination_region("eu-central-1")
        .tag_list(tag("copy", "dr"))
        .send()
        .await
        .unwrap();
    let in_frankfurt = backups(&frankfurt).await;
    let tags: Vec<(&str, &str)> = in_frankfurt[0]
        .tag_list()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("copy", "dr")]);
    emulator.stop();
}
