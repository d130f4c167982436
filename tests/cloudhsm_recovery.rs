//! The CloudHSM service keeps what it is doing on disk and finishes it on the next start: an HSM
//! whose create or delete a crash interrupted ends ACTIVE (with what its cluster needed from it:
//! the CSR, the backup) or gone; a CreateCluster that failed never comes back as a cluster.
//! Concurrent changes to one HSM or cluster have one winner, the account quotas and the backup
//! cap hold, and deleted clusters and backups are pruned after a while.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::time::{Duration, Instant};

use aws_sdk_cloudhsmv2::types::{BackupState, ClusterState, HsmState};
use aws_sdk_kms::primitives::Blob;
use futures::future::join_all;
use kms_common::{
    assert_error, backups, create_store_key, describe_cluster, free_port, wait_for_active_hsms,
    wait_until_async, Emulator,
};

const ONE_DAY_SECONDS: u64 = 24 * 3600;

/// Waits until the emulator's process has died (a fault injection made it abort): its port
/// refuses connections. Then reaps it.
fn wait_for_death(mut emulator: Emulator) {
    assert!(
        emulator.wait_for_exit(Duration::from_secs(60)),
        "the emulator died at its crash point"
    );
    emulator.crash();
}

/// A CloudHSMv2 client that does not retry, so a 500 reaches the test as it was answered.
fn cloudhsm_without_retries(emulator: &Emulator) -> aws_sdk_cloudhsmv2::Client {
    let config = emulator
        .cloudhsm()
        .config()
        .to_builder()
        .retry_config(aws_sdk_cloudhsmv2::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_cloudhsmv2::Client::from_conf(config)
}

async fn create_cluster(hsm: &aws_sdk_cloudhsmv2::Client, subnet: u32) -> String {
    hsm.create_cluster()
        .hsm_type("hsm1.medium")
        .subnet_ids(format!("subnet-{subnet:017x}"))
        .subnet_ids(format!("subnet-{:017x}", subnet + 1))
        .send()
        .await
        .unwrap()
        .cluster()
        .unwrap()
        .cluster_id()
        .unwrap()
        .to_string()
}

fn cluster_ids_on_disk(emulator: &Emulator) -> Vec<String> {
    let dir = emulator.data_dir.join("clusters");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_creates_interrupted_by_a_crash_finish_on_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let hsm = emulator.cloudhsm();

    // A new cluster's first HSM whose record fails to commit three times: the service tries
    // again, and the cluster offers its CSR without a restart.
    let retried = create_cluster(&hsm, 0xc00).await;
    hsm.create_hsm()
        .cluster_id(&retried)
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "fail-commits", "count": 3}),
    );
    wait_for_active_hsms(&hsm, &retried, 1).await;
    let described = describe_cluster(&hsm, &retried).await;
    assert!(
        described
            .certificates()
            .and_then(|c| c.cluster_csr())
            .is_some(),
        "the cluster offers its CSR: {described:?}"
    );

    // A new cluster's first HSM: the process dies once it serves, before it is recorded.
    let fresh = create_cluster(&hsm, 0xf00).await;
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "crash-during-hsm-create"}),
    );
    hsm.create_hsm()
        .cluster_id(&fresh)
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    wait_for_death(emulator);

    // After the restart the HSM is ACTIVE and the cluster offers its CSR: not stuck.
    let emulator = Emulator::start(&data_dir, port);
    let hsm = emulator.cloudhsm();
    wait_for_active_hsms(&hsm, &fresh, 1).await;
    let described = describe_cluster(&hsm, &fresh).await;
    assert_eq!(described.state(), Some(&ClusterState::Uninitialized));
    assert!(
        described
            .certificates()
            .and_then(|c| c.cluster_csr())
            .is_some_and(|csr| csr.contains("CERTIFICATE REQUEST")),
        "the cluster offers its CSR: {described:?}"
    );

    // An HSM added to the ACTIVE cluster: the backup that follows it happens after the restart.
    let cluster = emulator.cluster_id();
    wait_until_async("the launcher's cluster has a backup", || async {
        (!backups(&hsm).await.is_empty()).then_some(())
    })
    .await;
    let before = backups(&hsm).await.len();
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "crash-during-hsm-create"}),
    );
    hsm.create_hsm()
        .cluster_id(&cluster)
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap();
    wait_for_death(emulator);
    let emulator = Emulator::start(&data_dir, port);
    let hsm = emulator.cloudhsm();
    wait_for_active_hsms(&hsm, &cluster, 3).await;
    wait_until_async("a backup follows the added HSM", || async {
        (backups(&hsm).await.len() > before).then_some(())
    })
    .await;
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_delete_interrupted_after_its_peers_forgot_it_finishes_on_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();
    let cluster = emulator.cluster_id();

    // A connected store with a key, so the rest of the cluster can show it still serves.
    let store = emulator.create_connected_store(&kms, "delete-crash").await;
    let key = create_store_key(&kms, &store).await;
    let blob = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(b"before".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // DeleteHsm; the process dies once the other HSM has forgotten this one.
    let doomed = emulator.hsm_ids()[1].clone();
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "crash-during-hsm-delete"}),
    );
    hsm.delete_hsm()
        .cluster_id(&cluster)
        .hsm_id(&doomed)
        .send()
        .await
        .unwrap();
    wait_for_death(emulator);

    // After the restart the HSM is gone, the other is ACTIVE and serves the store's key.
    let emulator = Emulator::start(&data_dir, port);
    let hsm = emulator.cloudhsm();
    let kms = emulator.kms();
    let left = wait_for_active_hsms(&hsm, &cluster, 1).await;
    assert_ne!(left[0].hsm_id(), doomed.as_str());
    assert!(!emulator.hsm_ids().contains(&doomed));
    let decrypted = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"before");
    kms.encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(b"after".to_vec()))
        .send()
        .await
        .unwrap();
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hsm_changes_have_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();

    // Six CreateHsm at once in an UNINITIALIZED cluster: exactly one HSM.
    let fresh = create_cluster(&hsm, 0xa00).await;
    let creates = (0..6).map(|_| {
        let hsm = hsm.clone();
        let fresh = fresh.clone();
        async move {
            hsm.create_hsm()
                .cluster_id(fresh)
                .availability_zone("us-east-1a")
                .send()
                .await
        }
    });
    let answers = join_all(creates).await;
    let won = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(won, 1, "{answers:?}");
    for err in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_error(err, "CloudHsmInvalidRequestException", None);
    }
    wait_for_active_hsms(&hsm, &fresh, 1).await;

    // Eight DeleteHsm of one HSM at once: exactly one is accepted.
    let cluster = emulator.cluster_id();
    let doomed = emulator.hsm_ids()[0].clone();
    let deletes = (0..8).map(|_| {
        let hsm = hsm.clone();
        let (cluster, doomed) = (cluster.clone(), doomed.clone());
        async move {
            hsm.delete_hsm()
                .cluster_id(cluster)
                .hsm_id(doomed)
                .send()
                .await
        }
    });
    let answers = join_all(deletes).await;
    let won = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(won, 1, "{answers:?}");
    for err in answers.iter().filter_map(|a| a.as_ref().err()) {
        // Refused while it is DELETE_IN_PROGRESS, or not found once it is gone.
        let code = aws_sdk_cloudhsmv2::error::ProvideErrorMetadata::code(err);
        assert!(
            matches!(
                code,
                Some("CloudHsmInvalidRequestException" | "CloudHsmResourceNotFoundException")
            ),
            "{err:?}"
        );
    }
    let left = wait_for_active_hsms(&hsm, &cluster, 1).await;
    assert_ne!(left[0].hsm_id(), doomed.as_str());
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_quotas_refuse_a_fifth_cluster_and_a_seventh_hsm() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();

    // The launcher's cluster and three more make four; a fifth is refused, and not created.
    let mut clusters = vec![];
    for i in 0..3 {
        clusters.push(create_cluster(&hsm, 0xb00 + 0x10 * i).await);
    }
    let err = hsm
        .create_cluster()
        .hsm_type("hsm1.medium")
        .subnet_ids("subnet-00000000000000c01")
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmServiceException", None);
    let listed = hsm.describe_clusters().send().await.unwrap();
    assert_eq!(listed.clusters().len(), 4);

    // Two HSMs in the launcher's cluster, one in each new one, one more: six; a seventh is
    // refused and nothing changes.
    for c in &clusters {
        hsm.create_hsm()
            .cluster_id(c)
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap();
    }
    let cluster = emulator.cluster_id();
    hsm.create_hsm()
        .cluster_id(&cluster)
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap();
    let err = hsm
        .create_hsm()
        .cluster_id(&cluster)
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmServiceException", None);
    wait_for_active_hsms(&hsm, &cluster, 3).await;
    for c in &clusters {
        wait_for_active_hsms(&hsm, c, 1).await;
    }
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cluster_that_failed_never_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let hsm = cloudhsm_without_retries(&emulator);

    // A cluster created normally, whose directory serves as a template below.
    let kept = create_cluster(&hsm, 0xd00).await;

    // The next commit fails: CreateCluster answers an internal failure and changes nothing.
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "fail-commits", "count": 1}),
    );
    let err = hsm
        .create_cluster()
        .hsm_type("hsm1.medium")
        .subnet_ids("subnet-00000000000000e01")
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmInternalFailureException", None);
    let listed = hsm.describe_clusters().send().await.unwrap();
    assert_eq!(listed.clusters().len(), 2);
    assert_eq!(cluster_ids_on_disk(&emulator), vec![kept.clone()]);
    emulator.stop();

    // A cluster directory with no record (as a CreateCluster that died after making it left):
    // set aside on start, never served.
    let stray = "cluster-strayclusterxx";
    let from = data_dir.join("clusters").join(&kept);
    let to = data_dir.join("clusters").join(stray);
    std::fs::create_dir_all(to.join("cluster")).unwrap();
    for file in ["cluster.json", "customerCA.crt"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    for file in ["ca.key", "sync.key", "client.crt", "client.key"] {
        std::fs::copy(
            from.join("cluster").join(file),
            to.join("cluster").join(file),
        )
        .unwrap();
    }
    let json = std::fs::read_to_string(to.join("cluster.json"))
        .unwrap()
        .replace(&kept, stray);
    std::fs::write(to.join("cluster.json"), json).unwrap();

    // After the restart only the two recorded clusters exist.
    let emulator = Emulator::start(&data_dir, port);
    let hsm = emulator.cloudhsm();
    let listed = hsm.describe_clusters().send().await.unwrap();
    let mut ids: Vec<&str> = listed
        .clusters()
        .iter()
        .filter_map(|c| c.cluster_id())
        .collect();
    ids.sort();
    let mut expected = vec![emulator.cluster_id(), kept.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(cluster_ids_on_disk(&emulator), vec![kept.clone()]);
    let aside: Vec<String> = std::fs::read_dir(data_dir.join("clusters-unrecorded"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(aside.len() == 1 && aside[0].starts_with(stray), "{aside:?}");

    // A DeleteCluster whose commit fails changes nothing and leaves the cluster to the next
    // DeleteCluster, which owns and finishes it.
    let hsm = cloudhsm_without_retries(&emulator);
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "fail-commits", "count": 1}),
    );
    let err = hsm
        .delete_cluster()
        .cluster_id(&kept)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmInternalFailureException", None);
    let cluster = describe_cluster(&hsm, &kept).await;
    assert_eq!(cluster.state(), Some(&ClusterState::Uninitialized));
    let deleting = hsm.delete_cluster().cluster_id(&kept).send().await.unwrap();
    assert_eq!(
        deleting.cluster().and_then(|c| c.state()),
        Some(&ClusterState::DeleteInProgress)
    );
    let cluster = describe_cluster(&hsm, &kept).await;
    assert_eq!(cluster.state(), Some(&ClusterState::Deleted));
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_clusters_and_backups_are_pruned_after_thirty_days() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();

    // A deleted cluster and a deleted backup are still listed as DELETED for a while.
    let doomed = create_cluster(&hsm, 0xe00).await;
    hsm.delete_cluster()
        .cluster_id(&doomed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe_cluster(&hsm, &doomed).await.state(),
        Some(&ClusterState::Deleted)
    );
    let backup = wait_until_async("the launcher's cluster has a backup", || async {
        backups(&hsm).await.first().cloned()
    })
    .await;
    let backup_id = backup.backup_id().to_string();
    hsm.delete_backup()
        .backup_id(&backup_id)
        .send()
        .await
        .unwrap();
    emulator.advance_clock(8 * ONE_DAY_SECONDS);
    let listed = backups(&hsm).await;
    let state = listed
        .iter()
        .find(|b| b.backup_id() == backup_id)
        .and_then(|b| b.backup_state().cloned());
    assert_eq!(state, Some(BackupState::Deleted));
    assert_eq!(
        describe_cluster(&hsm, &doomed).await.state(),
        Some(&ClusterState::Deleted)
    );

    // Thirty days after their deletion both are gone, and so are the cluster's files.
    emulator.advance_clock(31 * ONE_DAY_SECONDS);
    let listed = hsm.describe_clusters().send().await.unwrap();
    assert!(
        listed
            .clusters()
            .iter()
            .all(|c| c.cluster_id() != Some(doomed.as_str())),
        "{listed:?}"
    );
    assert!(backups(&hsm)
        .await
        .iter()
        .all(|b| b.backup_id() != backup_id));
    assert!(!emulator.data_dir.join("clusters").join(&doomed).exists());
    // The launcher's cluster is untouched: ACTIVE, its HSMs serving.
    let cluster = emulator.cluster_id();
    let hsms = wait_for_active_hsms(&hsm, &cluster, 2).await;
    assert!(hsms.iter().all(|h| h.state() == Some(&HsmState::Active)));
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_stop_at_the_backup_cap_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();
    let west = emulator.cloudhsm_in("us-west-2");

    // Copies have no retention policy; copying one backup again and again stops at the cap of
    // 1,000 backups that hold data, every Region together.
    let backup = wait_until_async("the launcher's cluster has a backup", || async {
        backups(&hsm).await.first().cloned()
    })
    .await;
    let home = backups(&hsm).await.len();
    let started = Instant::now();
    let mut copies = 0;
    let refused = loop {
        assert!(
            copies <= 1_000 && started.elapsed() < Duration::from_secs(300),
            "copies stop at the cap ({copies} made)"
        );
        match hsm
            .copy_backup_to_region()
            .backup_id(backup.backup_id())
            .destination_region("us-west-2")
            .send()
            .await
        {
            Ok(_) => copies += 1,
            Err(e) => break e,
        }
    };
    assert_error(&refused, "CloudHsmServiceException", None);
    assert_eq!(home + copies, 1_000);
    let listed = west
        .describe_backups()
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let in_west: usize = listed.iter().map(|p| p.backups().len()).sum();
    assert_eq!(in_west, copies, "the refused copy left nothing");
    emulator.stop();
}
