//! `POST /_hsmkms/reset {"cluster": true}`: the CloudHSM side back to a first start with KMS's.
//! A second cluster, backups (a copy in another Region too), a key store with keys, orphaned
//! material and faults in force all go; the launcher's cluster stays, under its id, with new
//! HSMs that hold only admin and kmsuser at their first passwords; a new store connects and
//! makes keys; restarts (SIGTERM, kill -9) come back to that state; and a kill -9 during a
//! reset leaves the old state or the new one, never a mix, with HSM processes. The reset's
//! latency is printed, not asserted (speed is for benchmarks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudhsmv2::types::ClusterState;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::ConnectionStateType;
use kms_common::{
    backups, create_kms_key, create_store_key, describe_cluster, free_port, restore_cluster,
    wait_for_active_hsms, wait_for_connection_state, Emulator, EIGHT_DAYS_SECONDS,
};
use serde_json::json;

const ONE_DAY_SECONDS: u64 = 24 * 3600;

/// Every cluster DescribeClusters shows, by id.
async fn cluster_ids(hsm: &aws_sdk_cloudhsmv2::Client) -> Vec<String> {
    hsm.describe_clusters()
        .send()
        .await
        .unwrap()
        .clusters()
        .iter()
        .map(|c| c.cluster_id().unwrap().to_string())
        .collect()
}

/// What a reset leaves, as a user sees it: only the launcher's cluster, ACTIVE, with two ACTIVE
/// HSMs none of which is in `old_hsms`, its trust anchor the one in the data directory; no
/// backup from before `reset_at` (epoch seconds) in any Region; no KMS key or store; no
/// orphan, no fault; each HSM holding no key and only admin and kmsuser. Returns the HSM ids.
async fn assert_fresh(
    emu: &Emulator,
    cluster_id: &str,
    old_hsms: &[String],
    reset_at: i64,
) -> Vec<String> {
    let (kms, hsm) = (emu.kms(), emu.cloudhsm());
    assert_eq!(cluster_ids(&hsm).await, vec![cluster_id.to_string()]);
    let hsms = wait_for_active_hsms(&hsm, cluster_id, 2).await;
    let cluster = describe_cluster(&hsm, cluster_id).await;
    assert_eq!(cluster.state(), Some(&ClusterState::Active));
    assert_eq!(
        cluster.certificates().unwrap().cluster_certificate(),
        Some(emu.trust_anchor().as_str()),
        "the trust anchor KMS is given is the data directory's"
    );
    let ids: Vec<String> = hsms.iter().map(|h| h.hsm_id().to_string()).collect();
    assert!(
        ids.iter().all(|id| !old_hsms.contains(id)),
        "new HSMs: {ids:?} {old_hsms:?}"
    );
    // A first start's own backup (taken before the answer, or before Ready.); none older.
    for region in ["us-east-1", "eu-west-1"] {
        for b in backups(&emu.cloudhsm_in(region)).await {
            assert_eq!(b.cluster_id(), Some(cluster_id), "{b:?}");
            assert!(b.create_timestamp().unwrap().secs() >= reset_at, "{b:?}");
        }
    }
    for b in emu.get_json("/_hsmkms/backups")["backups"]
        .as_array()
        .unwrap()
    {
        assert_eq!(b["keys"], 0, "{b}");
    }
    assert!(kms.list_keys().send().await.unwrap().keys().is_empty());
    let stores = kms.describe_custom_key_stores().send().await.unwrap();
    assert!(stores.custom_key_stores().is_empty());
    assert_eq!(emu.orphans(), vec![(cluster_id.to_string(), vec![])]);
    assert_eq!(emu.get_json("/_hsmkms/faults")["faults"], json!([]));
    for id in &ids {
        let keys = emu.admin_cli(id, &["key", "list"]);
        assert_eq!(keys["keys"], json!([]), "{id}");
        let users: BTreeSet<String> = emu.admin_cli(id, &["user", "list"])["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            users,
            BTreeSet::from(["admin".to_string(), "kmsuser".to_string()])
        );
    }
    assert_no_reset_leftovers(&emu.data_dir);
    ids
}

fn assert_no_reset_leftovers(data: &Path) {
    for gone in ["reset", "reset.decided", "clusters", "clusters-unrecorded"] {
        assert!(
            !data.join(gone).exists(),
            "{gone} is left in the data directory"
        );
    }
}

