//! Two clients racing on one resource, and HSMs that stall or leave under load: every change
//! that was acknowledged is there afterwards, none overwrites another, a store's connection
//! runs once however many ask for it, and a generation that timed out on a stalled HSM leaves
//! no second key object on any HSM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{ConnectionStateType, OriginType, Tag};
use futures::future::join_all;
use kms_common::{
    connection_state, create_kms_key, describe_cluster, describe_store, free_port, node_pids,
    wait_for_active_hsms, wait_for_connection_state, Emulator,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// kmsuser's open sessions on each HSM, as `hsm-cli user list` shows them.
fn kmsuser_sessions(emulator: &Emulator) -> Vec<u64> {
    emulator
        .hsm_ids()
        .iter()
        .map(|hsm| {
            let listed = emulator.admin_cli(hsm, &["user", "list"]);
            listed["users"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["username"] == "kmsuser")
                .map(|u| u["sessions"].as_u64().unwrap())
                .unwrap()
        })
        .collect()
}

/// Per HSM: how many key objects carry each label.
fn labels_per_hsm(emulator: &Emulator) -> Vec<(String, BTreeMap<String, usize>)> {
    emulator
        .hsm_ids()
        .iter()
        .map(|hsm| {
            let listed = emulator.admin_cli(hsm, &["key", "list"]);
            let mut counts = BTreeMap::new();
            for k in listed["keys"].as_array().unwrap() {
                *counts
                    .entry(k["label"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            (hsm.clone(), counts)
        })
        .collect()
}

/// Every acknowledged key store key has exactly one backing key on every HSM, and no HSM holds
/// a key object labelled with a key ARN that KMS does not know.
async fn one_backing_key_each_on_every_hsm(emulator: &Emulator, arns: &[String]) {
    let kms = emulator.kms();
    let pages = kms
        .list_keys()
        .limit(1000)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let known: std::collections::BTreeSet<String> = pages
        .iter()
        .flat_map(|p| p.keys())
        .map(|k| k.key_arn().unwrap().to_string())
        .collect();
    // Replication settles within a few anti-entropy rounds.
    let started = std::time::Instant::now();
    loop {
        let mut problems = Vec::new();
        for (hsm, counts) in labels_per_hsm(emulator) {
            for a in arns {
                if counts.get(a) != Some(&1) {
                    problems.push(format!("{hsm}: {a} x{}", counts.get(a).unwrap_or(&0)));
                }
            }
            for (label, n) in &counts {
                if label.starts_with("arn:") && !known.contains(label) {
                    problems.push(format!("{hsm}: {label} x{n} names no KMS key"));
                }
            }
        }
        if problems.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "every HSM holds one backing key per KMS key and nothing else: {problems:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_of_one_store_run_the_connection_once() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let store = emulator.create_store(&kms, "raced-store").await;
    for round in 0..3 {
        // Eight clients connect the same store at once: all succeed, it ends CONNECTED.
        let connects = (0..8).map(|_| {
            let kms = kms.clone();
            let store = store.clone();
            async move {
                kms.connect_custom_key_store()
                    .custom_key_store_id(store)
                    .send()
                    .await
            }
        });
        for answer in join_all(connects).await {
            answer.unwrap();
        }
        wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
        // One connection ran: kmsuser has one session on each HSM, and the store works.
        assert_eq!(kmsuser_sessions(&emulator), vec![1, 1], "round {round}");
        let key = kms_common::create_store_key(&kms, &store).await;
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .unwrap();
        // And eight disconnects at once: the first wins, the others find it disconnecting or
        // disconnected; no session is left.
        let disconnects = (0..8).map(|_| {
            let kms = kms.clone();
            let store = store.clone();
            async move {
                kms.disconnect_custom_key_store()
                    .custom_key_store_id(store)
                    .send()
                    .await
            }
        });
        let ok = join_all(disconnects)
            .await
            .into_iter()
            .filter(|a| a.is_ok())
            .count();
        assert!(ok >= 1, "round {round}: a disconnect succeeded");
        assert_eq!(
            connection_state(&kms, &store).await,
            ConnectionStateType::Disconnected
        );
        assert_eq!(kmsuser_sessions(&emulator), vec![0, 0], "round {round}");
    }
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_racing_a_connect_never_undo_it() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let store = emulator.create_store(&kms, "renamed-store").await;
    let mut last_name = "renamed-store".to_string();
    for round in 0..5 {
        kms.connect_custom_key_store()
            .custom_key_store_id(&store)
            .send()
            .await
            .unwrap();
        // Renames while it connects: refused while CONNECTING, applied once CONNECTED; none
        // puts the state back.
        for i in 0..40 {
            let name = format!("name-{round}-{i}");
            if kms
                .update_custom_key_store()
                .custom_key_store_id(&store)
                .new_custom_key_store_name(&name)
                .send()
                .await
                .is_ok()
            {
                last_name = name;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
        let described = describe_store(&kms, &store).await;
        assert_eq!(described.custom_key_store_name(), Some(last_name.as_str()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            connection_state(&kms, &store).await,
            ConnectionStateType::Connected,
            "round {round}: a rename did not undo the connection"
        );
        kms.disconnect_custom_key_store()
            .custom_key_store_id(&store)
            .send()
            .await
            .unwrap();
    }
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tag_and_alias_changes_on_one_key_are_all_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let other = create_kms_key(&kms).await;
    let id = key.key_id().to_string();

    // 32 tags, each from its own client, at once: all 32 are there.
    let tags = (0..32).map(|i| {
        let kms = kms.clone();
        let id = id.clone();
        async move {
            kms.tag_resource()
                .key_id(id)
                .tags(
                    Tag::builder()
                        .tag_key(format!("k{i}"))
                        .tag_value(format!("v{i}"))
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    });
    join_all(tags).await;
    let listed = kms.list_resource_tags().key_id(&id).send().await.unwrap();
    assert_eq!(listed.tags().len(), 32);

    // 20 aliases created at once, half of them then moved to the other key and a quarter
    // deleted, all concurrently: the aliases end exactly as the acknowledged calls say.
    let creates = (0..20).map(|i| {
        let kms = kms.clone();
        let id = id.clone();
        async move {
            kms.create_alias()
                .alias_name(format!("alias/a{i}"))
                .target_key_id(id)
                .send()
                .await
                .unwrap();
        }
    });
    join_all(creates).await;
    let changes = (0..20).map(|i| {
        let kms = kms.clone();
        let other = other.key_id().to_string();
        async move {
            if i % 4 == 0 {
                kms.delete_alias()
                    .alias_name(format!("alias/a{i}"))
                    .send()
                    .await
                    .map(|_| ())
                    .unwrap();
            } else if i % 2 == 0 {
                kms.update_alias()
                    .alias_name(format!("alias/a{i}"))
                    .target_key_id(other)
                    .send()
                    .await
                    .map(|_| ())
                    .unwrap();
            }
        }
    });
    join_all(changes).await;
    let aliases = kms.list_aliases().send().await.unwrap();
    let mut got: Vec<(String, String)> = aliases
        .aliases()
        .iter()
        .map(|a| {
            (
                a.alias_name().unwrap().to_string(),
                a.target_key_id().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = (0..20)
        .filter(|i| i % 4 != 0)
        .map(|i| {
            let target = if i % 2 == 0 { other.key_id() } else { &id };
            (format!("alias/a{i}"), target.to_string())
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    emulator.stop();
}

/// Creates keys in `store` from `clients` clients, `per_client` each, or until `until`
/// has passed if that comes first (and at least one each); returns the ARNs of those
/// acknowledged and the count of failures.
async fn create_keys_for(
    kms: &aws_sdk_kms::Client,
    store: &str,
    clients: usize,
    per_client: usize,
    until: Duration,
) -> (Vec<String>, usize) {
    let started = std::time::Instant::now();
    let runs = (0..clients).map(|_| {
        let kms = kms.clone();
        let store = store.to_string();
        async move {
            let mut made = Vec::new();
            let mut failed = 0;
            for i in 0..per_client {
                if i > 0 && started.elapsed() > until {
                    break;
                }
                match kms
                    .create_key()
                    .origin(OriginType::AwsCloudhsm)
                    .custom_key_store_id(&store)
                    .send()
                    .await
                {
                    Ok(k) => made.push(k.key_metadata().unwrap().arn().unwrap().to_string()),
                    Err(_) => failed += 1,
                }
            }
            (made, failed)
        }
    });
    let mut arns = Vec::new();
    let mut failed = 0;
    for (made, f) in join_all(runs).await {
        arns.extend(made);
        failed += f;
    }
    (arns, failed)
}

/// [`create_keys_for`] without a time bound.
async fn create_keys(
    kms: &aws_sdk_kms::Client,
    store: &str,
    clients: usize,
    per_client: usize,
) -> (Vec<String>, usize) {
    create_keys_for(kms, store, clients, per_client, Duration::MAX).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_hsm_during_create_key_leaves_no_second_key_object() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    // Three HSMs, so two (the quorum) still answer while one is stalled.
    let emulator =
        Emulator::start_with(&data_dir, free_port(), &["--hsm-processes", "--hsms", "3"]);
    let kms = emulator.kms();
    let store = emulator.create_connected_store(&kms, "stall-store").await;
    let (before, _) = create_keys(&kms, &store, 2, 3).await;

    // One HSM stops (SIGSTOP: alive, connected, silent) while keys are being created, for
    // longer than a call's deadline, then runs again and reads what it was sent meanwhile.
    let pids = node_pids(&data_dir);
    let (victim, _) = pids[0];
    let load = {
        let kms = kms.clone();
        let store = store.clone();
        // Busy for the whole stall and a little after: at most 2,000 keys, 11 s.
        tokio::spawn(
            async move { create_keys_for(&kms, &store, 3, 700, Duration::from_secs(11)).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(Pid::from_raw(victim), Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    kill(Pid::from_raw(victim), Signal::SIGCONT).unwrap();
    let (during, failed) = load.await.unwrap();
    let (after, _) = create_keys(&kms, &store, 2, 2).await;
    assert!(
        !during.is_empty(),
        "keys were created while an HSM stalled ({failed} failed)"
    );

    // Every acknowledged key has exactly one backing key on each of the three HSMs, and no
    // HSM holds a key object for a key KMS does not know.
    let arns: Vec<String> = before.into_iter().chain(during).chain(after).collect();
    one_backing_key_each_on_every_hsm(&emulator, &arns).await;
    assert!(emulator
        .orphans()
        .iter()
        .all(|(_, labels)| labels.is_empty()));
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_hsm_during_create_key_load_keeps_every_acknowledged_key() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start_with(&tmp.path().join("data"), free_port(), &["--hsms", "3"]);
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    let store = emulator.create_connected_store(&kms, "shrink-store").await;

    // Keys are created from three clients while the HSM in us-east-1c is deleted.
    let load = {
        let kms = kms.clone();
        let store = store.clone();
        tokio::spawn(
            async move { create_keys_for(&kms, &store, 3, 300, Duration::from_secs(4)).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cluster = describe_cluster(&hsm, &cluster_id).await;
    let victim = cluster
        .hsms()
        .iter()
        .find(|h| h.availability_zone() == Some("us-east-1c"))
        .unwrap()
        .hsm_id()
        .to_string();
    hsm.delete_hsm()
        .cluster_id(&cluster_id)
        .hsm_id(&victim)
        .send()
        .await
        .unwrap();
    let (arns, _) = load.await.unwrap();
    wait_for_active_hsms(&hsm, &cluster_id, 2).await;
    assert!(!arns.is_empty());

    // Every acknowledged key works and has one backing key on each HSM that is left.
    for arn in &arns {
        let sealed = kms
            .encrypt()
            .key_id(arn)
            .plaintext(Blob::new(b"kept".to_vec()))
            .send()
            .await
            .unwrap();
        kms.decrypt()
            .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
            .send()
            .await
            .unwrap();
    }
    one_backing_key_each_on_every_hsm(&emulator, &arns).await;
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cluster_changes_are_all_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();
    let cluster_id = emulator.cluster_id();
    // 20 tags and a retention change, each from its own client, at once: none is lost.
    let tags = (0..20).map(|i| {
        let hsm = hsm.clone();
        let cluster_id = cluster_id.clone();
        async move {
            hsm.tag_resource()
                .resource_id(cluster_id)
                .tag_list(
                    aws_sdk_cloudhsmv2::types::Tag::builder()
                        .key(format!("k{i}"))
                        .value(format!("v{i}"))
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    });
    let retention = async {
        hsm.modify_cluster()
            .cluster_id(&cluster_id)
            .backup_retention_policy(
                aws_sdk_cloudhsmv2::types::BackupRetentionPolicy::builder()
                    .r#type(aws_sdk_cloudhsmv2::types::BackupRetentionType::Days)
                    .value("30")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    };
    futures::join!(join_all(tags), retention);
    let listed = hsm
        .list_tags()
        .resource_id(&cluster_id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.tag_list().len(), 20);
    let cluster = describe_cluster(&hsm, &cluster_id).await;
    assert_eq!(
        cluster
            .backup_retention_policy()
            .and_then(|p| p.value())
            .map(str::to_string),
        Some("30".to_string())
    );
    emulator.stop();
}
