//! When the frontend's store cannot commit, nothing changes: every call that needed a commit
//! answers KMSInternalException, everything a client can see stays as it was (also after a
//! restart), health says why, and the first commit after the cause is gone works, without a
//! restart. A store file that is empty or damaged stops the start with a message naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_kms::types::{ConnectionStateType, KeyState, Tag};
use kms_common::{assert_error, create_kms_key, describe, free_port, hsmkms_exe, Emulator};

/// `POST /_hsmkms/faults {"action": "fail-commits", "count": n}`.
fn fail_next_commits(emulator: &Emulator, count: u32) {
    let answer = emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "fail-commits", "count": count}),
    );
    assert_eq!(answer["failingCommits"], count, "{answer}");
}

fn health(emulator: &Emulator) -> serde_json::Value {
    emulator.get_json_any_status("/_hsmkms/health")
}

async fn tags(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<(String, String)> {
    kms_common::key_tags(kms, key_id)
        .await
        .into_iter()
        .collect()
}

async fn alias_targets(kms: &aws_sdk_kms::Client) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = kms
        .list_aliases()
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
        .collect();
    out.sort();
    out
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .unwrap()
}

/// What a client can see of the account: keys with their state, description and tags,
/// aliases, key stores, the clock.
async fn visible_state(emulator: &Emulator, kms: &aws_sdk_kms::Client) -> String {
    let mut keys = Vec::new();
    for k in kms.list_keys().send().await.unwrap().keys() {
        let id = k.key_id().unwrap();
        let m = describe(kms, id).await;
        keys.push(format!(
            "{id} {:?} {:?} {:?} {:?}",
            m.key_state(),
            m.description(),
            m.deletion_date(),
            tags(kms, id).await
        ));
    }
    keys.sort();
    let stores: Vec<String> = kms
        .describe_custom_key_stores()
        .send()
        .await
        .unwrap()
        .custom_key_stores()
        .iter()
        .map(|s| format!("{:?} {:?}", s.custom_key_store_name(), s.connection_state()))
        .collect();
    format!(
        "keys {keys:?}\naliases {:?}\nstores {stores:?}\nclock offset {}",
        alias_targets(kms).await,
        emulator.get_json("/_hsmkms/clock")["offsetSeconds"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_changes_nothing_and_the_next_commit_works() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms_without_retries();
    // The cluster's first backup is taken (and committed) before Ready.; make sure of it, so
    // the failures injected below meet the calls under test.
    kms_common::wait_until(
        "the cluster's first backup is taken",
        Duration::from_secs(30),
        || {
            (!emulator.get_json("/_hsmkms/backups")["backups"]
                .as_array()
                .unwrap()
                .is_empty())
            .then_some(())
        },
    );

    // A key with an alias and a tag, and a second key to point aliases at.
    let key = create_kms_key(&kms).await;
    let other = create_kms_key(&kms).await;
    let id = key.key_id().to_string();
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("t", "1"))
        .send()
        .await
        .unwrap();
    let before = visible_state(&emulator, &kms).await;

    // Every kind of change, each with its commit failing: an internal error, nothing changed,
    // health unhealthy with the reason; then the same change with a working commit succeeds.
    let trust_anchor = emulator.trust_anchor();
    let cluster_id = emulator.cluster_id();
    for change in [
        "TagResource",
        "UntagResource",
        "DisableKey",
        "UpdateKeyDescription",
        "PutKeyPolicy",
        "ScheduleKeyDeletion",
        "CreateAlias",
        "UpdateAlias",
        "DeleteAlias",
        "CreateKey",
        "CreateCustomKeyStore",
        "AdvanceClock",
    ] {
        fail_next_commits(&emulator, 1);
        let failed: Option<String> = match change {
            "TagResource" => kms
                .tag_resource()
                .key_id(&id)
                .tags(tag("t", "2"))
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "UntagResource" => kms
                .untag_resource()
                .key_id(&id)
                .tag_keys("t")
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "DisableKey" => kms
                .disable_key()
                .key_id(&id)
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "UpdateKeyDescription" => kms
                .update_key_description()
                .key_id(&id)
                .description("changed")
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "PutKeyPolicy" => kms
                .put_key_policy()
                .key_id(&id)
                .policy(r#"{"Version":"2012-10-17","Statement":[]}"#)
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "ScheduleKeyDeletion" => kms
                .schedule_key_deletion()
                .key_id(&id)
                .pending_window_in_days(7)
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "CreateAlias" => kms
                .create_alias()
                .alias_name("alias/new")
                .target_key_id(&id)
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "UpdateAlias" => kms
                .update_alias()
                .alias_name("alias/app")
                .target_key_id(other.key_id())
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "DeleteAlias" => kms
                .delete_alias()
                .alias_name("alias/app")
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "CreateKey" => kms
                .create_key()
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "CreateCustomKeyStore" => kms
                .create_custom_key_store()
                .custom_key_store_name("never")
                .cloud_hsm_cluster_id(&cluster_id)
                .trust_anchor_certificate(&trust_anchor)
                .key_store_password("kmsPassword1")
                .send()
                .await
                .err()
                .map(|e| e.into_service_error().to_string()),
            "AdvanceClock" => {
                let (status, answer) = emulator.post_json_status(
                    "/_hsmkms/clock",
                    &serde_json::json!({"advanceSeconds": 3600}),
                );
                (status != 200).then(|| format!("{status} {answer}"))
            }
            other => unreachable!("{other}"),
        };
        let failed = failed.unwrap_or_else(|| panic!("{change} succeeded with its commit failing"));
        assert!(
            failed.contains("KMSInternalException") || failed.starts_with("500"),
            "{change}: {failed}"
        );
        let h = health(&emulator);
        assert_eq!(h["status"], "unhealthy", "{change}: {h}");
        assert!(
            h["storage"]["reason"]
                .as_str()
                .unwrap()
                .contains("fault injection"),
            "{h}"
        );
        assert_eq!(
            visible_state(&emulator, &kms).await,
            before,
            "{change}: a failed commit changed nothing"
        );
    }

    // The next commit works, and health recovers with it.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("t", "3"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags(&kms, &id).await, vec![("t".into(), "3".into())]);
    assert_eq!(health(&emulator)["status"], "ok");

    // After a crash, nothing of what failed shows up: only the acknowledged tag change.
    let after = visible_state(&emulator, &kms).await;
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    assert_eq!(visible_state(&emulator, &kms).await, after);
    assert_eq!(
        describe(&kms, &id).await.key_state(),
        Some(&KeyState::Enabled)
    );
    emulator.stop();
}

/// `POST /_hsmkms/faults {"action": "fail-commits", "count": 1, "after": after}`.
fn fail_commit_after(emulator: &Emulator, after: u32) {
    let answer = emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "fail-commits", "count": 1, "after": after}),
    );
    assert_eq!(answer["failingAfter"], after, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_or_disconnect_whose_last_commit_fails_still_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let emulator = Emulator::start(&data_dir, free_port());
    let kms = emulator.kms_without_retries();
    // The first backup (committed before Ready.) is out of the way first.
    kms_common::wait_until(
        "the cluster's first backup",
        Duration::from_secs(30),
        || {
            (!emulator.get_json("/_hsmkms/backups")["backups"]
                .as_array()
                .unwrap()
                .is_empty())
            .then_some(())
        },
    );
    let store = emulator.create_connected_store(&kms, "settles").await;
    let key = kms_common::create_store_key(&kms, &store).await;
    let blob = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"settled".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    // A disconnection whose DISCONNECTING is durable but whose end fails to commit was
    // accepted: it answers, and the store ends DISCONNECTED without anyone asking again.
    fail_commit_after(&emulator, 1);
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .expect("an accepted disconnection answers");
    kms_common::wait_for_connection_state(&kms, &store, ConnectionStateType::Disconnected).await;

    // A connection whose outcome fails to commit (the fourth commit: CONNECTING, the pending
    // password, the rotated one, the outcome) is tried again, and the store ends CONNECTED.
    fail_commit_after(&emulator, 3);
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    kms_common::wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(plain.as_ref(), b"settled");
    assert_eq!(health(&emulator)["status"], "ok");
    emulator.stop();
}

