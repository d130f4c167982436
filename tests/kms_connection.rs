//! Every ConnectionErrorCode the cluster can be put into here, each produced by putting the
//! cluster in that condition, and each fixed the way the AWS guide says: disconnect, repair,
//! (update the key store password,) reconnect. Plus what a connected store does when its HSMs
//! fail and come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_kms::types::{ConnectionErrorCodeType, ConnectionStateType, KeyState};
use kms_common::*;

/// Runs `hsm-cli` once; returns whether it succeeded.
fn cli(emu: &Emulator, args: &[&str]) -> bool {
    Command::new(hsmkms_exe())
        .arg("hsm-cli")
        .arg("--data-dir")
        .arg(&emu.data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

const AS_ADMIN: [&str; 6] = [
    "--username",
    "admin",
    "--role",
    "admin",
    "--password",
    ADMIN_PASSWORD,
];

async fn set_store_password(kms: &aws_sdk_kms::Client, store: &str, password: &str) {
    kms.update_custom_key_store()
        .custom_key_store_id(store)
        .key_store_password(password)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_session_problems_fail_the_connection_with_their_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();

    // A store told the wrong kmsuser password: INVALID_CREDENTIALS. A FAILED store must be
    // disconnected before it can connect again.
    let store = kms
        .create_custom_key_store()
        .custom_key_store_name("wrong-password")
        .cloud_hsm_cluster_id(emu.cluster_id())
        .trust_anchor_certificate(emu.trust_anchor())
        .key_store_password("notThePassword1")
        .send()
        .await
        .unwrap()
        .custom_key_store_id()
        .unwrap()
        .to_string();
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::InvalidCredentials).await;
    let again = kms
        .connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &again.into_service_error(),
        "CustomKeyStoreInvalidStateException",
        None,
    );
    let update = kms
        .update_custom_key_store()
        .custom_key_store_id(&store)
        .key_store_password(KMSUSER_PASSWORD)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &update.into_service_error(),
        "CustomKeyStoreInvalidStateException",
        None,
    );
    disconnect(&kms, &store).await;
    set_store_password(&kms, &store, KMSUSER_PASSWORD).await;
    reconnect(&kms, &store).await;
    let key = create_store_key(&kms, &store).await;

    // Connecting rotated kmsuser's password: the old one no longer logs in.
    assert!(!cli(
        &emu,
        &[
            "--username",
            "kmsuser",
            "--role",
            "crypto-user",
            "--password",
            KMSUSER_PASSWORD,
            "key",
            "list"
        ]
    ));
    disconnect(&kms, &store).await;
    assert_eq!(
        describe(&kms, key.key_id()).await.key_state(),
        Some(&KeyState::Unavailable)
    );

    // Five wrong passwords lock kmsuser out: USER_LOCKED_OUT. The fix: an officer sets a new
    // password (which unlocks it), the store is told it, and it reconnects.
    for _ in 0..5 {
        assert!(!cli(
            &emu,
            &[
                "--username",
                "kmsuser",
                "--role",
                "crypto-user",
                "--password",
                "guessing123",
                "user",
                "list"
            ]
        ));
    }
    set_store_password(&kms, &store, "anyPassword1").await;
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::UserLockedOut).await;
    disconnect(&kms, &store).await;
    assert!(cli(
        &emu,
        &[
            &AS_ADMIN[..],
            &[
                "user",
                "change-password",
                "--username",
                "kmsuser",
                "--role",
                "crypto-user",
                "--password",
                "recovered1"
            ]
        ]
        .concat()
    ));
    set_store_password(&kms, &store, "recovered1").await;
    reconnect(&kms, &store).await;
    assert_eq!(
        describe(&kms, key.key_id()).await.key_state(),
        Some(&KeyState::Enabled)
    );
    disconnect(&kms, &store).await;

    // Someone logged in as kmsuser (the orphan-cleanup procedure left half done): USER_LOGGED_IN.
    assert!(cli(
        &emu,
        &[
            &AS_ADMIN[..],
            &[
                "user",
                "change-password",
                "--username",
                "kmsuser",
                "--role",
                "crypto-user",
                "--password",
                "cleanup123"
            ]
        ]
        .concat()
    ));
    set_store_password(&kms, &store, "cleanup123").await;
    let mut session = Command::new(hsmkms_exe())
        .args(["hsm-cli", "--data-dir"])
        .arg(&emu.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    writeln!(
        stdin,
        "login --username kmsuser --role crypto-user --password cleanup123"
    )
    .unwrap();
    stdin.flush().unwrap();
    // Wait until that login shows in the cluster before connecting.
    let mut stdout = std::io::BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("logged in"), "{line}");
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::UserLoggedIn).await;
    // Log out (end the session), disconnect, reconnect.
    drop(stdin);
    session.wait().unwrap();
    disconnect(&kms, &store).await;
    reconnect(&kms, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kmsuser_and_a_cluster_without_active_hsms_fail_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();
    let store = emu.create_store(&kms, "store").await;

    // No kmsuser in the cluster: USER_NOT_FOUND. The fix: create it, tell the store, reconnect.
    assert!(cli(
        &emu,
        &[&AS_ADMIN[..], &["user", "delete", "--username", "kmsuser"]].concat()
    ));
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::UserNotFound).await;
    disconnect(&kms, &store).await;
    assert!(cli(
        &emu,
        &[
            &AS_ADMIN[..],
            &[
                "user",
                "create",
                "--username",
                "kmsuser",
                "--role",
                "crypto-user",
                "--password",
                "recreated1"
            ]
        ]
        .concat()
    ));
    set_store_password(&kms, &store, "recreated1").await;
    reconnect(&kms, &store).await;
    let key = create_store_key(&kms, &store).await;
    disconnect(&kms, &store).await;

    // Every HSM down: INSUFFICIENT_CLOUDHSM_HSMS.
    let hsms = emu.hsm_ids();
    for h in &hsms {
        emu.fault(h, "stop");
    }
    connect_fails_with(
        &kms,
        &store,
        ConnectionErrorCodeType::InsufficientCloudhsmHsms,
    )
    .await;
    disconnect(&kms, &store).await;
    for h in &hsms {
        emu.fault(h, "start");
    }
    reconnect(&kms, &store).await;

    // A connected store whose HSMs all fail stays CONNECTED; its keys' crypto fails with
    // KMSInvalidStateException, and works again once the HSMs are back.
    for h in &hsms {
        emu.fault(h, "stop");
    }
    let err = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_error(&err.into_service_error(), "KMSInvalidStateException", None);
    assert_eq!(
        connection_state(&kms, &store).await,
        ConnectionStateType::Connected
    );
    // With one HSM, the cluster cannot take new keys (two Availability Zones are needed).
    emu.fault(&hsms[0], "start");
    let err = kms
        .create_key()
        .origin(aws_sdk_kms::types::OriginType::AwsCloudhsm)
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err.into_service_error(),
        "CloudHsmClusterInvalidConfigurationException",
        None,
    );
    emu.fault(&hsms[1], "start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sealed = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"back".to_vec()))
        .send()
        .await
        .unwrap();
    assert!(sealed.ciphertext_blob().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moved_to_a_restored_cluster_that_is_then_deleted_fails_with_cluster_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();
    let hsm = emu.cloudhsm();
    let original = emu.cluster_id();
    let store = emu.create_connected_store(&kms, "movable-store").await;
    let key = create_store_key(&kms, &store).await;
    let sealed = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"quarterly".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // A day later the daily backup holds the key; a cluster restored from it is related.
    emu.advance_clock(24 * 3600 + 60);
    let backup = emu.backups_containing(key.arn().unwrap());
    let restored = restore_cluster(&hsm, &backup[0], &["us-east-1a", "us-east-1b"]).await;

    // The AWS guide's recovery: disconnect, point the store at the related cluster, reconnect;
    // the key works there.
    disconnect(&kms, &store).await;
    kms.update_custom_key_store()
        .custom_key_store_id(&store)
        .cloud_hsm_cluster_id(&restored)
        .send()
        .await
        .unwrap();
    reconnect(&kms, &store).await;
    let opened = kms
        .decrypt()
        .ciphertext_blob(sealed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"quarterly");
    assert_eq!(
        describe(&kms, key.key_id()).await.cloud_hsm_cluster_id(),
        Some(original.as_str()),
        "a key records the cluster it was created in"
    );

    // The restored cluster is deleted: connecting finds no cluster.
    disconnect(&kms, &store).await;
    delete_cluster_and_hsms(&hsm, &restored).await;
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::ClusterNotFound).await;
    assert_eq!(
        describe(&kms, key.key_id()).await.key_state(),
        Some(&KeyState::Unavailable)
    );

    // Fixed by pointing the store back at a cluster that exists. KMS rotated kmsuser's password
    // in the restored cluster only, so the original needs the password the store now has:
    // set one as admin there, and give it to KMS.
    disconnect(&kms, &store).await;
    kms.update_custom_key_store()
        .custom_key_store_id(&store)
        .cloud_hsm_cluster_id(&original)
        .send()
        .await
        .unwrap();
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::InvalidCredentials).await;
    disconnect(&kms, &store).await;
    let reset = "backAgain123";
    let change = [
        "user",
        "change-password",
        "--username",
        "kmsuser",
        "--role",
        "crypto-user",
        "--password",
        reset,
    ];
    assert!(cli(&emu, &[&AS_ADMIN[..], &change[..]].concat()));
    set_store_password(&kms, &store, reset).await;
    reconnect(&kms, &store).await;
    let opened = kms.decrypt().ciphertext_blob(sealed).send().await.unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"quarterly");
    emu.stop();
}
