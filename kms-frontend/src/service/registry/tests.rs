use super::*;
use crate::service::model::BackingKey;

fn registry() -> Registry {
    let arns = Arns {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
    };
    Registry::load(arns, &KeyMaterial::generate(), &Loaded::default()).unwrap()
}

fn add_key(r: &mut Registry) -> Uuid {
    let (id, record, _) = r.new_key(true, None, None, vec![], 1_000).unwrap();
    r.insert_key(record).unwrap();
    id
}

fn add_store_key(r: &mut Registry, connected: bool) -> Uuid {
    let store = KeyStoreRecord {
        id: "cks-1234567890abcdef0".into(),
        name: "s".into(),
        cluster_id: "cluster-abcdefghijk".into(),
        trust_anchor: String::new(),
        wrapped_password: r.wrap_password("cks-1234567890abcdef0", "kmsPassword1"),
        wrapped_pending_password: None,
        state: if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        },
        created_at_millis: 0,
    };
    r.put_store(store);
    let (id, mut record, _) = r.new_key(false, None, None, vec![], 1_000).unwrap();
    record.origin = KeyOrigin::CloudHsm {
        custom_key_store_id: "cks-1234567890abcdef0".into(),
        cluster_id: "cluster-abcdefghijk".into(),
        backing_key: BackingKey {
            key_handle: 7,
            backing_key_id: "b".into(),
        },
    };
    r.insert_key(record).unwrap();
    id
}

#[test]
fn a_key_resolves_by_id_arn_alias_and_alias_arn() {
    let mut r = registry();
    let id = add_key(&mut r);
    r.create_alias("alias/app", &id.to_string(), 5).unwrap();
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
    let (record, writes) = r.schedule_deletion(&id.to_string(), None, 0).unwrap();
    assert_eq!(writes.len(), 1);
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
    r.cancel_deletion(&id.to_string()).unwrap();
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
    r.set_enabled(&key, false).unwrap();
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::Unavailable
    );
    r.schedule_deletion(&key, Some(7), 0).unwrap();
    assert_eq!(
        r.state_of(r.resolve(&key, false).unwrap()),
        KeyState::PendingDeletion
    );
    r.cancel_deletion(&key).unwrap();
    let mut store = r.store("cks-1234567890abcdef0").unwrap().clone();
    store.state = ConnectionState::Connected;
    r.put_store(store);
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
    r.create_alias("alias/a", &id.to_string(), 0).unwrap();
    r.create_alias("alias/b", &id.to_string(), 0).unwrap();
    r.create_alias("alias/c", &other.to_string(), 0).unwrap();
    let (record, aliases, writes) = r.delete_key(&id);
    assert!(record.is_some());
    assert_eq!(aliases, vec!["alias/a".to_string(), "alias/b".to_string()]);
    assert_eq!(writes.len(), 3);
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
        Err(KmsError::InvalidAliasName(_))
    ));
    assert!(matches!(
        r.create_alias("alias/aws/x", &id, 0),
        Err(KmsError::InvalidAliasName(_))
    ));
    assert!(matches!(
        r.create_alias("alias/sp ace", &id, 0),
        Err(KmsError::Validation(_))
    ));
    r.create_alias("alias/ok", &id, 0).unwrap();
    assert!(matches!(
        r.create_alias("alias/ok", &id, 0),
        Err(KmsError::AlreadyExists(_))
    ));
    for i in 1..MAX_ALIASES_PER_KEY {
        r.create_alias(&format!("alias/n{i}"), &id, 0).unwrap();
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
    r.tag(&id, vec![("a".into(), "1".into()), ("b".into(), "".into())])
        .unwrap();
    r.tag(&id, vec![("a".into(), "2".into())]).unwrap();
    r.untag(&id, vec!["b".into(), "absent".into()]).unwrap();
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
    let mut r = Registry::load(arns.clone(), &master, &Loaded::default()).unwrap();
    let (id, record, _) = r.new_key(true, None, None, vec![], 0).unwrap();
    let writes = r.insert_key(record).unwrap();
    let sealed = r.sealer(&id).unwrap().seal(b"data", b"aad");
    let mut loaded = Loaded::default();
    for w in writes {
        if let Write::Put { key, value, .. } = w {
            loaded.keys.push((key, value));
        }
    }
    let reloaded = Registry::load(arns.clone(), &master, &loaded).unwrap();
    let opened = reloaded.sealer(&id).unwrap().open(&sealed, b"aad").unwrap();
    assert_eq!(opened.expose(), b"data");
    // Under another master key the material does not unwrap: the store alone reveals nothing.
    assert!(Registry::load(arns, &KeyMaterial::generate(), &loaded).is_err());
}
