use super::*;
use crate::service::model::BackingKey;
use hsmkms_common::entropy::{OsEntropy, SeededEntropy};

fn registry() -> Registry {
    let arns = Arns {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
    };
    Registry::load(arns, &KeyMaterial::generate(), &mut Loaded::default()).unwrap()
}

/// Installs planned changes, as the shell does once they are durable.
fn apply(r: &mut Registry, changes: Vec<Change>) {
    r.install(changes).unwrap();
}

fn add_key(r: &mut Registry) -> Uuid {
    let (id, record, _) = r
        .new_key(
            NewKeyMaterial::Symmetric,
            None,
            None,
            vec![],
            1_000,
            &OsEntropy,
        )
        .unwrap();
    let changes = r.insert_key(record, false).unwrap();
    apply(r, changes);
    id
}

fn add_store_key(r: &mut Registry, connected: bool) -> Uuid {
    let store = KeyStoreRecord {
        id: "cks-1234567890abcdef0".into(),
        name: "s".into(),
        cluster_id: "cluster-abcdefghijk".into(),
        trust_anchor: String::new(),
        wrapped_password: r
            .wrap_password("cks-1234567890abcdef0", &SecretString::new("kmsPassword1")),
        wrapped_pending_password: None,
        state: if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        },
        created_at_millis: 0,
    };
    r.install_store(store);
    let (id, mut record, _) = r
        .new_key(
            NewKeyMaterial::CloudHsm,
            None,
            None,
            vec![],
            1_000,
            &OsEntropy,
        )
        .unwrap();
    record.origin = KeyOrigin::CloudHsm {
        custom_key_store_id: "cks-1234567890abcdef0".into(),
        cluster_id: "cluster-abcdefghijk".into(),
        backing_key: BackingKey {
            key_handle: 7,
            backing_key_id: "b".into(),
        },
    };
    let changes = r.insert_key(record, false).unwrap();
    apply(r, changes);
    id
}

#[test]
fn a_key_resolves_by_id_arn_alias_and_alias_arn() {
    let mut r = registry();
    let id = add_key(&mut r);
    let changes = r.create_alias("alias/app", &id.to_string(), 5).unwrap();
    apply(&mut r, changes);
    for form in [
        id.to_string(),
        r.arns.key_arn(&id),
        "alias/app".into(),
        r.arns.alias_arn("alias/app"),
    ] {
        assert_eq!(r.resolve(&form, true).map(|k| k.key_id), Ok(id), "{form}");
    }
    assert!(matches!(
        r.resolve("alias/app", false),
        Err(KmsError::NotFound(_))
    ));
    assert!(
        matches!(r.resolve("alias/none", true), Err(KmsError::NotFound(m)) if m.contains("is not found."))
    );
}

#[test]
fn scheduling_checks_the_window_and_cancelling_leaves_the_key_disabled() {
    let mut r = registry();
    let id = add_key(&mut r);
    for bad in [0, 6, 31, 365] {
        assert!(
            matches!(r.schedule_deletion(&id.to_string(), Some(bad), 0), Err(KmsError::Validation(m)) if m == "PendingWindowInDays must be between 7 and 30")
        );
    }
    let (record, changes) = r.schedule_deletion(&id.to_string(), None, 0).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(
        r.due_for_deletion(u64::MAX).is_empty(),
        "planning changes nothing"
    );
    apply(&mut r, changes);
    assert_eq!(
        record
            .deletion
            .map(|d| (d.window_days, d.deletion_date_millis)),
        Some((30, 30 * DAY_MILLIS))
    );
    assert!(
        matches!(r.schedule_deletion(&id.to_string(), None, 0), Err(KmsError::KmsInvalidState(m)) if m.ends_with("is pending deletion."))
    );
    assert!(r.due_for_deletion(30 * DAY_MILLIS - 1).is_empty());
    assert_eq!(r.due_for_deletion(30 * DAY_MILLIS), vec![id]);
    let (_, changes) = r.cancel_deletion(&id.to_string()).unwrap();
    apply(&mut r, changes);
    let state = r.state_of(r.resolve(&id.to_string(), false).unwrap());
    assert_eq!(state, KeyState::Disabled);
    assert!(
        matches!(r.cancel_deletion(&id.to_string()), Err(KmsError::KmsInvalidState(m)) if m.ends_with("is not pending deletion."))
    );
}

