//! Key rotation with the Rust SDK against a real emulator: EnableKeyRotation,
//! DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations, and the
//! automatic rotation that happens when the emulator's clock passes the rotation date. Every
//! ciphertext made before a rotation still decrypts, after kill -9 too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::RotationType;
use kms_common::{assert_error, create_kms_key, free_port, Emulator};
use serde_json::json;

const DAY: u64 = 24 * 3600;

async fn encrypt(kms: &aws_sdk_kms::Client, key_id: &str, text: &str) -> Blob {
    kms.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(text.as_bytes()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone()
}

async fn decrypt(kms: &aws_sdk_kms::Client, blob: &Blob) -> String {
    let out = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    String::from_utf8(out.plaintext().unwrap().as_ref().to_vec()).unwrap()
}

async fn rotation_types(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<RotationType> {
    kms.list_key_rotations()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .rotations()
        .iter()
        .map(|r| r.rotation_type().unwrap().clone())
        .collect()
}

/// Advances the clock; returns how many keys rotated on the way.
fn advance(emulator: &Emulator, seconds: u64) -> u64 {
    emulator.post_json("/_hsmkms/clock", &json!({ "advanceSeconds": seconds }))["rotatedKeys"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_keep_every_ciphertext_readable_through_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id().to_string();
    let before = encrypt(&kms, &key_id, "before any rotation").await;
    let original_material = kms_common::describe(&kms, &key_id)
        .await
        .current_key_material_id()
        .unwrap()
        .to_string();
    assert_eq!(original_material.len(), 64);

    let status = kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert!(!status.key_rotation_enabled());
    kms.enable_key_rotation()
        .key_id(&key_id)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled());
    assert_eq!(status.rotation_period_in_days(), Some(90));
    let next = status.next_rotation_date().unwrap().secs() as f64;
    let expected = emulator.now_seconds() + (90 * DAY) as f64;
    assert!((next - expected).abs() < 60.0, "{next} vs {expected}");

    // On demand: new material at once.
    kms.rotate_key_on_demand()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rotation_types(&kms, &key_id).await,
        vec![RotationType::OnDemand]
    );
    let after_on_demand = encrypt(&kms, &key_id, "after an on-demand rotation").await;
    // The new material is current, and names itself as ListKeyRotations does.
    let current = kms_common::describe(&kms, &key_id)
        .await
        .current_key_material_id()
        .unwrap()
        .to_string();
    assert_ne!(current, original_material);
    let listed = kms
        .list_key_rotations()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.rotations()[0].key_material_id(),
        Some(current.as_str())
    );
    // Decrypt names the material that decrypted: the original one for an older blob.
    let old = kms
        .decrypt()
        .ciphertext_blob(before.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(old.key_material_id(), Some(original_material.as_str()));
    // A blob under rotated material names it: four bytes longer.
    assert_eq!(
        after_on_demand.as_ref().len(),
        before.as_ref().len() + 4 + 27 - 19
    );

    // Automatic: the clock passes the rotation date.
    assert_eq!(advance(&emulator, 91 * DAY), 1);
    assert_eq!(
        rotation_types(&kms, &key_id).await,
        vec![RotationType::OnDemand, RotationType::Automatic]
    );
    let status = kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    let moved = status.next_rotation_date().unwrap().secs() as f64;
    assert!(
        (moved - (next + (90 * DAY) as f64)).abs() < 60.0,
        "the next rotation is a period after the last: {moved}"
    );
    let after_automatic = encrypt(&kms, &key_id, "after an automatic rotation").await;

    // Every blob decrypts, under the material that made it; ReEncrypt moves one to the
    // current material.
    let check = |kms: aws_sdk_kms::Client| {
        let blobs = [
            (before.clone(), "before any rotation"),
            (after_on_demand.clone(), "after an on-demand rotation"),
            (after_automatic.clone(), "after an automatic rotation"),
        ];
        async move {
            for (blob, text) in blobs {
                assert_eq!(decrypt(&kms, &blob).await, text);
            }
        }
    };
    check(kms.clone()).await;
    let moved_blob = kms
        .re_encrypt()
        .ciphertext_blob(before.clone())
        .destination_key_id(&key_id)
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    assert_eq!(decrypt(&kms, &moved_blob).await, "before any rotation");

    // Through kill -9: the schedule, the rotations and every material.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    check(kms.clone()).await;
    assert_eq!(rotation_types(&kms, &key_id).await.len(), 2);

    // Disabled: the clock passes more periods, nothing rotates.
    kms.disable_key_rotation()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert!(!kms
        .get_key_rotation_status()
        .key_id(&key_id)
        .send()
        .await
        .unwrap()
        .key_rotation_enabled());
    assert_eq!(advance(&emulator, 400 * DAY), 0);
    assert_eq!(rotation_types(&kms, &key_id).await.len(), 2);
    check(kms.clone()).await;
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_errors_are_aws_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();
    let arn = key.arn().unwrap();

    let err = kms
        .enable_key_rotation()
        .key_id(key_id)
        .rotation_period_in_days(89)
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "ValidationException", None);

    // 25 on-demand rotations, then KMS's quota.
    for _ in 0..25 {
        kms.rotate_key_on_demand()
            .key_id(key_id)
            .send()
            .await
            .unwrap();
    }
    let err = kms
        .rotate_key_on_demand()
        .key_id(key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "LimitExceededException",
        Some(&format!("The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {arn}")),
    );
    let page = kms
        .list_key_rotations()
        .key_id(key_id)
        .limit(4)
        .send()
        .await
        .unwrap();
    assert_eq!(page.rotations().len(), 4);
    assert!(page.truncated());

    kms.disable_key().key_id(key_id).send().await.unwrap();
    let err = kms
        .rotate_key_on_demand()
        .key_id(key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "DisabledException",
        Some(&format!("{arn} is disabled.")),
    );

    // A key store key: no rotation of any kind.
    let store = emulator
        .create_connected_store(&kms, "rotation-store")
        .await;
    let store_key = kms_common::create_store_key(&kms, &store).await;
    let err = kms
        .enable_key_rotation()
        .key_id(store_key.key_id())
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        None,
    );
    let err = kms
        .rotate_key_on_demand()
        .key_id(store_key.key_id())
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        None,
    );
    emulator.stop();
}
