//! Asymmetric and HMAC keys with the Rust SDK against a real emulator: CreateKey of every
//! signing, encryption, MAC and key agreement spec, Sign and Verify (every signature checked by
//! OpenSSL with GetPublicKey's DER), RSAES-OAEP Encrypt/Decrypt (OpenSSL encrypts, KMS
//! decrypts), GenerateMac/VerifyMac, DeriveSharedSecret (OpenSSL derives the same secret),
//! GenerateDataKeyPair(WithoutPlaintext) (OpenSSL parses the private key), AWS's recorded
//! errors for wrong usages, and keys that still work after kill -9 and after SIGTERM.
//!
//! OpenSSL is `/usr/bin/openssl` (3.0: no ML-DSA, so ML-DSA keys get a KMS round trip only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeyMetadata, KeySpec,
    KeyUsageType, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
};
use kms_common::{assert_error, create_kms_key, describe, free_port, Emulator};
use serde_json::{json, Value};

const OPENSSL: &str = "/usr/bin/openssl";
const MESSAGE: &[u8] = b"a message that KMS signs and OpenSSL checks";
const RSA_ALGORITHMS: [&str; 6] = [
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
];

// ---------------------------------------------------------------------------------------------
// OpenSSL and files.

/// A temporary directory for the files OpenSSL reads and writes.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `bytes` to `name`; returns its path as OpenSSL takes it.
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        arg(&path)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn openssl(args: &[&str]) -> Output {
    Command::new(OPENSSL).args(args).output().unwrap()
}