#[test]
fn store_keys_are_unavailable_while_disconnected_except_when_pending_deletion() {
    let mut r = registry();
    let id = add_store_key(&mut r, false);
    let key = id.to_string();
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::Unavailable
    );
    // Disable while Unavailable: accepted, shows once the store reconnects.
    let changes = r.set_enabled(&key, false).unwrap();
    apply(&mut r, changes);
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::Unavailable
    );
    let (_, changes) = r.schedule_deletion(&key, Some(7), 0).unwrap();
    apply(&mut r, changes);
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::PendingDeletion
    );
    let (_, changes) = r.cancel_deletion(&key).unwrap();
    apply(&mut r, changes);
    let mut store = r.store("cks-1234567890abcdef0").unwrap().clone();
    store.state = ConnectionState::Connected;
    r.install_store(store);
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::Disabled
    );
}

#[test]
fn deleting_a_key_takes_its_aliases_with_it() {
    let mut r = registry();
    let id = add_key(&mut r);
    let other = add_key(&mut r);
    let changes = r.create_alias("alias/a", &id.to_string(), 0).unwrap();
    apply(&mut r, changes);
    let changes = r.create_alias("alias/b", &id.to_string(), 0).unwrap();
    apply(&mut r, changes);
    let changes = r.create_alias("alias/c", &other.to_string(), 0).unwrap();
    apply(&mut r, changes);
    // Not planned before it is due: not scheduled, then scheduled for 7 days from day 0.
    const DAY: u64 = 24 * 3600 * 1000;
    assert!(r.plan_delete_key(&id, 30 * DAY).is_none());
    let (_, changes) = r.schedule_deletion(&id.to_string(), Some(7), 0).unwrap();
    apply(&mut r, changes);
    assert!(r.plan_delete_key(&id, 7 * DAY - 1).is_none());
    let planned = r.plan_delete_key(&id, 7 * DAY).unwrap();
    assert_eq!(planned.task.key_id, id);
    assert_eq!(planned.task.deleted_at_millis, 7 * DAY);
    assert_eq!(
        planned.task.backing, None,
        "an AWS_KMS key has no backing key"
    );
    let aliases = planned.aliases;
    assert_eq!(aliases, vec!["alias/a".to_string(), "alias/b".to_string()]);
    assert_eq!(planned.task.deleted_aliases, aliases);
    // The key, its two aliases, and the task that finishes the deletion, in one commit.
    assert_eq!(planned.writes.len(), 4);
    // Planning changes nothing; only removing does.
    assert!(r.resolve(&id.to_string(), false).is_ok());
    r.remove_key(&id, &aliases);
    assert!(r.resolve(&id.to_string(), false).is_err());
    let (left, _) = r.list_aliases(None, None, 50).unwrap();
    assert_eq!(
        left.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        vec!["alias/c"]
    );
}

#[test]
fn alias_names_follow_the_rules() {
    let mut r = registry();
    let id = add_key(&mut r).to_string();
    assert!(matches!(
        r.create_alias("noprefix", &id, 0),
        Err(KmsError::Validation(_))
    ));
    assert!(matches!(
        r.create_alias("alias/aws/x", &id, 0),
        Err(KmsError::InvalidAliasName(_))
    ));
    assert!(matches!(
        r.create_alias("alias/sp ace", &id, 0),
        Err(KmsError::Validation(_))
    ));
    let changes = r.create_alias("alias/ok", &id, 0).unwrap();
    apply(&mut r, changes);
    assert!(matches!(
        r.create_alias("alias/ok", &id, 0),
        Err(KmsError::AlreadyExists(_))
    ));
    for i in 1..MAX_ALIASES_PER_KEY {
        let changes = r.create_alias(&format!("alias/n{i}"), &id, 0).unwrap();
        apply(&mut r, changes);
    }
    assert!(matches!(
        r.create_alias("alias/one-too-many", &id, 0),
        Err(KmsError::LimitExceeded(_))
    ));
}

