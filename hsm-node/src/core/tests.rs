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
            entry: Entry::User(Box::new(user("admin", Role::CryptoOfficer))),
        },
        Stored {
            id: ObjectId::User("kmsuser".into()),
            version: Version {
                counter: 1,
                node: 0,
            },
            entry: Entry::User(Box::new(user("kmsuser", Role::CryptoUser))),
        },
    ];
    core.apply_remote(seed);
    let me = core.self_member_to_write();
    core.install_local(me.into_iter().collect());
    assert!(login(&mut core, 1, "admin", Role::CryptoOfficer, true).is_ok());
    assert!(login(&mut core, 2, "kmsuser", Role::CryptoUser, true).is_ok());
    core
}

/// A local change as the shell makes it: decided, then (the commit succeeded) installed.
fn durable(core: &mut NodeCore, decided: Result<Stored, WireError>) -> Result<Stored, WireError> {
    let stored = decided?;
    core.install_local(vec![stored.clone()]);
    Ok(stored)
}

/// A login as the shell runs it once the password is checked: the change durable, then the
/// session open.
fn login(
    core: &mut NodeCore,
    conn: ConnId,
    username: &str,
    role: Role,
    password_ok: bool,
) -> Result<Session, WireError> {
    let (result, changed) = core.finish_login(username, role, password_ok);
    core.install_local(changed.into_iter().collect());
    let session = result?;
    core.open_session(conn, session.clone());
    Ok(session)
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
    let k = a.generate_key(2, "arn:aws:kms:us-east-1:111122223333:key/x", 32, 7);
    let k = durable(&mut a, k).map_err(|e| e.to_string());
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
    let key = a.generate_key(2, "k", 32, 0);
    let key = durable(&mut a, key).unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    b.apply_remote(vec![key.clone()]);
    assert!(b.key(handle).is_some());
    let tomb = b.delete_key(2, handle);
    let tomb = durable(&mut b, tomb).unwrap_or_else(|e| panic!("{e}"));
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
        let k = a.generate_key(2, &format!("a{i}"), 32, 0);
        let _ = durable(&mut a, k);
        let k = b.generate_key(2, &format!("b{i}"), 32, 0);
        let _ = durable(&mut b, k);
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
        let (r, changed) = a.finish_login("kmsuser", Role::CryptoUser, false);
        assert_eq!(
            r.err().map(|e| e.code),
            Some(ErrorCode::InvalidCredentials),
            "attempt {attempt}"
        );
        assert!(
            changed.is_some(),
            "each failure is persisted and replicated"
        );
        a.install_local(changed.into_iter().collect());
    }
    assert_eq!(
        a.begin_login(10, "kmsuser", Role::CryptoUser)
            .err()
            .map(|e| e.code),
        Some(ErrorCode::UserLockedOut)
    );
    let (r, _) = a.finish_login("kmsuser", Role::CryptoUser, true);
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
    let changed = a.set_password("kmsuser", "new".into());
    assert!(durable(&mut a, changed).is_ok());
    assert!(a.begin_login(10, "kmsuser", Role::CryptoUser).is_ok());
}

#[test]
fn failures_before_a_success_are_forgotten() {
    let mut a = node(1);
    for _ in 0..4 {
        let _ = login(&mut a, 10, "kmsuser", Role::CryptoUser, false);
    }
    let (r, changed) = a.finish_login("kmsuser", Role::CryptoUser, true);
    assert!(r.is_ok());
    assert!(changed.is_some(), "the reset counter is persisted");
    a.install_local(changed.into_iter().collect());
    assert!(login(&mut a, 10, "kmsuser", Role::CryptoUser, false).is_err());
    assert!(
        a.begin_login(10, "kmsuser", Role::CryptoUser).is_ok(),
        "one failure is not five"
    );
}

#[test]
fn only_the_owner_deletes_a_key() {
    let mut a = node(1);
    let key = a.generate_key(2, "k", 32, 0);
    let key = durable(&mut a, key).unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    let hash = "h".to_string();
    let alice = a.create_user("alice", Role::CryptoUser, hash);
    a.install_local(vec![alice]);
    assert!(login(&mut a, 3, "alice", Role::CryptoUser, true).is_ok());
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
    let tomb = a.delete_key(2, handle);
    assert!(durable(&mut a, tomb).is_ok());
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
        entry: Entry::Member(Box::new(member(2))),
    };
    let m3 = Stored {
        id: ObjectId::Member(member(3).hsm_id),
        version: Version {
            counter: 1,
            node: 3,
        },
        entry: Entry::Member(Box::new(member(3))),
    };
    a.apply_remote(vec![m2, m3]);
    assert_eq!(a.members().len(), 3);
    assert_eq!(a.quorum(), 2);
}

