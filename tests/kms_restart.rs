//! A restart finds a connected custom key store connected, for real: after `hsmkms` is stopped
//! (SIGTERM) or killed (SIGKILL), with in-process HSMs or `hsm-node` processes, and with an HSM
//! killed just before, the store is CONNECTED once `Ready.` is printed, the first Decrypt of a
//! blob made before the restart succeeds, and a deletion that falls due right after the restart
//! removes the backing key from every HSM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::Path;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{ConnectionStateType, KeyState};
use kms_common::{
    backing_key_deletion_statuses, create_store_key, describe, describe_store, free_port,
    node_pids, wait_until, Emulator, EIGHT_DAYS_SECONDS,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CONTEXT: (&str, &str) = ("purpose", "restart");

/// How the emulator goes down between two runs.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Sigkill,
}

fn stop(emulator: Emulator, how: Stop) {
    match how {
        Stop::Sigterm => emulator.stop(),
        Stop::Sigkill => emulator.crash(),
    }
}

async fn encrypt(kms: &aws_sdk_kms::Client, key_id: &str, plaintext: &[u8]) -> Blob {
    kms.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext))
        .encryption_context(CONTEXT.0, CONTEXT.1)
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone()
}

/// The first calls after `Ready.`: the store is CONNECTED and every blob decrypts at once,
/// with no retry.
async fn first_calls_work(emulator: &Emulator, store: &str, blobs: &[(Blob, &[u8])], when: &str) {
    // No SDK retry: the first attempt itself must work.
    let kms = emulator.kms_without_retries();
    let described = describe_store(&kms, store).await;
    assert_eq!(
        described.connection_state(),
        Some(&ConnectionStateType::Connected),
        "{when}: the store is CONNECTED after Ready. ({:?})",
        described.connection_error_code()
    );
    for (blob, plaintext) in blobs {
        let decrypted = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{when}: the first Decrypt after Ready. works: {e:?}"));
        assert_eq!(
            decrypted.plaintext().unwrap().as_ref(),
            *plaintext,
            "{when}"
        );
    }
}

/// A store key scheduled for deletion before the restart, deleted after it: the backing key
/// is gone from every HSM, and the audit trail says SUCCESS for each.
async fn deletion_after_restart_reaches_every_hsm(emulator: &Emulator, key_id: &str, arn: &str) {
    assert_eq!(emulator.advance_clock(EIGHT_DAYS_SECONDS), 1);
    let record = emulator.wait_for_delete_key_record(key_id);
    let statuses = backing_key_deletion_statuses(&record);
    let hsms = emulator.hsm_ids();
    assert_eq!(statuses.len(), hsms.len(), "{record}");
    assert!(
        statuses.iter().all(|(_, s)| s == "SUCCESS"),
        "every HSM deleted the backing key: {statuses:?}"
    );
    for hsm in &hsms {
        wait_until(
            &format!("the backing key of {arn} is gone from {hsm}"),
            Duration::from_secs(15),
            || emulator.keys_labelled(hsm, arn).is_empty().then_some(()),
        );
    }
    assert!(
        emulator
            .orphans()
            .iter()
            .all(|(_, labels)| labels.is_empty()),
        "nothing is orphaned"
    );
}