#[test]
fn tags_merge_replace_and_are_bounded() {
    let mut r = registry();
    let id = add_key(&mut r).to_string();
    let changes = r
        .tag(&id, vec![("a".into(), "1".into()), ("b".into(), "".into())])
        .unwrap();
    apply(&mut r, changes);
    let changes = r.tag(&id, vec![("a".into(), "2".into())]).unwrap();
    apply(&mut r, changes);
    let changes = r.untag(&id, vec!["b".into(), "absent".into()]).unwrap();
    apply(&mut r, changes);
    let tags = &r.resolve(&id, false).unwrap().tags;
    assert_eq!(
        tags.iter().collect::<Vec<_>>(),
        vec![(&"a".to_string(), &"2".to_string())]
    );
    let many: Vec<(String, String)> = (0..MAX_TAGS_PER_KEY)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert!(matches!(r.tag(&id, many), Err(KmsError::Tag(_))));
    assert!(matches!(
        r.tag(&id, vec![("aws:x".into(), "v".into())]),
        Err(KmsError::Tag(_))
    ));
}

#[test]
fn list_keys_pages_in_order() {
    let mut r = registry();
    let mut ids: Vec<Uuid> = (0..5).map(|_| add_key(&mut r)).collect();
    ids.sort();
    let (first, next) = r.list_keys(None, 2).unwrap();
    assert_eq!(first, ids[..2]);
    let (second, next) = r.list_keys(next.as_deref(), 2).unwrap();
    assert_eq!(second, ids[2..4]);
    let (third, next) = r.list_keys(next.as_deref(), 2).unwrap();
    assert_eq!(third, ids[4..]);
    assert!(next.is_none());
    assert!(matches!(
        r.list_keys(Some("garbage"), 2),
        Err(KmsError::InvalidMarker(_))
    ));
}

#[test]
fn aws_kms_material_survives_a_reload_and_passwords_unwrap() {
    let master = KeyMaterial::generate();
    let arns = Arns {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
    };
    let mut r = Registry::load(arns.clone(), &master, &mut Loaded::default()).unwrap();
    let (id, record, _) = r
        .new_key(NewKeyMaterial::Symmetric, None, None, vec![], 0, &OsEntropy)
        .unwrap();
    let changes = r.insert_key(record, false).unwrap();
    let writes = r.writes(&changes);
    apply(&mut r, changes);
    let sealed = r.sealer(&id).unwrap().seal(b"data", b"aad");
    let mut loaded = Loaded::default();
    for w in writes {
        if let Write::Put { key, value, .. } = w {
            loaded.keys.push((key, value));
        }
    }
    let keys = loaded.keys.clone();
    let reloaded = Registry::load(arns.clone(), &master, &mut loaded).unwrap();
    let opened = reloaded.sealer(&id).unwrap().open(&sealed, b"aad").unwrap();
    assert_eq!(opened.expose(), b"data");
    // Under another master key the material does not unwrap: the store alone reveals nothing.
    loaded.keys = keys;
    assert!(Registry::load(arns, &KeyMaterial::generate(), &mut loaded).is_err());
}

/// Randomness is injected: two registries given the same seed mint the same key and the same
/// material (a ciphertext made by one opens in the other's key), and another seed mints others.
#[test]
fn the_same_seed_mints_the_same_keys() {
    let mint = |seed| {
        let r = registry();
        let (id, _, material) = r
            .new_key(
                NewKeyMaterial::Symmetric,
                None,
                None,
                vec![],
                0,
                &SeededEntropy::new(seed),
            )
            .unwrap();
        (id, material.unwrap())
    };
    let ((a, ma), (b, mb), (c, mc)) = (mint(1), mint(1), mint(2));
    assert_eq!(a, b);
    assert_eq!(a.get_version_num(), 4, "still a version 4 UUID");
    assert_ne!(a, c);
    let sealed = Sealer::new(&ma).seal(b"hello", b"aad");
    assert_eq!(
        Sealer::new(&mb).open(&sealed, b"aad").unwrap().expose(),
        b"hello"
    );
    assert!(Sealer::new(&mc).open(&sealed, b"aad").is_err());
}

