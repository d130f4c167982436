//! GetKeyLastUsage with the Rust SDK: the last successful cryptographic operation, its time,
//! request id and the audit record's event id; other calls and failures leave it as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use kms_common::{create_kms_key, free_port, Emulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_cryptographic_operation_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();

    let usage = kms
        .get_key_last_usage()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert!(usage.key_last_usage().is_none());
    assert_eq!(usage.key_id(), key.arn());
    assert!(
        usage.tracking_start_date().unwrap().secs() <= usage.key_creation_date().unwrap().secs()
    );

    let encrypted = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap();
    let request_id = encrypted.request_id().unwrap().to_string();
    let last = kms
        .get_key_last_usage()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    let last = last.key_last_usage().unwrap();
    assert_eq!(last.operation().unwrap().as_str(), "Encrypt");
    assert_eq!(last.kms_request_id(), Some(request_id.as_str()));
    let audit = emulator.get_json(&format!("/_hsmkms/audit?key={key_id}"));
    let record = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requestID"] == request_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        last.cloud_trail_event_id(),
        record["eventID"].as_str(),
        "{record}"
    );

    // Not a cryptographic operation, then a failed one: nothing changes.
    kms.describe_key().key_id(key_id).send().await.unwrap();
    kms.disable_key().key_id(key_id).send().await.unwrap();
    assert!(kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .is_err());
    let again = kms
        .get_key_last_usage()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.key_last_usage().unwrap().kms_request_id(),
        Some(request_id.as_str())
    );

    // Decrypt is one.
    kms.enable_key().key_id(key_id).send().await.unwrap();
    kms.decrypt()
        .ciphertext_blob(encrypted.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    let after = kms
        .get_key_last_usage()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after
            .key_last_usage()
            .unwrap()
            .operation()
            .unwrap()
            .as_str(),
        "Decrypt"
    );
    emulator.stop();
}
