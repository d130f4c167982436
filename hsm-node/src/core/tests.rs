use super::*;

fn member(n: u32) -> MemberRecord {
    MemberRecord {
        hsm_id: format!("hsm-node{n}aaaaaaa"),
        availability_zone: format!("us-east-1{}", (b'a' + n as u8) as char),
        address: format!("127.0.0.1:{}", 5000 + n),
        node_number: n,
    }
}

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        username: name.into(),
        role,
        password_hash: "hash".into(),
        failed_logins: 0,
        locked: false,
    }
}

/// A node with `admin` and `kmsuser`, and both logged in: admin on conn 1, kmsuser on conn 2.
fn node(n: u32) -> NodeCore {
    let mut core = NodeCore::new(member(n), "cluster-abcdefghijk".into(), vec![]);
    let seed = vec![
        Stored {
            id: ObjectId::User("admin".into()),
            version: Version {
                counter: 1,
                node: 0,
            },
            entry: Entry::User(user("admin", Role::CryptoOfficer)),
        },
        Stored {
            id: ObjectId::User("kmsuser".into()),
            version: Version {
                counter: 1,
                node: 0,
            },
            entry: Entry::User(user("kmsuser", Role::CryptoUser)),
        },
    ];
    core.apply_remote(seed);
    core.ensure_self_member();
    let (s, _) = core.finish_login(1, "admin", Role::CryptoOfficer, true);
    assert!(s.is_ok());
    let (s, _) = core.finish_login(2, "kmsuser", Role::CryptoUser, true);
    assert!(s.is_ok());
    core
}

fn handle_of(stored: &Stored) -> KeyHandle {
    match stored.id {
        ObjectId::Key(h) => h,
        _ => panic!("not a key"),
    }
}

#[test]
fn generated_keys_are_owned_by_the_crypto_user_and_non_extractable() {
    let mut a = node(1);
    let k = a
        .generate_key(2, "arn:aws:kms:us-east-1:111122223333:key/x", 32, 7)
        .map_err(|e| e.to_string());
    let k = k.as_ref().map(handle_of);
    let handle = *k.as_ref().unwrap_or(&0);
    let attrs = a.visible_key(2, handle).map(|k| k.attributes.clone());
    let attrs = attrs.as_ref().ok();
    assert_eq!(attrs.map(|a| a.owner.as_str()), Some("kmsuser"));
    assert_eq!(attrs.map(|a| a.extractable), Some(false));
    assert_eq!(attrs.map(|a| a.token), Some(true));
    assert_eq!(
        handle >> 32,
        1,
        "handles carry the generating node's number"
    );
    // An officer cannot generate keys; sizes other than 32 bytes are refused.
    assert_eq!(
        a.generate_key(1, "x", 32, 7).err().map(|e| e.code),
        Some(ErrorCode::AccessDenied)
    );
    assert_eq!(
        a.generate_key(2, "x", 16, 7).err().map(|e| e.code),
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        a.generate_key(9, "x", 32, 7).err().map(|e| e.code),
        Some(ErrorCode::NotLoggedIn)
    );
}

#[test]
fn a_tombstone_beats_a_key_whatever_the_versions() {
    let mut a = node(1);
    let mut b = node(2);
    let key = a.generate_key(2, "k", 32, 0).map_err(|e| e.to_string());
    let key = key.unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    b.apply_remote(vec![key.clone()]);
    assert!(b.key(handle).is_some());
    let tomb = b.delete_key(2, handle).unwrap_or_else(|e| panic!("{e}"));
    a.apply_remote(vec![tomb]);
    assert!(a.key(handle).is_none());
    // The old key arriving again, even at an inflated version, does not bring it back.
    let mut stale = key;
    stale.version.counter = 1_000;
    assert!(a.apply_remote(vec![stale.clone()]).is_empty());
    assert!(a.key(handle).is_none());
    assert!(a
        .wanted_from(&[(stale.id.clone(), stale.version)])
        .is_empty());
}

#[test]
fn digests_converge_after_exchanging_wanted_objects() {
    let mut a = node(1);
    let mut b = node(2);
    for i in 0..50 {
        let _ = a.generate_key(2, &format!("a{i}"), 32, 0);
        let _ = b.generate_key(2, &format!("b{i}"), 32, 0);
    }
    assert_ne!(a.digest(), b.digest());
    // b pulls from a, a pulls from b, via the buckets that differ.
    for _ in 0..2 {
        let differing: Vec<u16> = (0..DIGEST_BUCKETS)
            .filter(|i| a.digest()[*i] != b.digest()[*i])
            .map(|i| i as u16)
            .collect();
        let want = b.wanted_from(&a.entries(&differing));
        let objs = a.get_objects(&want);
        b.apply_remote(objs);
        let want = a.wanted_from(&b.entries(&differing));
        let objs = b.get_objects(&want);
        a.apply_remote(objs);
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.key_count(), 100);
    assert_eq!(b.key_count(), 100);
}

