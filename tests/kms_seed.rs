//! Seeded keys (`--seed-file`): two emulators on fresh data directories given the same file
//! have the same keys (ids, aliases, tags, rotation, state) with the same material, so what one
//! encrypts, MACs or signs the other decrypts and verifies; a restart does not make them twice;
//! a reset puts them back; a bad file stops the start with a message naming the key. A seeded
//! custom key store is CONNECTED once the emulator is Ready, and again after a KMS reset, a
//! cluster reset and restarts; a bad one stops the start naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::Path;
use std::process::Command;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    ConnectionStateType, KeyState, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
};
use kms_common::{free_port, refused_start, Emulator};
use serde_json::json;

const SYMMETRIC: &str = "5eed0000-0000-4000-8000-000000000001";
const HMAC: &str = "5eed0000-0000-4000-8000-000000000002";
const GIVEN: &str = "5eed0000-0000-4000-8000-000000000003";
const EC: &str = "5eed0000-0000-4000-8000-000000000004";
const DISABLED: &str = "5eed0000-0000-4000-8000-000000000005";

/// A P-256 private key as PEM PKCS#8, made by OpenSSL.
fn ec_pem(dir: &Path) -> String {
    let out = Command::new("/usr/bin/openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn seed_file(dir: &Path) -> std::path::PathBuf {
    let pem = ec_pem(dir).replace('\n', "\n      ");
    let text = format!(
        r#"# Keys every teammate's hsmkms has.
seed: "team fixtures v1"
keys:
  - id: {SYMMETRIC}
    description: orders
    aliases: [alias/orders]
    tags: {{team: payments}}
    rotation: {{periodDays: 180}}
  - id: {HMAC}
    spec: HMAC_256
    usage: GENERATE_VERIFY_MAC
    seed: another string
  - id: {GIVEN}
    region: eu-west-1
    material: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
  - id: {EC}
    spec: ECC_NIST_P256
    usage: SIGN_VERIFY
    material: |
      {pem}
  - id: {DISABLED}
    enabled: false
"#
    );
    let path = dir.join("seed.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_file_gives_the_same_keys_everywhere() {
    let files = tempfile::tempdir().unwrap();
    let seed = seed_file(files.path());
    let seed = seed.to_str().unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Emulator::start_with(one.path(), free_port(), &["--seed-file", seed]);
    let b = Emulator::start_with(two.path(), free_port(), &["--seed-file", seed]);
    let (ka, kb) = (a.kms(), b.kms());

    // The same keys, by id, with what the file says.
    for kms in [&ka, &kb] {
        let described = kms
            .describe_key()
            .key_id("alias/orders")
            .send()
            .await
            .unwrap();
        let meta = described.key_metadata().unwrap();
        assert_eq!(meta.key_id(), SYMMETRIC);
        assert_eq!(meta.description(), Some("orders"));
        let status = kms
            .get_key_rotation_status()
            .key_id(SYMMETRIC)
            .send()
            .await
            .unwrap();
        assert!(status.key_rotation_enabled());
        assert_eq!(status.rotation_period_in_days(), Some(180));
        let tags = kms
            .list_resource_tags()
            .key_id(SYMMETRIC)
            .send()
            .await
            .unwrap();
        assert_eq!(tags.tags()[0].tag_value(), "payments");
        let disabled = kms.describe_key().key_id(DISABLED).send().await.unwrap();
        assert_eq!(
            disabled.key_metadata().unwrap().key_state(),
            Some(&KeyState::Disabled)
        );
    }
    // A key of another Region lives there.
    let europe = a.kms_as("eu-west-1", "test");
    assert!(ka.describe_key().key_id(GIVEN).send().await.is_err());
    let given = europe.describe_key().key_id(GIVEN).send().await.unwrap();
    assert!(given
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .starts_with("arn:aws:kms:eu-west-1:"));

    // What one encrypts, MACs or signs, the other decrypts and verifies.
    let blob = ka
        .encrypt()
        .key_id("alias/orders")
        .plaintext(Blob::new("seeded"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let out = kb
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"seeded");
    let mac = |kms: aws_sdk_kms::Client| async move {
        kms.generate_mac()
            .key_id(HMAC)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new("m"))
            .send()
            .await
            .unwrap()
            .mac()
            .unwrap()
            .clone()
    };
    assert_eq!(mac(ka.clone()).await, mac(kb.clone()).await);
    let signature = ka
        .sign()
        .key_id(EC)
        .message(Blob::new("m"))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature()
        .unwrap()
        .clone();
    let verified = kb
        .verify()
        .key_id(EC)
        .message(Blob::new("m"))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .signature(signature)
        .send()
        .await
        .unwrap();
    assert!(verified.signature_valid());
    b.stop();

    // A reset puts the seeded keys back, and only them.
    ka.create_key().send().await.unwrap();
    ka.delete_alias()
        .alias_name("alias/orders")
        .send()
        .await
        .unwrap();
    ka.enable_key().key_id(DISABLED).send().await.unwrap();
    a.post_json("/_hsmkms/reset", &json!({}));
    let ids: Vec<String> = ka
        .list_keys()
        .send()
        .await
        .unwrap()
        .keys()
        .iter()
        .map(|k| k.key_id().unwrap().to_string())
        .collect();
    let mut expected = vec![SYMMETRIC, HMAC, EC, DISABLED];
    expected.sort();
    let mut got: Vec<&str> = ids.iter().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        ka.describe_key()
            .key_id(DISABLED)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_state(),
        Some(&KeyState::Disabled)
    );
    let out = ka
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"seeded");
    assert!(ka
        .describe_key()
        .key_id("alias/orders")
        .send()
        .await
        .is_ok());

    // A restart applies the file again and changes nothing: no key twice, changes kept.
    ka.update_key_description()
        .key_id(SYMMETRIC)
        .description("changed")
        .send()
        .await
        .unwrap();
    a.stop();
    let a = Emulator::start_with(one.path(), free_port(), &["--seed-file", seed]);
    let ka = a.kms();
    assert_eq!(ka.list_keys().send().await.unwrap().keys().len(), 4);
    let meta = ka.describe_key().key_id(SYMMETRIC).send().await.unwrap();
    assert_eq!(meta.key_metadata().unwrap().description(), Some("changed"));
    a.stop();

    // A bad file: the start stops, naming the key and the member.
    std::fs::write(
        files.path().join("bad.yaml"),
        "keys:\n  - id: nope\n    seed: s\n",
    )
    .unwrap();
    let bad = files.path().join("bad.yaml");
    let stderr = refused_start(
        tempfile::tempdir().unwrap().path(),
        &["--seed-file", bad.to_str().unwrap()],
    );
    assert!(stderr.contains("keys[0] (nope): id"), "{stderr}");
}

