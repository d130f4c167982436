//! Every operation of KMS's current model (botocore's service-2.json, pinned below and installed
//! by this test into `target/model-venv`) is served: an empty request answers 200 or an
//! AWS-shaped error (`__type` and status 400), never UnknownOperationException. Walking the
//! model rather than a list written here means a new botocore with a new operation fails this
//! test until hsmkms serves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::path::PathBuf;
use std::process::Command;

use kms_common::*;
use serde_json::Value;

/// The botocore whose KMS model is checked: the newest at the time of writing (56 operations).
const BOTOCORE: &str = "1.44.8";

/// The operation names of botocore's KMS model, from a venv with the pinned botocore (made on
/// first use).
fn model_operations() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/model-venv");
    let python = venv.join("bin/python3");
    let marker = venv.join(format!("botocore-{BOTOCORE}"));
    if !marker.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                &format!("botocore=={BOTOCORE}"),
            ])
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install botocore=={BOTOCORE} failed"
        );
        std::fs::write(&marker, b"").unwrap();
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import botocore.session, json; \
             m = botocore.session.get_session().get_service_model('kms'); \
             print(json.dumps(sorted(m.operation_names)))",
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

fn call(port: u16, op: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", &format!("TrentService.{op}"))
        .send(b"{}".as_slice())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[test]
fn every_operation_of_the_kms_model_is_served() {
    let operations = model_operations();
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
