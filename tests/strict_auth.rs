//! `--auth strict`: the emulator checks SigV4 signatures as AWS does. The Rust SDK's and
//! boto3's signed requests pass (KMS, and CloudHSMv2 over AWS JSON 1.1, and over RPCv2 CBOR
//! signed by aws-sigv4 and by botocore's signer); a wrong
//! secret, an unknown access key, a stale date, a missing or incomplete Authorization header
//! each get AWS's error and message; the control API needs the control token. The default mode
//! still accepts any credentials, and strict mode without a control token does not start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use kms_common::*;
use serde_json::Value;

const KEY_ONE: (&str, &str) = ("AKIDSTRICTONE", "secretOne/with+chars0123456789abcdefghij");
const KEY_TWO: (&str, &str) = ("AKIDSTRICTTWO", "secretTwo");
const KEY_LISTED: (&str, &str) = ("AKIDFROMLIST", "listSecret");
const CONTROL_TOKEN: &str = "control-token-for-tests";
const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// A strict emulator: keys from a credentials file and from `--access-keys`.
fn start_strict(dir: &Path) -> Emulator {
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[ci]\nregion = us-east-1\naws_access_key_id={}\naws_secret_access_key={}\n",
            KEY_ONE.0, KEY_ONE.1, KEY_TWO.0, KEY_TWO.1
        ),
    )
    .unwrap();
    Emulator::start_with(
        &dir.join("data"),
        free_port(),
        &[
            "--auth",
            "strict",
            "--credentials-file",
            credentials.to_str().unwrap(),
            "--access-keys",
            &format!("{}:{}", KEY_LISTED.0, KEY_LISTED.1),
            "--control-token",
            CONTROL_TOKEN,
        ],
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A raw request to `path`, signed (when `key` is given) with AWS's signer for `service` at
/// `time`, as the SDKs sign: the headers given, plus host and x-amz-date.
struct Raw<'a> {
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: &'a [u8],
}

impl<'a> Raw<'a> {
    fn kms(op: &str) -> Self {
        Raw {
            path: "/",
            headers: vec![
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amz-target", format!("TrentService.{op}")),
            ],
            body: b"{}",
        }
    }

    fn cbor(op: &'a str) -> Self {
        Raw {
            path: Box::leak(format!("/service/BaldrApiService/operation/{op}").into_boxed_str()),
            headers: vec![
                ("content-type", "application/cbor".into()),
                ("smithy-protocol", "rpc-v2-cbor".into()),
            ],
            // An empty map.
            body: &[0xa0],
        }
    }

