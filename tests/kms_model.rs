//! Every operation of KMS's and CloudHSMv2's current models (botocore's service-2.json, pinned
//! below and installed by this test into `target/model-venv`) is served: an empty request
//! answers 200 or an AWS-shaped error (`__type` and status 400), never
//! UnknownOperationException. Walking the models rather than lists written here means a new
//! botocore with a new operation fails this test until hsmkms serves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::process::Command;

use kms_common::*;
use serde_json::Value;

/// The operation names of botocore's model of `service` (`kms`, `cloudhsmv2`), from a venv
/// with the pinned botocore (made on first use).
fn model_operations(service: &str) -> Vec<String> {
    let python = model_python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import botocore.session, json, sys; \
             m = botocore.session.get_session().get_service_model(sys.argv[1]); \
             print(json.dumps(sorted(m.operation_names)))",
            service,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// An empty request to `<target>.<op>` in AWS JSON 1.1.
fn call_json(port: u16, target: &str, op: &str) -> (u16, Value) {
    let mut response = agent()
        .post(&format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", &format!("{target}.{op}"))
        .send(b"{}".as_slice())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// A CBOR answer as JSON: tag-1 timestamps become numbers, as in the JSON protocol.
fn cbor_to_json(v: ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => Value::from(i64::try_from(i128::from(i)).unwrap()),
        C::Float(f) => Value::from(f),
        C::Text(s) => Value::String(s),
        C::Tag(1, inner) => cbor_to_json(*inner),
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

fn call(port: u16, op: &str) -> (u16, Value) {
    call_json(port, "TrentService", op)
}

/// An empty request to CloudHSMv2's `op` in Smithy RPCv2 CBOR (an empty map); the answer as
/// JSON, with the CBOR error's shape id (`com.amazonaws.cloudhsmv2#...`) cut to its name.
fn call_cbor(port: u16, op: &str) -> (u16, Value) {
    let mut response = agent()
        .post(&format!(
            "http://127.0.0.1:{port}/service/BaldrApiService/operation/{op}"
        ))
        .header("content-type", "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .send([0xa0u8].as_slice())
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.body_mut().read_to_vec().unwrap();
    let cbor: ciborium::Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
    let mut body = cbor_to_json(cbor);
    if let Some(t) = body["__type"].as_str() {
        let name = t.rsplit('#').next().unwrap_or(t).to_string();
        body["__type"] = Value::String(name);
    }
    (status, body)
}

#[test]
fn every_operation_of_the_kms_model_is_served() {
    let operations = model_operations("kms");
    assert!(operations.len() >= 56, "{operations:?}");
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let port = emulator.port;
    let mut unserved = Vec::new();
    for op in &operations {
        let (status, body) = call(port, op);
        let error = body["__type"].as_str().unwrap_or_default();
        if error == "UnknownOperationException" {
            unserved.push(op.clone());
            continue;
        }
        // Operations without required members (ListKeys, CreateKey, ...) succeed; the others
        // name the first member that is missing, in KMS's words.
        match status {
            200 => assert!(body.is_object(), "{op}: {body}"),
            400 => {
                assert!(!error.is_empty(), "{op}: {body}");
                assert!(
                    error == "ValidationException"
                        || error == "NotFoundException"
                        || error == "UnsupportedOperationException",
                    "{op}: {body}"
                );
            }
            other => panic!("{op}: status {other}, {body}"),
        }
    }
    assert!(unserved.is_empty(), "not served: {unserved:?}");
}

#[test]
fn every_operation_of_the_cloudhsmv2_model_is_served_over_json_and_cbor() {
    let operations = model_operations("cloudhsmv2");
    assert!(operations.len() >= 18, "{operations:?}");
    for op in [
        "GetResourcePolicy",
        "PutResourcePolicy",
        "DeleteResourcePolicy",
    ] {
        assert!(operations.iter().any(|o| o == op), "{op} in {operations:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());
    let port = emulator.port;
    let mut unserved = Vec::new();
    for op in &operations {
        for (protocol, (status, body)) in [
            ("json", call_json(port, "BaldrApiService", op)),
            ("cbor", call_cbor(port, op)),
        ] {
            let error = body["__type"].as_str().unwrap_or_default();
            if error == "UnknownOperationException" {
                unserved.push(format!("{op} ({protocol})"));
                continue;
            }
            // Operations without required members (DescribeClusters, DescribeBackups) succeed;
            // the others name what is missing, or what an empty request does not find.
            match status {
                200 => assert!(body.is_object(), "{op} ({protocol}): {body}"),
                400 => assert!(
                    error == "CloudHsmInvalidRequestException"
                        || error == "CloudHsmResourceNotFoundException",
                    "{op} ({protocol}): {body}"
                ),
                other => panic!("{op} ({protocol}): status {other}, {body}"),
            }
        }
    }
    assert!(unserved.is_empty(), "not served: {unserved:?}");
}
