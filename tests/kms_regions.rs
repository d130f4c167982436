//! Every Region and account, and multi-Region keys, with the Rust SDK against a real emulator:
//! a request is served in the Region of its SigV4 credential scope and in the account its access
//! key id names (when that is 12 digits), so keys, aliases and lists of one Region or account are
//! not seen from another; a multi-Region key replicated to another Region decrypts there what
//! its primary encrypted, after a rotation, a change of primary Region and a kill -9 too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    KeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, MultiRegionKeyType, Tag,
};
use kms_common::{assert_error, create_kms_key, free_port, Emulator};

const DAY: u64 = 24 * 3600;

async fn encrypt(kms: &aws_sdk_kms::Client, key_id: &str, text: &str) -> Blob {
    kms.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(text.as_bytes()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone()
}

/// The plaintext and the key ARN Decrypt answers.
async fn decrypt(kms: &aws_sdk_kms::Client, blob: &Blob) -> (String, String) {
    let out = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    (
        String::from_utf8(out.plaintext().unwrap().as_ref().to_vec()).unwrap(),
        out.key_id().unwrap().to_string(),
    )
}

async fn key_ids(kms: &aws_sdk_kms::Client) -> Vec<String> {
    kms.list_keys()
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .map(|k| k.key_id().unwrap().to_string())
        .collect()
}

async fn alias_names(kms: &aws_sdk_kms::Client) -> Vec<String> {
    kms.list_aliases()
        .send()
        .await
        .unwrap()
        .aliases()
        .iter()
        .map(|a| a.alias_name().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_and_account_has_its_own_keys_aliases_and_stores() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let east = emu.kms();
    let west = emu.kms_as("us-west-2", "test");
    let other_account = emu.kms_as("us-east-1", "222233334444");

    let a = create_kms_key(&east).await;
    let account = a.aws_account_id().unwrap().to_string();
    let b = create_kms_key(&west).await;
    let b_id = b.key_id().to_string();
    assert_eq!(
        b.arn(),
        Some(format!("arn:aws:kms:us-west-2:{account}:key/{b_id}").as_str()),
        "a key created with a request signed for us-west-2 lives there"
    );
    let c = create_kms_key(&other_account).await;
    assert_eq!(c.aws_account_id(), Some("222233334444"));
    assert!(c
        .arn()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:222233334444:key/"));

    // Each scope lists its own keys only.
    let a_id = a.key_id().to_string();
    assert_eq!(key_ids(&west).await, vec![b_id.clone()]);
    assert_eq!(key_ids(&other_account).await, vec![c.key_id().to_string()]);
    let in_east = key_ids(&east).await;
    assert!(in_east.contains(&a_id) && !in_east.contains(&b_id));

    // Another Region's key, by id and by ARN: AWS's recorded answers.
    let err = west
        .describe_key()
        .key_id(&a_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "NotFoundException",
        Some(&format!(
            "Key 'arn:aws:kms:us-west-2:{account}:key/{a_id}' does not exist"
        )),
    );
    let err = west
        .describe_key()
        .key_id(a.arn().unwrap())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", Some("Invalid arn us-east-1"));
    // A ciphertext of one Region's key does not decrypt in another.
    let blob = encrypt(&east, &a_id, "east only").await;
    let err = west
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", None);

    // One alias name in two Regions, each pointing at its own Region's key.
    for (kms, key) in [(&east, &a_id), (&west, &b_id)] {
        kms.create_alias()
            .alias_name("alias/app")
            .target_key_id(key)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(alias_names(&west).await, vec!["alias/app".to_string()]);
    let listed = west.list_aliases().send().await.unwrap();
    let alias = &listed.aliases()[0];
    assert_eq!(alias.target_key_id(), Some(b_id.as_str()));
    assert_eq!(
        alias.alias_arn(),
        Some(format!("arn:aws:kms:us-west-2:{account}:alias/app").as_str())
    );
    let west_blob = encrypt(&west, "alias/app", "west").await;
    assert_eq!(decrypt(&west, &west_blob).await.1, b.arn().unwrap());
    assert!(!alias_names(&other_account)
        .await
        .contains(&"alias/app".to_string()));
    west.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let east_blob = encrypt(&east, "alias/app", "x").await;
    assert_eq!(
        decrypt(&east, &east_blob).await.1,
        a.arn().unwrap(),
        "deleting us-west-2's alias left us-east-1's"
    );

    // Custom key stores stay in the Region (and account) of their cluster.
    let store = emu.create_store(&east, "regional").await;
    let listed = west.describe_custom_key_stores().send().await.unwrap();
    assert!(listed.custom_key_stores().is_empty());
    let err = west
        .create_key()
        .custom_key_store_id(&store)
        .origin(aws_sdk_kms::types::OriginType::AwsCloudhsm)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CustomKeyStoreNotFoundException", None);
    let err = west
        .create_custom_key_store()
        .custom_key_store_name("elsewhere")
        .cloud_hsm_cluster_id(emu.cluster_id())
        .trust_anchor_certificate(emu.trust_anchor())
        .key_store_password("kmsuser-password")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "CloudHsmClusterNotFoundException", None);

    // kill -9: every key is found again where it lived.
    emu.crash();
    let emu = Emulator::start(dir.path(), free_port());
    let east = emu.kms();
    let west = emu.kms_as("us-west-2", "test");
    assert_eq!(key_ids(&west).await, vec![b_id.clone()]);
    assert_eq!(alias_names(&west).await, Vec::<String>::new());
    assert_eq!(decrypt(&west, &west_blob).await.0, "west");
    assert_eq!(decrypt(&east, &blob).await.0, "east only");
    let described = emu
        .kms_as("us-east-1", "222233334444")
        .describe_key()
        .key_id(c.key_id())
        .send()
        .await
        .unwrap();
    assert_eq!(described.key_metadata().unwrap().arn(), c.arn());
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_region_key_is_replicated_and_used_in_another_region() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let east = emu.kms();
    let europe = emu.kms_as("eu-west-1", "test");

    let primary = east
        .create_key()
        .multi_region(true)
        .description("primary")
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone();
    let mrk = primary.key_id().to_string();
    assert!(mrk.starts_with("mrk-") && mrk.len() == 36, "{mrk}");
    assert_eq!(primary.multi_region(), Some(true));
    let config = primary.multi_region_configuration().unwrap();
    assert_eq!(
        config.multi_region_key_type(),
        Some(&MultiRegionKeyType::Primary)
    );
    assert_eq!(config.primary_key().unwrap().region(), Some("us-east-1"));
    assert!(config.replica_keys().is_empty());
    let account = primary.aws_account_id().unwrap().to_string();
    let east_arn = format!("arn:aws:kms:us-east-1:{account}:key/{mrk}");
    assert_eq!(primary.arn(), Some(east_arn.as_str()));

    // Not yet in eu-west-1.
    let err = europe
        .describe_key()
        .key_id(&mrk)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "NotFoundException",
        Some(&format!(
            "Key 'arn:aws:kms:eu-west-1:{account}:key/{mrk}' does not exist"
        )),
    );
    let before = encrypt(&east, &mrk, "made in us-east-1").await;

    let replicated = east
        .replicate_key()
        .key_id(&mrk)
        .replica_region("eu-west-1")
        .description("replica")
        .tags(Tag::builder().tag_key("k").tag_value("v").build().unwrap())
        .send()
        .await
        .unwrap();
    let replica = replicated.replica_key_metadata().unwrap();
    let europe_arn = format!("arn:aws:kms:eu-west-1:{account}:key/{mrk}");
    assert_eq!(replica.arn(), Some(europe_arn.as_str()));
    assert_eq!(replica.key_id(), mrk);
    assert_eq!(replica.description(), Some("replica"));
    assert_eq!(replica.key_state(), Some(&KeyState::Enabled));
    let config = replica.multi_region_configuration().unwrap();
    assert_eq!(
        config.multi_region_key_type(),
        Some(&MultiRegionKeyType::Replica)
    );
    assert_eq!(config.primary_key().unwrap().arn(), Some(east_arn.as_str()));
    assert_eq!(replicated.replica_tags().len(), 1);
    assert!(replicated.replica_policy().unwrap().contains("kms:*"));

    // The primary lists its replica; the two share their material.
    let described = east.describe_key().key_id(&mrk).send().await.unwrap();
    let primary_now = described.key_metadata().unwrap();
    let replicas = primary_now
        .multi_region_configuration()
        .unwrap()
        .replica_keys();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0].region(), Some("eu-west-1"));
    assert_eq!(
        primary_now.current_key_material_id(),
        replica.current_key_material_id()
    );
    assert_eq!(primary_now.description(), Some("primary"));

    // A blob from the primary decrypts in the replica's Region, and the other way round.
    assert_eq!(
        decrypt(&europe, &before).await,
        ("made in us-east-1".to_string(), europe_arn.clone())
    );
    let from_europe = encrypt(&europe, &mrk, "made in eu-west-1").await;
    assert_eq!(
        decrypt(&east, &from_europe).await,
        ("made in eu-west-1".to_string(), east_arn.clone())
    );

    // A replica is not replicated; a Region has one key of the family at most.
    let err = europe
        .replicate_key()
        .key_id(&mrk)
        .replica_region("ap-southeast-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "UnsupportedOperationException",
        Some(&format!("{europe_arn} is not a multi-region primary key.")),
    );
    let err = east
        .replicate_key()
        .key_id(&mrk)
        .replica_region("eu-west-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "AlreadyExistsException", None);
    // Rotation is the primary's to manage.
    let err = europe
        .rotate_key_on_demand()
        .key_id(&mrk)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "UnsupportedOperationException", None);

    // Rotating the primary rotates the replica: the same new material in both Regions.
    east.rotate_key_on_demand()
        .key_id(&mrk)
        .send()
        .await
        .unwrap();
    let material = |kms: aws_sdk_kms::Client| {
        let mrk = mrk.clone();
        async move {
            kms.describe_key()
                .key_id(&mrk)
                .send()
                .await
                .unwrap()
                .key_metadata()
                .unwrap()
                .current_key_material_id()
                .unwrap()
                .to_string()
        }
    };
    let rotated = material(east.clone()).await;
    assert_ne!(Some(rotated.as_str()), replica.current_key_material_id());
    assert_eq!(material(europe.clone()).await, rotated);
    let after = encrypt(&east, &mrk, "after the rotation").await;
    assert_eq!(decrypt(&europe, &after).await.0, "after the rotation");

    // The replica becomes the primary.
    east.update_primary_region()
        .key_id(&mrk)
        .primary_region("eu-west-1")
        .send()
        .await
        .unwrap();
    let kind = |kms: aws_sdk_kms::Client| {
        let mrk = mrk.clone();
        async move {
            kms.describe_key()
                .key_id(&mrk)
                .send()
                .await
                .unwrap()
                .key_metadata()
                .unwrap()
                .multi_region_configuration()
                .unwrap()
                .multi_region_key_type()
                .unwrap()
                .clone()
        }
    };
    assert_eq!(kind(east.clone()).await, MultiRegionKeyType::Replica);
    assert_eq!(kind(europe.clone()).await, MultiRegionKeyType::Primary);
    let err = east
        .update_primary_region()
        .key_id(&mrk)
        .primary_region("us-east-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "UnsupportedOperationException",
        Some(&format!("{east_arn} is not a multi-region primary key.")),
    );

    // kill -9: the family, its primary and its materials come back.
    emu.crash();
    let emu = Emulator::start(dir.path(), free_port());
    let east = emu.kms();
    let europe = emu.kms_as("eu-west-1", "test");
    assert_eq!(kind(europe.clone()).await, MultiRegionKeyType::Primary);
    for blob in [&before, &from_europe, &after] {
        let (east_text, _) = decrypt(&east, blob).await;
        assert_eq!(decrypt(&europe, blob).await.0, east_text);
    }

    // The primary waits for its replicas before it is deleted.
    let scheduled = europe
        .schedule_key_deletion()
        .key_id(&mrk)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(
        scheduled.key_state(),
        Some(&KeyState::PendingReplicaDeletion)
    );
    assert!(scheduled.deletion_date().is_none());
    east.schedule_key_deletion()
        .key_id(&mrk)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    emu.advance_clock(8 * DAY);
    // The replica goes at the end of its window; the primary, whose window has passed too,
    // right after it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let east_gone = east.describe_key().key_id(&mrk).send().await.is_err();
        let europe_gone = europe.describe_key().key_id(&mrk).send().await.is_err();
        if east_gone && europe_gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica and then the primary are deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_region_hmac_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let east = emu.kms();
    let tokyo = emu.kms_as("ap-northeast-1", "test");

    let key = east
        .create_key()
        .multi_region(true)
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone();
    let mrk = key.key_id().to_string();
    east.replicate_key()
        .key_id(&mrk)
        .replica_region("ap-northeast-1")
        .send()
        .await
        .unwrap();
    let mac = east
        .generate_mac()
        .key_id(&mrk)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new("shared".as_bytes()))
        .send()
        .await
        .unwrap()
        .mac()
        .unwrap()
        .clone();
    let verified = tokyo
        .verify_mac()
        .key_id(&mrk)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new("shared".as_bytes()))
        .mac(mac)
        .send()
        .await
        .unwrap();
    assert!(verified.mac_valid());

    // A single-Region key is neither replicated nor given a new primary Region.
    let single = create_kms_key(&east).await;
    let arn = single.arn().unwrap().to_string();
    let err = east
        .replicate_key()
        .key_id(single.key_id())
        .replica_region("eu-west-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "UnsupportedOperationException",
        Some(&format!("{arn} is not a multi-region primary key.")),
    );
    let err = east
        .update_primary_region()
        .key_id(single.key_id())
        .primary_region("eu-west-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(
        &err,
        "UnsupportedOperationException",
        Some(&format!("{arn} is not a multi-region key.")),
    );
    // A primary Region without a replica; a malformed Region.
    let err = east
        .update_primary_region()
        .key_id(&mrk)
        .primary_region("sa-east-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "NotFoundException", None);
    let err = east
        .replicate_key()
        .key_id(&mrk)
        .replica_region("Europe")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "ValidationException", None);
    // Not in a custom key store.
    let err = east
        .create_key()
        .multi_region(true)
        .custom_key_store_id("cks-1234567890abcdef0")
        .origin(aws_sdk_kms::types::OriginType::AwsCloudhsm)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_error(&err, "UnsupportedOperationException", None);
    // Nothing failed above left a key behind in eu-west-1 or sa-east-1.
    assert!(key_ids(&emu.kms_as("eu-west-1", "test")).await.is_empty());
    assert!(key_ids(&emu.kms_as("sa-east-1", "test")).await.is_empty());
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_in_another_region_and_account_is_recorded_under_its_own_arn() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), free_port());
    let there = emu.kms_as("eu-west-1", "222233334444");

    // A single-Region key and a multi-Region one, both in eu-west-1 of account 222233334444.
    let single = create_kms_key(&there).await;
    let multi = there
        .create_key()
        .multi_region(true)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone();
    for key in [&single, &multi] {
        assert!(key
            .arn()
            .unwrap()
            .starts_with("arn:aws:kms:eu-west-1:222233334444:key/"));
        there
            .schedule_key_deletion()
            .key_id(key.key_id())
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
    }

    // Their waiting periods end: the DeleteKey records and the KMS CMK Deletion events name
    // each key by its own ARN, Region and account, not the home scope's.
    emu.advance_clock(8 * DAY);
    for key in [&single, &multi] {
        let (arn, key_id) = (key.arn().unwrap(), key.key_id());
        let record = emu.wait_for_delete_key_record(key_id);
        assert_eq!(record["resources"][0]["ARN"], arn, "{record}");
        assert_eq!(record["responseElements"]["keyId"], arn, "{record}");
        assert_eq!(record["userIdentity"]["accountId"], "222233334444");
        let event = emu.wait_for_deletion_event(arn, key_id);
        assert_eq!(event["region"], "eu-west-1", "{event}");
        assert_eq!(event["account"], "222233334444", "{event}");
    }
    emu.stop();
}