#[test]
fn handle_counter_resumes_after_reload() {
    let mut a = node(1);
    let first = a.generate_key(2, "k", 32, 0);
    let first = durable(&mut a, first).unwrap_or_else(|e| panic!("{e}"));
    let reloaded = NodeCore::new(
        member(1),
        "c".into(),
        a.get_objects(std::slice::from_ref(&first.id)),
    );
    let mut reloaded = reloaded;
    reloaded.apply_remote(a.get_objects(&[ObjectId::User("kmsuser".into())]));
    assert!(login(&mut reloaded, 2, "kmsuser", Role::CryptoUser, true).is_ok());
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
    let key = a.generate_key(2, "k", 32, 0);
    let key = durable(&mut a, key).unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    // Planning changes nothing: the key is not there until it is installed.
    let planned = b.winners(vec![key.clone()]);
    assert_eq!(planned.len(), 1);
    assert!(
        b.key(handle).is_none(),
        "nothing visible before it is durable"
    );
    // A tombstone installed meanwhile (the key deleted elsewhere) beats the planned copy.
    let tomb = a.delete_key(2, handle);
    let tomb = durable(&mut a, tomb).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.install_remote(vec![tomb.clone()]), 1);
    assert_eq!(
        b.install_remote(planned),
        0,
        "the stale copy is not installed"
    );
    assert!(b.key(handle).is_none());
    // In one batch a tombstone beats a live copy whatever their order and versions.
    let mut c = node(3);
    let mut newer = key;
    newer.version.counter = 1_000;
    let batch = c.winners(vec![tomb, newer]);
    assert_eq!(batch.len(), 1);
    assert!(matches!(batch[0].entry, Entry::Tombstone));
}

/// Everything a client or peer can see of a node, to compare before and after.
fn visible(core: &NodeCore) -> String {
    format!(
        "{:?}",
        (
            core.digest(),
            core.key_count(),
            core.user_count(),
            core.list_users(1).ok(),
            core.find_keys(1, None, None).ok(),
            core.members(),
            core.session(10),
            core.begin_login(10, "kmsuser", Role::CryptoUser).err(),
            core.begin_login(11, "bob", Role::CryptoUser).err(),
        )
    )
}

#[test]
fn a_failed_commit_of_any_local_change_leaves_every_visible_state_as_it_was() {
    let mut a = node(1);
    let key = a.generate_key(2, "kept", 32, 0);
    let key = durable(&mut a, key).unwrap_or_else(|e| panic!("{e}"));
    let m2 = Stored {
        id: ObjectId::Member(member(2).hsm_id),
        version: Version {
            counter: 1,
            node: 2,
        },
        entry: Entry::Member(Box::new(member(2))),
    };
    a.apply_remote(vec![m2]);
    let before = visible(&a);
    // Each kind of local change, decided and then failed: nothing anyone sees moves.
    let decided: Vec<Stored> = vec![
        a.generate_key(2, "doomed", 32, 0)
            .unwrap_or_else(|e| panic!("{e}")),
        a.delete_key(2, handle_of(&key))
            .unwrap_or_else(|e| panic!("{e}")),
        a.create_user("bob", Role::CryptoUser, "h".into()),
        a.set_password("kmsuser", "other".into())
            .unwrap_or_else(|e| panic!("{e}")),
        a.forget_member(&member(2).hsm_id)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("member 2 is there")),
    ];
    let (r, failed_login) = a.finish_login("kmsuser", Role::CryptoUser, false);
    assert!(r.is_err());
    let failed_login = failed_login.unwrap_or_else(|| panic!("a failure is persisted"));
    assert_eq!(visible(&a), before, "deciding shows nothing");
    a.abandon(&decided);
    a.abandon(&[failed_login]);
    assert_eq!(visible(&a), before, "a failed commit shows nothing");
    assert_eq!(a.pending_count(), 0, "and leaves nothing behind");
    // The next commits work, and show at once.
    let bob = a.create_user("bob", Role::CryptoUser, "h".into());
    a.install_local(vec![bob]);
    assert_eq!(a.user_count(), 3);
    let tomb = a.delete_key(2, handle_of(&key));
    assert!(durable(&mut a, tomb).is_ok());
    assert!(a.key(handle_of(&key)).is_none());
    let new = a.generate_key(2, "new", 32, 0);
    let new = durable(&mut a, new).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        handle_of(&new),
        handle_of(&decided[0]),
        "a handle that may have reached a peer is never reused"
    );
    assert_eq!(a.key_count(), 1);
    let gone = a
        .forget_member(&member(2).hsm_id)
        .map(|g| g.unwrap_or_else(|| panic!("still there")));
    assert!(durable(&mut a, gone).is_ok());
    assert_eq!(a.members().len(), 1);
}