/// Runs OpenSSL, which must succeed; returns its stdout.
fn openssl_ok(args: &[&str]) -> Vec<u8> {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether OpenSSL accepts `sig` as a signature of the message in `msg` under the public key
/// (DER SubjectPublicKeyInfo) in `pubkey`, for a KMS signing algorithm.
fn openssl_verifies(algorithm: &str, pubkey: &str, sig: &str, msg: &str) -> bool {
    let out = if algorithm == "ED25519_SHA_512" {
        openssl(&[
            "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", pubkey, "-keyform", "DER",
            "-sigfile", sig, "-in", msg,
        ])
    } else {
        let hash = format!("-sha{}", &algorithm[algorithm.len() - 3..]);
        let mut args = vec![
            "dgst",
            &hash,
            "-verify",
            pubkey,
            "-keyform",
            "DER",
            "-signature",
            sig,
        ];
        if algorithm.starts_with("RSASSA_PSS") {
            args.extend([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ]);
        }
        args.push(msg);
        openssl(&args)
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = out.status.success();
    assert_eq!(
        ok,
        stdout.contains("Verified") && !stdout.contains("Failure"),
        "openssl's status and words agree: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// KMS calls.

async fn create_key(kms: &aws_sdk_kms::Client, spec: &str, usage: &str) -> KeyMetadata {
    kms.create_key()
        .key_spec(KeySpec::from(spec))
        .key_usage(KeyUsageType::from(usage))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateKey {spec} {usage}: {e:?}"))
        .key_metadata()
        .unwrap()
        .clone()
}

async fn public_key(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<u8> {
    kms.get_public_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .public_key()
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn sign(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    algorithm: &str,
    message_type: MessageType,
    message: &[u8],
) -> Vec<u8> {
    let out = kms
        .sign()
        .key_id(key_id)
        .signing_algorithm(SigningAlgorithmSpec::from(algorithm))
        .message_type(message_type)
        .message(Blob::new(message))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Sign {algorithm}: {e:?}"));
    assert_eq!(out.signing_algorithm().unwrap().as_str(), algorithm);
    out.signature().unwrap().as_ref().to_vec()
}

async fn verify(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    algorithm: &str,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<
    aws_sdk_kms::operation::verify::VerifyOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::verify::VerifyError>,
> {
    kms.verify()
        .key_id(key_id)
        .signing_algorithm(SigningAlgorithmSpec::from(algorithm))
        .message_type(message_type)
        .message(Blob::new(message))
        .signature(Blob::new(signature))
        .send()
        .await
}

async fn generate_mac(kms: &aws_sdk_kms::Client, key_id: &str, alg: &str, msg: &[u8]) -> Vec<u8> {
    kms.generate_mac()
        .key_id(key_id)
        .mac_algorithm(MacAlgorithmSpec::from(alg))
        .message(Blob::new(msg))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GenerateMac {alg}: {e:?}"))
        .mac()
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn verify_mac(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    alg: &str,
    msg: &[u8],
    mac: &[u8],
) -> Result<
    aws_sdk_kms::operation::verify_mac::VerifyMacOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::verify_mac::VerifyMacError>,
> {
    kms.verify_mac()
        .key_id(key_id)
        .mac_algorithm(MacAlgorithmSpec::from(alg))
        .message(Blob::new(msg))
        .mac(Blob::new(mac))
        .send()
        .await
}

async fn derive(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    peer_public: &[u8],
) -> Result<
    aws_sdk_kms::operation::derive_shared_secret::DeriveSharedSecretOutput,
    aws_sdk_kms::error::SdkError<
        aws_sdk_kms::operation::derive_shared_secret::DeriveSharedSecretError,
    >,
> {
    kms.derive_shared_secret()
        .key_id(key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_public))
        .send()
        .await
}

/// An error AWS sends without a message (KMSInvalidSignatureException, ...).
fn assert_error_without_message(
    err: &(impl aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug),
    code: &str,
) {
    assert_error(err, code, None);
    assert_eq!(err.message(), None, "no message in {err:?}");
}

/// One raw KMS call (the emulator takes unsigned requests): (status, answer). For members the
/// SDK would not show, such as one that must be absent.
fn raw_kms(emulator: &Emulator, op: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&emulator.url("/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", &format!("TrentService.{op}"))
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// The deprecated CustomerMasterKeySpec, which KMS still reports for older specs.
#[allow(deprecated)]
fn cmk_spec(metadata: &KeyMetadata) -> Option<&str> {
    metadata.customer_master_key_spec().map(|s| s.as_str())
}

/// GetPublicKey's CustomerMasterKeySpec.
#[allow(deprecated)]
fn public_key_cmk_spec(
    out: &aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput,
) -> Option<&str> {
    out.customer_master_key_spec().map(|s| s.as_str())
}

fn names<T: AsRef<str>>(list: &[T]) -> Vec<&str> {
    list.iter().map(|a| a.as_ref()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Every signing spec and algorithm.

/// A signing spec: the algorithms KMS reports for it, and those this test signs with.
struct SigningCase {
    spec: &'static str,
    reported: &'static [&'static str],
    tested: &'static [&'static str],
    /// Whether OpenSSL 3.0 can check its signatures.
    openssl: bool,
}

const SIGNING_CASES: [SigningCase; 11] = [
    SigningCase {
        spec: "RSA_2048",
        reported: &RSA_ALGORITHMS,
        tested: &RSA_ALGORITHMS,
        openssl: true,
    },
    SigningCase {
        spec: "RSA_3072",
        reported: &RSA_ALGORITHMS,
        tested: &RSA_ALGORITHMS,
        openssl: true,
    },
    // RSA 4096 key generation is slow in a debug build: one key, two algorithms.
    SigningCase {
        spec: "RSA_4096",
        reported: &RSA_ALGORITHMS,
        tested: &["RSASSA_PSS_SHA_512", "RSASSA_PKCS1_V1_5_SHA_256"],
        openssl: true,
    },
    SigningCase {
        spec: "ECC_NIST_P256",
        reported: &["ECDSA_SHA_256"],
        tested: &["ECDSA_SHA_256"],
        openssl: true,
    },
    SigningCase {
        spec: "ECC_NIST_P384",
        reported: &["ECDSA_SHA_384"],
        tested: &["ECDSA_SHA_384"],
        openssl: true,
    },
    SigningCase {
        spec: "ECC_NIST_P521",
        reported: &["ECDSA_SHA_512"],
        tested: &["ECDSA_SHA_512"],
        openssl: true,
    },
    SigningCase {
        spec: "ECC_SECG_P256K1",
        reported: &["ECDSA_SHA_256"],
        tested: &["ECDSA_SHA_256"],
        openssl: true,
    },
    // ED25519_PH_SHA_512 is reported but not supported (aws-lc-rs has no Ed25519ph).
    SigningCase {
        spec: "ECC_NIST_EDWARDS25519",
        reported: &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
        tested: &["ED25519_SHA_512"],
        openssl: true,
    },
    SigningCase {
        spec: "ML_DSA_44",
        reported: &["ML_DSA_SHAKE_256"],
        tested: &["ML_DSA_SHAKE_256"],
        openssl: false,
    },
    SigningCase {
        spec: "ML_DSA_65",
        reported: &["ML_DSA_SHAKE_256"],
        tested: &["ML_DSA_SHAKE_256"],
        openssl: false,
    },
    SigningCase {
        spec: "ML_DSA_87",
        reported: &["ML_DSA_SHAKE_256"],
        tested: &["ML_DSA_SHAKE_256"],
        openssl: false,
    },
];

/// CustomerMasterKeySpec, deprecated, is reported for the specs its enum has: not for
/// Ed25519 or ML-DSA.
fn reports_customer_master_key_spec(spec: &str) -> bool {
    !(spec == "ECC_NIST_EDWARDS25519" || spec.starts_with("ML_DSA"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signing_spec_signs_what_kms_and_openssl_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let files = Files::new();
    let msg = files.write("msg", MESSAGE);

    // Key pairs are made concurrently (the emulator makes them on blocking threads).
    let created: Vec<KeyMetadata> = futures::future::join_all(
        SIGNING_CASES
            .iter()
            .map(|case| create_key(&kms, case.spec, "SIGN_VERIFY")),
    )
    .await;

    for (case, key) in SIGNING_CASES.iter().zip(&created) {
        let spec = case.spec;
        let key_id = key.key_id();
        // DescribeKey (and CreateKey) report the spec, usage and algorithms.
        for metadata in [key.clone(), describe(&kms, key_id).await] {
            assert_eq!(metadata.key_spec().map(|s| s.as_str()), Some(spec));
            assert_eq!(metadata.key_usage(), Some(&KeyUsageType::SignVerify));
            assert_eq!(
                names(metadata.signing_algorithms()),
                case.reported,
                "{spec}"
            );
            assert!(metadata.encryption_algorithms().is_empty(), "{spec}");
            assert!(metadata.mac_algorithms().is_empty(), "{spec}");
            assert!(metadata.key_agreement_algorithms().is_empty(), "{spec}");
            assert_eq!(
                cmk_spec(&metadata),
                reports_customer_master_key_spec(spec).then_some(spec),
            );
            // Asymmetric keys have no key material id.
            assert_eq!(metadata.current_key_material_id(), None, "{spec}");
            assert!(metadata.enabled());
        }

        let got = kms.get_public_key().key_id(key_id).send().await.unwrap();
        assert_eq!(got.key_id(), key.arn());
        assert_eq!(got.key_spec().map(|s| s.as_str()), Some(spec));
        assert_eq!(got.key_usage(), Some(&KeyUsageType::SignVerify));
        assert_eq!(names(got.signing_algorithms()), case.reported, "{spec}");
        assert!(got.encryption_algorithms().is_empty());
        assert_eq!(
            public_key_cmk_spec(&got),
            reports_customer_master_key_spec(spec).then_some(spec),
        );
        let der = got.public_key().unwrap().as_ref().to_vec();
        assert_eq!(der[0], 0x30, "{spec}: a DER SEQUENCE");
        let pubkey = files.write(&format!("{spec}.pub.der"), &der);
        if case.openssl {
            // OpenSSL reads it as a public key of the spec's kind.
            let text = String::from_utf8(openssl_ok(&[
                "pkey", "-pubin", "-inform", "DER", "-in", &pubkey, "-noout", "-text",
            ]))
            .unwrap();
            let expected = match spec {
                "RSA_2048" => "(2048 bit)",
                "RSA_3072" => "(3072 bit)",
                "RSA_4096" => "(4096 bit)",
                "ECC_NIST_P256" => "prime256v1",
                "ECC_NIST_P384" => "secp384r1",
                "ECC_NIST_P521" => "secp521r1",
                "ECC_SECG_P256K1" => "secp256k1",
                _ => "ED25519",
            };
            assert!(text.contains(expected), "{spec}: {text}");
        }

        for &algorithm in case.tested {
            let sig = sign(&kms, key_id, algorithm, MessageType::Raw, MESSAGE).await;
            let out = verify(&kms, key_id, algorithm, MessageType::Raw, MESSAGE, &sig)
                .await
                .unwrap_or_else(|e| panic!("{spec} {algorithm}: {e:?}"));
            assert!(out.signature_valid(), "{spec} {algorithm}");
            assert_eq!(out.key_id(), key.arn());
            assert_eq!(out.signing_algorithm().unwrap().as_str(), algorithm);

            // A changed message does not verify: AWS's error, without a message.
            let err = verify(
                &kms,
                key_id,
                algorithm,
                MessageType::Raw,
                b"a message that KMS signs and OpenSSL checkz",
                &sig,
            )
            .await
            .unwrap_err();
            assert_error_without_message(&err, "KMSInvalidSignatureException");

            if case.openssl {
                let sig_file = files.write(&format!("{spec}.{algorithm}.sig"), &sig);
                assert!(
                    openssl_verifies(algorithm, &pubkey, &sig_file, &msg),
                    "OpenSSL verifies {spec} {algorithm}"
                );
            }
        }
    }

    // Ed25519ph is reported but not supported (aws-lc-rs has no Ed25519ph).
    let ed = &created[7];
    assert_eq!(ed.key_spec(), Some(&KeySpec::EccNistEdwards25519));
    let err = kms
        .sign()
        .key_id(ed.key_id())
        .signing_algorithm(SigningAlgorithmSpec::Ed25519PhSha512)
        .message_type(MessageType::Digest)
        .message(Blob::new(
            ring::digest::digest(&ring::digest::SHA512, MESSAGE).as_ref(),
        ))
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "UnsupportedOperationException", None);
    // An algorithm of another spec.
    let err = kms
        .sign()
        .key_id(created[3].key_id())
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some("Algorithm RSASSA_PSS_SHA_256 is incompatible with key spec ECC_NIST_P256."),
    );
}

// ---------------------------------------------------------------------------------------------
// 2 and 8. DIGEST messages; Verify's bounds and DryRun; a disabled key.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_sign_as_their_messages_and_a_disabled_key_signs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let files = Files::new();
    let msg = files.write("msg", MESSAGE);
    let ec = create_key(&kms, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let rsa = create_key(&kms, "RSA_2048", "SIGN_VERIFY").await;
    let ec_pub = files.write("ec.der", &public_key(&kms, ec.key_id()).await);
    let rsa_pub = files.write("rsa.der", &public_key(&kms, rsa.key_id()).await);
    let digest = sha256(MESSAGE);

    for (key, pubkey, algorithm) in [
        (&ec, &ec_pub, "ECDSA_SHA_256"),
        (&rsa, &rsa_pub, "RSASSA_PSS_SHA_256"),
        (&rsa, &rsa_pub, "RSASSA_PKCS1_V1_5_SHA_256"),
    ] {
        let key_id = key.key_id();
        // A signature of the digest is one of the message: for KMS and for OpenSSL.
        let sig = sign(&kms, key_id, algorithm, MessageType::Digest, &digest).await;
        let sig_file = files.write(&format!("{algorithm}.sig"), &sig);
        assert!(openssl_verifies(algorithm, pubkey, &sig_file, &msg));
        assert!(
            verify(&kms, key_id, algorithm, MessageType::Raw, MESSAGE, &sig)
                .await
                .unwrap()
                .signature_valid()
        );
        // And a signature of the message verifies as its digest.
        let raw_sig = sign(&kms, key_id, algorithm, MessageType::Raw, MESSAGE).await;
        assert!(verify(
            &kms,
            key_id,
            algorithm,
            MessageType::Digest,
            &digest,
            &raw_sig
        )
        .await
        .unwrap()
        .signature_valid());
        // OpenSSL refuses the signature for another message (it checks, too).
        let other = files.write("other", b"another message");
        assert!(!openssl_verifies(algorithm, pubkey, &sig_file, &other));

        // A digest of the wrong length: AWS's text, for Sign and Verify.
        let expected = format!("Digest is invalid length for algorithm {algorithm}.");
        let long = [digest.clone(), vec![0]].concat();
        for bad in [&digest[..31], &long[..]] {
            let err = kms
                .sign()
                .key_id(key_id)
                .signing_algorithm(SigningAlgorithmSpec::from(algorithm))
                .message_type(MessageType::Digest)
                .message(Blob::new(bad))
                .send()
                .await
                .unwrap_err();
            assert_error(&err, "ValidationException", Some(&expected));
            let err = verify(&kms, key_id, algorithm, MessageType::Digest, bad, &sig)
                .await
                .unwrap_err();
            assert_error(&err, "ValidationException", Some(&expected));
        }
    }

    // An empty signature is not a signature that fails: a member out of its bounds.
    let err = verify(
        &kms,
        ec.key_id(),
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
        b"",
    )
    .await
    .unwrap_err();
    assert_error(
        &err,
        "ValidationException",
        Some("1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'signature' failed to satisfy constraint: Member must have length greater than or equal to 1"),
    );
    // DryRun (recorded text): checked after everything else, so a bad request says why.
    let dry_run = "The request would have succeeded, but the DryRun option is set.";
    let err = kms
        .sign()
        .key_id(ec.key_id())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .message(Blob::new(MESSAGE))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));
    let sig = sign(
        &kms,
        ec.key_id(),
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
    )
    .await;
    let err = kms
        .verify()
        .key_id(ec.key_id())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .message(Blob::new(MESSAGE))
        .signature(Blob::new(sig))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));

    // 8. A disabled key: DisabledException for Sign, Verify and GetPublicKey; enabled again,
    // it signs again.
    let key_id = ec.key_id();
    let arn = ec.arn().unwrap();
    let sig = sign(&kms, key_id, "ECDSA_SHA_256", MessageType::Raw, MESSAGE).await;
    kms.disable_key().key_id(key_id).send().await.unwrap();
    assert!(!describe(&kms, key_id).await.enabled());
    let disabled = format!("{arn} is disabled.");
    let err = kms
        .sign()
        .key_id(key_id)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DisabledException", Some(&disabled));
    let err = kms
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DisabledException", Some(&disabled));
    let err = verify(
        &kms,
        key_id,
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
        &sig,
    )
    .await
    .unwrap_err();
    assert_error(&err, "DisabledException", Some(&disabled));
    kms.enable_key().key_id(key_id).send().await.unwrap();
    assert!(verify(
        &kms,
        key_id,
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
        &sig
    )
    .await
    .unwrap()
    .signature_valid());
    sign(&kms, key_id, "ECDSA_SHA_256", MessageType::Raw, MESSAGE).await;
}

// ---------------------------------------------------------------------------------------------
// 3. RSA encryption.

async fn rsa_encrypt(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    algorithm: EncryptionAlgorithmSpec,
    plaintext: &[u8],
) -> Result<
    aws_sdk_kms::operation::encrypt::EncryptOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::encrypt::EncryptError>,
> {
    kms.encrypt()
        .key_id(key_id)
        .encryption_algorithm(algorithm)
        .plaintext(Blob::new(plaintext))
        .send()
        .await
}

async fn rsa_decrypt(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    algorithm: EncryptionAlgorithmSpec,
    ciphertext: &[u8],
) -> Result<
    aws_sdk_kms::operation::decrypt::DecryptOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::decrypt::DecryptError>,
> {
    kms.decrypt()
        .key_id(key_id)
        .encryption_algorithm(algorithm)
        .ciphertext_blob(Blob::new(ciphertext))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_decrypt_what_openssl_encrypts_within_aws_size_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let files = Files::new();
    let key = create_key(&kms, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let key_id = key.key_id();
    let metadata = describe(&kms, key_id).await;
    assert_eq!(metadata.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(
        names(metadata.encryption_algorithms()),
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(metadata.signing_algorithms().is_empty());
    assert_eq!(cmk_spec(&metadata), Some("RSA_2048"));
    let got = kms.get_public_key().key_id(key_id).send().await.unwrap();
    assert_eq!(
        names(got.encryption_algorithms()),
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(got.signing_algorithms().is_empty());
    let pubkey = files.write("pub.der", got.public_key().unwrap().as_ref());

    // OpenSSL encrypts the most RSAES_OAEP_SHA_256 takes (190 bytes); KMS decrypts it.
    let plaintext: Vec<u8> = (0..190u32).map(|i| (i * 7 % 251) as u8).collect();
    let input = files.write("plain", &plaintext);
    let output = arg(&files.path("cipher"));
    openssl_ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-keyform",
        "DER",
        "-inkey",
        &pubkey,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-in",
        &input,
        "-out",
        &output,
    ]);
    let ciphertext = files.read("cipher");
    assert_eq!(ciphertext.len(), 256);
    let out = rsa_decrypt(
        &kms,
        key_id,
        EncryptionAlgorithmSpec::RsaesOaepSha256,
        &ciphertext,
    )
    .await
    .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), plaintext.as_slice());
    assert_eq!(out.key_id(), key.arn());
    assert_eq!(
        out.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::RsaesOaepSha256)
    );
    // Under the other algorithm it does not decrypt.
    let err = rsa_decrypt(
        &kms,
        key_id,
        EncryptionAlgorithmSpec::RsaesOaepSha1,
        &ciphertext,
    )
    .await
    .unwrap_err();
    assert_error_without_message(&err, "InvalidCiphertextException");
    // Nor does a tampered ciphertext.
    let mut tampered = ciphertext.clone();
    tampered[100] ^= 0x01;
    let err = rsa_decrypt(
        &kms,
        key_id,
        EncryptionAlgorithmSpec::RsaesOaepSha256,
        &tampered,
    )
    .await
    .unwrap_err();
    assert_error_without_message(&err, "InvalidCiphertextException");

    // KMS round trips, up to AWS's limits: RSAES_OAEP_SHA_1 214 bytes, RSAES_OAEP_SHA_256 190.
    for (algorithm, max) in [
        (EncryptionAlgorithmSpec::RsaesOaepSha1, 214),
        (EncryptionAlgorithmSpec::RsaesOaepSha256, 190),
    ] {
        let plaintext = vec![0x5a; max];
        let encrypted = rsa_encrypt(&kms, key_id, algorithm.clone(), &plaintext)
            .await
            .unwrap();
        assert_eq!(encrypted.encryption_algorithm(), Some(&algorithm));
        assert_eq!(encrypted.key_id(), key.arn());
        let blob = encrypted.ciphertext_blob().unwrap().as_ref().to_vec();
        assert_eq!(blob.len(), 256);
        let decrypted = rsa_decrypt(&kms, key_id, algorithm.clone(), &blob)
            .await
            .unwrap();
        assert_eq!(
            decrypted.plaintext().unwrap().as_ref(),
            plaintext.as_slice()
        );
        // OAEP is randomised: the same plaintext encrypts differently.
        let again = rsa_encrypt(&kms, key_id, algorithm.clone(), &plaintext)
            .await
            .unwrap();
        assert_ne!(again.ciphertext_blob().unwrap().as_ref(), blob.as_slice());

        let err = rsa_encrypt(&kms, key_id, algorithm.clone(), &vec![0x5a; max + 1])
            .await
            .unwrap_err();
        assert_error(
            &err,
            "ValidationException",
            Some(&format!(
                "Algorithm {} and key spec RSA_2048 cannot encrypt data larger than {max} bytes.",
                algorithm.as_str()
            )),
        );
    }
    // A tampered KMS ciphertext does not decrypt either.
    let blob = rsa_encrypt(
        &kms,
        key_id,
        EncryptionAlgorithmSpec::RsaesOaepSha1,
        b"secret",
    )
    .await
    .unwrap()
    .ciphertext_blob()
    .unwrap()
    .as_ref()
    .to_vec();
    let mut tampered = blob.clone();
    tampered[0] ^= 0x80;
    let err = rsa_decrypt(
        &kms,
        key_id,
        EncryptionAlgorithmSpec::RsaesOaepSha1,
        &tampered,
    )
    .await
    .unwrap_err();
    assert_error_without_message(&err, "InvalidCiphertextException");
}

// ---------------------------------------------------------------------------------------------
// 4. HMAC keys.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_keys_generate_and_verify_macs_with_aws_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let message = b"some important message";
    let mut macs = Vec::new();
    for (spec, algorithm, len) in [
        ("HMAC_224", "HMAC_SHA_224", 28),
        ("HMAC_256", "HMAC_SHA_256", 32),
        ("HMAC_384", "HMAC_SHA_384", 48),
        ("HMAC_512", "HMAC_SHA_512", 64),
    ] {
        let key = create_key(&kms, spec, "GENERATE_VERIFY_MAC").await;
        let key_id = key.key_id();
        let metadata = describe(&kms, key_id).await;
        assert_eq!(metadata.key_spec().map(|s| s.as_str()), Some(spec));
        assert_eq!(metadata.key_usage(), Some(&KeyUsageType::GenerateVerifyMac));
        assert_eq!(names(metadata.mac_algorithms()), [algorithm]);
        assert!(metadata.signing_algorithms().is_empty());
        assert!(metadata.encryption_algorithms().is_empty());
        assert_eq!(cmk_spec(&metadata), Some(spec));
        assert_eq!(metadata.current_key_material_id(), None);

        let out = kms
            .generate_mac()
            .key_id(key_id)
            .mac_algorithm(MacAlgorithmSpec::from(algorithm))
            .message(Blob::new(&message[..]))
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), key.arn());
        assert_eq!(out.mac_algorithm().unwrap().as_str(), algorithm);
        let mac = out.mac().unwrap().as_ref().to_vec();
        assert_eq!(mac.len(), len, "{spec}");
        // HMAC is deterministic.
        assert_eq!(generate_mac(&kms, key_id, algorithm, message).await, mac);
        let ok = verify_mac(&kms, key_id, algorithm, message, &mac)
            .await
            .unwrap();
        assert!(ok.mac_valid());
        assert_eq!(ok.key_id(), key.arn());
        assert_eq!(ok.mac_algorithm().unwrap().as_str(), algorithm);
        // A different message, and a truncated MAC: AWS's error, without a message.
        let err = verify_mac(
            &kms,
            key_id,
            algorithm,
            b"some different important message",
            &mac,
        )
        .await
        .unwrap_err();
        assert_error_without_message(&err, "KMSInvalidMacException");
        let err = verify_mac(&kms, key_id, algorithm, message, &mac[..len - 1])
            .await
            .unwrap_err();
        assert_error_without_message(&err, "KMSInvalidMacException");
        // HMAC keys have no public key.
        let err = kms
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .unwrap_err();
        assert_error(&err, "UnsupportedOperationException", None);
        macs.push((key, algorithm, mac));
    }
    // Each key's MAC is its own: the HMAC_256 key does not verify another HMAC_256 key's MAC.
    let other = create_key(&kms, "HMAC_256", "GENERATE_VERIFY_MAC").await;
    let other_mac = generate_mac(&kms, other.key_id(), "HMAC_SHA_256", message).await;
    assert_ne!(other_mac, macs[1].2);
    let err = verify_mac(
        &kms,
        macs[1].0.key_id(),
        "HMAC_SHA_256",
        message,
        &other_mac,
    )
    .await
    .unwrap_err();
    assert_error_without_message(&err, "KMSInvalidMacException");

    // An algorithm of another spec (recorded, for both operations).
    let hmac_224 = macs[0].0.key_id();
    let hmac_256 = macs[1].0.key_id();
    let err = kms
        .generate_mac()
        .key_id(hmac_224)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(&message[..]))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some("Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224."),
    );
    let err = verify_mac(&kms, hmac_256, "HMAC_SHA_512", message, &macs[1].2)
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some("Algorithm HMAC_SHA_512 is incompatible with key spec HMAC_256."),
    );
    // An algorithm not in the enum (recorded).
    let not_in_enum = "1 validation error detected: Value 'INVALID' at 'macAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512]";
    let err = kms
        .generate_mac()
        .key_id(hmac_256)
        .mac_algorithm(MacAlgorithmSpec::from("INVALID"))
        .message(Blob::new(&message[..]))
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "ValidationException", Some(not_in_enum));
    let err = verify_mac(&kms, hmac_256, "INVALID", message, &macs[1].2)
        .await
        .unwrap_err();
    assert_error(&err, "ValidationException", Some(not_in_enum));
    // An empty MAC is a member out of its bounds, not a MAC that fails.
    let err = verify_mac(&kms, hmac_256, "HMAC_SHA_256", message, b"")
        .await
        .unwrap_err();
    assert_error(
        &err,
        "ValidationException",
        Some("1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'mac' failed to satisfy constraint: Member must have length greater than or equal to 1"),
    );
    // DryRun (recorded text).
    let dry_run = "The request would have succeeded, but the DryRun option is set.";
    let err = kms
        .generate_mac()
        .key_id(hmac_256)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(&message[..]))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));
    let err = kms
        .verify_mac()
        .key_id(hmac_256)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(&message[..]))
        .mac(Blob::new(macs[1].2.clone()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));
    // A key id that is no key id (recorded).
    let err = verify_mac(&kms, "key_id", "HMAC_SHA_256", message, &macs[1].2)
        .await
        .unwrap_err();
    assert_error(&err, "NotFoundException", Some("Invalid keyId 'key_id'"));
    let err = kms
        .generate_mac()
        .key_id("key_id")
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(&message[..]))
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "NotFoundException", Some("Invalid keyId 'key_id'"));
}

