//! A commit the disk refuses changes nothing: the caller hears an error (`Internal`, or
//! `QuorumNotReached` for a key generation), every call after
//! sees the node as it was, and the next commit works.

mod support;

use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{ErrorCode, Request, Response, Role};
use support::OneNode;

fn key_count(status: Result<Response, hsmkms_common::wire::WireError>) -> u64 {
    match status {
        Ok(Response::Status(s)) => s.key_count,
        other => panic!("not a status: {other:?}"),
    }
}

#[actix_rt::test]
async fn a_refused_commit_leaves_no_key_no_user_and_no_session_and_the_next_one_works() {
    let hsm = OneNode::start().await;
    let mut kms = hsm.kmsuser().await;
    let mut admin = hsm.admin().await;

    // A key generation whose commit fails: refused (as any generation that did not become
    // durable on its quorum), and no key anywhere.
    hsm.node.fail_next_commits(1);
    let generated = kms
        .call(Request::GenerateAesKey {
            label: "doomed".into(),
            length_bytes: 32,
        })
        .await;
    assert_eq!(
        generated.err().map(|e| e.code),
        Some(ErrorCode::QuorumNotReached)
    );
    assert_eq!(key_count(kms.call(Request::Status).await), 0);
    assert!(matches!(
        kms.call(Request::FindKeys { label: None, owner: None }).await,
        Ok(Response::Keys(keys)) if keys.is_empty()
    ));

    // A user creation whose commit fails: refused, the user does not exist, cannot log in.
    hsm.node.fail_next_commits(1);
    let created = admin
        .call(Request::CreateUser {
            username: "bob".into(),
            role: Role::CryptoUser,
            password: SecretString::new("bobPassword1".to_string()),
        })
        .await;
    assert_eq!(created.err().map(|e| e.code), Some(ErrorCode::Internal));
    match admin.call(Request::ListUsers).await {
        Ok(Response::Users(users)) => assert!(users.iter().all(|u| u.username != "bob")),
        other => panic!("{other:?}"),
    }

    // A failed login whose counter cannot be stored is refused like any other; a login whose
    // commit fails opens no session (the next call is not logged in).
    let mut bad = hsm.connect().await;
    let wrong = bad
        .call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new("wrongPassword".to_string()),
        })
        .await;
    assert_eq!(
        wrong.err().map(|e| e.code),
        Some(ErrorCode::InvalidCredentials)
    );
    hsm.node.fail_next_commits(1);
    let login = bad
        .call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new(support::KMSUSER_PASSWORD.to_string()),
        })
        .await;
    assert_eq!(login.err().map(|e| e.code), Some(ErrorCode::Internal));
    assert_eq!(
        bad.call(Request::GenerateRandom { length: 8 })
            .await
            .err()
            .map(|e| e.code),
        Some(ErrorCode::NotLoggedIn)
    );

    // The next commits work: a key is created and a deletion whose commit fails keeps it.
    let key = match kms
        .call(Request::GenerateAesKey {
            label: "kept".into(),
            length_bytes: 32,
        })
        .await
    {
        Ok(Response::KeyCreated { key, .. }) => key,
        other => panic!("{other:?}"),
    };
    hsm.node.fail_next_commits(1);
    let deleted = kms.call(Request::DeleteKey { handle: key.handle }).await;
    assert_eq!(deleted.err().map(|e| e.code), Some(ErrorCode::Internal));
    assert!(matches!(
        kms.call(Request::GetKeyAttributes { handle: key.handle })
            .await,
        Ok(Response::Key(_))
    ));
    assert!(matches!(
        kms.call(Request::DeleteKey { handle: key.handle }).await,
        Ok(Response::KeyDeleted { .. })
    ));
    assert_eq!(key_count(kms.call(Request::Status).await), 0);
}

#[actix_rt::test]
async fn status_reports_a_failing_store_until_a_commit_succeeds_again() {
    let hsm = OneNode::start().await;
    let mut admin = hsm.admin().await;
    let status = |r: Result<Response, hsmkms_common::wire::WireError>| match r {
        Ok(Response::Status(s)) => s,
        other => panic!("not a status: {other:?}"),
    };
    assert_eq!(
        status(admin.call(Request::Status).await).storage_failing,
        None
    );

    // A commit fails: the node says so, and why.
    hsm.node.fail_next_commits(1);
    let created = admin
        .call(Request::CreateUser {
            username: "bob".into(),
            role: Role::CryptoUser,
            password: SecretString::new("bobPassword1".to_string()),
        })
        .await;
    assert_eq!(created.err().map(|e| e.code), Some(ErrorCode::Internal));
    let failing = status(admin.call(Request::Status).await).storage_failing;
    assert!(
        failing
            .as_deref()
            .is_some_and(|why| why.contains("injected")),
        "{failing:?}"
    );

    // The next commit works, and the report clears.
    assert!(admin
        .call(Request::CreateUser {
            username: "bob".into(),
            role: Role::CryptoUser,
            password: SecretString::new("bobPassword1".to_string()),
        })
        .await
        .is_ok());
    assert_eq!(
        status(admin.call(Request::Status).await).storage_failing,
        None
    );
}

/// A tmpfs of `size` mounted at `path` for the test, unmounted on drop; `None` where the
/// test cannot mount (not root).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A batch of 100 tombstones, numbered from `first`.
fn tombstones(first: u64) -> Vec<hsm_node::core::Stored> {
    (first..first + 100)
        .map(|n| hsm_node::core::Stored {
            id: hsmkms_common::wire::ObjectId::Key(n),
            version: hsmkms_common::wire::Version {
                counter: n,
                node: 1,
            },
            entry: hsm_node::core::Entry::Tombstone,
        })
        .collect()
}

