//! The rest of the AWS guide on deleting a key from a CloudHSM key store, in the cluster: a key
//! deleted while its store is disconnected leaves orphaned key material; the orphan report
//! finds it; the hsm-cli procedure of the guide removes it; a cluster created from a backup
//! taken before the deletion holds it again; the backup report names every backup that does;
//! deleting them (and waiting out their 7 days) leaves no copy anywhere. Official SDKs
//! (`aws-sdk-kms`, `aws-sdk-cloudhsmv2`) against the real `hsmkms` process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_cloudhsmv2::types::BackupState;
use aws_sdk_kms::types::{ConnectionStateType, KeyState};
use kms_common::{
    assert_error, backups, create_store_key, delete_cluster_and_hsms, describe, free_port,
    restore_cluster, wait_for_connection_state, Emulator, ADMIN_PASSWORD, EIGHT_DAYS_SECONDS,
};

const ONE_DAY_SECONDS: u64 = 24 * 3600;
const NEW_KMSUSER_PASSWORD: &str = "rotatedByAdmin7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_material_is_found_removed_and_purged_from_every_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();

    // A key in a connected store; a day later the daily backup holds its material.
    let store = emulator.create_connected_store(&kms, "ledger-store").await;
    let key = create_store_key(&kms, &store).await;
    let (key_id, arn) = (key.key_id().to_string(), key.arn().unwrap().to_string());
    let created = key.creation_date().unwrap().secs();
    emulator.advance_clock(ONE_DAY_SECONDS + 60);
    let holding = emulator.backups_containing(&arn);
    assert_eq!(
        holding.len(),
        1,
        "the daily backup holds the key: {holding:?}"
    );
    let before_deletion = holding[0].clone();
    let described = backups(&hsm).await;
    let b = described
        .iter()
        .find(|b| b.backup_id() == before_deletion)
        .unwrap();
    assert!(b.create_timestamp().unwrap().secs() >= created);
    assert_eq!(b.cluster_id(), Some(cluster_id.as_str()));
    assert_eq!(b.backup_state(), Some(&BackupState::Ready));

    // Deleted while the store is disconnected: KMS cannot reach the cluster, the material stays.
    kms.schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Disconnected).await;
    assert_eq!(emulator.advance_clock(EIGHT_DAYS_SECONDS), 1);
    let err = kms.describe_key().key_id(&key_id).send().await.unwrap_err();
    assert_error(&err, "NotFoundException", None);

    // The orphan report names it, in its cluster, by the label KMS gave it: the key ARN.
    let orphans = emulator.orphans();
    assert_eq!(orphans, vec![(cluster_id.clone(), vec![arn.clone()])]);

    // The guide's procedure: reset kmsuser's password as admin, log in as kmsuser, find the
    // key by its label, delete it, then give KMS the new password and reconnect.
    emulator.hsm_cli(&[
        "--username",
        "admin",
        "--role",
        "admin",
        "--password",
        ADMIN_PASSWORD,
        "user",
        "change-password",
        "--username",
        "kmsuser",
        "--role",
        "crypto-user",
        "--password",
        NEW_KMSUSER_PASSWORD,
    ]);
    let as_kmsuser = [
        "--username",
        "kmsuser",
        "--role",
        "crypto-user",
        "--password",
        NEW_KMSUSER_PASSWORD,
    ];
    let found = emulator.hsm_cli(&[&as_kmsuser[..], &["key", "list", "--label", &arn]].concat());
    let found = found["keys"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let handle = found[0]["handle"].as_u64().unwrap().to_string();
    let deleted =
        emulator.hsm_cli(&[&as_kmsuser[..], &["key", "delete", "--handle", &handle]].concat());
    for outcome in deleted["hsms"].as_array().unwrap() {
        assert_eq!(outcome["status"], "SUCCESS", "{deleted}");
    }
    assert_eq!(emulator.orphans(), vec![(cluster_id.clone(), vec![])]);
    kms.update_custom_key_store()
        .custom_key_store_id(&store)
        .key_store_password(NEW_KMSUSER_PASSWORD)
        .send()
        .await
        .unwrap();
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    let survivor = create_store_key(&kms, &store).await;
    assert_eq!(
        describe(&kms, survivor.key_id()).await.key_state(),
        Some(&KeyState::Enabled)
    );

    // Backups still hold it: the one from before the deletion, and the daily one taken while
    // the material was orphaned. The report names them all.
    let holding = emulator.backups_containing(&arn);
    assert!(holding.contains(&before_deletion), "{holding:?}");

    // A cluster created from the backup taken before the deletion has the material again: an
    // orphan there too, owned by kmsuser and labelled with the ARN of a key KMS no longer has.
    let restored = restore_cluster(&hsm, &before_deletion, &["us-east-1a", "us-east-1b"]).await;
    let orphans = emulator.orphans();
    assert!(
        orphans.contains(&(restored.clone(), vec![arn.clone()])),
        "{orphans:?}"
    );
    assert!(
        orphans.contains(&(cluster_id.clone(), vec![])),
        "{orphans:?}"
    );
    let in_restored = emulator.hsm_cli(&[
        "--cluster-id",
        &restored,
        "--username",
        "admin",
        "--role",
        "admin",
        "--password",
        ADMIN_PASSWORD,
        "key",
        "list",
        "--label",
        &arn,
    ]);
    assert_eq!(in_restored["keys"].as_array().unwrap().len(), 1);

    // Leave no copy: the restored cluster goes (its DeleteHsm backups hold the key too), then
    // every backup the report names.
    delete_cluster_and_hsms(&hsm, &restored).await;
    let holding = emulator.backups_containing(&arn);
    assert!(
        holding.len() >= 3,
        "original and restored cluster backups: {holding:?}"
    );
    for backup_id in &holding {
        let deleted = hsm
            .delete_backup()
            .backup_id(backup_id)
            .send()
            .await
            .unwrap();
        let backup = deleted.backup().unwrap();
        assert_eq!(backup.backup_state(), Some(&BackupState::PendingDeletion));
        assert!(backup.delete_timestamp().is_some());
    }
    // For 7 days they can still be restored, so they still count as copies.
    assert_eq!(emulator.backups_containing(&arn).len(), holding.len());
    let undone = hsm
        .restore_backup()
        .backup_id(&holding[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        undone.backup().unwrap().backup_state(),
        Some(&BackupState::Ready)
    );
    hsm.delete_backup()
        .backup_id(&holding[0])
        .send()
        .await
        .unwrap();

    // Seven days later they are gone for good, and no copy is left anywhere.
    emulator.advance_clock(7 * ONE_DAY_SECONDS + 60);
    assert!(emulator.backups_containing(&arn).is_empty());
    assert_eq!(emulator.orphans(), vec![(cluster_id.clone(), vec![])]);
    let all = backups(&hsm).await;
    for backup_id in &holding {
        let b = all.iter().find(|b| b.backup_id() == backup_id).unwrap();
        assert_eq!(b.backup_state(), Some(&BackupState::Deleted), "{b:?}");
    }
    let err = hsm
        .restore_backup()
        .backup_id(&holding[0])
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmInvalidRequestException", None);
    // The cluster's newer backups never held the key.
    let newest = all
        .iter()
        .rev()
        .find(|b| b.backup_state() == Some(&BackupState::Ready));
    assert!(newest.is_some(), "the cluster keeps a current backup");
    emulator.stop();
}