// ---------------------------------------------------------------------------------------------
// 5. Keys used for what their usage is not.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refuse_what_their_usage_is_not_with_aws_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let symmetric = create_kms_key(&kms).await;
    let rsa_sign = create_key(&kms, "RSA_2048", "SIGN_VERIFY").await;
    let rsa_encrypt_key = create_key(&kms, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let ec_sign = create_key(&kms, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let ec_agree = create_key(&kms, "ECC_NIST_P256", "KEY_AGREEMENT").await;
    let hmac = create_key(&kms, "HMAC_224", "GENERATE_VERIFY_MAC").await;
    let usage_text = |key: &KeyMetadata, usage: &str, op: &str| {
        format!(
            "{} key usage is {usage} which is not valid for {op}.",
            key.arn().unwrap()
        )
    };

    // Encrypt with a SIGN_VERIFY key (recorded: no algorithm named).
    let err = kms
        .encrypt()
        .key_id(rsa_sign.key_id())
        .plaintext(Blob::new("test message 123!@#"))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&rsa_sign, "SIGN_VERIFY", "Encrypt")),
    );
    // Sign with a symmetric key and with an HMAC key (recorded).
    let err = kms
        .sign()
        .key_id(symmetric.key_id())
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&symmetric, "ENCRYPT_DECRYPT", "Sign")),
    );
    let err = kms
        .sign()
        .key_id(hmac.key_id())
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new("test message 123!@#"))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&hmac, "GENERATE_VERIFY_MAC", "Sign")),
    );
    // Verify with a symmetric key (recorded).
    let err = verify(
        &kms,
        symmetric.key_id(),
        "ECDSA_SHA_256",
        MessageType::Raw,
        b"test message",
        b"random text",
    )
    .await
    .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&symmetric, "ENCRYPT_DECRYPT", "Verify")),
    );
    // GenerateMac with a symmetric key (recorded).
    let err = kms
        .generate_mac()
        .key_id(symmetric.key_id())
        .mac_algorithm(MacAlgorithmSpec::HmacSha224)
        .message(Blob::new("some important message"))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&symmetric, "ENCRYPT_DECRYPT", "GenerateMac")),
    );
    // Decrypt of a symmetric ciphertext naming an HMAC key (recorded).
    let blob = kms
        .encrypt()
        .key_id(symmetric.key_id())
        .plaintext(Blob::new("test message 123!@#"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let err = kms
        .decrypt()
        .key_id(hmac.key_id())
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "IncorrectKeyException",
        Some("The key ID in the request does not identify a CMK that can perform this operation."),
    );
    // DeriveSharedSecret with a SIGN_VERIFY key and with a symmetric key (recorded).
    let peer = public_key(&kms, ec_agree.key_id()).await;
    let err = derive(&kms, ec_sign.key_id(), &peer).await.unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&ec_sign, "SIGN_VERIFY", "DeriveSharedSecret")),
    );
    let err = derive(&kms, symmetric.key_id(), &peer).await.unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(
            &symmetric,
            "ENCRYPT_DECRYPT",
            "DeriveSharedSecret",
        )),
    );
    let err = derive(&kms, rsa_encrypt_key.key_id(), &peer)
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(
            &rsa_encrypt_key,
            "ENCRYPT_DECRYPT",
            "DeriveSharedSecret",
        )),
    );
    // A key agreement algorithm not in the enum (recorded).
    let err = kms
        .derive_shared_secret()
        .key_id(ec_agree.key_id())
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::from("INVALID"))
        .public_key(Blob::new(peer.clone()))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "ValidationException",
        Some("1 validation error detected: Value 'INVALID' at 'keyAgreementAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [ECDH]"),
    );
    // A key agreement key neither signs nor encrypts.
    let err = kms
        .sign()
        .key_id(ec_agree.key_id())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&ec_agree, "KEY_AGREEMENT", "Sign")),
    );
    // An RSA ENCRYPT_DECRYPT key does not sign.
    let err = kms
        .sign()
        .key_id(rsa_encrypt_key.key_id())
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new(MESSAGE))
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&usage_text(&rsa_encrypt_key, "ENCRYPT_DECRYPT", "Sign")),
    );
    // Asymmetric keys make no data keys.
    let err = kms
        .generate_data_key()
        .key_id(rsa_sign.key_id())
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "InvalidKeyUsageException", None);

    // CreateKey: an HMAC key without KeyUsage, KEY_AGREEMENT for RSA (recorded); SM2.
    let err = kms
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "ValidationException",
        Some("You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."),
    );
    let err = kms
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "ValidationException",
        Some("KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048"),
    );
    let err = kms
        .create_key()
        .key_spec(KeySpec::Sm2)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "UnsupportedOperationException", None);

    // Rotation is for symmetric encryption keys only (recorded: no message).
    for key in [&rsa_sign, &ec_agree, &hmac] {
        let err = kms
            .rotate_key_on_demand()
            .key_id(key.key_id())
            .send()
            .await
            .unwrap_err();
        assert_error_without_message(&err, "UnsupportedOperationException");
        let err = kms
            .enable_key_rotation()
            .key_id(key.key_id())
            .send()
            .await
            .unwrap_err();
        assert_error_without_message(&err, "UnsupportedOperationException");
        let err = kms
            .disable_key_rotation()
            .key_id(key.key_id())
            .send()
            .await
            .unwrap_err();
        assert_error_without_message(&err, "UnsupportedOperationException");
        // Their rotation status is always false, as AWS documents.
        let status = kms
            .get_key_rotation_status()
            .key_id(key.key_id())
            .send()
            .await
            .unwrap();
        assert!(!status.key_rotation_enabled());
    }
    // Nothing above changed a key: each still does what it is for.
    sign(
        &kms,
        rsa_sign.key_id(),
        "RSASSA_PSS_SHA_256",
        MessageType::Raw,
        MESSAGE,
    )
    .await;
    generate_mac(&kms, hmac.key_id(), "HMAC_SHA_224", MESSAGE).await;
    let plain = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(
        plain.plaintext().unwrap().as_ref(),
        b"test message 123!@#".as_slice()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. DeriveSharedSecret.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_shared_secret_agrees_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let files = Files::new();
    let key = create_key(&kms, "ECC_NIST_P256", "KEY_AGREEMENT").await;
    let key_id = key.key_id();
    let metadata = describe(&kms, key_id).await;
    assert_eq!(metadata.key_usage(), Some(&KeyUsageType::KeyAgreement));
    assert_eq!(names(metadata.key_agreement_algorithms()), ["ECDH"]);
    assert!(metadata.signing_algorithms().is_empty());
    assert!(metadata.encryption_algorithms().is_empty());
    let got = kms.get_public_key().key_id(key_id).send().await.unwrap();
    assert_eq!(names(got.key_agreement_algorithms()), ["ECDH"]);
    assert_eq!(got.key_usage(), Some(&KeyUsageType::KeyAgreement));
    let kms_pub = files.write("kms.der", got.public_key().unwrap().as_ref());

    // The peer's key, made by OpenSSL.
    let peer_pem = arg(&files.path("peer.pem"));
    openssl_ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &peer_pem,
    ]);
    let peer_pub = openssl_ok(&["pkey", "-in", &peer_pem, "-pubout", "-outform", "DER"]);
    let out = derive(&kms, key_id, &peer_pub).await.unwrap();
    assert_eq!(out.key_id(), key.arn());
    assert_eq!(
        out.key_agreement_algorithm(),
        Some(&KeyAgreementAlgorithmSpec::Ecdh)
    );
    assert_eq!(out.key_origin().map(|o| o.as_str()), Some("AWS_KMS"));
    let secret = out.shared_secret().unwrap().as_ref().to_vec();
    assert_eq!(secret.len(), 32);
    let expected = openssl_ok(&[
        "pkeyutl",
        "-derive",
        "-inkey",
        &peer_pem,
        "-peerkey",
        &kms_pub,
        "-peerform",
        "DER",
    ]);
    assert_eq!(secret, expected, "KMS and OpenSSL derive the same secret");
    // The same peer, the same secret.
    let again = derive(&kms, key_id, &peer_pub).await.unwrap();
    assert_eq!(again.shared_secret().unwrap().as_ref(), secret.as_slice());

    // Not a public key (recorded: a ValidationException without a message); nor is a key on
    // another curve, nor a DER SEQUENCE of garbage.
    let err = derive(&kms, key_id, b"InvalidPublicKey").await.unwrap_err();
    assert_error_without_message(&err, "ValidationException");
    let p384_pem = arg(&files.path("p384.pem"));
    openssl_ok(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        &p384_pem,
    ]);
    let p384_pub = openssl_ok(&["pkey", "-in", &p384_pem, "-pubout", "-outform", "DER"]);
    let err = derive(&kms, key_id, &p384_pub).await.unwrap_err();
    assert_error(&err, "ValidationException", None);
    let err = derive(&kms, key_id, b"\x30\x03\x02\x01\x01")
        .await
        .unwrap_err();
    assert_error(&err, "ValidationException", None);
    // DryRun (recorded text).
    let err = kms
        .derive_shared_secret()
        .key_id(key_id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer_pub.clone()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "DryRunOperationException",
        Some("The request would have succeeded, but the DryRun option is set."),
    );
}