#[actix_rt::test]
async fn a_full_disk_fails_commits_and_freed_space_lets_them_succeed_without_a_restart() {
    use std::sync::Arc;

    use hsm_node::store::Store;
    use hsmkms_common::aead::Sealer;
    use hsmkms_common::secret::KeyMaterial;

    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "4m") else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let path = disk.path.join("node.redb");
    let key = Arc::new(Sealer::new(&KeyMaterial::generate()));
    let (store, _, thread) = Store::open(&path, key.clone(), "c").unwrap();
    store.commit(tombstones(0)).await.unwrap();

    // The disk fills: a commit fails (at once, or once the store needs a page it lacks).
    let filler = disk.path.join("filler");
    let _ = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .stderr(std::process::Stdio::null())
        .status();
    let mut next = 100;
    let mut failed = false;
    for _ in 0..1_000 {
        let batch = tombstones(next);
        next += 100;
        if store.commit(batch).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "{next} objects committed on a full disk");
    assert!(store.failing().is_some());

    // Space is freed: the next commit works without a restart, and the report clears.
    std::fs::remove_file(&filler).unwrap();
    let last = next;
    store
        .commit(tombstones(last))
        .await
        .unwrap_or_else(|e| panic!("a commit after space was freed: {e}"));
    assert_eq!(store.failing(), None);

    // And it is durable.
    drop(store);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    let (_, loaded, thread) = Store::open(&path, key, "c").unwrap();
    assert!(loaded
        .iter()
        .any(|s| s.id == hsmkms_common::wire::ObjectId::Key(last)));
    drop(loaded);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

#[actix_rt::test]
async fn a_roll_back_whose_commit_fails_is_retried_until_it_is_durable() {
    use std::time::Duration;

    let hsm = OneNode::start().await;
    let mut kms = hsm.kmsuser().await;
    let listed = |r: Result<Response, hsmkms_common::wire::WireError>| match r {
        Ok(Response::Keys(keys)) => keys.len(),
        other => panic!("not a key list: {other:?}"),
    };

    // A generation that cannot be acknowledged before its caller's deadline is rolled back;
    // the key is durable here, and the roll-back's first two commits fail.
    hsm.node.fail_commits_after(1, 2);
    let answer = kms
        .call_with(
            Request::GenerateAesKey {
                label: "late".into(),
                length_bytes: 32,
            },
            support::now_millis() + 300,
            Duration::from_secs(5),
        )
        .await;
    match answer {
        Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::DeadlineExceeded, "{e}"),
        other => panic!("expected a roll-back, got {other:?}"),
    }

    // The roll-back is retried: within a few seconds the key is gone.
    let find = || Request::FindKeys {
        label: Some("late".into()),
        owner: None,
    };
    let started = std::time::Instant::now();
    while listed(kms.call(find()).await) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rolled-back key is still live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And it is gone for good: a restart does not bring it back.
    drop(kms);
    let stopped = hsm.stop();
    let hsm = stopped.start(hsm_node::NodeOptions::default()).unwrap();
    let mut kms = hsm.kmsuser().await;
    assert_eq!(listed(kms.call(find()).await), 0);
}

#[actix_rt::test]
async fn a_member_record_whose_commit_fails_is_retried_until_the_cluster_has_it() {
    use std::time::{Duration, Instant};

    use hsm_node::core::Entry;
    use hsmkms_common::wire::{ObjectId, Version};

    // The second HSM holds a newer copy of the first one's member record than the first does,
    // naming an address the first does not serve (as if the first had moved, and its store
    // had lost the record it wrote then).
    let stale = "127.0.0.1:9";
    let stopped = support::provision(2, |i, seeds| {
        for s in seeds.iter_mut().filter(|_| i == 2) {
            if let (ObjectId::Member(_), Entry::Member(m)) = (&s.id, &mut s.entry) {
                if m.node_number == 1 {
                    m.address = stale.into();
                    s.version = Version {
                        counter: 5,
                        node: 2,
                    };
                }
            }
        }
    })
    .await;

    // The first HSM pulls that copy (its first commit, which succeeds), sees that it is not
    // what it is, and writes its record anew: that commit fails.
    let first = stopped[0].start(hsm_node::NodeOptions::default()).unwrap();
    first.node.fail_commits_after(1, 1);
    let second = stopped[1].start(hsm_node::NodeOptions::default()).unwrap();
    let (hsm_id, address) = (first.node.hsm_id().to_string(), first.node.address());

    // The write is retried: within a few seconds both HSMs list the first at the address it
    // serves, with no other change of membership to set it off.
    let listed_at = |status: Result<Response, hsmkms_common::wire::WireError>| match status {
        Ok(Response::Status(s)) => s
            .members
            .into_iter()
            .find(|m| m.hsm_id == hsm_id)
            .map(|m| m.address),
        other => panic!("not a status: {other:?}"),
    };
    let (mut a, mut b) = (first.connect().await, second.connect().await);
    let started = Instant::now();
    loop {
        let on_first = listed_at(a.call(Request::Status).await);
        let on_second = listed_at(b.call(Request::Status).await);
        let serving = Some(address.to_string());
        if on_first == serving && on_second == serving {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first HSM is listed at {on_first:?} on itself and {on_second:?} on its peer, \
             not at {address}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