    /// Adds SigV4 headers for `key` and `service` at `time`.
    fn signed(mut self, port: u16, key: (&str, &str), service: &str, time: SystemTime) -> Self {
        let host = format!("127.0.0.1:{port}");
        let mut to_sign: Vec<(&str, &str)> = vec![("host", host.as_str())];
        to_sign.extend(self.headers.iter().map(|(k, v)| (*k, v.as_str())));
        let identity: Identity = Credentials::new(key.0, key.1, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("http://{host}{}", self.path);
        let signable = SignableRequest::new(
            "POST",
            &url,
            to_sign.into_iter(),
            SignableBody::Bytes(self.body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let added: Vec<(String, String)> = instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in added {
            self.headers.push((Box::leak(k.into_boxed_str()), v));
        }
        self
    }

    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Sends it: (status, body bytes).
    fn send(&self, port: u16) -> (u16, Vec<u8>) {
        let mut request = agent().post(&format!("http://127.0.0.1:{port}{}", self.path));
        for (k, v) in &self.headers {
            request = request.header(*k, v);
        }
        let mut response = request.send(self.body).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_vec().unwrap())
    }

    /// Sends it and reads a JSON answer.
    fn send_json(&self, port: u16) -> (u16, Value) {
        let (status, body) = self.send(port);
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Sends it and reads a CBOR answer, as JSON (timestamps as numbers).
    fn send_cbor(&self, port: u16) -> (u16, Value) {
        let (status, body) = self.send(port);
        let value: ciborium::Value = ciborium::de::from_reader(body.as_slice()).unwrap();
        (status, cbor_to_json(value))
    }

    /// The value of a header it carries.
    fn header_value(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap()
    }
}

fn cbor_to_json(v: ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => Value::from(i64::try_from(i128::from(i)).unwrap()),
        C::Float(f) => Value::from(f),
        C::Text(s) => Value::String(s),
        C::Tag(_, inner) => cbor_to_json(*inner),
        C::Array(items) => Value::Array(items.into_iter().map(cbor_to_json).collect()),
        C::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.into_text().unwrap(), cbor_to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected CBOR in an answer: {other:?}"),
    }
}

fn assert_error(answer: &(u16, Value), status: u16, kind: &str, message: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["__type"], kind, "{}", answer.1);
    assert_eq!(answer.1["message"], message, "{}", answer.1);
}

/// A KMS client that does not retry, signing with `key`.
fn kms_with(emulator: &Emulator, key: (&str, &str)) -> aws_sdk_kms::Client {
    let config = emulator
        .kms_signed("us-east-1", key.0, key.1)
        .config()
        .to_builder()
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// GET on the control API with an optional bearer token: (status, JSON).
fn control_get(port: u16, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(&format!("http://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_mode_checks_signatures_as_aws_does() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = start_strict(tmp.path());
    let port = emulator.port;

    // The Rust SDK's signed requests pass, with keys from the file and from the list.
    for key in [KEY_ONE, KEY_TWO, KEY_LISTED] {
        let kms = kms_with(&emulator, key);
        let created = kms.create_key().send().await.unwrap();
        let key_id = created.key_metadata().unwrap().key_id().to_string();
        let encrypted = kms
            .encrypt()
            .key_id(&key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"strict".to_vec()))
            .send()
            .await
            .unwrap();
        assert!(encrypted.ciphertext_blob().is_some());
    }
    let clusters = emulator
        .cloudhsm_signed("us-east-1", KEY_ONE.0, KEY_ONE.1)
        .describe_clusters()
        .send()
        .await
        .unwrap();
    assert!(!clusters.clusters().is_empty());

    // A wrong secret: InvalidSignatureException, in AWS's words.
    let wrong = kms_with(&emulator, (KEY_ONE.0, "not-the-secret"))
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some("InvalidSignatureException"));
    assert_eq!(wrong.message(), Some(MISMATCH));
    assert_eq!(wrong.raw_response().unwrap().status().as_u16(), 400);
    let wrong_hsm = emulator
        .cloudhsm_signed("us-east-1", KEY_TWO.0, "not-the-secret")
        .describe_clusters()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_cloudhsmv2::error::ProvideErrorMetadata::code(&wrong_hsm),
        Some("InvalidSignatureException")
    );

    // An access key the emulator does not know: UnrecognizedClientException.
    let unknown = kms_with(&emulator, ("AKIDNOBODYKNOWS", "whatever"))
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some("UnrecognizedClientException"));
    assert_eq!(
        unknown.message(),
        Some("The security token included in the request is invalid.")
    );
    assert_eq!(unknown.raw_response().unwrap().status().as_u16(), 400);