/// A new store on the cluster connects with the first kmsuser password and makes a key that
/// encrypts; returns the store and a blob under the key.
async fn store_works(emu: &Emulator, name: &str) -> (String, Blob) {
    let kms = emu.kms();
    let store = emu.create_connected_store(&kms, name).await;
    let key = create_store_key(&kms, &store).await;
    let blob = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new("after the reset"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    (store, blob)
}

async fn decrypts(kms: &aws_sdk_kms::Client, blob: &Blob) {
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"after the reset");
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_reset_leaves_the_launchers_cluster_as_a_first_start_makes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let emu = Emulator::start(&data, free_port());
    let (kms, hsm) = (emu.kms(), emu.cloudhsm());
    let cluster_id = emu.cluster_id();
    let old_hsms = emu.hsm_ids();
    let old_anchor = emu.trust_anchor();

    // A connected store with two keys; a day on, the daily backup holds them, and a copy of
    // it lives in another Region.
    let store = emu.create_connected_store(&kms, "before-reset").await;
    create_store_key(&kms, &store).await;
    let doomed = create_store_key(&kms, &store).await;
    emu.advance_clock(ONE_DAY_SECONDS + 60);
    let daily = backups(&hsm).await;
    let backup_id = daily
        .iter()
        .find(|b| b.cluster_id() == Some(cluster_id.as_str()))
        .unwrap()
        .backup_id()
        .to_string();
    hsm.copy_backup_to_region()
        .backup_id(&backup_id)
        .destination_region("eu-west-1")
        .send()
        .await
        .unwrap();
    assert_eq!(backups(&emu.cloudhsm_in("eu-west-1")).await.len(), 1);

    // A second cluster, restored from that backup, with an HSM of its own.
    let second = restore_cluster(&hsm, &backup_id, &["us-east-1a"]).await;
    let second_hsm = describe_cluster(&hsm, &second).await.hsms()[0]
        .hsm_id()
        .to_string();

    // Orphaned material: a key deleted while its store is disconnected.
    kms.schedule_key_deletion()
        .key_id(doomed.key_id())
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
    assert_eq!(emu.advance_clock(EIGHT_DAYS_SECONDS), 1);
    let doomed_arn = doomed.arn().unwrap().to_string();
    assert!(emu
        .orphans()
        .contains(&(cluster_id.clone(), vec![doomed_arn.clone()])));

    // Faults in force: the second cluster's HSM stopped, the network to one of ours cut.
    emu.fault(&second_hsm, "stop");
    emu.fault(&old_hsms[0], "cut-network");
    assert_eq!(
        emu.get_json("/_hsmkms/faults")["faults"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The reset: only the launcher's cluster is left, made anew under its id. CloudHSM calls
    // meanwhile see the clusters before it or after it, never a mix.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (hsm, stop, cluster_id, second) = (
            hsm.clone(),
            stop.clone(),
            cluster_id.clone(),
            second.clone(),
        );
        let old: BTreeSet<String> = old_hsms.iter().cloned().collect();
        async move {
            let mut seen = 0;
            // Bounded: the reset takes about a second.
            for _ in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let clusters = hsm.describe_clusters().send().await.unwrap();
                let ids: BTreeSet<String> = clusters
                    .clusters()
                    .iter()
                    .map(|c| c.cluster_id().unwrap().to_string())
                    .collect();
                let ours = clusters
                    .clusters()
                    .iter()
                    .find(|c| c.cluster_id() == Some(cluster_id.as_str()))
                    .unwrap();
                let hsms: BTreeSet<String> =
                    ours.hsms().iter().map(|h| h.hsm_id().to_string()).collect();
                let old_state = ids.contains(&second) && hsms == old;
                let new_state = ids.len() == 1 && hsms.len() == 2 && hsms.is_disjoint(&old);
                assert!(old_state || new_state, "a mix: {ids:?} {hsms:?}");
                seen += 1;
            }
            seen
        }
    });
    let reset_at = epoch_now();
    let started = Instant::now();
    let answer = emu.post_json("/_hsmkms/reset", &json!({"cluster": true}));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    println!("{seen} DescribeClusters during the reset, each before or after it");
    println!(
        "cluster reset (2 clusters, 3 HSMs, backups, a store with keys): {:.1} ms (server: {} ms)",
        started.elapsed().as_secs_f64() * 1000.0,
        answer["millis"]
    );
    assert_eq!(answer["reset"], "cluster");
    assert_eq!(answer["clusterIds"], json!([cluster_id]));
    assert_eq!(emu.cluster_id(), cluster_id, "cluster.json keeps the id");
    assert_ne!(emu.trust_anchor(), old_anchor, "a first start's new CA");
    let hsms = assert_fresh(&emu, &cluster_id, &old_hsms, reset_at).await;
    assert!(emu.backups_containing(&doomed_arn).is_empty());

    // A new store connects with the first kmsuser password, as after a first start.
    let (store, blob) = store_works(&emu, "after-reset").await;
    decrypts(&kms, &blob).await;

    // A clean restart comes back to that state, the store connected again.
    emu.stop();
    let emu = Emulator::start(&data, free_port());
    let (kms, hsm) = (emu.kms(), emu.cloudhsm());
    assert_eq!(cluster_ids(&hsm).await, vec![cluster_id.clone()]);
    let after: Vec<String> = wait_for_active_hsms(&hsm, &cluster_id, 2)
        .await
        .iter()
        .map(|h| h.hsm_id().to_string())
        .collect();
    assert_eq!(after, hsms);
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    decrypts(&kms, &blob).await;

    // So does a kill -9.
    emu.crash();
    let emu = Emulator::start(&data, free_port());
    let (kms, hsm) = (emu.kms(), emu.cloudhsm());
    assert_eq!(cluster_ids(&hsm).await, vec![cluster_id.clone()]);
    wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    decrypts(&kms, &blob).await;
    assert_no_reset_leftovers(&data);

    // A KMS-only reset still leaves the cluster as it is.
    let answer = emu.post_json("/_hsmkms/reset", &json!({"cluster": false}));
    assert_eq!(answer["reset"], "kms");
    let still: Vec<String> = wait_for_active_hsms(&hsm, &cluster_id, 2)
        .await
        .iter()
        .map(|h| h.hsm_id().to_string())
        .collect();
    assert_eq!(still, hsms);
    emu.stop();
}