/// Keys are stored in creation order, and a table written with bare key ids as rows (before
/// that order) is moved to it: each old row deleted, the same record put under its new row.
#[test]
fn key_rows_follow_creation_and_old_rows_are_moved() {
    let r = registry();
    let mut rows = Vec::new();
    let mut old = Loaded::default();
    for (i, created) in [5_000u64, 70_000, 1_000_000_000_000]
        .into_iter()
        .enumerate()
    {
        let (id, record, _) = r
            .new_key(
                NewKeyMaterial::Symmetric,
                None,
                None,
                vec![],
                created,
                &OsEntropy,
            )
            .unwrap();
        let row = key_row(&record);
        assert!(row.ends_with(&format!("/{id}")), "row {i}: {row}");
        rows.push(row);
        old.keys
            .push((id.to_string(), postcard::to_stdvec(&record).unwrap()));
    }
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(rows, sorted, "rows do not sort by creation");
    let writes = key_rows_to_relayout(&old).unwrap();
    assert_eq!(writes.len(), 6);
    for (i, pair) in writes.chunks(2).enumerate() {
        assert!(matches!(&pair[0], Write::Delete { key, .. } if *key == old.keys[i].0));
        assert!(
            matches!(&pair[1], Write::Put { key, value, .. } if *key == rows[i] && *value == old.keys[i].1)
        );
    }
    // Rows already in the new layout stay where they are.
    let new = Loaded {
        keys: rows
            .iter()
            .cloned()
            .zip(old.keys.iter().map(|(_, v)| v.clone()))
            .collect(),
        ..Loaded::default()
    };
    assert!(key_rows_to_relayout(&new).unwrap().is_empty());
}

/// A key with the default policy is stored without the document and loads with it; a key with
/// its own policy keeps it.
#[test]
fn default_policies_are_stored_empty_and_load_whole() {
    let master = KeyMaterial::generate();
    let arns = Arns {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
    };
    let mut r = Registry::load(arns.clone(), &master, &mut Loaded::default()).unwrap();
    let custom = r#"{"Version":"2012-10-17","Statement":[]}"#.to_string();
    let mut loaded = Loaded::default();
    let mut ids = Vec::new();
    for policy in [None, Some(custom.clone())] {
        let (id, record, _) = r
            .new_key(
                NewKeyMaterial::Symmetric,
                None,
                policy,
                vec![],
                0,
                &OsEntropy,
            )
            .unwrap();
        let changes = r.insert_key(record, false).unwrap();
        for w in r.writes(&changes) {
            if let Write::Put { key, value, .. } = w {
                loaded.keys.push((key, value));
            }
        }
        apply(&mut r, changes);
        ids.push(id);
    }
    let stored_default = String::from_utf8_lossy(&loaded.keys[0].1).to_string();
    assert!(
        !stored_default.contains("kms:*"),
        "the default policy was stored whole"
    );
    let reloaded = Registry::load(arns, &master, &mut loaded).unwrap();
    let policy = |id: &Uuid| {
        reloaded
            .resolve(&id.to_string(), false)
            .unwrap()
            .policy
            .to_string()
    };
    assert_eq!(policy(&ids[0]), default_policy("111122223333"));
    assert_eq!(policy(&ids[1]), custom);
}