    // A request signed 20 minutes ago: the signature expired (AWS allows 15 minutes).
    let stale_time = SystemTime::now() - Duration::from_secs(20 * 60);
    let stale_request = Raw::kms("ListKeys").signed(port, KEY_ONE, "kms", stale_time);
    let signed_at = stale_request.header_value("x-amz-date").to_string();
    let stale = stale_request.send_json(port);
    assert_eq!(stale.0, 400, "{}", stale.1);
    assert_eq!(stale.1["__type"], "InvalidSignatureException");
    let message = stale.1["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Signature expired: {signed_at} is now earlier than "
        )) && message.ends_with(" - 15 min.)"),
        "{message}"
    );

    // A raw request signed now passes; the same with the body changed does not.
    let fresh = Raw::kms("ListKeys").signed(port, KEY_ONE, "kms", SystemTime::now());
    assert_eq!(fresh.send_json(port).0, 200);
    let tampered = Raw {
        body: br#"{"Limit": 1}"#,
        ..fresh
    };
    assert_error(
        &tampered.send_json(port),
        400,
        "InvalidSignatureException",
        MISMATCH,
    );

    // Signed for the wrong service.
    let misscoped = Raw::kms("ListKeys").signed(port, KEY_ONE, "cloudhsm", SystemTime::now());
    assert_error(
        &misscoped.send_json(port),
        400,
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'kms'. ",
    );

    // No Authorization header at all.
    assert_error(
        &Raw::kms("ListKeys").send_json(port),
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );

    // An Authorization header missing its SignedHeaders and Signature.
    let partial = format!(
        "AWS4-HMAC-SHA256 Credential={}/20250101/us-east-1/kms/aws4_request",
        KEY_ONE.0
    );
    assert_error(
        &Raw::kms("ListKeys")
            .header("authorization", &partial)
            .header("x-amz-date", "20250101T000000Z")
            .send_json(port),
        400,
        "IncompleteSignatureException",
        &format!(
            "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization={partial}"
        ),
    );

    // CloudHSMv2 over RPCv2 CBOR: signed passes, unsigned is refused in CBOR.
    let (status, answer) = Raw::cbor("DescribeClusters")
        .signed(port, KEY_TWO, "cloudhsm", SystemTime::now())
        .send_cbor(port);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["Clusters"].is_array(), "{answer}");
    assert_error(
        &Raw::cbor("DescribeClusters").send_cbor(port),
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_error(
        &Raw::cbor("DescribeClusters")
            .signed(port, KEY_TWO, "kms", SystemTime::now())
            .send_cbor(port),
        400,
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'cloudhsm'. ",
    );

    // The control API needs the token: none is 401, a wrong one 403, the right one works.
    let (status, answer) = control_get(port, "/_hsmkms/clock", None);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["__type"], "MissingControlTokenException");
    let (status, answer) = control_get(port, "/_hsmkms/clock", Some("not-the-token"));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["__type"], "InvalidControlTokenException");
    let (status, answer) = control_get(port, "/_hsmkms/clock", Some(CONTROL_TOKEN));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["epochSeconds"].is_number(), "{answer}");

    // boto3 signs its own way (botocore's signer): it passes too, and sees the same errors.
    // botocore 1.44 picks AWS JSON 1.1 for cloudhsmv2 (of the model's two protocols), so its
    // signer is also run by hand on the CBOR route.
    let boto = boto3_calls(port);
    assert_eq!(boto["kms_ok"], true, "{boto}");
    assert_eq!(boto["cloudhsm_ok"], true, "{boto}");
    assert_eq!(boto["cloudhsm_protocol"], "json", "{boto}");
    assert_eq!(boto["cbor_signed_by_botocore"], 200, "{boto}");
    assert_eq!(boto["cbor_wrong_secret"], 400, "{boto}");
    assert_eq!(
        boto["wrong_secret"]["code"], "InvalidSignatureException",
        "{boto}"
    );
    assert_eq!(boto["wrong_secret"]["message"], MISMATCH, "{boto}");
    assert_eq!(boto["wrong_secret"]["status"], 400, "{boto}");
    assert_eq!(
        boto["unknown_key"]["code"], "UnrecognizedClientException",
        "{boto}"
    );
    assert_eq!(
        boto["cloudhsm_wrong_secret"]["code"], "InvalidSignatureException",
        "{boto}"
    );

    emulator.stop();
}