/// A tmpfs of `size` mounted at `path` for the test, unmounted on drop; `None` where the
/// test cannot mount (not root).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system holding `dir` (a file of zeros until the write fails).
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=64k"])
        .stderr(std::process::Stdio::null())
        .status();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_freed_space_lets_them_succeed_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "64m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    // The emulator's log goes to the same disk (beside the data directory), as an operator's
    // redirected log often does: a log line that cannot be written must not hurt.
    let data_dir = disk.path.join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms_without_retries();
    let kept = create_kms_key(&kms).await;

    // The disk fills: writes fail (at once, or once the store needs a page it does not have).
    let filler = fill(&disk.path);
    let mut created = 0;
    let mut failure = None;
    for _ in 0..5_000 {
        match kms.create_key().send().await {
            Ok(_) => created += 1,
            Err(e) => {
                failure = Some(e.into_service_error());
                break;
            }
        }
    }
    let failure = failure.unwrap_or_else(|| panic!("{created} keys created on a full disk"));
    assert_error(&failure, "KMSInternalException", None);
    let h = health(&emulator);
    assert_eq!(h["status"], "unhealthy", "{h}");
    // Reads still work meanwhile.
    assert_eq!(
        describe(&kms, kept.key_id()).await.key_state(),
        Some(&KeyState::Enabled)
    );

    // Space is freed: the next write works, no restart, and health is ok again.
    std::fs::remove_file(&filler).unwrap();
    // (The store reopens its file before the next commit; on a loaded machine that can take
    // more than one try.)
    let mut recovered = None;
    let mut errors = Vec::new();
    let freed = std::time::Instant::now();
    while freed.elapsed() < Duration::from_secs(10) {
        match kms.create_key().send().await {
            Ok(k) => {
                recovered = Some(k);
                break;
            }
            Err(e) => {
                errors.push(format!("{:?}", e.into_service_error()));
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "a write succeeds once space is freed: {} failures, the last {:?}; log:\n{}",
            errors.len(),
            errors.last(),
            emulator.log_tail(30)
        )
    });
    let new_key = recovered.key_metadata().unwrap().key_id().to_string();
    assert_eq!(health(&emulator)["status"], "ok");
    describe(&kms, &new_key).await;

    // And it is durable: a crash and a start find it.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    describe(&emulator.kms(), &new_key).await;
    emulator.stop();
}