/// Rotation is planned like every change: materials are added and become current, the
/// automatic schedule moves a period at a time, and a reload from the writes has every
/// material back.
#[test]
fn rotations_add_current_material_and_reload_whole() {
    const DAY: u64 = 24 * 3600 * 1000;
    let master = KeyMaterial::generate();
    let arns = Arns {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
    };
    let mut r = Registry::load(arns.clone(), &master, &mut Loaded::default()).unwrap();
    let (id, record, _) = r
        .new_key(NewKeyMaterial::Symmetric, None, None, vec![], 0, &OsEntropy)
        .unwrap();
    let mut loaded = Loaded::default();
    let keep = |r: &mut Registry, changes: Vec<Change>, loaded: &mut Loaded| {
        for w in r.writes(&changes) {
            if let Write::Put { table, key, value } = w {
                let rows = match table {
                    Table::Keys => &mut loaded.keys,
                    Table::Rotations => &mut loaded.rotations,
                    _ => continue,
                };
                rows.retain(|(k, _)| *k != key);
                rows.push((key, value));
            }
        }
        apply(r, changes);
    };
    let changes = r.insert_key(record, false).unwrap();
    keep(&mut r, changes, &mut loaded);
    let sealed0 = r.sealer_at(&id, 0).unwrap().seal(b"zero", b"");
    assert_eq!(r.current_material(&id), 0);

    let changes = r.enable_rotation(&id.to_string(), Some(90), 0).unwrap();
    keep(&mut r, changes, &mut loaded);
    assert!(r.due_for_rotation(90 * DAY - 1).is_empty());
    assert_eq!(r.due_for_rotation(90 * DAY), vec![id]);
    let (changes, _) = r.rotate_on_demand(&id.to_string(), 5, &OsEntropy).unwrap();
    keep(&mut r, changes, &mut loaded);
    assert_eq!(r.current_material(&id), 1);
    // 200 days on: two periods have passed, so two automatic rotations, one at a time.
    for expected in [2, 3] {
        let changes = r
            .plan_automatic_rotation(&id, 200 * DAY, &OsEntropy)
            .unwrap();
        keep(&mut r, changes, &mut loaded);
        assert_eq!(r.current_material(&id), expected);
    }
    assert!(r
        .plan_automatic_rotation(&id, 200 * DAY, &OsEntropy)
        .is_none());
    let next = r.rotations_of(&id).unwrap().schedule.unwrap();
    assert_eq!(next.next_rotation_millis, 270 * DAY);
    let sealed3 = r.usable(&id.to_string(), KeyOp::Encrypt).unwrap();
    assert_eq!(sealed3.material, 3);
    let sealed3 = sealed3.sealer.unwrap().seal(b"three", b"");

    let reloaded = Registry::load(arns, &master, &mut loaded).unwrap();
    assert_eq!(reloaded.current_material(&id), 3);
    let open = |n: u32, sealed: &[u8]| {
        reloaded
            .sealer_at(&id, n)
            .unwrap()
            .open(sealed, b"")
            .map(|p| p.expose().to_vec())
    };
    assert_eq!(open(0, &sealed0).unwrap(), b"zero");
    assert_eq!(open(3, &sealed3).unwrap(), b"three");
    assert!(open(2, &sealed3).is_err(), "materials are distinct");
}

#[test]
fn imported_material_ids_are_keyed_by_the_master_key() {
    // The same material in the same key has one id under one master key...
    let (a, b) = (registry(), registry());
    let id = Uuid::from_u128(7);
    let material = [5u8; 32];
    let first = a.imported_material_id(&id, &material);
    assert_eq!(first, a.imported_material_id(&id, &material));
    assert_eq!(first.len(), 64);
    // ...but is no function of the material alone: an unkeyed hash would let whoever sees
    // the id test guesses of the material.
    assert_ne!(first, b.imported_material_id(&id, &material));
    use sha2::{Digest, Sha256};
    let unkeyed = Sha256::new()
        .chain_update(b"hsmkms/imported-material-id/v1/")
        .chain_update(id.as_bytes())
        .chain_update(material)
        .finalize();
    assert_ne!(first, hex::encode(unkeyed));
    assert_ne!(
        first,
        a.imported_material_id(&Uuid::from_u128(8), &material)
    );
}

#[test]
fn an_expiry_is_checked_for_one_key() {
    let mut r = registry();
    let (id, record, _) = r
        .new_key(
            NewKeyMaterial::External {
                spec: KeySpec::SymmetricDefault,
                usage: KeyUsage::EncryptDecrypt,
            },
            None,
            None,
            vec![],
            1_000,
            &OsEntropy,
        )
        .unwrap();
    let changes = r.insert_key(record, false).unwrap();
    apply(&mut r, changes);
    assert!(
        r.plan_expire(&id, u64::MAX).is_none(),
        "no material, nothing expires"
    );
    let material = SecretBytes::new(vec![1u8; 32]);
    let (changes, _) = r.plan_import(id, &material, ask(Some(5_000))).unwrap();
    apply(&mut r, changes);
    assert!(r.plan_expire(&id, 4_999).is_none());
    assert!(r.plan_expire(&id, 5_000).is_some());
    assert_eq!(r.due_expirations(5_000), vec![id]);
    assert!(r.plan_expire(&Uuid::from_u128(1), u64::MAX).is_none());
}