/// Runs boto3 (same version as the pinned botocore) against the emulator: good calls to KMS
/// and CloudHSMv2, and calls with a wrong secret and an unknown key; the outcomes as JSON.
fn boto3_calls(port: u16) -> Value {
    let python = python_venv(&[
        &format!("botocore=={BOTOCORE}"),
        &format!("boto3=={BOTOCORE}"),
    ]);
    let script = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

port, akid, secret = sys.argv[1], sys.argv[2], sys.argv[3]

def client(service, key, sec):
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=sec,
        config=Config(retries={"max_attempts": 1}),
    )

def error(call):
    try:
        call()
        return None
    except ClientError as e:
        return {
            "code": e.response["Error"]["Code"],
            "message": e.response["Error"].get("Message"),
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
        }

out = {}
kms = client("kms", akid, secret)
key = kms.create_key()["KeyMetadata"]["KeyId"]
out["kms_ok"] = kms.encrypt(KeyId=key, Plaintext=b"boto")["KeyId"].endswith(key)
hsm = client("cloudhsmv2", akid, secret)
out["cloudhsm_protocol"] = getattr(hsm.meta.service_model, "resolved_protocol", hsm.meta.service_model.protocol)
out["cloudhsm_ok"] = isinstance(hsm.describe_clusters()["Clusters"], list)
out["wrong_secret"] = error(lambda: client("kms", akid, "wrong").list_keys())
out["unknown_key"] = error(lambda: client("kms", "AKIDUNKNOWN", secret).list_keys())
out["cloudhsm_wrong_secret"] = error(lambda: client("cloudhsmv2", akid, "wrong").describe_clusters())

# The RPCv2 CBOR route, signed by botocore's SigV4 signer: the status.
import urllib.error, urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

def cbor_call(sec):
    url = f"http://127.0.0.1:{port}/service/BaldrApiService/operation/DescribeClusters"
    headers = {"Content-Type": "application/cbor", "Accept": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
    request = AWSRequest(method="POST", url=url, data=b"\xa0", headers=headers)
    SigV4Auth(Credentials(akid, sec), "cloudhsm", "us-east-1").add_auth(request)
    signed = dict(request.prepare().headers)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"\xa0", headers=signed, method="POST")) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

out["cbor_signed_by_botocore"] = cbor_call(secret)
out["cbor_wrong_secret"] = cbor_call("wrong")
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .args(["-c", script, &port.to_string(), KEY_ONE.0, KEY_ONE.1])
        // Nothing from this machine's AWS setup may sign instead of the keys given.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn default_mode_still_accepts_any_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let port = emulator.port;

    // Any access key and secret, and no signature at all.
    let kms = emulator.kms_signed("us-east-1", "ANYTHING", "goes");
    kms.list_keys().send().await.unwrap();
    assert_eq!(Raw::kms("ListKeys").send_json(port).0, 200);
    let stale = Raw::kms("ListKeys").signed(
        port,
        ("WHOEVER", "whatever"),
        "kms",
        SystemTime::now() - Duration::from_secs(3600),
    );
    assert_eq!(stale.send_json(port).0, 200);
    // The control API needs no token.
    assert_eq!(control_get(port, "/_hsmkms/clock", None).0, 200);
    emulator.stop();
}

#[test]
fn strict_mode_without_a_control_token_or_keys_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let no_token = refused_start(
        &tmp.path().join("a"),
        &["--auth", "strict", "--access-keys", "AKID:SECRET"],
    );
    assert!(no_token.contains("needs a control token"), "{no_token}");
    let no_keys = refused_start(
        &tmp.path().join("b"),
        &["--auth", "strict", "--control-token", "t"],
    );
    assert!(no_keys.contains("needs access keys"), "{no_keys}");
    // A secret given on the command line is never echoed back.
    let bad_list = refused_start(
        &tmp.path().join("c"),
        &[
            "--auth",
            "strict",
            "--control-token",
            "t",
            "--access-keys",
            "no-colon-SECRETVALUE",
        ],
    );
    assert!(!bad_list.contains("SECRETVALUE"), "{bad_list}");
}