#[test]
fn five_failed_logins_lock_the_user_until_an_officer_changes_its_password() {
    let mut a = node(1);
    for attempt in 1..=5 {
        let (r, changed) = a.finish_login(10, "kmsuser", Role::CryptoUser, false);
        assert_eq!(
            r.err().map(|e| e.code),
            Some(ErrorCode::InvalidCredentials),
            "attempt {attempt}"
        );
        assert!(
            changed.is_some(),
            "each failure is persisted and replicated"
        );
    }
    assert_eq!(
        a.begin_login(10, "kmsuser", Role::CryptoUser)
            .err()
            .map(|e| e.code),
        Some(ErrorCode::UserLockedOut)
    );
    let (r, _) = a.finish_login(10, "kmsuser", Role::CryptoUser, true);
    assert_eq!(
        r.err().map(|e| e.code),
        Some(ErrorCode::UserLockedOut),
        "even the right password"
    );
    // A crypto user cannot change another user's password; the officer can, and that unlocks.
    assert_eq!(
        a.check_change_password(2, "admin", Role::CryptoOfficer, 10)
            .err()
            .map(|e| e.code),
        Some(ErrorCode::AccessDenied)
    );
    assert!(a
        .check_change_password(1, "kmsuser", Role::CryptoUser, 10)
        .is_ok());
    assert!(a.set_password("kmsuser", "new".into()).is_ok());
    assert!(a.begin_login(10, "kmsuser", Role::CryptoUser).is_ok());
}

#[test]
fn failures_before_a_success_are_forgotten() {
    let mut a = node(1);
    for _ in 0..4 {
        let _ = a.finish_login(10, "kmsuser", Role::CryptoUser, false);
    }
    let (r, changed) = a.finish_login(10, "kmsuser", Role::CryptoUser, true);
    assert!(r.is_ok());
    assert!(changed.is_some(), "the reset counter is persisted");
    assert!(a.logout(10).is_ok());
    let (r, _) = a.finish_login(10, "kmsuser", Role::CryptoUser, false);
    assert!(r.is_err());
    assert!(
        a.begin_login(10, "kmsuser", Role::CryptoUser).is_ok(),
        "one failure is not five"
    );
}

#[test]
fn only_the_owner_deletes_a_key() {
    let mut a = node(1);
    let key = a
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    let hash = "h".to_string();
    a.create_user("alice", Role::CryptoUser, hash);
    let (r, _) = a.finish_login(3, "alice", Role::CryptoUser, true);
    assert!(r.is_ok());
    // Neither another crypto user nor the officer owns it: both are refused, saying why.
    assert_eq!(
        a.delete_key(3, handle).err().map(|e| e.code),
        Some(ErrorCode::AccessDenied)
    );
    assert_eq!(
        a.visible_key(3, handle).err().map(|e| e.code),
        Some(ErrorCode::KeyNotFound)
    );
    assert_eq!(
        a.delete_key(1, handle).err().map(|e| e.code),
        Some(ErrorCode::AccessDenied)
    );
    assert!(a.key(handle).is_some());
    assert!(a.delete_key(2, handle).is_ok());
    assert!(a.key(handle).is_none());
}

#[test]
fn quorum_is_two_or_one_for_a_single_node() {
    let mut a = node(1);
    assert_eq!(a.quorum(), 1);
    let m2 = Stored {
        id: ObjectId::Member(member(2).hsm_id),
        version: Version {
            counter: 1,
            node: 2,
        },
        entry: Entry::Member(member(2)),
    };
    let m3 = Stored {
        id: ObjectId::Member(member(3).hsm_id),
        version: Version {
            counter: 1,
            node: 3,
        },
        entry: Entry::Member(member(3)),
    };
    a.apply_remote(vec![m2, m3]);
    assert_eq!(a.members().len(), 3);
    assert_eq!(a.quorum(), 2);
}

#[test]
fn handle_counter_resumes_after_reload() {
    let mut a = node(1);
    let first = a
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let reloaded = NodeCore::new(
        member(1),
        "c".into(),
        a.get_objects(std::slice::from_ref(&first.id)),
    );
    let mut reloaded = reloaded;
    reloaded.apply_remote(a.get_objects(&[ObjectId::User("kmsuser".into())]));
    let (r, _) = reloaded.finish_login(2, "kmsuser", Role::CryptoUser, true);
    assert!(r.is_ok());
    let second = reloaded
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(handle_of(&first), handle_of(&second));
}

#[test]
fn object_ids_sort_members_then_users_then_keys() {
    // members(), list_users() and keys() read ranges of the object map and rely on this.
    assert!(ObjectId::Member("~~~~".into()) < ObjectId::User(String::new()));
    assert!(ObjectId::User("~~~~".into()) < ObjectId::Key(0));
    let a = node(1);
    assert_eq!(a.members().len(), 1);
    assert_eq!(a.user_count(), 2);
    assert_eq!(a.list_users(1).map(|u| u.len()).ok(), Some(2));
}

#[test]
fn remote_objects_are_planned_without_changes_and_installed_only_if_they_still_win() {
    let mut a = node(1);
    let mut b = node(2);
    let key = a
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    // Planning changes nothing: the key is not there until it is installed.
    let planned = b.winners(vec![key.clone()]);
    assert_eq!(planned.len(), 1);
    assert!(
        b.key(handle).is_none(),
        "nothing visible before it is durable"
    );
    // A tombstone installed meanwhile (the key deleted elsewhere) beats the planned copy.
    let tomb = a.delete_key(2, handle).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.install_remote(vec![tomb.clone()]), 1);
    assert_eq!(
        b.install_remote(planned),
        0,
        "the stale copy is not installed"
    );
    assert!(b.key(handle).is_none());
    // In one batch a tombstone beats a live copy whatever their order and versions.
    let c = node(3);
    let mut newer = key;
    newer.version.counter = 1_000;
    let batch = c.winners(vec![tomb, newer]);
    assert_eq!(batch.len(), 1);
    assert!(matches!(batch[0].entry, Entry::Tombstone));
}