/// The walk every mode takes: a connected store with two keys, restarts of each kind, the
/// first calls after each, and a deletion that falls due after the last one.
async fn restarts_keep_the_store_connected(options: &[&str], kill_an_hsm_first: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start_with(&data_dir, port, options);
    let kms = emulator.kms();

    // A connected store, a key kept and a key that will be deleted after a restart.
    let store = emulator.create_connected_store(&kms, "restart-store").await;
    let kept = create_store_key(&kms, &store).await;
    let doomed = create_store_key(&kms, &store).await;
    let blobs = vec![
        (encrypt(&kms, kept.key_id(), b"kept").await, &b"kept"[..]),
        (
            encrypt(&kms, doomed.key_id(), b"doomed").await,
            &b"doomed"[..],
        ),
    ];

    // SIGTERM, then SIGKILL: each time the store comes back connected and the keys work.
    let mut emulator = emulator;
    for how in [Stop::Sigterm, Stop::Sigkill] {
        stop(emulator, how);
        emulator = Emulator::start_with(&data_dir, port, options);
        first_calls_work(&emulator, &store, &blobs, &format!("after {how:?}")).await;
    }

    // The doomed key is scheduled, then one HSM dies just before the emulator is killed.
    let kms = emulator.kms();
    kms.schedule_key_deletion()
        .key_id(doomed.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    if kill_an_hsm_first {
        kill_one_hsm(&emulator, &data_dir).await;
    }
    stop(emulator, Stop::Sigkill);
    let emulator = Emulator::start_with(&data_dir, port, options);
    first_calls_work(
        &emulator,
        &store,
        &blobs[..1],
        "after an HSM and then hsmkms died",
    )
    .await;
    let kms = emulator.kms();
    assert_eq!(
        describe(&kms, doomed.key_id()).await.key_state(),
        Some(&KeyState::PendingDeletion)
    );
    deletion_after_restart_reaches_every_hsm(&emulator, doomed.key_id(), doomed.arn().unwrap())
        .await;
    // The kept key still encrypts and decrypts on the restarted cluster.
    let again = encrypt(&kms, kept.key_id(), b"again").await;
    first_calls_work(&emulator, &store, &[(again, &b"again"[..])], "at the end").await;
    emulator.stop();
}

/// Kills one HSM: its `hsm-node` process with SIGKILL, or, in-process, through the control API.
async fn kill_one_hsm(emulator: &Emulator, data_dir: &Path) {
    let hsm = emulator.hsm_ids()[0].clone();
    let pids = node_pids(data_dir);
    match pids.iter().find(|(_, dir)| dir.contains(&hsm)) {
        Some((pid, _)) => kill(Pid::from_raw(*pid), Signal::SIGKILL).unwrap(),
        None => emulator.fault(&hsm, "stop"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_hsms_a_restarted_emulator_serves_the_store_at_once() {
    restarts_keep_the_store_connected(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_processes_a_restarted_emulator_serves_the_store_at_once() {
    restarts_keep_the_store_connected(&["--hsm-processes"], true).await;
}

/// The address `cluster.json` records for the cluster's first HSM.
fn first_hsm_address(data_dir: &Path) -> String {
    let cluster: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("cluster.json")).unwrap())
            .unwrap();
    cluster["hsms"][0]["address"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_whose_port_was_taken_listens_on_another_and_the_cluster_learns_it() {
    for options in [&[][..], &["--hsm-processes"][..]] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let port = free_port();
        let emulator = Emulator::start_with(&data_dir, port, options);
        let kms = emulator.kms();
        let store = emulator.create_connected_store(&kms, "moved-store").await;
        let key = create_store_key(&kms, &store).await;
        let blobs = vec![(encrypt(&kms, key.key_id(), b"moved").await, &b"moved"[..])];
        emulator.stop();

        // Another process takes the first HSM's port while the emulator is down.
        let taken = first_hsm_address(&data_dir);
        let squatter = std::net::TcpListener::bind(&taken).unwrap();
        let emulator = Emulator::start_with(&data_dir, port, options);
        let moved = first_hsm_address(&data_dir);
        assert_ne!(moved, taken, "{options:?}: the HSM listens on another port");
        first_calls_work(&emulator, &store, &blobs, "after the port was taken").await;
        // Both HSMs work together: a new key reaches its quorum, the CLI finds the HSM.
        let kms = emulator.kms();
        let again = create_store_key(&kms, &store).await;
        let hsm = emulator.hsm_ids()[0].clone();
        wait_until(
            &format!("{hsm} at its new address holds the new key"),
            Duration::from_secs(15),
            || (emulator.keys_labelled(&hsm, again.arn().unwrap()).len() == 1).then_some(()),
        );
        drop(squatter);
        emulator.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_interrupted_after_its_commit_finishes_on_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let store = emulator
        .create_connected_store(&kms, "interrupted-store")
        .await;
    let doomed = create_store_key(&kms, &store).await;
    kms.schedule_key_deletion()
        .key_id(doomed.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    // The process dies right after the key's removal is durable, before any HSM hears of it.
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "crash-after-deletion-commit"}),
    );
    let (status, _) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        emulator.post_json_status(
            "/_hsmkms/clock",
            &serde_json::json!({ "advanceSeconds": EIGHT_DAYS_SECONDS }),
        )
    }))
    .unwrap_or((0, serde_json::Value::Null));
    assert_ne!(status, 200, "the clock call did not get its answer");
    emulator.crash();

    // The next start finishes it: the backing key is deleted from every HSM, the audit trail
    // and the event say so, and nothing is orphaned.
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let err = kms
        .describe_key()
        .key_id(doomed.key_id())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    kms_common::assert_error(&err, "NotFoundException", None);
    let record = emulator.wait_for_delete_key_record(doomed.key_id());
    let statuses = backing_key_deletion_statuses(&record);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|(_, s)| s == "SUCCESS"),
        "{statuses:?}"
    );
    emulator.wait_for_deletion_event(doomed.arn().unwrap(), doomed.key_id());
    for hsm in emulator.hsm_ids() {
        assert!(emulator
            .keys_labelled(&hsm, doomed.arn().unwrap())
            .is_empty());
    }
    assert!(emulator.orphans().iter().all(|(_, l)| l.is_empty()));
    emulator.stop();
}
