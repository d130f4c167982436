//! What a key in a CloudHSM key store cannot do, answered as AWS answers it (reference §3 and
//! the custom key store section): no other key spec, no imported material, no rotation, no data
//! key pairs, no signing, MACs or public key, no replication. Each refusal changes nothing: the
//! key still encrypts afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, DataKeyPairSpec, KeySpec, KeyUsageType, MacAlgorithmSpec, OriginType,
    SigningAlgorithmSpec, WrappingKeySpec,
};
use kms_common::{assert_error, create_store_key, free_port, Emulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_store_key_refuses_what_does_not_apply_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let kms = emulator.kms_without_retries();
    let store = emulator.create_connected_store(&kms, "limits").await;
    let key = create_store_key(&kms, &store).await;
    let key_id = key.key_id().to_string();
    let arn = key.arn().unwrap().to_string();
    let code = |e: &dyn aws_sdk_kms::error::ProvideErrorMetadata| e.code().map(str::to_string);

    // Only symmetric encryption keys, and only origin AWS_CLOUDHSM.
    let err = kms
        .create_key()
        .origin(OriginType::AwsCloudhsm)
        .custom_key_store_id(&store)
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(err.as_service_error().unwrap()).as_deref(),
        Some("UnsupportedOperationException")
    );
    let err = kms
        .create_key()
        .origin(OriginType::External)
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(err.as_service_error().unwrap()).as_deref(),
        Some("UnsupportedOperationException")
    );

    // No imported material: AWS's text for another origin (recorded for AWS_KMS).
    let err = kms
        .get_parameters_for_import()
        .key_id(&key_id)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        Some(&format!(
            "{arn} origin is AWS_CLOUDHSM which is not valid for this operation."
        )),
    );

    // No rotation (footnote 7).
    let err = kms
        .enable_key_rotation()
        .key_id(&key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        None,
    );
    let err = kms
        .rotate_key_on_demand()
        .key_id(&key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        None,
    );

    // No data key pairs.
    let err = kms
        .generate_data_key_pair()
        .key_id(&key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(err.as_service_error().unwrap()).as_deref(),
        Some("UnsupportedOperationException")
    );

    // A symmetric key: no signing, no MACs (AWS's recorded texts), no public key.
    let err = kms
        .sign()
        .key_id(&key_id)
        .message(Blob::new("m"))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidKeyUsageException",
        Some(&format!(
            "{arn} key usage is ENCRYPT_DECRYPT which is not valid for Sign."
        )),
    );
    let err = kms
        .generate_mac()
        .key_id(&key_id)
        .message(Blob::new("m"))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidKeyUsageException",
        Some(&format!(
            "{arn} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac."
        )),
    );
    let err = kms
        .get_public_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(err.as_service_error().unwrap()).as_deref(),
        Some("UnsupportedOperationException")
    );

    // No replication: a single-Region key (recorded text).
    let err = kms
        .replicate_key()
        .key_id(&key_id)
        .replica_region("us-west-2")
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        Some(&format!("{arn} is not a multi-region primary key.")),
    );

    // None of it changed the key: it still encrypts and decrypts on the cluster.
    let blob = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("still here"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let plain = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"still here");
}