// ---------------------------------------------------------------------------------------------
// 7. GenerateDataKeyPair.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_pairs_are_pkcs8_that_openssl_reads_and_decrypt_under_their_context() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let files = Files::new();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();
    let arn = key.arn().unwrap();
    let context = ("purpose", "data-key-pair-test");

    for (spec, openssl_name) in [
        (DataKeyPairSpec::Rsa2048, "(2048 bit"),
        (DataKeyPairSpec::EccNistP256, "prime256v1"),
        (DataKeyPairSpec::EccNistEdwards25519, "ED25519"),
    ] {
        let name = spec.as_str().to_string();
        let pair = kms
            .generate_data_key_pair()
            .key_id(key_id)
            .key_pair_spec(spec.clone())
            .encryption_context(context.0, context.1)
            .send()
            .await
            .unwrap();
        assert_eq!(pair.key_id(), Some(arn));
        assert_eq!(pair.key_pair_spec(), Some(&spec));
        let private = pair.private_key_plaintext().unwrap().as_ref().to_vec();
        let public = pair.public_key().unwrap().as_ref().to_vec();
        let blob = pair
            .private_key_ciphertext_blob()
            .unwrap()
            .as_ref()
            .to_vec();

        // OpenSSL reads the private key as PKCS#8 DER, and its public key is the one returned.
        let private_file = files.write(&format!("{name}.key.der"), &private);
        let pem = String::from_utf8(openssl_ok(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &private_file,
        ]))
        .unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let text = String::from_utf8(openssl_ok(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &private_file,
            "-noout",
            "-text",
        ]))
        .unwrap();
        assert!(text.contains(openssl_name), "{name}: {text}");
        let derived_public = openssl_ok(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &private_file,
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert_eq!(derived_public, public, "{name}");

        // The ciphertext decrypts to the private key under the same context, not without it.
        let decrypted = kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .encryption_context(context.0, context.1)
            .send()
            .await
            .unwrap();
        assert_eq!(decrypted.plaintext().unwrap().as_ref(), private.as_slice());
        assert_eq!(decrypted.key_id(), Some(arn));
        let err = kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .key_id(key_id)
            .send()
            .await
            .unwrap_err();
        assert_error_without_message(&err, "InvalidCiphertextException");

        // WithoutPlaintext: no private key in the answer; the blob still holds one that
        // matches the public key.
        let (status, answer) = raw_kms(
            &emulator,
            "GenerateDataKeyPairWithoutPlaintext",
            &json!({
                "KeyId": key_id,
                "KeyPairSpec": name,
                "EncryptionContext": {"purpose": "data-key-pair-test"},
            }),
        );
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("PrivateKeyPlaintext").is_none(), "{answer}");
        assert_eq!(answer["KeyId"], arn);
        assert_eq!(answer["KeyPairSpec"], name);
        let without = kms
            .generate_data_key_pair_without_plaintext()
            .key_id(key_id)
            .key_pair_spec(spec.clone())
            .encryption_context(context.0, context.1)
            .send()
            .await
            .unwrap();
        let public = without.public_key().unwrap().as_ref().to_vec();
        let private = kms
            .decrypt()
            .ciphertext_blob(without.private_key_ciphertext_blob().unwrap().clone())
            .encryption_context(context.0, context.1)
            .send()
            .await
            .unwrap()
            .plaintext()
            .unwrap()
            .as_ref()
            .to_vec();
        let private_file = files.write(&format!("{name}.without.der"), &private);
        let derived_public = openssl_ok(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &private_file,
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert_eq!(derived_public, public, "{name} without plaintext");
    }

    // DryRun (recorded) for both operations.
    let dry_run = "The request would have succeeded, but the DryRun option is set.";
    let err = kms
        .generate_data_key_pair()
        .key_id(key_id)
        .key_pair_spec(DataKeyPairSpec::Rsa2048)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));
    let err = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(key_id)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "DryRunOperationException", Some(dry_run));

    // An asymmetric key protects no data key pair.
    let signing = create_key(&kms, "ECC_NIST_P256", "SIGN_VERIFY").await;
    let err = kms
        .generate_data_key_pair()
        .key_id(signing.key_id())
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        "InvalidKeyUsageException",
        Some(&format!(
            "{} key usage is SIGN_VERIFY which is not valid for GenerateDataKeyPair.",
            signing.arn().unwrap()
        )),
    );
    let rsa_encrypt_key = create_key(&kms, "RSA_2048", "ENCRYPT_DECRYPT").await;
    let err = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(rsa_encrypt_key.key_id())
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "InvalidKeyUsageException", None);
}

