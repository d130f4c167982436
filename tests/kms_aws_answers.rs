//! The answers AWS recorded (../shared/reference/aws-recorded-errors.md), asked of a real
//! emulator with the Rust SDK: codes and exact texts, and no message where AWS sends none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::Tag;
use kms_common::{assert_error, create_kms_key, free_port, Emulator};

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().tag_key(k).tag_value(v).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_match_the_answers_aws_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();
    let arn = key.arn().unwrap();
    let (region, account) = {
        let parts: Vec<&str> = arn.split(':').collect();
        (parts[3].to_string(), parts[4].to_string())
    };

    // Key ids.
    let describe = |id: String| {
        let kms = kms.clone();
        async move { kms.describe_key().key_id(id).send().await.unwrap_err() }
    };
    for (id, message) in [
        ("fake-key-id".to_string(), "Invalid keyId 'fake-key-id'".to_string()),
        (
            "134f2428cec14b25a1ae9048164dba47".into(),
            "Invalid keyId '134f2428cec14b25a1ae9048164dba47'".into(),
        ),
        ("mrk-fake-key-id".into(), "Invalid keyId 'mrk-fake-key-id'".into()),
        (
            "mrk-1234abcd12ab34cd56ef1234567890ab".into(),
            format!("Key 'arn:aws:kms:{region}:{account}:key/mrk-1234abcd12ab34cd56ef1234567890ab' does not exist"),
        ),
        (
            key.arn().unwrap().replace(&region, "ap-southeast-1"),
            "Invalid arn ap-southeast-1".into(),
        ),
    ] {
        let err = describe(id).await;
        assert_error(
            err.as_service_error().unwrap(),
            "NotFoundException",
            Some(&message),
        );
    }

    // Aliases without their prefix.
    let err = kms
        .create_alias()
        .alias_name("no-prefix")
        .target_key_id(key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "ValidationException",
        Some("Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"),
    );

    // Tags.
    for (tags, code, message) in [
        (vec![tag("AWS:key1", "v")], "TagException", "Tags beginning with aws: are reserved".to_string()),
        (vec![tag("aws:key1", "v")], "TagException", "Tags beginning with aws: are reserved".into()),
        (vec![tag("k", "a"), tag("k", "b")], "TagException", "Duplicate tag keys".into()),
        (
            vec![tag("k", &"v".repeat(257))],
            "ValidationException",
            format!("1 validation error detected: Value '{}' at 'tags.1.member.tagValue' failed to satisfy constraint: Member must have length less than or equal to 256", "v".repeat(257)),
        ),
        (
            vec![tag("ok", "v"), tag(&"a".repeat(129), "v")],
            "ValidationException",
            format!("1 validation error detected: Value '{}' at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128", "a".repeat(129)),
        ),
    ] {
        let err = kms
            .tag_resource()
            .key_id(key_id)
            .set_tags(Some(tags))
            .send()
            .await
            .unwrap_err();
        assert_error(err.as_service_error().unwrap(), code, Some(&message));
    }
    let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
    let err = kms
        .create_key()
        .set_tags(Some(many))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "TagException",
        Some("Too many tags"),
    );
    let tags = kms
        .list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert!(tags.tags().is_empty(), "a refused tag was kept");

    // GenerateRandom's bounds.
    let err = kms.generate_random().send().await.unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "ValidationException",
        Some("NumberOfBytes is required."),
    );
    for (n, bound) in [
        (0, "greater than or equal to 1"),
        (1025, "less than or equal to 1024"),
    ] {
        let err = kms
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .unwrap_err();
        assert_error(
            err.as_service_error().unwrap(),
            "ValidationException",
            Some(&format!("1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value {bound}")),
        );
    }

    // Plaintext over KMS's limit.
    let err = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(vec![0u8; 4097]))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "ValidationException",
        Some("1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"),
    );

    // A ciphertext that does not open: no message at all, as AWS.
    let blob = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new("x"))
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let err = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap_err();
    let err = err.as_service_error().unwrap();
    assert_error(err, "InvalidCiphertextException", None);
    assert_eq!(aws_sdk_kms::error::ProvideErrorMetadata::message(err), None);
    emulator.stop();
}
