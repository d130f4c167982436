//! A crash does not lose KMS state: after `hsmkms` is killed with SIGKILL and started again on
//! the same data directory, keys still decrypt what they encrypted, keys pending deletion are
//! still pending deletion, and their deletions still happen when the waiting period ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState, OriginType};
use kms_common::{
    assert_error, create_kms_key, create_store_key, describe, free_port, Emulator,
    EIGHT_DAYS_SECONDS,
};

const PLAINTEXT: &[u8] = b"kept across a crash";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deletions_and_ciphertexts_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();

    // Two keys scheduled for deletion: one of KMS's own, one backed by a connected store.
    let kms_key = create_kms_key(&kms).await;
    assert_eq!(kms_key.origin(), Some(&OriginType::AwsKms));
    let store = emulator.create_connected_store(&kms, "crash-store").await;
    let store_key = create_store_key(&kms, &store).await;
    let doomed = [&kms_key, &store_key];
    let mut deletion_dates = Vec::new();
    for key in doomed {
        let scheduled = kms
            .schedule_key_deletion()
            .key_id(key.key_id())
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
        deletion_dates.push(*scheduled.deletion_date().unwrap());
    }

    // A third key, kept, encrypts something whose ciphertext must outlive the crash.
    let kept = create_kms_key(&kms).await;
    let ciphertext = kms
        .encrypt()
        .key_id(kept.key_id())
        .plaintext(Blob::new(PLAINTEXT))
        .encryption_context("purpose", "crash-test")
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // SIGKILL: no clean shutdown, only what was durable when each call was answered.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();

    // The kept key still decrypts its ciphertext.
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(ciphertext)
        .encryption_context("purpose", "crash-test")
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), PLAINTEXT);
    assert_eq!(decrypted.key_id(), kept.arn());

    // Both doomed keys are still pending deletion, with the dates they were given.
    for (key, date) in doomed.iter().zip(&deletion_dates) {
        let described = describe(&kms, key.key_id()).await;
        assert_eq!(
            described.key_state(),
            Some(&KeyState::PendingDeletion),
            "{}",
            key.key_id()
        );
        assert_eq!(described.deletion_date(), Some(date));
    }

    // Past the waiting period both are deleted and announced.
    assert_eq!(emulator.advance_clock(EIGHT_DAYS_SECONDS), 2);
    for key in doomed {
        let err = kms
            .describe_key()
            .key_id(key.key_id())
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_error(&err, "NotFoundException", None);
        emulator.wait_for_deletion_event(key.arn().unwrap(), key.key_id());
    }

    // The kept key is untouched by the deletions.
    assert_eq!(
        describe(&kms, kept.key_id()).await.key_state(),
        Some(&KeyState::Enabled)
    );
    emulator.stop();
}