#[test]
fn a_failed_login_commit_opens_no_session_and_counts_no_failure() {
    let mut a = node(1);
    for _ in 0..MAX_FAILED_LOGINS {
        let (r, changed) = a.finish_login("kmsuser", Role::CryptoUser, false);
        assert_eq!(r.err().map(|e| e.code), Some(ErrorCode::InvalidCredentials));
        a.abandon(&changed.into_iter().collect::<Vec<_>>());
    }
    assert!(
        a.begin_login(10, "kmsuser", Role::CryptoUser).is_ok(),
        "failures that never became durable lock nobody out"
    );
    // Three failures stick; the success that resets them fails to commit: no session, and
    // the count stands.
    for _ in 0..3 {
        let _ = login(&mut a, 10, "kmsuser", Role::CryptoUser, false);
    }
    let (r, reset) = a.finish_login("kmsuser", Role::CryptoUser, true);
    assert!(r.is_ok());
    let reset = reset.unwrap_or_else(|| panic!("the reset is persisted"));
    a.abandon(&[reset]);
    assert!(a.session(10).is_none());
    for _ in 0..2 {
        let _ = login(&mut a, 10, "kmsuser", Role::CryptoUser, false);
    }
    assert_eq!(
        a.begin_login(10, "kmsuser", Role::CryptoUser)
            .err()
            .map(|e| e.code),
        Some(ErrorCode::UserLockedOut),
        "3 + 2 failures lock the user"
    );
}

#[test]
fn decisions_in_flight_build_on_each_other_but_stay_invisible() {
    let mut a = node(1);
    // Five failed logins whose commits are all still running lock the user: each counts.
    let mut in_flight = Vec::new();
    for _ in 0..MAX_FAILED_LOGINS {
        let (_, changed) = a.finish_login("kmsuser", Role::CryptoUser, false);
        in_flight.extend(changed);
    }
    assert!(a.begin_login(10, "kmsuser", Role::CryptoUser).is_err());
    assert_eq!(
        a.list_users(1)
            .ok()
            .and_then(|u| u.into_iter().find(|u| u.username == "kmsuser"))
            .map(|u| u.locked),
        Some(false),
        "queries see only what is durable"
    );
    // Durable in whatever order the commits come back: the newest decision wins.
    in_flight.reverse();
    a.install_local(in_flight);
    assert_eq!(a.pending_count(), 0);
    assert_eq!(
        a.begin_login(10, "kmsuser", Role::CryptoUser)
            .err()
            .map(|e| e.code),
        Some(ErrorCode::UserLockedOut)
    );
    // A user with a key on its way cannot be deleted; a peer's older copy of an object with a
    // local change in flight is not planned.
    let key = a
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a.delete_user(1, "kmsuser").err().map(|e| e.code),
        Some(ErrorCode::InvalidRequest)
    );
    let mut stale = key.clone();
    stale.version.counter -= 1;
    stale.version.node = 2;
    assert!(a.winners(vec![stale]).is_empty());
    a.install_local(vec![key]);
}