const STORE: &str = "cks-5eed00000000000a1";

/// A store of the seed file's, as DescribeCustomKeyStores shows it: its state and cluster.
async fn seeded_store(kms: &aws_sdk_kms::Client) -> (ConnectionStateType, String, String) {
    let stores = kms
        .describe_custom_key_stores()
        .custom_key_store_id(STORE)
        .send()
        .await
        .unwrap();
    let store = &stores.custom_key_stores()[0];
    assert_eq!(store.custom_key_store_name(), Some("payments-store"));
    (
        store.connection_state().unwrap().clone(),
        store.cloud_hsm_cluster_id().unwrap().to_string(),
        store.trust_anchor_certificate().unwrap().to_string(),
    )
}

/// A key made in the store encrypts and decrypts.
async fn store_key_works(kms: &aws_sdk_kms::Client) -> String {
    let key = kms_common::create_store_key(kms, STORE).await;
    let blob = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new("in the seeded store"))
        .send()
        .await
        .unwrap();
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"in the seeded store");
    key.key_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_store_is_connected_at_start_and_after_every_reset() {
    let files = tempfile::tempdir().unwrap();
    let seed = files.path().join("stores.yaml");
    std::fs::write(
        &seed,
        format!(
            "customKeyStores:\n  - id: {STORE}\n    name: payments-store\n    connected: true\nkeys:\n  - id: {SYMMETRIC}\n    seed: s\n"
        ),
    )
    .unwrap();
    let seed = seed.to_str().unwrap();
    let data = files.path().join("data");
    let emu = Emulator::start_with(&data, free_port(), &["--seed-file", seed]);
    let kms = emu.kms();

    // CONNECTED once the emulator is Ready, on the launcher's cluster with its trust anchor
    // and its first kmsuser password (the defaults).
    let (state, cluster, anchor) = seeded_store(&kms).await;
    assert_eq!(state, ConnectionStateType::Connected);
    assert_eq!(cluster, emu.cluster_id());
    assert_eq!(anchor, emu.trust_anchor());
    let key = store_key_works(&kms).await;

    // A KMS reset makes it again, connected (KMS rotated kmsuser's password when it
    // connected; the store keeps the one KMS set), without the key.
    let answer = emu.post_json("/_hsmkms/reset", &json!({}));
    assert_eq!(answer["reset"], "kms");
    assert_eq!(seeded_store(&kms).await.0, ConnectionStateType::Connected);
    assert!(kms.describe_key().key_id(&key).send().await.is_err());
    assert!(kms.describe_key().key_id(SYMMETRIC).send().await.is_ok());
    store_key_works(&kms).await;

    // So does a cluster reset, on the cluster made anew (its new trust anchor, kmsuser's
    // first password again).
    let answer = emu.post_json("/_hsmkms/reset", &json!({"cluster": true}));
    assert_eq!(answer["reset"], "cluster");
    let (state, cluster, new_anchor) = seeded_store(&kms).await;
    assert_eq!(state, ConnectionStateType::Connected);
    assert_eq!(cluster, emu.cluster_id());
    assert_ne!(new_anchor, anchor);
    assert_eq!(new_anchor, emu.trust_anchor());
    let key = store_key_works(&kms).await;

    // A restart leaves the store as it is (connected again, its key there), SIGTERM or kill -9.
    emu.stop();
    let emu = Emulator::start_with(&data, free_port(), &["--seed-file", seed]);
    let kms = emu.kms();
    assert_eq!(seeded_store(&kms).await.0, ConnectionStateType::Connected);
    assert!(kms.describe_key().key_id(&key).send().await.is_ok());
    emu.crash();
    let emu = Emulator::start_with(&data, free_port(), &["--seed-file", seed]);
    let kms = emu.kms();
    assert_eq!(seeded_store(&kms).await.0, ConnectionStateType::Connected);
    store_key_works(&kms).await;
    emu.stop();

    // A bad store stops the start, naming it and the member: in the file, or in what it
    // asks of the cluster.
    let bad = files.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "customKeyStores:\n  - id: cks-5eed00000000000a1\n    name: s\n    kmsuserPassword: short\n",
    )
    .unwrap();
    let err = refused_start(
        &files.path().join("other"),
        &["--seed-file", bad.to_str().unwrap()],
    );
    assert!(
        err.contains("customKeyStores[0] (cks-5eed00000000000a1): kmsuserPassword"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "customKeyStores:\n  - id: cks-5eed00000000000a1\n    name: s\n    clusterId: cluster-abcdefghij2\n",
    )
    .unwrap();
    let err = refused_start(
        &files.path().join("other"),
        &["--seed-file", bad.to_str().unwrap()],
    );
    assert!(
        err.contains("customKeyStores (cks-5eed00000000000a1): clusterId"),
        "{err}"
    );
}