// ---------------------------------------------------------------------------------------------
// 9. Durability.

/// What one restart must keep: keys, signatures, MACs, public keys and a shared secret.
struct Kept {
    rsa: String,
    rsa_sig: Vec<u8>,
    ed: String,
    ed_sig: Vec<u8>,
    hmac: String,
    mac: Vec<u8>,
    ecdh: String,
    peer_pub: Vec<u8>,
    secret: Vec<u8>,
    public_keys: Vec<(String, Vec<u8>)>,
}

async fn check_kept(kms: &aws_sdk_kms::Client, kept: &Kept, when: &str) {
    for (key_id, bytes) in &kept.public_keys {
        assert_eq!(&public_key(kms, key_id).await, bytes, "{when}: {key_id}");
    }
    for (key_id, alg, sig) in [
        (&kept.rsa, "RSASSA_PSS_SHA_256", &kept.rsa_sig),
        (&kept.ed, "ED25519_SHA_512", &kept.ed_sig),
    ] {
        let out = verify(kms, key_id, alg, MessageType::Raw, MESSAGE, sig)
            .await
            .unwrap_or_else(|e| panic!("{when}: {alg}: {e:?}"));
        assert!(out.signature_valid(), "{when}: {alg}");
        // And the key still signs.
        let new_sig = sign(kms, key_id, alg, MessageType::Raw, b"after").await;
        assert!(
            verify(kms, key_id, alg, MessageType::Raw, b"after", &new_sig)
                .await
                .unwrap()
                .signature_valid()
        );
    }
    assert!(
        verify_mac(kms, &kept.hmac, "HMAC_SHA_256", MESSAGE, &kept.mac)
            .await
            .unwrap_or_else(|e| panic!("{when}: VerifyMac: {e:?}"))
            .mac_valid(),
        "{when}"
    );
    assert_eq!(
        generate_mac(kms, &kept.hmac, "HMAC_SHA_256", MESSAGE).await,
        kept.mac,
        "{when}: the same HMAC key"
    );
    let secret = derive(kms, &kept.ecdh, &kept.peer_pub)
        .await
        .unwrap()
        .shared_secret()
        .unwrap()
        .as_ref()
        .to_vec();
    assert_eq!(secret, kept.secret, "{when}: the same ECDH key");
    for (key_id, spec, usage) in [
        (&kept.rsa, KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (
            &kept.ed,
            KeySpec::EccNistEdwards25519,
            KeyUsageType::SignVerify,
        ),
        (
            &kept.hmac,
            KeySpec::Hmac256,
            KeyUsageType::GenerateVerifyMac,
        ),
        (&kept.ecdh, KeySpec::EccNistP256, KeyUsageType::KeyAgreement),
    ] {
        let metadata = describe(kms, key_id).await;
        assert_eq!(metadata.key_spec(), Some(&spec), "{when}");
        assert_eq!(metadata.key_usage(), Some(&usage), "{when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_and_hmac_keys_survive_kill_9_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let files = Files::new();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();

    let rsa = create_key(&kms, "RSA_2048", "SIGN_VERIFY").await;
    let ecdh = create_key(&kms, "ECC_NIST_P256", "KEY_AGREEMENT").await;
    let hmac = create_key(&kms, "HMAC_256", "GENERATE_VERIFY_MAC").await;
    let ed = create_key(&kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY").await;
    let peer_pem = arg(&files.path("peer.pem"));
    openssl_ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &peer_pem,
    ]);
    let peer_pub = openssl_ok(&["pkey", "-in", &peer_pem, "-pubout", "-outform", "DER"]);
    let mut public_keys = Vec::new();
    for key in [&rsa, &ecdh, &ed] {
        let id = key.key_id().to_string();
        let bytes = public_key(&kms, &id).await;
        public_keys.push((id, bytes));
    }
    let kept = Kept {
        rsa_sig: sign(
            &kms,
            rsa.key_id(),
            "RSASSA_PSS_SHA_256",
            MessageType::Raw,
            MESSAGE,
        )
        .await,
        ed_sig: sign(
            &kms,
            ed.key_id(),
            "ED25519_SHA_512",
            MessageType::Raw,
            MESSAGE,
        )
        .await,
        mac: generate_mac(&kms, hmac.key_id(), "HMAC_SHA_256", MESSAGE).await,
        secret: derive(&kms, ecdh.key_id(), &peer_pub)
            .await
            .unwrap()
            .shared_secret()
            .unwrap()
            .as_ref()
            .to_vec(),
        rsa: rsa.key_id().to_string(),
        ed: ed.key_id().to_string(),
        hmac: hmac.key_id().to_string(),
        ecdh: ecdh.key_id().to_string(),
        peer_pub,
        public_keys,
    };
    // OpenSSL agrees before any restart, so "the same" below means the right bytes.
    let kms_pub = files.write("ecdh.der", &kept.public_keys[1].1);
    let expected = openssl_ok(&[
        "pkeyutl",
        "-derive",
        "-inkey",
        &peer_pem,
        "-peerkey",
        &kms_pub,
        "-peerform",
        "DER",
    ]);
    assert_eq!(expected, kept.secret);
    check_kept(&kms, &kept, "before any restart").await;

    // kill -9, then the same data directory.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    check_kept(&kms, &kept, "after kill -9").await;
    // A key made after the crash survives the clean stop as well.
    let late = create_key(&kms, "ECC_SECG_P256K1", "SIGN_VERIFY").await;
    let late_pub = public_key(&kms, late.key_id()).await;
    let late_sig = sign(
        &kms,
        late.key_id(),
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
    )
    .await;

    // SIGTERM, then the same data directory.
    emulator.stop();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    check_kept(&kms, &kept, "after SIGTERM").await;
    assert_eq!(public_key(&kms, late.key_id()).await, late_pub);
    assert!(verify(
        &kms,
        late.key_id(),
        "ECDSA_SHA_256",
        MessageType::Raw,
        MESSAGE,
        &late_sig
    )
    .await
    .unwrap()
    .signature_valid());
    let keys = kms.list_keys().send().await.unwrap();
    assert_eq!(keys.keys().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encrypt_moves_data_between_symmetric_and_rsa_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let kms = emulator.kms_without_retries();
    let symmetric = kms.create_key().send().await.unwrap();
    let symmetric = symmetric.key_metadata().unwrap().arn().unwrap().to_string();
    let rsa = kms
        .create_key()
        .key_spec(KeySpec::Rsa3072)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap();
    let rsa = rsa.key_metadata().unwrap().arn().unwrap().to_string();

    // Symmetric to RSA: the result decrypts with the RSA key and the named algorithm.
    let blob = kms
        .encrypt()
        .key_id(&symmetric)
        .plaintext(Blob::new("moving"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    let moved = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .destination_key_id(&rsa)
        .destination_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.key_id(), Some(rsa.as_str()));
    assert_eq!(moved.source_key_id(), Some(symmetric.as_str()));
    assert_eq!(
        moved.destination_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::RsaesOaepSha256)
    );
    assert!(moved.source_key_material_id().is_some());
    assert!(moved.destination_key_material_id().is_none());
    let rsa_blob = moved.ciphertext_blob().unwrap().clone();
    let plain = kms
        .decrypt()
        .key_id(&rsa)
        .ciphertext_blob(rsa_blob.clone())
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"moving");

    // RSA back to symmetric, naming the source key and its algorithm.
    let back = kms
        .re_encrypt()
        .ciphertext_blob(rsa_blob.clone())
        .source_key_id(&rsa)
        .source_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .destination_key_id(&symmetric)
        .send()
        .await
        .unwrap();
    assert_eq!(back.source_key_id(), Some(rsa.as_str()));
    assert_eq!(
        back.source_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::RsaesOaepSha256)
    );
    let plain = kms
        .decrypt()
        .ciphertext_blob(back.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"moving");

    // The wrong source algorithm does not decrypt; none at all is the symmetric one.
    let err = kms
        .re_encrypt()
        .ciphertext_blob(rsa_blob.clone())
        .source_key_id(&rsa)
        .source_encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .destination_key_id(&symmetric)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidCiphertextException",
        None,
    );
    let err = kms
        .re_encrypt()
        .ciphertext_blob(rsa_blob)
        .source_key_id(&rsa)
        .destination_key_id(&symmetric)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidKeyUsageException",
        Some("Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_3072."),
    );
}

