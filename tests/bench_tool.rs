//! `hsmkms-load bench`, `echo` and `report` as a user runs them: against a real emulator
//! it reports figures with no errors and leaves the keys it made where the SDK sees them; it
//! refuses a server that answers 200 with something that is not KMS; its bounds are enforced;
//! and the report turns its results into BENCHMARKS.md and a chart. Sign, Verify and the MACs
//! run the same way, with keys of their own, and the report sets them beside Encrypt.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_kms::types::{ConnectionStateType, KeySpec, KeyUsageType, OriginType};
use kms_common::{free_port, hsmkms_exe, Emulator};

/// The load tool's binary, built beside `hsmkms` by `cargo test --workspace` (its own crate,
/// `load/`, has tests of its own, so cargo builds it before any test runs).
fn load_exe() -> std::path::PathBuf {
    let exe = hsmkms_exe().with_file_name("hsmkms-load");
    assert!(
        exe.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        exe.display()
    );
    exe
}
use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(load_exe())
        .arg("bench")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Runs `hsmkms-load bench --json`; returns its one result object.
fn bench_json(args: &[&str]) -> Value {
    let out = bench(&[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "hsmkms-load bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_figures(run: &Value) {
    assert_eq!(run["errors"], 0, "{run}");
    assert!(run["requests"].as_u64().unwrap() > 0, "{run}");
    assert!(run["requestsPerSecond"].as_f64().unwrap() > 0.0, "{run}");
    let l = &run["latencyMs"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{run}");
}

/// A fake KMS on 127.0.0.1 that answers every request 200 with what `answer` says for its
/// `X-Amz-Target` and the number of requests before it.
fn fake_server(answer: fn(&str, usize) -> String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let served = served.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let (mut length, mut target) = (0usize, String::new());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if let Some(v) = lower.strip_prefix("x-amz-target:") {
                            target = v.trim().to_string();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = answer(&target, served.fetch_add(1, Ordering::SeqCst));
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
                        reply.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(reply.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

const FAKE_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// Right for set-up and the first Encrypt (targets arrive lower-cased), then a 200 that names
/// no key and holds no blob.
fn right_then_wrong(target: &str, served: usize) -> String {
    match (target, served) {
        ("trentservice.describekey", _) => {
            format!(r#"{{"KeyMetadata":{{"KeyId":"k","Arn":"{FAKE_ARN}"}}}}"#)
        }
        ("trentservice.encrypt", 0..=1) => {
            let blob = "A".repeat(80);
            format!(r#"{{"KeyId":"{FAKE_ARN}","CiphertextBlob":"{blob}"}}"#)
        }
        _ => "{}".to_string(),
    }
}

/// Kills a child process when dropped, so a failing assertion leaves none behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_measures_a_real_emulator_and_refuses_wrong_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let emulator = Emulator::start(&data_dir, free_port());
    let endpoint = format!("http://127.0.0.1:{}", emulator.port);
    let anchor = data_dir.join("customerCA.crt");
    let anchor = anchor.to_str().unwrap();
    let common = [
        "--endpoint",
        &endpoint,
        "--trust-anchor",
        anchor,
        "--warmup",
        "0",
    ];

    // Encrypt with an AWS_KMS key and with a key store key: figures, and not one error.
    let aws_kms = bench_json(&[&common[..], &["--duration", "1", "--connections", "4"]].concat());
    assert_eq!(aws_kms["op"], "encrypt");
    assert_eq!(aws_kms["keyStore"], false);
    check_figures(&aws_kms);
    let store_run = bench_json(
        &[
            &common[..],
            &["--duration", "1", "--connections", "4", "--key-store"],
        ]
        .concat(),
    );
    assert_eq!(store_run["keyStore"], true);
    check_figures(&store_run);

    // The tool made and connected a store, as a user would see it with the SDK.
    let kms = emulator.kms();
    let stores = kms.describe_custom_key_stores().send().await.unwrap();
    let store = stores
        .custom_key_stores()
        .iter()
        .find(|s| s.custom_key_store_name() == Some("hsmkms-bench"))
        .expect("the bench key store exists");
    assert_eq!(
        store.connection_state(),
        Some(&ConnectionStateType::Connected)
    );
    let store_id = store.custom_key_store_id().unwrap().to_string();

    // Exactly N measured CreateKey calls with --requests N; each key is in the store.
    let before = kms
        .list_keys()
        .limit(1000)
        .send()
        .await
        .unwrap()
        .keys()
        .len();
    let created = bench_json(
        &[
            &common[..],
            &[
                "--op",
                "create-key",
                "--key-store",
                "--requests",
                "25",
                "--connections",
                "5",
            ],
        ]
        .concat(),
    );
    assert_eq!(created["requests"], 25, "{created}");
    check_figures(&created);
    let keys = kms.list_keys().limit(1000).send().await.unwrap();
    // 25 measured keys plus the one the tool's first request makes.
    assert_eq!(keys.keys().len(), before + 26);
    let mut in_store = 0;
    for key in keys.keys() {
        let meta = kms
            .describe_key()
            .key_id(key.key_id().unwrap())
            .send()
            .await
            .unwrap();
        let meta = meta.key_metadata().unwrap();
        if meta.custom_key_store_id() == Some(store_id.as_str()) {
            assert_eq!(meta.origin(), Some(&OriginType::AwsCloudhsm));
            in_store += 1;
        }
    }
    // The encrypt run's key, and the 26 made now.
    assert_eq!(in_store, 27);

    // A server that answers 200 with something that is not KMS gets no figures: at set-up...
    let garbage = format!("http://127.0.0.1:{}", fake_server(|_, _| "{}".to_string()));
    let out = bench(&["--endpoint", &garbage, "--duration", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CreateKey answered no KeyId or Arn"),
        "{stderr}"
    );
    // ...and during the run, where every such answer is an error, not a request served.
    let fake = format!("http://127.0.0.1:{}", fake_server(right_then_wrong));
    let run = bench_json(&[
        "--endpoint",
        &fake,
        "--key-id",
        "k",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "2",
    ]);
    assert_eq!(run["requests"], 0, "{run}");
    assert!(run["errors"].as_u64().unwrap() > 0, "{run}");
    assert!(
        run["errorSamples"][0]
            .as_str()
            .unwrap()
            .contains("names key None"),
        "{run}"
    );

    // Bounds: no run longer than 120 s, no more than 1024 connections, KMS's plaintext limit.
    for (args, message) in [
        (vec!["--duration", "121"], "at most 120"),
        (
            vec!["--connections", "0"],
            "--connections must be 1 to 1024",
        ),
        (vec!["--plaintext-bytes", "4097"], "must be 1 to 4096"),
    ] {
        let out = bench(&[&["--endpoint", &endpoint][..], &args].concat());
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }

    // The echo server answers what the tool accepts; the report turns runs into a page.
    let echo_port = free_port();
    let mut echo = Killed(
        Command::new(load_exe())
            .args(["echo", "--port", &echo_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    BufReader::new(echo.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "Ready.");
    let echo_run = bench_json(&[
        "--endpoint",
        &format!("http://127.0.0.1:{echo_port}"),
        "--label",
        "echo",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--connections",
        "4",
    ]);
    check_figures(&echo_run);
    drop(echo);

    let results = tmp.path().join("results.jsonl");
    let figure = r#"{"name":"memory-100k-keys","value":150.0,"unit":"MiB","note":"(test)"}"#;
    std::fs::write(
        &results,
        format!("{aws_kms}\n{store_run}\n{echo_run}\n{created}\n{figure}\n"),
    )
    .unwrap();
    let report = tmp.path().join("BENCHMARKS.md");
    let chart = tmp.path().join("results/encrypt.svg");
    let out = Command::new(load_exe())
        .arg("report")
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(&report)
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("![requests/s and p99 latency against connections](results/encrypt.svg)"),
        "{text}"
    );
    assert!(
        text.contains("| hsmkms encrypt, key store key, 32 B | hsmkms-load | 4 |"),
        "{text}"
    );
    assert!(
        text.contains("| echo encrypt, 32 B | hsmkms-load | 4 |"),
        "{text}"
    );
    assert!(text.contains("| Resident memory with 100,000 keys | < 150 MB (143.1 MiB) | **150 MiB** (test) | **missed** |"), "{text}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("hsmkms encrypt, AWS_KMS key, 32 B"));
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_signs_verifies_and_macs_against_a_real_emulator() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let emulator = Emulator::start(&data_dir, free_port());
    let endpoint = format!("http://127.0.0.1:{}", emulator.port);
    let common = ["--endpoint", &endpoint, "--warmup", "0", "--duration", "1"];

    // Each operation at 64 connections, as compare.sh runs it beside Encrypt: figures, the
    // algorithm named, and not one error (every signature DER, every verdict valid, every
    // MAC the one made at set-up).
    let encrypt = bench_json(&[&common[..], &["--connections", "64"]].concat());
    check_figures(&encrypt);
    let mut runs = vec![encrypt];
    for (op, algorithm) in [
        ("sign", "ECDSA_SHA_256"),
        ("verify", "ECDSA_SHA_256"),
        ("generate-mac", "HMAC_SHA_256"),
        ("verify-mac", "HMAC_SHA_256"),
    ] {
        let run = bench_json(&[&common[..], &["--op", op, "--connections", "64"]].concat());
        assert_eq!(run["op"], op);
        assert_eq!(run["algorithm"], algorithm, "{run}");
        assert_eq!(run["keyStore"], false);
        check_figures(&run);
        runs.push(run);
    }

    // Each run made the key it needed, as the SDK sees it: two ECC_NIST_P256 signing keys,
    // two HMAC_256 keys, besides Encrypt's.
    let kms = emulator.kms();
    let keys = kms.list_keys().limit(1000).send().await.unwrap();
    let mut kinds = Vec::new();
    for key in keys.keys() {
        let meta = kms
            .describe_key()
            .key_id(key.key_id().unwrap())
            .send()
            .await
            .unwrap();
        let meta = meta.key_metadata().unwrap();
        if meta.key_usage() != Some(&KeyUsageType::EncryptDecrypt) {
            kinds.push((meta.key_spec().cloned(), meta.key_usage().cloned()));
        }
    }
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        [
            (Some(KeySpec::EccNistP256), Some(KeyUsageType::SignVerify)),
            (Some(KeySpec::EccNistP256), Some(KeyUsageType::SignVerify)),
            (
                Some(KeySpec::Hmac256),
                Some(KeyUsageType::GenerateVerifyMac)
            ),
            (
                Some(KeySpec::Hmac256),
                Some(KeyUsageType::GenerateVerifyMac)
            ),
        ]
    );

    // An existing key: the run names the first algorithm the key lists.
    let p384 = kms
        .create_key()
        .key_spec(KeySpec::EccNistP384)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let p384 = p384.key_metadata().unwrap().key_id().to_string();
    let run = bench_json(
        &[
            &common[..],
            &["--op", "verify", "--key-id", &p384, "--connections", "2"],
        ]
        .concat(),
    );
    assert_eq!(run["algorithm"], "ECDSA_SHA_384", "{run}");
    check_figures(&run);

    // A wrk script sends the Verify made at set-up and names the algorithm in its line.
    let script = tmp.path().join("verify.lua");
    let out = Command::new(load_exe())
        .args(["wrk-script", "--op", "verify", "--connections", "64"])
        .args(["--endpoint", &endpoint, "--out"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lua = std::fs::read_to_string(&script).unwrap();
    assert!(lua.contains("TrentService.Verify"), "{lua}");
    assert!(
        lua.contains(r#""MessageType":"RAW""#) && lua.contains(r#""Signature":""#),
        "{lua}"
    );
    assert!(lua.contains(r#""algorithm":"ECDSA_SHA_256","#), "{lua}");

    // The report sets Sign, Verify and GenerateMac beside Encrypt.
    let results = tmp.path().join("results.jsonl");
    let lines: Vec<String> = runs.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&results, lines.concat()).unwrap();
    let report = tmp.path().join("BENCHMARKS.md");
    let out = Command::new(load_exe())
        .arg("report")
        .arg("--results")
        .arg(&results)
        .arg("--out")
        .arg(&report)
        .arg("--chart")
        .arg(tmp.path().join("encrypt.svg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("## Sign, Verify and GenerateMac beside Encrypt"),
        "{text}"
    );
    for row in [
        "| Encrypt, 32 B plaintext | — |",
        "| Sign, 32 B message | ECDSA_SHA_256 |",
        "| Verify, 32 B message | ECDSA_SHA_256 |",
        "| GenerateMac, 32 B message | HMAC_SHA_256 |",
        "| VerifyMac, 32 B message | HMAC_SHA_256 |",
    ] {
        assert!(text.contains(row), "{row} missing from {text}");
    }
    emulator.stop();
}
