//! Deleting KMS keys from a custom key store, as the AWS guide tells it: a key pending deletion
//! stays pending deletion (and can be cancelled) even while its store is disconnected; when the
//! waiting period ends KMS deletes the key and its aliases, and deletes the backing key from
//! the cluster only if the store is connected, leaving orphaned key material otherwise. Also the
//! error shapes a caller meets on the way, as the official SDK reports them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{ConnectionStateType, KeyState, OriginType};
use kms_common::{
    assert_error, backing_key_deletion_statuses, connection_state, create_kms_key,
    create_store_key, describe, free_port, wait_for_connection_state, wait_until, Emulator,
    EIGHT_DAYS_SECONDS, KMSUSER_PASSWORD, SEVEN_DAYS_SECONDS,
};

const PLAINTEXT: &[u8] = b"the payroll for March";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_its_store_is_disconnected_leaves_orphaned_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let cluster_id = emulator.cluster_id();
    let hsms = emulator.hsm_ids();

    // A new custom key store is created disconnected; connecting it is asynchronous.
    let store = emulator.create_store(&kms, "payroll-store").await;
    assert_eq!(
        connection_state(&kms, &store).await,
        ConnectionStateType::Disconnected
    );
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;

    // Keys created in the store are backed by the cluster.
    let key1 = create_store_key(&kms, &store).await;
    let key2 = create_store_key(&kms, &store).await;
    for key in [&key1, &key2] {
        assert_eq!(key.key_state(), Some(&KeyState::Enabled));
        assert_eq!(key.origin(), Some(&OriginType::AwsCloudhsm));
        assert_eq!(key.custom_key_store_id(), Some(store.as_str()));
        assert_eq!(key.cloud_hsm_cluster_id(), Some(cluster_id.as_str()));
    }
    let (key1_id, key1_arn) = (key1.key_id(), key1.arn().unwrap());
    let key2_arn = key2.arn().unwrap();
    kms.create_alias()
        .alias_name("alias/payroll")
        .target_key_id(key1_id)
        .send()
        .await
        .unwrap();

    // Key 1 encrypts under an encryption context; Decrypt finds the key from the ciphertext.
    let ciphertext = kms
        .encrypt()
        .key_id("alias/payroll")
        .plaintext(Blob::new(PLAINTEXT))
        .encryption_context("department", "finance")
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(ciphertext.clone())
        .encryption_context("department", "finance")
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), PLAINTEXT);
    assert_eq!(decrypted.key_id(), Some(key1_arn));
    let err = kms
        .decrypt()
        .ciphertext_blob(ciphertext.clone())
        .encryption_context("department", "sales")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "InvalidCiphertextException", None);

    // Scheduling deletion puts key 1 in PendingDeletion until a date seven days away.
    let scheduled = kms
        .schedule_key_deletion()
        .key_id(key1_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(scheduled.pending_window_in_days(), Some(7));
    let described = describe(&kms, key1_id).await;
    assert_eq!(described.key_state(), Some(&KeyState::PendingDeletion));
    let deletion_date = described.deletion_date().unwrap().as_secs_f64();
    let until = deletion_date - emulator.now_seconds();
    assert!(
        (SEVEN_DAYS_SECONDS as f64 - 60.0..=SEVEN_DAYS_SECONDS as f64).contains(&until),
        "deletion is due in seven days, not in {until} s"
    );

    // Using a key pending deletion fails with the message the CloudWatch alarm filters on.
    let pending = format!("{key1_arn} is pending deletion.");
    let err = kms
        .encrypt()
        .key_id(key1_id)
        .plaintext(Blob::new(PLAINTEXT))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "KMSInvalidStateException", Some(&pending));
    let err = kms
        .decrypt()
        .ciphertext_blob(ciphertext.clone())
        .encryption_context("department", "finance")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "KMSInvalidStateException", Some(&pending));
    let count = emulator.metric("KMSKeyPendingDeletionErrorCount");
    assert!(count >= 2, "both failures are counted, not {count}");

    // Disconnecting the store makes key 2 unavailable, but key 1 stays pending deletion.
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Disconnected).await;
    assert_eq!(
        describe(&kms, key2.key_id()).await.key_state(),
        Some(&KeyState::Unavailable)
    );
    assert_eq!(
        describe(&kms, key1_id).await.key_state(),
        Some(&KeyState::PendingDeletion)
    );
    let err = kms
        .encrypt()
        .key_id(key2.key_id())
        .plaintext(Blob::new(PLAINTEXT))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "KMSInvalidStateException",
        Some(&format!("{key2_arn} is unavailable.")),
    );

    // The deletion can be cancelled at any time in the waiting period, even disconnected.
    kms.cancel_key_deletion()
        .key_id(key1_id)
        .send()
        .await
        .unwrap();
    // Cancelled keys come back Disabled; with the store disconnected that shows as Unavailable
    // (the README's compatibility notes).
    assert_eq!(
        describe(&kms, key1_id).await.key_state(),
        Some(&KeyState::Unavailable)
    );
    let rescheduled = kms
        .schedule_key_deletion()
        .key_id(key1_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(rescheduled.key_state(), Some(&KeyState::PendingDeletion));

    // When the waiting period ends, KMS deletes key 1 and its alias, and says so.
    assert_eq!(emulator.advance_clock(EIGHT_DAYS_SECONDS), 1);
    let err = kms
        .describe_key()
        .key_id(key1_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", None);
    let aliases = kms.list_aliases().limit(100).send().await.unwrap();
    assert!(
        !aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/payroll") || a.target_key_id() == Some(key1_id)),
        "the alias went with the key: {aliases:?}"
    );
    emulator.wait_for_deletion_event(key1_arn, key1_id);

    // The store was disconnected, so the backing key is orphaned on every HSM.
    for hsm in &hsms {
        let orphans = emulator.keys_labelled(hsm, key1_arn);
        assert_eq!(orphans.len(), 1, "on {hsm}: {orphans:?}");
        assert_eq!(orphans[0]["owner"], "kmsuser");
    }
    let record = emulator.wait_for_delete_key_record(key1_id);
    assert_eq!(record["additionalEventData"]["customKeyStoreId"], store);
    assert_eq!(record["additionalEventData"]["clusterId"], cluster_id);
    let statuses = backing_key_deletion_statuses(&record);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|(_, status)| status == "FAILURE"),
        "the backing key could not be deleted: {statuses:?}"
    );

    // Key 2 was never scheduled: it is still there, unavailable until the store reconnects.
    assert_eq!(
        describe(&kms, key2.key_id()).await.key_state(),
        Some(&KeyState::Unavailable)
    );
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_its_store_is_connected_leaves_nothing_in_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsms = emulator.hsm_ids();

    // A connected store with a key that has an alias and has been used.
    let store = emulator.create_connected_store(&kms, "ledger-store").await;
    let key = create_store_key(&kms, &store).await;
    let (key_id, key_arn) = (key.key_id(), key.arn().unwrap());
    kms.create_alias()
        .alias_name("alias/ledger")
        .target_key_id(key_id)
        .send()
        .await
        .unwrap();
    let ciphertext = kms
        .encrypt()
        .key_id("alias/ledger")
        .plaintext(Blob::new(PLAINTEXT))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    for hsm in &hsms {
        assert_eq!(emulator.keys_labelled(hsm, key_arn).len(), 1, "on {hsm}");
    }

    // Scheduled for deletion, it refuses to decrypt what it encrypted.
    kms.schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = kms
        .decrypt()
        .ciphertext_blob(ciphertext)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "KMSInvalidStateException",
        Some(&format!("{key_arn} is pending deletion.")),
    );

    // The store stays connected through the waiting period; then the key and alias go.
    assert_eq!(
        connection_state(&kms, &store).await,
        ConnectionStateType::Connected
    );
    assert_eq!(emulator.advance_clock(EIGHT_DAYS_SECONDS), 1);
    let err = kms
        .describe_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", None);
    let aliases = kms.list_aliases().limit(100).send().await.unwrap();
    assert!(
        !aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some("alias/ledger")),
        "the alias went with the key: {aliases:?}"
    );
    emulator.wait_for_deletion_event(key_arn, key_id);

    // KMS deleted the backing key from the cluster: no HSM has it (once deletions replicate).
    for hsm in &hsms {
        wait_until(
            &format!("the backing key is gone from {hsm}"),
            std::time::Duration::from_secs(10),
            || {
                emulator
                    .keys_labelled(hsm, key_arn)
                    .is_empty()
                    .then_some(())
            },
        );
    }
    let record = emulator.wait_for_delete_key_record(key_id);
    let statuses = backing_key_deletion_statuses(&record);
    let mut succeeded: Vec<&str> = statuses
        .iter()
        .filter(|(_, status)| status == "SUCCESS")
        .map(|(hsm, _)| hsm.as_str())
        .collect();
    succeeded.sort();
    let mut all: Vec<&str> = hsms.iter().map(String::as_str).collect();
    all.sort();
    assert_eq!(succeeded, all, "SUCCESS on every HSM: {statuses:?}");
    assert_eq!(statuses.len(), hsms.len(), "{statuses:?}");
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mistake_gets_the_error_kms_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let cluster_id = emulator.cluster_id();

    // A key that does not exist is not found.
    let err = kms
        .describe_key()
        .key_id("1234abcd-12ab-34cd-56ef-1234567890ab")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", None);

    // A store needs the cluster's own trust anchor...
    let other_ca = rcgen::generate_simple_self_signed(vec!["other-ca".to_string()])
        .unwrap()
        .cert
        .pem();
    let err = kms
        .create_custom_key_store()
        .custom_key_store_name("wrong-anchor")
        .cloud_hsm_cluster_id(&cluster_id)
        .trust_anchor_certificate(other_ca)
        .key_store_password(KMSUSER_PASSWORD)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "IncorrectTrustAnchorException", None);

    // ...and a cluster that exists.
    let err = kms
        .create_custom_key_store()
        .custom_key_store_name("no-cluster")
        .cloud_hsm_cluster_id("cluster-aaaaaaaaaaa")
        .trust_anchor_certificate(emulator.trust_anchor())
        .key_store_password(KMSUSER_PASSWORD)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CloudHsmClusterNotFoundException", None);

    // A disconnected store cannot create keys.
    let store = emulator.create_store(&kms, "the-store").await;
    let err = kms
        .create_key()
        .origin(OriginType::AwsCloudhsm)
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CustomKeyStoreInvalidStateException", None);

    // A cluster serves one store only.
    let err = kms
        .create_custom_key_store()
        .custom_key_store_name("second-store")
        .cloud_hsm_cluster_id(&cluster_id)
        .trust_anchor_certificate(emulator.trust_anchor())
        .key_store_password(KMSUSER_PASSWORD)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CloudHsmClusterInUseException", None);

    // A connected store cannot be deleted.
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    let err = kms
        .delete_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CustomKeyStoreInvalidStateException", None);

    // The waiting period is 7 to 30 days.
    let key_a = create_kms_key(&kms).await;
    let key_b = create_store_key(&kms, &store).await;
    let err = kms
        .schedule_key_deletion()
        .key_id(key_a.key_id())
        .pending_window_in_days(3)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "ValidationException",
        Some("PendingWindowInDays must be between 7 and 30"),
    );
    assert_eq!(
        describe(&kms, key_a.key_id()).await.key_state(),
        Some(&KeyState::Enabled)
    );

    // Only a key pending deletion can have its deletion cancelled.
    let err = kms
        .cancel_key_deletion()
        .key_id(key_b.key_id())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "KMSInvalidStateException",
        Some(&format!(
            "{} is not pending deletion.",
            key_b.arn().unwrap()
        )),
    );

    // Decrypt with a KeyId checks that the ciphertext is that key's.
    let ciphertext = kms
        .encrypt()
        .key_id(key_a.key_id())
        .plaintext(Blob::new(PLAINTEXT))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let err = kms
        .decrypt()
        .ciphertext_blob(ciphertext)
        .key_id(key_b.key_id())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "IncorrectKeyException", None);
    emulator.stop();
}