/// ImportKeyMaterial's options, as a plain first or repeated import gives them.
fn ask(valid_to_millis: Option<u64>) -> super::ImportAsk<'static> {
    super::ImportAsk {
        import_type: None,
        material_id: None,
        description: None,
        valid_to_millis,
    }
}

/// A material the key rotated from expires on its own ValidTo: the key turns PendingImport
/// (every material it is bound to must be imported), and its current material stays.
#[test]
fn a_non_current_imported_material_expires_and_leaves_the_key_pending_import() {
    let mut r = registry();
    let (id, record, _) = r
        .new_key(
            NewKeyMaterial::External {
                spec: KeySpec::SymmetricDefault,
                usage: KeyUsage::EncryptDecrypt,
            },
            None,
            None,
            vec![],
            1_000,
            &OsEntropy,
        )
        .unwrap();
    let changes = r.insert_key(record, false).unwrap();
    apply(&mut r, changes);
    let first = SecretBytes::new(vec![1u8; 32]);
    let (changes, first_id) = r.plan_import(id, &first, ask(Some(9_000))).unwrap();
    apply(&mut r, changes);
    let second = SecretBytes::new(vec![2u8; 32]);
    let new = super::ImportAsk {
        import_type: Some("NEW_KEY_MATERIAL"),
        ..ask(None)
    };
    let (changes, second_id) = r.plan_import(id, &second, new).unwrap();
    apply(&mut r, changes);
    let (changes, _) = r
        .rotate_on_demand(&id.to_string(), 2_000, &OsEntropy)
        .unwrap();
    apply(&mut r, changes);
    assert_eq!(r.current_material(&id), 1);
    assert_eq!(r.material_id(&id, 1), second_id);
    assert_eq!(r.material_id(&id, 0), first_id);
    assert!(r.sealer_at(&id, 0).is_some() && r.sealer_at(&id, 1).is_some());
    assert_eq!(r.next_expiration(), Some(9_000));
    assert_eq!(r.due_expirations(9_000), vec![id]);
    let changes = r.plan_expire(&id, 9_000).unwrap();
    apply(&mut r, changes);
    let record = r.by_id(&id).unwrap().clone();
    assert_eq!(r.state_of(&record), KeyState::PendingImport);
    assert!(
        r.sealer_at(&id, 0).is_none(),
        "the expired material is gone"
    );
    assert!(r.sealer_at(&id, 1).is_some(), "the current one stays");
    assert!(r.plan_expire(&id, u64::MAX).is_none());
}

#[test]
fn material_imported_under_an_unkeyed_id_can_be_imported_again() {
    use crate::service::model::ImportedMaterial;
    let mut r = registry();
    let (id, mut record, _) = r
        .new_key(
            NewKeyMaterial::External {
                spec: KeySpec::SymmetricDefault,
                usage: KeyUsage::EncryptDecrypt,
            },
            None,
            None,
            vec![],
            1_000,
            &OsEntropy,
        )
        .unwrap();
    // A key as an earlier version left it: material imported, then deleted, under the
    // unkeyed id.
    let material = SecretBytes::new(vec![3u8; 32]);
    let legacy = super::import::legacy_material_id(&id, material.expose());
    record.origin = KeyOrigin::External {
        spec: KeySpec::SymmetricDefault,
        usage: KeyUsage::EncryptDecrypt,
        material_id: Some(legacy.clone()),
        imported: None::<ImportedMaterial>,
    };
    let changes = r.insert_key(record, false).unwrap();
    apply(&mut r, changes);
    let (changes, material_id) = r.plan_import(id, &material, ask(None)).unwrap();
    assert_eq!(material_id, legacy, "the id the key had is kept");
    apply(&mut r, changes);
    let other = SecretBytes::new(vec![4u8; 32]);
    assert_eq!(
        r.plan_import(id, &other, ask(None))
            .unwrap_err()
            .type_name(),
        "IncorrectKeyMaterialException"
    );
}
