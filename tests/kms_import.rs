//! Imported key material with the Rust SDK against a real emulator, wrapped by OpenSSL as AWS's
//! guide does it: an EXTERNAL key is PendingImport until ImportKeyMaterial, its material
//! survives kill -9, DeleteImportedKeyMaterial and expiry on the emulator clock take it away,
//! only the same material comes back, and import tokens are bound to their key and their 24
//! hours. An EC private key imported with RSA-AES key wrap signs what OpenSSL verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::Path;
use std::process::Command;

use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec, KeyState, KeyUsageType, OriginType,
    SigningAlgorithmSpec, WrappingKeySpec,
};
use kms_common::{assert_error, free_port, Emulator};

const OPENSSL: &str = "/usr/bin/openssl";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(OPENSSL)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// GetParametersForImport: the wrapping public key (DER) and the import token.
async fn parameters(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    algorithm: AlgorithmSpec,
    spec: WrappingKeySpec,
) -> (Vec<u8>, Blob) {
    let out = kms
        .get_parameters_for_import()
        .key_id(key_id)
        .wrapping_algorithm(algorithm)
        .wrapping_key_spec(spec)
        .send()
        .await
        .unwrap();
    (
        out.public_key().unwrap().as_ref().to_vec(),
        out.import_token().unwrap().clone(),
    )
}

/// Wraps `material` with RSAES-OAEP-SHA-256 under `public` (DER), as OpenSSL does.
fn wrap_oaep(dir: &Path, public: &[u8], material: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("wrapping.der"), public).unwrap();
    std::fs::write(dir.join("material.bin"), material).unwrap();
    openssl(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            "wrapping.der",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            "material.bin",
            "-out",
            "wrapped.bin",
        ],
    );
    std::fs::read(dir.join("wrapped.bin")).unwrap()
}

async fn import(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    token: &Blob,
    wrapped: Vec<u8>,
) -> Result<
    (),
    aws_sdk_kms::error::SdkError<
        aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError,
    >,
> {
    kms.import_key_material()
        .key_id(key_id)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .map(|_| ())
}