#[test]
fn a_copy_that_loses_to_one_still_being_written_is_not_planned() {
    let mut a = node(1);
    let mut b = node(2);
    let key = b.generate_key(2, "k", 32, 0);
    let key = durable(&mut b, key).unwrap_or_else(|e| panic!("{e}"));
    let handle = handle_of(&key);
    let tomb = b.delete_key(2, handle);
    let tomb = durable(&mut b, tomb).unwrap_or_else(|e| panic!("{e}"));
    // B's tombstone is being written on A when a pull from C brings the live key: planned
    // after the tombstone, it would be written after it, and the deleted key be back on disk.
    assert_eq!(a.winners(vec![tomb.clone()]).len(), 1);
    assert!(
        a.winners(vec![key.clone()]).is_empty(),
        "a live copy of a key whose tombstone is being written was planned"
    );
    // Users too: an older copy does not follow a newer one still being written.
    let newer = Stored {
        id: ObjectId::User("kmsuser".into()),
        version: Version {
            counter: 10,
            node: 2,
        },
        entry: Entry::User(Box::new(user("kmsuser", Role::CryptoUser))),
    };
    let older = Stored {
        version: Version {
            counter: 9,
            node: 3,
        },
        ..newer.clone()
    };
    assert_eq!(a.winners(vec![newer.clone()]).len(), 1);
    assert!(a.winners(vec![older]).is_empty());
    // A change decided here meanwhile is newer than what it heard of.
    let changed = a
        .set_password("kmsuser", "h2".into())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(changed.version > newer.version);
    // The writes land: the tombstone and the user are installed, nothing is left in flight.
    assert_eq!(a.install_remote(vec![tomb, newer]), 2);
    assert_eq!(a.incoming_count(), 0);
    assert!(a.key(handle).is_none());
    // A failed write is forgotten: the same copy is planned again afterwards.
    let mut c = node(3);
    let planned = c.winners(vec![key.clone()]);
    assert_eq!(planned.len(), 1);
    c.abandon_remote(&planned);
    assert_eq!(c.incoming_count(), 0);
    assert_eq!(c.winners(vec![key]).len(), 1);
}

#[test]
fn an_empty_core_takes_its_own_member_record_back_from_an_older_copy() {
    // A node whose store was lost starts empty and writes its record at version 1; a peer's
    // copy from before, at version 7 and with the address it had then, wins over that.
    let mut a = NodeCore::new(member(1), "c".into(), vec![]);
    let me = a.self_member_to_write();
    a.install_local(me.into_iter().collect());
    let mut before = member(1);
    before.address = "127.0.0.1:4999".into();
    let old = Stored {
        id: ObjectId::Member(before.hsm_id.clone()),
        version: Version {
            counter: 7,
            node: 2,
        },
        entry: Entry::Member(Box::new(before)),
    };
    a.apply_remote(vec![old.clone()]);
    // The core writes its record anew, newer than the peer's, with the address it has now.
    let fresh = a
        .self_member_to_write()
        .unwrap_or_else(|| panic!("the old record of this node stands"));
    assert!(fresh.version > old.version);
    assert!(a.self_member_to_write().is_none(), "one at a time");
    a.install_local(vec![fresh]);
    assert_eq!(a.members(), vec![member(1)]);
    assert!(a.self_member_to_write().is_none());
    // A handle this node minted before, pulled from a peer, is never minted again; a gap
    // moves the counter further.
    let mut b = node(2);
    let mut minted = b
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    minted.id = ObjectId::Key((1 << 32) | 41);
    if let Entry::Key(k) = &minted.entry {
        let mut attributes = k.attributes.clone();
        attributes.handle = (1 << 32) | 41;
        minted.entry = Entry::Key(Arc::new(KeyEntry::new(attributes, KeyMaterial::generate())));
    }
    let mut a = node(1);
    a.apply_remote(vec![minted]);
    let next = a.generate_key(2, "k", 32, 0);
    assert_eq!(next.map(|s| handle_of(&s)).ok(), Some((1 << 32) | 42));
    a.skip_handles(1_000);
    let after_gap = a.generate_key(2, "k", 32, 0);
    assert_eq!(
        after_gap.map(|s| handle_of(&s)).ok(),
        Some((1 << 32) | 1_043)
    );
}

