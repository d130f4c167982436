//! Every constraint KMS's model puts on a top-level request member (required, length, range,
//! enum, pattern) is checked as AWS checks it: a request that breaks one gets a
//! ValidationException naming the member's path and the constraint in AWS's words, and one
//! that breaks two gets `2 validation errors detected: ...; ...`. The cases come from
//! botocore's model (`kms_validation_cases.py`, in the venv of `kms_common::model_python`),
//! so a constraint added to the model is tested without a line written here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::process::Command;

use kms_common::*;
use serde_json::Value;

/// The cases: `{"single": [...], "double": [...]}`, each `{op, member, constraint, body,
/// messages}`.
fn cases() -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kms_validation_cases.py");
    let out = Command::new(model_python()).arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The message AWS sends for `messages`, with each enum's names sorted: AWS lists them in its
/// own (hash) order, which hsmkms follows where an answer was recorded and the model's order
/// elsewhere; the set is what the model fixes.
fn expected(messages: &[Value]) -> String {
    let parts: Vec<&str> = messages.iter().map(|m| m.as_str().unwrap()).collect();
    let text = match parts.len() {
        1 => format!("1 validation error detected: {}", parts[0]),
        n => format!("{n} validation errors detected: {}", parts.join("; ")),
    };
    sort_enums(&text)
}

fn sort_enums(text: &str) -> String {
    const SET: &str = "enum value set: [";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(SET) {
        let start = at + SET.len();
        let Some(len) = rest[start..].find(']') else {
            break;
        };
        let mut names: Vec<&str> = rest[start..start + len].split(", ").collect();
        names.sort_unstable();
        out.push_str(&rest[..start]);
        out.push_str(&names.join(", "));
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Long values cut for the table.
fn short(text: &str) -> String {
    let cut: String = text.chars().take(150).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

#[test]
fn every_model_constraint_is_checked_in_aws_words() {
    let cases = cases();
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(tmp.path(), free_port());

    // Phase 1: each case, and a table of every answer that is not AWS's (all of them first,
    // to see the scale).
    let mut mismatches = Vec::new();
    let mut total = 0;
    for kind in ["single", "double"] {
        for case in cases[kind].as_array().unwrap() {
            total += 1;
            let op = case["op"].as_str().unwrap();
            let want = expected(case["messages"].as_array().unwrap());
            let (status, body) = emulator.kms_json(op, &case["body"]);
            let error = body["__type"].as_str().unwrap_or_default();
            let got = sort_enums(body["message"].as_str().unwrap_or_default());
            if status != 400 || error != "ValidationException" || got != want {
                mismatches.push(format!(
                    "| {op} | {} | {} | {status} {error}: {} | {} |",
                    case["member"].as_str().unwrap(),
                    case["constraint"].as_str().unwrap(),
                    short(&got),
                    short(&want),
                ));
            }
        }
    }
    if !mismatches.is_empty() {
        println!("| operation | member | constraint | hsmkms | AWS |");
        println!("|---|---|---|---|---|");
        for row in &mismatches {
            println!("{row}");
        }
    }
    println!("{} of {total} cases differ from AWS", mismatches.len());
    assert!(mismatches.is_empty(), "{} mismatches", mismatches.len());
}