/// Starts `hsmkms` on `data_dir` expecting it to refuse; returns what it printed.
fn refused_start(data_dir: &Path) -> String {
    let out = Command::new(hsmkms_exe())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--port", &free_port().to_string()])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "hsmkms refused to start: {stdout}");
    assert!(!stdout.contains("Ready."), "{stdout}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_damaged_kms_store_stops_the_start_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let emulator = Emulator::start(&data_dir, free_port());
    let kms = emulator.kms();
    for _ in 0..3 {
        create_kms_key(&kms).await;
    }
    emulator.stop();
    let store = data_dir.join("kms").join("kms.redb");
    let original = std::fs::read(&store).unwrap();

    // Emptied: refused, naming the file and saying it is empty.
    std::fs::write(&store, b"").unwrap();
    let message = refused_start(&data_dir);
    assert!(
        message.contains("kms.redb") && message.contains("empty"),
        "{message}"
    );

    // Damaged in several ways: refused, naming the file, never a panic.
    for (what, damaged) in [
        ("a garbage header", {
            let mut d = original.clone();
            d[..64].fill(0xAB);
            d
        }),
        ("truncated", original[..original.len() / 3].to_vec()),
        ("garbage throughout", {
            let mut d = original.clone();
            for (i, b) in d.iter_mut().enumerate().skip(4096) {
                if i % 7 == 0 {
                    *b ^= 0x5A;
                }
            }
            d
        }),
    ] {
        std::fs::write(&store, &damaged).unwrap();
        let message = refused_start(&data_dir);
        assert!(message.contains("kms.redb"), "{what}: {message}");
    }

    // A file the system will not let it read (here: unreadable to its owner, as after a
    // wrong chmod; root reads anything, so the test needs another user) is refused with
    // other advice: it is left as it is, never "move it away".
    std::fs::write(&store, &original).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&store).is_err() {
            let message = refused_start(&data_dir);
            assert!(
                message.contains("kms.redb") && message.contains("left as it is"),
                "{message}"
            );
        }
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A directory where the file should be: refused the same way.
    let aside = store.with_extension("aside");
    std::fs::rename(&store, &aside).unwrap();
    std::fs::create_dir(&store).unwrap();
    let message = refused_start(&data_dir);
    assert!(
        message.contains("kms.redb")
            && message.contains("not a file")
            && message.contains("left as it is"),
        "{message}"
    );
    std::fs::remove_dir(&store).unwrap();
    std::fs::rename(&aside, &store).unwrap();

    // The original file is fine again.
    let emulator = Emulator::start(&data_dir, free_port());
    assert_eq!(
        emulator
            .kms()
            .list_keys()
            .send()
            .await
            .unwrap()
            .keys()
            .len(),
        3
    );
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_hsm_store_is_rebuilt_from_its_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let store = emulator.create_connected_store(&kms, "rebuilt-store").await;
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(kms_common::create_store_key(&kms, &store).await);
    }
    let blob = kms
        .encrypt()
        .key_id(keys[0].key_id())
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"before".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let damaged_hsm = emulator.hsm_ids()[0].clone();
    emulator.stop();

    // One HSM's store is damaged while the emulator is down.
    let node_store = data_dir.join("hsms").join(&damaged_hsm).join("node.redb");
    let mut bytes = std::fs::read(&node_store).unwrap();
    bytes[..4096].fill(0x5A);
    std::fs::write(&node_store, &bytes).unwrap();

    // It starts, rebuilds from its peer, and the store and its keys work at once.
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    assert_eq!(
        kms_common::connection_state(&kms, &store).await,
        aws_sdk_kms::types::ConnectionStateType::Connected
    );
    let opened = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"before");
    // The rebuilt HSM holds every backing key again, and serves them.
    for key in &keys {
        let arn = key.arn().unwrap();
        kms_common::wait_until(
            &format!("{damaged_hsm} holds the backing key of {arn}"),
            Duration::from_secs(15),
            || (emulator.keys_labelled(&damaged_hsm, arn).len() == 1).then_some(()),
        );
    }
    // The damaged file is kept aside for inspection.
    let aside = std::fs::read_dir(node_store.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("damaged"));
    assert!(aside, "the damaged store is kept aside");
    emulator.stop();
}
