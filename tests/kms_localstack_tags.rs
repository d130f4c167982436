//! LocalStack's CreateKey conventions, for users who come from it: the tags `_custom_id_` and
//! `_custom_key_material_` set a key's id and material, and are not stored. A ciphertext made
//! under such a key in one emulator decrypts in another, on another data directory, given the
//! same tags; the material never reaches the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec, Tag};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kms_common::{assert_error, free_port, Emulator};

const ID: &str = "11111111-2222-3333-4444-555555555555";

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().tag_key(k).tag_value(v).build().unwrap()
}

async fn create(kms: &aws_sdk_kms::Client, material: &[u8]) -> String {
    kms.create_key()
        .tags(tag("_custom_id_", ID))
        .tags(tag("_custom_key_material_", &B64.encode(material)))
        .tags(tag("team", "a"))
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_tags_set_the_id_and_material_of_a_key() {
    let material = [0x5au8; 32];
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Emulator::start(one.path(), free_port());
    let kms = first.kms();
    assert_eq!(create(&kms, &material).await, ID);
    // Only the caller's own tag is stored.
    let tags = kms.list_resource_tags().key_id(ID).send().await.unwrap();
    let keys: Vec<&str> = tags.tags().iter().map(|t| t.tag_key()).collect();
    assert_eq!(keys, ["team"]);
    let blob = kms
        .encrypt()
        .key_id(ID)
        .plaintext(Blob::new("portable"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    // The id is taken now.
    let err = kms
        .create_key()
        .tags(tag("_custom_id_", ID))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "AlreadyExistsException",
        None,
    );
    // The material never reaches the audit trail.
    let audit = first
        .get_json(&format!("/_hsmkms/audit?key={ID}"))
        .to_string();
    assert!(audit.contains("_custom_key_material_"), "{audit}");
    assert!(!audit.contains(&B64.encode(material)), "{audit}");
    first.stop();

    // Another emulator, another data directory, the same tags: the blob decrypts.
    let second = Emulator::start(two.path(), free_port());
    let kms = second.kms();
    assert_eq!(create(&kms, &material).await, ID);
    let out = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"portable");

    // HMAC material of the spec's length; bad ids and material are refused.
    let hmac = kms
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .tags(tag("_custom_key_material_", &B64.encode([7u8; 32])))
        .send()
        .await
        .unwrap();
    let mac = kms
        .generate_mac()
        .key_id(hmac.key_metadata().unwrap().key_id())
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new("m"))
        .send()
        .await
        .unwrap();
    use hmac_check::expected_mac;
    assert_eq!(mac.mac().unwrap().as_ref(), expected_mac(&[7u8; 32], b"m"));
    for (k, v) in [
        ("_custom_id_", "not-a-uuid"),
        ("_custom_key_material_", "c2hvcnQ="),
        ("_custom_key_material_", "%%%"),
    ] {
        let err = kms.create_key().tags(tag(k, v)).send().await.unwrap_err();
        assert_error(err.as_service_error().unwrap(), "ValidationException", None);
    }
    second.stop();
}

mod hmac_check {
    /// HMAC-SHA-256, computed outside KMS.
    pub fn expected_mac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
        aws_lc_rs::hmac::sign(&key, message).as_ref().to_vec()
    }
}