async fn state(kms: &aws_sdk_kms::Client, key_id: &str) -> KeyState {
    kms.describe_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_symmetric_material_comes_and_goes_as_on_aws() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let port = free_port();
    let emulator = Emulator::start(tmp.path(), port);
    let kms = emulator.kms_without_retries();

    let key = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let meta = key.key_metadata().unwrap();
    let key_id = meta.key_id().to_string();
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert!(!meta.enabled());
    let pending = format!("{} is pending import.", meta.arn().unwrap());
    let err = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        Some(&pending),
    );

    let (public, token) = parameters(
        &kms,
        &key_id,
        AlgorithmSpec::RsaesOaepSha256,
        WrappingKeySpec::Rsa2048,
    )
    .await;
    let material: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    // KEY_MATERIAL_EXPIRES (the default) needs ValidTo: AWS's text (recorded).
    let err = kms
        .import_key_material()
        .key_id(&key_id)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrap_oaep(files.path(), &public, &material)))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "ValidationException",
        Some("A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"),
    );
    // 31 bytes is no symmetric key.
    let err = import(
        &kms,
        &key_id,
        &token,
        wrap_oaep(files.path(), &public, &material[1..]),
    )
    .await
    .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    // Garbage does not unwrap.
    let err = import(&kms, &key_id, &token, vec![7u8; 256])
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidCiphertextException",
        None,
    );
    import(
        &kms,
        &key_id,
        &token,
        wrap_oaep(files.path(), &public, &material),
    )
    .await
    .unwrap();
    assert_eq!(state(&kms, &key_id).await, KeyState::Enabled);
    let described = kms.describe_key().key_id(&key_id).send().await.unwrap();
    let meta = described.key_metadata().unwrap();
    assert_eq!(
        meta.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialDoesNotExpire)
    );
    let material_id = meta.current_key_material_id().unwrap().to_string();
    let blob = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("imported"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // kill -9: the material is durable.
    emulator.crash();
    let emulator = Emulator::start(tmp.path(), port);
    let kms = emulator.kms_without_retries();
    let decrypt = |blob: Blob| {
        let kms = kms.clone();
        async move { kms.decrypt().ciphertext_blob(blob).send().await }
    };
    let plain = decrypt(blob.clone()).await.unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"imported");
    assert_eq!(plain.key_material_id(), Some(material_id.as_str()));

    // Deleted: PendingImport, nothing decrypts; other material is refused; the same comes back.
    kms.delete_imported_key_material()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&kms, &key_id).await, KeyState::PendingImport);
    let err = decrypt(blob.clone()).await.unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        Some(&pending),
    );
    let other: Vec<u8> = material.iter().map(|b| b ^ 1).collect();
    let err = import(
        &kms,
        &key_id,
        &token,
        wrap_oaep(files.path(), &public, &other),
    )
    .await
    .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    import(
        &kms,
        &key_id,
        &token,
        wrap_oaep(files.path(), &public, &material),
    )
    .await
    .unwrap();
    assert_eq!(
        decrypt(blob.clone())
            .await
            .unwrap()
            .plaintext()
            .unwrap()
            .as_ref(),
        b"imported"
    );

    // A token is bound to its key.
    let second = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let second_id = second.key_metadata().unwrap().key_id().to_string();
    let err = import(
        &kms,
        &second_id,
        &token,
        wrap_oaep(files.path(), &public, &material),
    )
    .await
    .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidImportTokenException",
        None,
    );

    // ValidTo passes on the emulator clock: the material is deleted.
    let now = emulator.now_seconds() as i64;
    kms.import_key_material()
        .key_id(&key_id)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrap_oaep(files.path(), &public, &material)))
        .valid_to(DateTime::from_secs(now + 3600))
        .send()
        .await
        .unwrap();
    assert_eq!(state(&kms, &key_id).await, KeyState::Enabled);
    emulator.advance_clock(2 * 3600);
    assert_eq!(state(&kms, &key_id).await, KeyState::PendingImport);
    // The token's 24 hours pass too.
    emulator.advance_clock(24 * 3600);
    let err = import(
        &kms,
        &key_id,
        &token,
        wrap_oaep(files.path(), &public, &material),
    )
    .await
    .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "ExpiredImportTokenException",
        None,
    );

    // Other origins take no material (recorded text); rotating an EXTERNAL key that never had
    // material is refused for its state, pending import (recorded).
    let aws_kms = kms.create_key().send().await.unwrap();
    let aws_kms = aws_kms.key_metadata().unwrap();
    let err = kms
        .get_parameters_for_import()
        .key_id(aws_kms.key_id())
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "UnsupportedOperationException",
        Some(&format!(
            "{} origin is AWS_KMS which is not valid for this operation.",
            aws_kms.arn().unwrap()
        )),
    );
    let err = kms
        .rotate_key_on_demand()
        .key_id(&second_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        Some(&format!(
            "{} is pending import.",
            second.key_metadata().unwrap().arn().unwrap()
        )),
    );
}