/// The old state of the crash test: a key, a second cluster (no HSMs) and a backup.
async fn make_old_state(emu: &Emulator) -> (String, String) {
    let (kms, hsm) = (emu.kms(), emu.cloudhsm());
    let key = create_kms_key(&kms).await.key_id().to_string();
    let second = hsm
        .create_cluster()
        .hsm_type("hsm1.medium")
        .subnet_ids("subnet-0000000000000beef")
        .send()
        .await
        .unwrap()
        .cluster()
        .unwrap()
        .cluster_id()
        .unwrap()
        .to_string();
    (key, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_cluster_reset_leaves_the_old_state_or_the_new_with_hsm_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let processes = ["--hsm-processes"];
    let mut emu = Emulator::start_with(&data, free_port(), &processes);
    let cluster_id = emu.cluster_id();

    // One reset run to the end, with HSM processes: the old processes are gone, the new ones
    // serve, and its time sets the kill points below.
    let (_, _) = make_old_state(&emu).await;
    let old_hsms = emu.hsm_ids();
    let reset_at = epoch_now();
    let answer = emu.post_json("/_hsmkms/reset", &json!({"cluster": true}));
    let millis = answer["millis"].as_f64().unwrap();
    println!("cluster reset with HSM processes: {millis:.1} ms");
    let hsms = assert_fresh(&emu, &cluster_id, &old_hsms, reset_at).await;
    let serving: BTreeSet<String> = kms_common::node_pids(&data)
        .into_iter()
        .map(|(_, dir)| dir)
        .collect();
    assert_eq!(serving.len(), 2, "{serving:?}");
    for dir in &serving {
        assert!(
            hsms.iter().any(|h| dir.ends_with(h.as_str())),
            "{dir} is an HSM of the new cluster: {hsms:?}"
        );
    }

    // Kill -9 at points through the reset: the next start serves the old state or the new,
    // whole, and the cluster takes a new store either way.
    for (round, fraction) in [0.1, 0.4, 0.7, 0.95].into_iter().enumerate() {
        let (key, second) = make_old_state(&emu).await;
        let old_hsms = emu.hsm_ids();
        let url = emu.url("/_hsmkms/reset");
        let poster = std::thread::spawn(move || {
            // Cut short by the kill: whatever it gets is not looked at.
            let _ = ureq::post(&url)
                .header("content-type", "application/json")
                .send(json!({"cluster": true}).to_string());
        });
        std::thread::sleep(Duration::from_secs_f64(millis * fraction / 1000.0));
        let reset_at = epoch_now();
        emu.crash();
        let _ = poster.join();
        emu = Emulator::start_with(&data, free_port(), &processes);
        let (kms, hsm) = (emu.kms(), emu.cloudhsm());
        let clusters = cluster_ids(&hsm).await;
        let kept = kms.describe_key().key_id(&key).send().await.is_ok();
        if clusters.len() == 2 {
            println!("kill at {fraction} of the reset: the old state");
            assert!(clusters.contains(&second), "{clusters:?}");
            assert!(kept, "the old state has its key");
            assert_eq!(emu.hsm_ids(), old_hsms);
            wait_for_active_hsms(&hsm, &cluster_id, 2).await;
            assert_no_reset_leftovers_but_clusters(&data);
        } else {
            println!("kill at {fraction} of the reset: the new state");
            assert!(!kept, "the new state has no key");
            assert_fresh(&emu, &cluster_id, &old_hsms, reset_at - 1).await;
        }
        let (_, blob) = store_works(&emu, &format!("round-{round}")).await;
        decrypts(&kms, &blob).await;
        // Back to a clean base for the next round.
        let reset_at = epoch_now();
        let old_hsms = emu.hsm_ids();
        emu.post_json("/_hsmkms/reset", &json!({"cluster": true}));
        assert_fresh(&emu, &cluster_id, &old_hsms, reset_at).await;
    }
    emu.stop();
}

/// The old state keeps its second cluster's directory; nothing of a reset is left.
fn assert_no_reset_leftovers_but_clusters(data: &Path) {
    for gone in ["reset", "reset.decided"] {
        assert!(
            !data.join(gone).exists(),
            "{gone} is left in the data directory"
        );
    }
}