/// The raw key inside a DER SubjectPublicKeyInfo, checked to be of `oid`.
fn spki_key(der: &[u8], oid: &str) -> Vec<u8> {
    let info = spki::SubjectPublicKeyInfoRef::try_from(der).unwrap();
    assert_eq!(info.algorithm.oid.to_string(), oid);
    info.subject_public_key.raw_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_kem_secrets_agree_with_aws_lc_outside_kms() {
    use aws_lc_rs::kem::{DecapsulationKey, EncapsulationKey, ML_KEM_768};
    use aws_sdk_kms::types::EncapsulationAlgorithmSpec;
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let kms = emulator.kms_without_retries();
    let key = kms
        .create_key()
        .key_spec(KeySpec::MlKem768)
        .key_usage(KeyUsageType::EncapsulateDecapsulate)
        .send()
        .await
        .unwrap();
    let meta = key.key_metadata().unwrap();
    assert_eq!(
        meta.encapsulation_algorithms(),
        [EncapsulationAlgorithmSpec::MlKem]
    );
    #[allow(deprecated)] // KMS still reports it, for the specs its enum has.
    let cmk_spec = meta.customer_master_key_spec();
    assert!(cmk_spec.is_none());
    let key_id = meta.key_id().to_string();

    // Encapsulated outside KMS with GetPublicKey's key: KMS decapsulates the same secret.
    let public = kms.get_public_key().key_id(&key_id).send().await.unwrap();
    let raw = spki_key(
        public.public_key().unwrap().as_ref(),
        "2.16.840.1.101.3.4.4.2",
    );
    let (ciphertext, secret) = EncapsulationKey::new(&ML_KEM_768, &raw)
        .unwrap()
        .encapsulate()
        .unwrap();
    let decapsulated = kms
        .decapsulate()
        .key_id(&key_id)
        .encapsulation_algorithm(EncapsulationAlgorithmSpec::MlKem)
        .shared_secret_ciphertext_blob(Blob::new(ciphertext.as_ref()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        decapsulated.shared_secret().unwrap().as_ref(),
        secret.as_ref()
    );
    // KMS's own Encapsulate round-trips, and a cut ciphertext is refused.
    let encapsulated = kms
        .encapsulate()
        .key_id(&key_id)
        .encapsulation_algorithm(EncapsulationAlgorithmSpec::MlKem)
        .send()
        .await
        .unwrap();
    let blob = encapsulated
        .shared_secret_ciphertext_blob()
        .unwrap()
        .clone();
    let again = kms
        .decapsulate()
        .key_id(&key_id)
        .encapsulation_algorithm(EncapsulationAlgorithmSpec::MlKem)
        .shared_secret_ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.shared_secret(), encapsulated.shared_secret());
    let err = kms
        .decapsulate()
        .key_id(&key_id)
        .encapsulation_algorithm(EncapsulationAlgorithmSpec::MlKem)
        .shared_secret_ciphertext_blob(Blob::new(&blob.as_ref()[1..]))
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidCiphertextException",
        None,
    );

    // An ML-KEM data key pair: PKCS#8 whose key decapsulates what its public key encapsulates.
    let symmetric = kms.create_key().send().await.unwrap();
    let pair = kms
        .generate_data_key_pair()
        .key_id(symmetric.key_metadata().unwrap().key_id())
        .key_pair_spec(DataKeyPairSpec::MlKem768)
        .send()
        .await
        .unwrap();
    let raw_public = spki_key(
        pair.public_key().unwrap().as_ref(),
        "2.16.840.1.101.3.4.4.2",
    );
    let private =
        pkcs8::PrivateKeyInfo::try_from(pair.private_key_plaintext().unwrap().as_ref()).unwrap();
    assert_eq!(private.algorithm.oid.to_string(), "2.16.840.1.101.3.4.4.2");
    // ML-KEM-PrivateKey's expandedKey choice: an OCTET STRING.
    let expanded =
        <spki::der::asn1::OctetStringRef as spki::der::Decode>::from_der(private.private_key)
            .unwrap();
    let (ciphertext, secret) = EncapsulationKey::new(&ML_KEM_768, &raw_public)
        .unwrap()
        .encapsulate()
        .unwrap();
    let local = DecapsulationKey::new(&ML_KEM_768, expanded.as_bytes())
        .unwrap()
        .decapsulate(ciphertext.as_ref().into())
        .unwrap();
    assert_eq!(local.as_ref(), secret.as_ref());
}