/// What ImportKeyMaterial, DeleteImportedKeyMaterial and GetParametersForImport refuse, and
/// what they answer for a key that never had material.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refusals_follow_aws() {
    use aws_sdk_kms::types::ImportType;
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let kms = emulator.kms_without_retries();
    let key = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let meta = key.key_metadata().unwrap();
    let (key_id, arn) = (meta.key_id().to_string(), meta.arn().unwrap().to_string());

    // DeleteImportedKeyMaterial of a key that never had material: no KeyMaterialId member,
    // rather than a null one.
    let (status, answer) =
        emulator.kms_json("DeleteImportedKeyMaterial", &json!({"KeyId": key_id}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"KeyId": arn}));

    // EXISTING_KEY_MATERIAL into a key that never had material names nothing.
    let (public, token) = parameters(
        &kms,
        &key_id,
        AlgorithmSpec::RsaesOaepSha256,
        WrappingKeySpec::Rsa2048,
    )
    .await;
    let material = [0x42u8; 32];
    let err = kms
        .import_key_material()
        .key_id(&key_id)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrap_oaep(files.path(), &public, &material)))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .import_type(ImportType::ExistingKeyMaterial)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    assert_eq!(state(&kms, &key_id).await, KeyState::PendingImport);
    // NEW_KEY_MATERIAL takes it; afterwards the key's id comes back from a delete.
    let imported = kms
        .import_key_material()
        .key_id(&key_id)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrap_oaep(files.path(), &public, &material)))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .import_type(ImportType::NewKeyMaterial)
        .send()
        .await
        .unwrap();
    let material_id = imported.key_material_id().unwrap().to_string();
    let (_, answer) = emulator.kms_json("DeleteImportedKeyMaterial", &json!({"KeyId": key_id}));
    assert_eq!(answer, json!({"KeyId": arn, "KeyMaterialId": material_id}));

    // An RSA private key is wrapped with RSA_AES only (Developer Guide): refused after the
    // key's lookup, since it depends on the key; a key that does not exist is NotFound first,
    // even with the deprecated PKCS#1 algorithm.
    let rsa = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let rsa_id = rsa.key_metadata().unwrap().key_id().to_string();
    let err = kms
        .get_parameters_for_import()
        .key_id(&rsa_id)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa4096)
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "ValidationException", None);
    let missing = "00000000-0000-0000-0000-000000000000";
    for algorithm in [AlgorithmSpec::RsaesPkcs1V15, AlgorithmSpec::RsaesOaepSha256] {
        let err = kms
            .get_parameters_for_import()
            .key_id(missing)
            .wrapping_algorithm(algorithm)
            .wrapping_key_spec(WrappingKeySpec::Rsa2048)
            .send()
            .await
            .unwrap_err();
        assert_error(err.as_service_error().unwrap(), "NotFoundException", None);
    }

    // RSA material must have the key spec's modulus: a 3072-bit key is no RSA_2048 material.
    let (public, token) = parameters(
        &kms,
        &rsa_id,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        WrappingKeySpec::Rsa4096,
    )
    .await;
    let dir = files.path();
    std::fs::write(dir.join("wrapping.der"), &public).unwrap();
    let wrap_rsa_aes = |private_pem: &str| {
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                private_pem,
                "-outform",
                "DER",
                "-out",
                "rsa.der",
            ],
        );
        let aes = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(dir.join("aes.bin"), hex_bytes(aes)).unwrap();
        openssl(
            dir,
            &[
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-keyform",
                "DER",
                "-inkey",
                "wrapping.der",
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
                "-in",
                "aes.bin",
                "-out",
                "aes-wrapped.bin",
            ],
        );
        openssl(
            dir,
            &[
                "enc",
                "-id-aes256-wrap-pad",
                "-K",
                aes,
                "-iv",
                "A65959A6",
                "-in",
                "rsa.der",
                "-out",
                "rsa-wrapped.bin",
            ],
        );
        let mut wrapped = std::fs::read(dir.join("aes-wrapped.bin")).unwrap();
        wrapped.extend(std::fs::read(dir.join("rsa-wrapped.bin")).unwrap());
        wrapped
    };
    for (bits, name) in [("3072", "rsa3072.pem"), ("2048", "rsa2048.pem")] {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                name,
            ],
        );
    }
    let err = import(&kms, &rsa_id, &token, wrap_rsa_aes("rsa3072.pem"))
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    assert_eq!(state(&kms, &rsa_id).await, KeyState::PendingImport);
    import(&kms, &rsa_id, &token, wrap_rsa_aes("rsa2048.pem"))
        .await
        .unwrap();
    assert_eq!(state(&kms, &rsa_id).await, KeyState::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec_key_imported_with_rsa_aes_key_wrap_signs_what_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let emulator = Emulator::start(tmp.path(), free_port());
    let kms = emulator.kms_without_retries();
    let key = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_string();
    let (public, token) = parameters(
        &kms,
        &key_id,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        WrappingKeySpec::Rsa4096,
    )
    .await;
    std::fs::write(dir.join("wrapping.der"), &public).unwrap();
    // AWS's guide: a private key as PKCS#8 DER, an AES-256 key wrapped with OAEP, the private
    // key wrapped with AES key wrap with padding (RFC 5649) under it.
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der",
        ],
    );
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "ec.pem",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "ec-pub.der",
        ],
    );
    let aes = "5f3d8a1b2c4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    std::fs::write(dir.join("aes.bin"), hex_bytes(aes)).unwrap();
    openssl(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            "DER",
            "-inkey",
            "wrapping.der",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            "aes.bin",
            "-out",
            "aes-wrapped.bin",
        ],
    );
    openssl(
        dir,
        &[
            "enc",
            "-id-aes256-wrap-pad",
            "-K",
            aes,
            "-iv",
            "A65959A6",
            "-in",
            "ec.der",
            "-out",
            "ec-wrapped.bin",
        ],
    );
    let mut wrapped = std::fs::read(dir.join("aes-wrapped.bin")).unwrap();
    wrapped.extend(std::fs::read(dir.join("ec-wrapped.bin")).unwrap());
    import(&kms, &key_id, &token, wrapped).await.unwrap();

    let signature = kms
        .sign()
        .key_id(&key_id)
        .message(Blob::new("signed by imported material"))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    std::fs::write(dir.join("sig.bin"), signature.signature().unwrap().as_ref()).unwrap();
    std::fs::write(dir.join("msg.bin"), "signed by imported material").unwrap();
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "ec-pub.der",
            "-keyform",
            "DER",
            "-signature",
            "sig.bin",
            "msg.bin",
        ],
    );
    // And the other way: OpenSSL signs with the private key, KMS verifies.
    std::fs::write(dir.join("local.txt"), "signed outside KMS").unwrap();
    let local = openssl(dir, &["dgst", "-sha256", "-sign", "ec.pem", "local.txt"]);
    let verified = kms
        .verify()
        .key_id(&key_id)
        .message(Blob::new("signed outside KMS"))
        .signature(Blob::new(local))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    assert!(verified.signature_valid());
    let kms_public = kms.get_public_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(
        kms_public.public_key().unwrap().as_ref(),
        std::fs::read(dir.join("ec-pub.der")).unwrap().as_slice()
    );
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Rotation of imported material: new material imported for the next rotation
/// (PENDING_ROTATION), RotateKeyOnDemand making it current, the material it replaced staying the
/// key's (a ciphertext made under it still decrypts; deleting it leaves the key PendingImport
/// until it comes back), all through kill -9 and expiry on the emulator clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_material_rotates_on_demand() {
    use aws_sdk_kms::types::{ImportState, ImportType, IncludeKeyMaterial, KeyMaterialState};

    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), free_port());
    let kms = emulator.kms();
    let created = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let key_id = created.key_metadata().unwrap().key_id().to_string();
    let arn = created.key_metadata().unwrap().arn().unwrap().to_string();

    let import_as = |material: [u8; 32], import_type: Option<ImportType>, asked: Option<String>| {
        let (kms, key_id, files) = (kms.clone(), key_id.clone(), files.path().to_path_buf());
        async move {
            let (public, token) = parameters(
                &kms,
                &key_id,
                AlgorithmSpec::RsaesOaepSha256,
                WrappingKeySpec::Rsa2048,
            )
            .await;
            kms.import_key_material()
                .key_id(&key_id)
                .import_token(token)
                .encrypted_key_material(Blob::new(wrap_oaep(&files, &public, &material)))
                .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
                .set_import_type(import_type)
                .set_key_material_id(asked)
                .send()
                .await
        }
    };
    let current = |kms: aws_sdk_kms::Client| {
        let key_id = key_id.clone();
        async move {
            kms.describe_key()
                .key_id(&key_id)
                .send()
                .await
                .unwrap()
                .key_metadata()
                .unwrap()
                .current_key_material_id()
                .map(str::to_string)
        }
    };
    let materials = |kms: aws_sdk_kms::Client, include: IncludeKeyMaterial| {
        let key_id = key_id.clone();
        async move {
            kms.list_key_rotations()
                .key_id(&key_id)
                .include_key_material(include)
                .send()
                .await
                .unwrap()
                .rotations()
                .iter()
                .map(|r| {
                    (
                        r.key_material_id().unwrap().to_string(),
                        r.key_material_state().unwrap().clone(),
                        r.import_state().unwrap().clone(),
                        r.rotation_date().is_some(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };

    let (a, b) = ([0xa1u8; 32], [0xb2u8; 32]);
    let id_a = import_as(a, None, None)
        .await
        .unwrap()
        .key_material_id()
        .unwrap()
        .to_string();
    assert_eq!(current(kms.clone()).await.as_deref(), Some(id_a.as_str()));
    let before = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("under A"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    // Nothing to rotate to yet (recorded).
    let err = kms
        .rotate_key_on_demand()
        .key_id(&key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        Some(&format!(
            "No available key material pending rotation for the key: {arn}."
        )),
    );

    // New material waits for the rotation; A stays current.
    let id_b = import_as(b, Some(ImportType::NewKeyMaterial), None)
        .await
        .unwrap()
        .key_material_id()
        .unwrap()
        .to_string();
    assert_ne!(id_a, id_b);
    assert_eq!(current(kms.clone()).await.as_deref(), Some(id_a.as_str()));
    assert_eq!(
        materials(kms.clone(), IncludeKeyMaterial::AllKeyMaterial).await,
        vec![
            (
                id_a.clone(),
                KeyMaterialState::Current,
                ImportState::Imported,
                false
            ),
            (
                id_b.clone(),
                KeyMaterialState::PendingRotation,
                ImportState::Imported,
                false
            ),
        ]
    );
    assert!(materials(kms.clone(), IncludeKeyMaterial::RotationsOnly)
        .await
        .is_empty());
    // A is already the key's; a second new material waits for B's rotation.
    let err = import_as(a, Some(ImportType::NewKeyMaterial), None)
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    let err = import_as([0xc3; 32], Some(ImportType::NewKeyMaterial), None)
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        None,
    );

    // The rotation: B current, A still decrypting what it encrypted.
    kms.rotate_key_on_demand()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(current(kms.clone()).await.as_deref(), Some(id_b.as_str()));
    let after = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new("under B"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let decrypt = |blob: Blob| {
        let kms = kms.clone();
        async move {
            kms.decrypt()
                .ciphertext_blob(blob)
                .send()
                .await
                .map(|o| o.plaintext().unwrap().as_ref().to_vec())
        }
    };
    assert_eq!(decrypt(before.clone()).await.unwrap(), b"under A");
    assert_eq!(decrypt(after.clone()).await.unwrap(), b"under B");
    assert_eq!(
        materials(kms.clone(), IncludeKeyMaterial::RotationsOnly).await,
        vec![(
            id_b.clone(),
            KeyMaterialState::Current,
            ImportState::Imported,
            true
        )]
    );

    // A, deleted by its id, leaves the key PendingImport: the key is usable only with every
    // material it is bound to.
    let deleted = kms
        .delete_imported_key_material()
        .key_id(&key_id)
        .key_material_id(&id_a)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.key_material_id(), Some(id_a.as_str()));
    assert_eq!(state(&kms, &key_id).await, KeyState::PendingImport);
    let err = decrypt(before.clone()).await.unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "KMSInvalidStateException",
        Some(&format!("{arn} is pending import.")),
    );
    assert_eq!(
        materials(kms.clone(), IncludeKeyMaterial::AllKeyMaterial).await[0],
        (
            id_a.clone(),
            KeyMaterialState::NonCurrent,
            ImportState::PendingImport,
            false
        )
    );
    // Only A's own material goes back under A's id.
    let err = import_as(
        [0xc3; 32],
        Some(ImportType::ExistingKeyMaterial),
        Some(id_a.clone()),
    )
    .await
    .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "IncorrectKeyMaterialException",
        None,
    );
    import_as(a, Some(ImportType::ExistingKeyMaterial), Some(id_a.clone()))
        .await
        .unwrap();
    assert_eq!(state(&kms, &key_id).await, KeyState::Enabled);
    assert_eq!(decrypt(before.clone()).await.unwrap(), b"under A");

    // kill -9: both materials, their order and states come back.
    emulator.crash();
    let emulator = Emulator::start(dir.path(), free_port());
    let kms = emulator.kms();
    for (blob, text) in [(&before, "under A"), (&after, "under B")] {
        let out = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(out.plaintext().unwrap().as_ref(), text.as_bytes());
    }
    assert_eq!(current(kms.clone()).await.as_deref(), Some(id_b.as_str()));
    assert_eq!(
        materials(kms.clone(), IncludeKeyMaterial::AllKeyMaterial)
            .await
            .len(),
        2
    );
    emulator.stop();
}