#[test]
fn a_failed_login_elsewhere_never_undoes_a_password_change() {
    let mut x = node(1);
    let mut y = node(2);
    // Y has seen more changes than X: its Lamport clock is ahead.
    for i in 0..10 {
        let k = y.generate_key(2, &format!("k{i}"), 32, 0);
        let _ = durable(&mut y, k);
    }
    // An officer changes kmsuser's password on X; before Y hears of it, a login there fails
    // against the old password, and Y counts it, at a higher version.
    let changed = x.set_password("kmsuser", "new-hash".into());
    let changed = durable(&mut x, changed).unwrap_or_else(|e| panic!("{e}"));
    let (r, failure) = y.finish_login("kmsuser", Role::CryptoUser, false);
    assert_eq!(r.err().map(|e| e.code), Some(ErrorCode::InvalidCredentials));
    let failure = failure.unwrap_or_else(|| panic!("a failure is counted"));
    y.install_local(vec![failure.clone()]);
    assert!(failure.version > changed.version);
    // Each hears of the other's change; a third HSM hears of both, in either order.
    x.apply_remote(vec![failure.clone()]);
    y.apply_remote(vec![changed.clone()]);
    let mut z = node(3);
    z.apply_remote(vec![failure.clone()]);
    z.apply_remote(vec![changed.clone()]);
    let mut w = node(4);
    w.apply_remote(vec![changed, failure]);
    // Everywhere the new password stands, and nothing counts against it.
    for (name, core) in [("x", &x), ("y", &y), ("z", &z), ("w", &w)] {
        let check = core.begin_login(10, "kmsuser", Role::CryptoUser);
        assert_eq!(
            check.map(|c| c.password_hash).ok().as_deref(),
            Some("new-hash"),
            "on {name}, a failed login undid the password change"
        );
    }
    // Failures against the new password still count and lock everywhere.
    let mut states = Vec::new();
    for _ in 0..MAX_FAILED_LOGINS {
        let (_, state) = x.finish_login("kmsuser", Role::CryptoUser, false);
        let state = state.unwrap_or_else(|| panic!("a failure is counted"));
        x.install_local(vec![state.clone()]);
        states.push(state);
    }
    y.apply_remote(states);
    for core in [&x, &y] {
        assert_eq!(
            core.begin_login(10, "kmsuser", Role::CryptoUser)
                .err()
                .map(|e| e.code),
            Some(ErrorCode::UserLockedOut)
        );
    }
    // And the next password change unlocks, on the HSM that hears of it.
    let unlocked = x.set_password("kmsuser", "newer-hash".into());
    let unlocked = durable(&mut x, unlocked).unwrap_or_else(|e| panic!("{e}"));
    y.apply_remote(vec![unlocked]);
    assert!(y.begin_login(10, "kmsuser", Role::CryptoUser).is_ok());
}

