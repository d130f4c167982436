//! Whatever a client sends, the KMS endpoint answers with an AWS-shaped JSON error (`__type`,
//! `message`, status 400), never a panic, an HTML page or a dropped connection, and changes
//! nothing. Raw HTTP here, since an SDK would refuse to send most of this.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use kms_common::*;
use serde_json::Value;

/// Sends a raw request; returns the status and the parsed JSON body (panics if not JSON).
fn send(port: u16, method: &str, path: &str, target: Option<&str>, body: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut response = match method {
        "GET" => agent.get(&url).call().unwrap(),
        _ => {
            let mut request = agent
                .post(&url)
                .header("content-type", "application/x-amz-json-1.1");
            if let Some(t) = target {
                request = request.header("x-amz-target", t);
            }
            request.send(body).unwrap()
        }
    };
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(10_000_000)
        .read_to_string()
        .unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

fn assert_aws_error(answer: (u16, Value), status: u16, error_type: &str) {
    let (got_status, body) = answer;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["__type"], error_type, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn malformed_requests_get_aws_shaped_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let port = emu.port;
    let kms = |op: &str, body: &str| {
        send(
            port,
            "POST",
            "/",
            Some(&format!("TrentService.{op}")),
            body.as_bytes(),
        )
    };

    // A key to aim at.
    let (status, created) = kms("CreateKey", "{}");
    assert_eq!(status, 200);
    let key_id = created["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();

    // Unknown operations, services and paths.
    assert_aws_error(
        kms("DoSomethingElse", "{}"),
        400,
        "UnknownOperationException",
    );
    assert_aws_error(
        send(port, "POST", "/", None, b"{}"),
        400,
        "UnknownOperationException",
    );
    assert_aws_error(
        send(port, "POST", "/", Some("NoSuchService.Op"), b"{}"),
        400,
        "UnknownOperationException",
    );
    assert_aws_error(
        send(port, "GET", "/", None, b""),
        400,
        "UnknownOperationException",
    );
    assert_aws_error(
        send(port, "GET", "/index.html", None, b""),
        400,
        "UnknownOperationException",
    );

    // Bodies that are not JSON, not an object, or of the wrong member types.
    assert_aws_error(
        kms("Encrypt", "not json at all"),
        400,
        "SerializationException",
    );
    assert_aws_error(kms("Encrypt", "[1,2,3]"), 400, "SerializationException");
    assert_aws_error(
        kms("Encrypt", r#"{"KeyId": 5, "Plaintext": "aGk="}"#),
        400,
        "SerializationException",
    );
    assert_aws_error(
        kms("CreateKey", r#"{"Tags": "oops"}"#),
        400,
        "SerializationException",
    );
    assert_aws_error(
        send(
            port,
            "POST",
            "/",
            Some("TrentService.Encrypt"),
            &[0xff, 0xfe, 0x00, 0x81],
        ),
        400,
        "SerializationException",
    );

    // Missing required members and out-of-range values: KMS's validation errors.
    assert_aws_error(
        kms("Encrypt", r#"{"Plaintext": "aGk="}"#),
        400,
        "ValidationException",
    );
    assert_aws_error(
        kms("Encrypt", &format!(r#"{{"KeyId": "{key_id}"}}"#)),
        400,
        "ValidationException",
    );
    let big = "A".repeat(8192);
    assert_aws_error(
        kms(
            "Encrypt",
            &format!(r#"{{"KeyId": "{key_id}", "Plaintext": "{big}"}}"#),
        ),
        400,
        "ValidationException",
    );
    assert_aws_error(
        kms("GenerateRandom", r#"{"NumberOfBytes": 0}"#),
        400,
        "ValidationException",
    );
    assert_aws_error(
        kms("ListKeys", r#"{"Limit": 100000}"#),
        400,
        "ValidationException",
    );
    assert_aws_error(
        kms("CreateKey", r#"{"KeySpec": "AES-256"}"#),
        400,
        "ValidationException",
    );

    // Blobs that are not base64, and ciphertexts that are not ours.
    assert_aws_error(
        kms(
            "Encrypt",
            &format!(r#"{{"KeyId": "{key_id}", "Plaintext": "***"}}"#),
        ),
        400,
        "SerializationException",
    );
    // AWS answers this one without a message (recorded).
    let (status, body) = kms("Decrypt", r#"{"CiphertextBlob": "aGVsbG8gd29ybGQ="}"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "InvalidCiphertextException", "{body}");
    assert!(body.get("message").is_none(), "{body}");

    // Unknown and malformed key ids.
    assert_aws_error(
        kms("DescribeKey", r#"{"KeyId": "not-a-key"}"#),
        400,
        "NotFoundException",
    );
    assert_aws_error(
        kms("DescribeKey", r#"{"KeyId": "arn:aws:s3:::bucket"}"#),
        400,
        "InvalidArnException",
    );
    assert_aws_error(
        kms("DescribeKey", r#"{"KeyId": "alias/none"}"#),
        400,
        "NotFoundException",
    );

    // A body over the limit.
    let huge = format!(r#"{{"Description": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    assert_aws_error(kms("CreateKey", &huge), 400, "ValidationException");

    // The control API answers bad input the same way.
    assert_aws_error(
        send(
            port,
            "POST",
            "/_hsmkms/clock",
            None,
            b"{\"advanceSeconds\": -5}",
        ),
        400,
        "ValidationException",
    );
    assert_aws_error(
        send(port, "POST", "/_hsmkms/clock", None, b"garbage"),
        400,
        "ValidationException",
    );
    assert_aws_error(
        send(
            port,
            "POST",
            "/_hsmkms/faults",
            None,
            b"{\"hsmId\": \"hsm-none\", \"action\": \"stop\"}",
        ),
        400,
        "ValidationException",
    );

    // Nothing changed: one key, still Enabled, and the clock did not move.
    let (_, keys) = kms("ListKeys", "{}");
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 1);
    let (_, described) = kms("DescribeKey", &format!(r#"{{"KeyId": "{key_id}"}}"#));
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    let (_, clock) = send(port, "GET", "/_hsmkms/clock", None, b"");
    assert_eq!(clock["offsetSeconds"], 0);
    emu.stop();
}

/// Every violated constraint of the model is reported, in one message, as AWS does (in the
/// model's member order).
#[test]
fn several_violations_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), free_port());
    let (status, body) = send(
        emulator.port,
        "POST",
        "/",
        Some("TrentService.Sign"),
        br#"{"MessageType": "RAWISH"}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "ValidationException");
    assert_eq!(
        body["message"],
        "4 validation errors detected: \
         Value null at 'keyId' failed to satisfy constraint: Member must not be null; \
         Value null at 'message' failed to satisfy constraint: Member must not be null; \
         Value 'RAWISH' at 'messageType' failed to satisfy constraint: Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]; \
         Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null"
    );
    let (status, body) = send(
        emulator.port,
        "POST",
        "/",
        Some("TrentService.CreateKey"),
        br#"{"KeySpec": "RSA_1024", "KeyUsage": "SIGN", "Origin": "AWS_KMS"}"#,
    );
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("2 validation errors detected: Value 'SIGN' at 'keyUsage'"),
        "{message}"
    );
    assert!(
        message.contains("; Value 'RSA_1024' at 'keySpec'"),
        "{message}"
    );
    // A single one keeps the singular form.
    let (_, body) = send(
        emulator.port,
        "POST",
        "/",
        Some("TrentService.GenerateMac"),
        br#"{"KeyId": "alias/x", "Message": "bQ==", "MacAlgorithm": "HMAC_MD5"}"#,
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("1 validation error detected: Value 'HMAC_MD5' at 'macAlgorithm'"),
        "{body}"
    );
}

/// The model's constraints are checked before the key is looked up, and a request that breaks
/// them (or the digest rule) is a ValidationException even with DryRun, as on AWS.
#[test]
fn model_checks_come_before_the_key_and_dry_run() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), free_port());
    let kms = |op: &str, body: Value| emulator.kms_json(op, &body);
    let missing = "00000000-0000-0000-0000-000000000000";
    let expect = |(status, body): (u16, Value), message: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["__type"], "ValidationException", "{body}");
        assert_eq!(body["message"], message, "{body}");
    };
    let algorithms = "[SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]";

    // An EncryptionAlgorithm outside the enum, with a key that does not exist: the enum's
    // error, not NotFoundException.
    expect(
        kms(
            "Encrypt",
            json!({"KeyId": missing, "Plaintext": "eA==", "EncryptionAlgorithm": "RSA"}),
        ),
        &format!("1 validation error detected: Value 'RSA' at 'encryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: {algorithms}"),
    );
    expect(
        kms(
            "ReEncrypt",
            json!({"CiphertextBlob": "eA==", "DestinationKeyId": missing, "DestinationEncryptionAlgorithm": "RSA"}),
        ),
        &format!("1 validation error detected: Value 'RSA' at 'destinationEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: {algorithms}"),
    );
    // Decapsulate's ciphertext is KMS's CiphertextType: 1 to 6144 bytes.
    expect(
        kms(
            "Decapsulate",
            json!({"KeyId": missing, "EncapsulationAlgorithm": "ML_KEM", "SharedSecretCiphertextBlob": ""}),
        ),
        "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'sharedSecretCiphertextBlob' failed to satisfy constraint: Member must have length greater than or equal to 1",
    );
    // Verify's Signature and VerifyMac's Mac are reported with the other violations.
    expect(
        kms(
            "Verify",
            json!({"Message": "bQ==", "SigningAlgorithm": "ECDSA_SHA_256", "Signature": ""}),
        ),
        "2 validation errors detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null; Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'signature' failed to satisfy constraint: Member must have length greater than or equal to 1",
    );
    expect(
        kms(
            "VerifyMac",
            json!({"Message": "bQ==", "MacAlgorithm": "HMAC_SHA_256", "Mac": ""}),
        ),
        "2 validation errors detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null; Value 'java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]' at 'mac' failed to satisfy constraint: Member must have length greater than or equal to 1",
    );
    // CreateKey's enums list their names in the order AWS recorded.
    let (_, body) = kms("CreateKey", json!({"KeySpec": "HMAC_random"}));
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "1 validation error detected: Value 'HMAC_random' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048, ECC_NIST_P384, ECC_NIST_P256, ECC_NIST_P521, HMAC_384, RSA_3072, ECC_SECG_P256K1, RSA_4096, SYMMETRIC_DEFAULT, HMAC_256, HMAC_224, HMAC_512"
        ),
        "{body}"
    );
    let (_, body) = kms(
        "CreateKey",
        json!({"KeySpec": "HMAC_256", "KeyUsage": "RANDOM"}),
    );
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy constraint: Member must satisfy enum value set: [ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC"
        ),
        "{body}"
    );

    // A digest of the wrong length is refused before DryRun is answered (recorded text).
    let (status, key) = kms(
        "CreateKey",
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}),
    );
    assert_eq!(status, 200, "{key}");
    let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap();
    let sign = |message: &str| {
        kms(
            "Sign",
            json!({"KeyId": key_id, "Message": message, "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256", "DryRun": true}),
        )
    };
    expect(
        sign("AAECAwQ="),
        "Digest is invalid length for algorithm ECDSA_SHA_256.",
    );
    // A well-formed one gets DryRun's answer.
    let (status, body) = sign("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "DryRunOperationException", "{body}");
    emulator.stop();
}
