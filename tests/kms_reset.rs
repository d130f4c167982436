//! `POST /_hsmkms/reset`: KMS's state back to a fresh start between tests, with a key store
//! connected, under concurrent load (a request sees the old state or the new, never a mix) and
//! through kill -9; its latency is printed, not asserted (speed is for benchmarks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{GrantOperation, KeySpec, KeyUsageType, OriginType};
use kms_common::{create_kms_key, free_port, Emulator};
use serde_json::json;

async fn key_count(kms: &aws_sdk_kms::Client) -> usize {
    kms.list_keys().send().await.unwrap().keys().len()
}

async fn alias_targets(kms: &aws_sdk_kms::Client) -> Vec<(String, String)> {
    kms.list_aliases()
        .limit(1000)
        .send()
        .await
        .unwrap()
        .aliases()
        .iter()
        .map(|a| {
            (
                a.alias_name().unwrap().to_string(),
                a.target_key_id().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_kms_to_a_fresh_start_with_a_store_connected() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let kms = emu.kms();

    // State of every kind: keys of two origins and specs, an alias, a grant, a key pending
    // deletion, a connected store with a key in it, a moved clock, audit records, metrics.
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id().to_string();
    kms.create_alias()
        .alias_name("alias/before")
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    kms.create_grant()
        .key_id(&key_id)
        .grantee_principal("arn:aws:iam::111122223333:role/app")
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap();
    kms.create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap();
    kms.create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let doomed = create_kms_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(doomed.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let store = emu.create_connected_store(&kms, "before-reset").await;
    let in_store = kms
        .create_key()
        .custom_key_store_id(&store)
        .origin(OriginType::AwsCloudhsm)
        .send()
        .await
        .unwrap();
    let blob = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("before"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    emu.advance_clock(24 * 3600);
    assert!(!emu.get_json("/_hsmkms/audit")["records"]
        .as_array()
        .unwrap()
        .is_empty());

    let started = Instant::now();
    let answer = emu.post_json("/_hsmkms/reset", &json!({}));
    println!(
        "reset with 6 keys and a connected store: {:.1} ms (server: {} ms)",
        started.elapsed().as_secs_f64() * 1000.0,
        answer["millis"]
    );
    assert_eq!(answer["reset"], "kms");

    assert_eq!(key_count(&kms).await, 0);
    assert!(alias_targets(&kms).await.is_empty());
    let stores = kms.describe_custom_key_stores().send().await.unwrap();
    assert!(stores.custom_key_stores().is_empty());
    assert_eq!(emu.get_json("/_hsmkms/clock")["offsetSeconds"], 0);
    // The audit trail starts again: only the calls since the reset.
    let records = emu.get_json("/_hsmkms/audit")["records"].clone();
    let names: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap_or_default())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["ListKeys", "ListAliases", "DescribeCustomKeyStores"].contains(n)),
        "{names:?}"
    );
    assert!(!emu
        .get_text("/_hsmkms/metrics")
        .contains("operation=\"CreateKey\""));
    // What referred to the old keys answers as for keys that never existed.
    let err = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("NotFoundException")
    );
    let err = kms
        .describe_key()
        .key_id(in_store.key_metadata().unwrap().key_id())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("NotFoundException")
    );
    // The names are free again; the cluster is as it was (KMS changed the kmsuser password
    // when the store connected, so a new store needs the one the user sets now, as on AWS).
    emu.reset_kmsuser_password(kms_common::KMSUSER_PASSWORD);
    let again = emu.create_connected_store(&kms, "before-reset").await;
    assert_ne!(again, store);
    create_kms_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/before")
        .target_key_id(create_kms_key(&kms).await.key_id())
        .send()
        .await
        .unwrap();

    // The reset is durable: kill -9 finds the state after it.
    emu.crash();
    let emu = Emulator::start(dir.path(), free_port());
    let kms = emu.kms();
    assert_eq!(key_count(&kms).await, 2);
    let stores = kms.describe_custom_key_stores().send().await.unwrap();
    assert_eq!(stores.custom_key_stores().len(), 1);
    assert_eq!(emu.get_json("/_hsmkms/clock")["offsetSeconds"], 0);

    // A bad body changes nothing (the CloudHSM side's reset, `{"cluster": true}`, is
    // tests/cloudhsm_reset.rs's).
    let (status, _) = emu.post_json_status("/_hsmkms/reset", &json!({"keys": true}));
    assert_eq!(status, 400);
    let (status, _) = emu.post_json_status("/_hsmkms/reset", &json!({"cluster": "yes"}));
    assert_eq!(status, 400);
    assert_eq!(key_count(&kms).await, 2);
    emu.stop();
}

/// Writers create a key and an alias to it, over and over, while resets happen: afterwards
/// every alias names a key that exists (an alias of the old state never points into the new,
/// nor a half-made pair survives), and the keys before the last reset are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_see_the_old_state_or_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let kms = emu.kms();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (kms, stop) = (kms.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let Ok(created) = kms.create_key().send().await else {
                    continue;
                };
                let id = created.key_metadata().unwrap().key_id().to_string();
                // The key may be gone by now (a reset came between): NotFound, nothing else.
                if let Err(e) = kms
                    .create_alias()
                    .alias_name(format!("alias/w{w}-{n}"))
                    .target_key_id(&id)
                    .send()
                    .await
                {
                    let code = e.as_service_error().and_then(|e| e.meta().code());
                    assert_eq!(code, Some("NotFoundException"), "{e:?}");
                }
            }
            n
        }));
    }
    let mut latencies = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        emu.post_json("/_hsmkms/reset", &json!({}));
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::SeqCst);
    let mut made = 0;
    for w in writers {
        made += w.await.unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "reset under load ({made} keys made by 4 writers): median {:.1} ms, max {:.1} ms",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    let keys: Vec<String> = kms
        .list_keys()
        .limit(1000)
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .map(|k| k.key_id().unwrap().to_string())
        .collect();
    for (alias, target) in alias_targets(&kms).await {
        assert!(
            keys.contains(&target),
            "{alias} names {target}, which does not exist"
        );
    }
    emu.stop();
}