#[test]
fn key_material_and_random_bytes_come_from_the_injected_entropy() {
    use hsmkms_common::entropy::SeededEntropy;
    let seeded = |seed: u64| {
        let mut core = node(1).with_entropy(Arc::new(SeededEntropy::new(seed)));
        let key = core
            .generate_key(2, "k", 32, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let material = match &key.entry {
            Entry::Key(k) => *k.material().expose(),
            _ => panic!("not a key"),
        };
        let random = core
            .random(2, 16)
            .map(|r| r.expose().to_vec())
            .unwrap_or_default();
        (material, random)
    };
    assert_eq!(seeded(7), seeded(7), "one seed, the same key and bytes");
    assert_ne!(seeded(7).0, seeded(8).0);
    assert_ne!(seeded(7).1, seeded(8).1);
    // The session and length rules stay.
    let core = node(1);
    assert_eq!(
        core.random(9, 16).err().map(|e| e.code),
        Some(ErrorCode::NotLoggedIn)
    );
    assert_eq!(
        core.random(2, 0).err().map(|e| e.code),
        Some(ErrorCode::InvalidRequest)
    );
}

#[test]
fn versions_and_handles_at_the_top_of_their_range_from_a_peer_do_not_break_the_node() {
    // A peer's user at the highest version there is: the next local decision neither panics
    // nor wraps to 0 (which would lose to everything, for ever).
    let mut a = node(1);
    let mut top = user("kmsuser", Role::CryptoUser);
    top.password_hash = "peer".into();
    a.apply_remote(vec![Stored {
        id: ObjectId::User("kmsuser".into()),
        version: Version {
            counter: u64::MAX,
            node: 0,
        },
        entry: Entry::User(Box::new(top)),
    }]);
    let changed = a
        .set_password("kmsuser", "local".into())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changed.version.counter, u64::MAX);
    // A peer's copy of a key of this node's whose counter is at the top of the low 32 bits:
    // the next generation is refused, never minted into another node's handles.
    let mut b = node(2);
    let mut last = b
        .generate_key(2, "k", 32, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let handle = (1u64 << 32) | 0xffff_ffff;
    last.id = ObjectId::Key(handle);
    if let Entry::Key(k) = &last.entry {
        let mut attributes = k.attributes.clone();
        attributes.handle = handle;
        last.entry = Entry::Key(Arc::new(KeyEntry::new(attributes, KeyMaterial::generate())));
    }
    a.apply_remote(vec![last]);
    let next = a.generate_key(2, "k", 32, 0);
    assert_eq!(
        next.as_ref().err().map(|e| e.code),
        Some(ErrorCode::Internal),
        "minted {:?}",
        next.map(|s| handle_of(&s))
    );
    a.skip_handles(u64::MAX);
    assert!(a.generate_key(2, "k", 32, 0).is_err());
}

#[test]
fn a_deleted_user_takes_its_failed_logins_with_it() {
    let mut a = node(1);
    let bob = a.create_user("bob", Role::CryptoUser, "hash".into());
    a.install_local(vec![bob]);
    let state = ObjectId::LoginState("bob".into());
    let login_state = |core: &NodeCore| {
        core.get_objects(std::slice::from_ref(&state))
            .pop()
            .map(|s| s.entry)
    };
    // Bob locks himself out: his failures are an object of their own.
    for _ in 0..MAX_FAILED_LOGINS {
        let _ = login(&mut a, 10, "bob", Role::CryptoUser, false);
    }
    assert!(matches!(login_state(&a), Some(Entry::LoginState(l)) if l.locked));

    // Deleting bob deletes his login state too, in the same commit: nothing of him is left
    // but tombstones, which replicate like the user's.
    let deleted = a.delete_user(1, "bob").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        deleted.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![ObjectId::User("bob".into()), state.clone()]
    );
    assert!(deleted.iter().all(|s| matches!(s.entry, Entry::Tombstone)));
    a.install_local(deleted.clone());
    assert!(matches!(login_state(&a), Some(Entry::Tombstone)));
    let mut b = node(2);
    b.apply_remote(a.get_objects(&[ObjectId::User("bob".into()), state.clone()]));
    assert!(matches!(login_state(&b), Some(Entry::Tombstone)));

    // A new bob starts with no failures: not locked, and four failures do not lock him.
    let bob = a.create_user("bob", Role::CryptoUser, "hash".into());
    a.install_local(vec![bob]);
    assert!(a.begin_login(10, "bob", Role::CryptoUser).is_ok());
    for _ in 0..MAX_FAILED_LOGINS - 1 {
        let _ = login(&mut a, 10, "bob", Role::CryptoUser, false);
    }
    assert!(a.begin_login(10, "bob", Role::CryptoUser).is_ok());
    assert!(login(&mut a, 10, "bob", Role::CryptoUser, true).is_ok());

    // A user who never failed a login leaves no login state to delete.
    let carol = a.create_user("carol", Role::CryptoUser, "hash".into());
    a.install_local(vec![carol]);
    let deleted = a.delete_user(1, "carol").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(deleted.len(), 1);
}

#[test]
fn a_node_writes_its_member_record_when_missing_or_stale_but_never_over_its_removal() {
    // Missing (an empty store, or a start whose write of it failed): written.
    let mut a = NodeCore::new(member(1), "c".into(), vec![]);
    let me = a
        .self_member_to_write()
        .unwrap_or_else(|| panic!("no record of this node, and none written"));
    // While it is being written (or retried), nothing decides it again; nor once installed.
    assert!(a.self_member_to_write().is_none());
    a.install_local(vec![me.clone()]);
    assert_eq!(a.members(), vec![member(1)]);
    assert!(a.self_member_to_write().is_none());
    // Abandoned after its last attempt: decided anew at the next chance.
    let mut b = NodeCore::new(member(2), "c".into(), vec![]);
    let first = b.self_member_to_write();
    b.abandon(&first.into_iter().collect::<Vec<_>>());
    assert!(b.self_member_to_write().is_some());
    // Removed from the cluster (its record a tombstone): it does not bring itself back.
    let removed = Stored {
        id: me.id.clone(),
        version: Version {
            counter: me.version.counter + 1,
            node: 2,
        },
        entry: Entry::Tombstone,
    };
    a.apply_remote(vec![removed]);
    assert!(a.members().is_empty());
    assert!(a.self_member_to_write().is_none());
}
