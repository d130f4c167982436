//! Hostile or broken clients and silent HSMs meet a bound, not a slow death: metrics hold one
//! entry per operation whatever targets clients send, stalled uploads are closed by the body
//! deadline while other clients are served, huge bodies leave memory and the audit trail
//! within their caps, an HSM that never answers fails a call within its deadline (and the next
//! call does not wait on it), and a TLS-less flood on an HSM port locks nobody out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use kms_common::{create_kms_key, free_port, node_pids, Emulator};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Lets this test process open as many sockets as the tests below need.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// One raw KMS-style request; returns the status code.
fn post(emulator: &Emulator, target: &str, body: &[u8]) -> u16 {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
        .post(&emulator.url("/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}

fn metrics(emulator: &Emulator) -> String {
    ureq::get(&emulator.url("/_hsmkms/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The metrics text without its numbers: which series exist.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_targets_leave_the_metrics_as_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    // One unknown call first, so the shared "Other" series exists.
    assert_eq!(post(&emulator, "TrentService.Nope", b"{}"), 400);
    let before = series(&metrics(&emulator));
    for i in 0..10_000u32 {
        let target = match i % 4 {
            0 => format!("TrentService.Op{i}"),
            1 => format!("TrentService.\"}} 1e99 # {i}"),
            2 => format!("Other{i}.Thing"),
            _ => format!(
                "TrentService.{}\\\"\\nfake_metric 1",
                "x".repeat(i as usize % 300)
            ),
        };
        let status = post(&emulator, &target, b"{}");
        assert!(status == 400 || status == 404, "{target:?}: {status}");
    }
    let after = metrics(&emulator);
    assert_eq!(series(&after), before, "no series added");
    assert!(!after.contains("1e99") && !after.contains("fake_metric"));
    let other = after
        .lines()
        .find(|l| l.starts_with("hsmkms_requests_total{operation=\"Other\"}"))
        .unwrap();
    assert!(other.ends_with(" 7501"), "{other}");
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_closed_by_the_body_deadline_and_others_are_served() {
    raise_open_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;

    // 1,000 uploads that announce a body and send only the start of it.
    let address = format!("127.0.0.1:{}", emulator.port);
    let mut stalled: Vec<TcpStream> = (0..1_000)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n\
                  X-Amz-Target: TrentService.Encrypt\r\nContent-Length: 1000\r\n\r\n{\"KeyId\":",
            )
            .unwrap();
            s
        })
        .collect();
    let started = Instant::now();

    // Meanwhile a normal client is served.
    for _ in 0..20 {
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(b"still served".to_vec()))
            .send()
            .await
            .unwrap();
    }

    // Each stalled upload is answered RequestTimeoutException (408) and closed, within the
    // deadline and a little slack.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(18),
        "closed after {waited:?}, body deadline 10 s"
    );
    assert!(waited >= Duration::from_secs(9), "not before the deadline");
    emulator.stop();
}

/// How many 1 MiB requests the next test sends: 10,000 with `HSMKMS_LONG_TESTS`, else 1,000.
fn big_request_count() -> usize {
    if std::env::var_os("HSMKMS_LONG_TESTS").is_some() {
        10_000
    } else {
        1_000
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_bodies_leave_memory_and_the_audit_trail_within_their_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let cap: u64 = 4 * 1024 * 1024;
    let emulator = Emulator::start_with(
        &data_dir,
        free_port(),
        &["--audit-max-bytes", &cap.to_string()],
    );
    let resident_before = emulator.resident_bytes();
    // Bodies just under the 1 MiB limit, of known and unknown operations, valid JSON and not.
    let big = "A".repeat(1024 * 1024 - 64);
    let bodies = [
        (
            "TrentService.TagResource",
            format!("{{\"KeyId\":\"{big}\"}}"),
        ),
        ("TrentService.Made-Up", format!("{{\"Junk\":\"{big}\"}}")),
        ("TrentService.Encrypt", format!("[\"{big}\"]")),
    ];
    let count = big_request_count();
    let sent = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let emulator = &emulator;
                let bodies = &bodies;
                scope.spawn(move || {
                    for i in (t..count).step_by(4) {
                        let (target, body) = &bodies[i % bodies.len()];
                        let status = post(emulator, target, body.as_bytes());
                        assert_eq!(status, 400, "{target}");
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        count
    });
    // The trail's files stay under the cap, and no record holds a body.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kms_dir = data_dir.join("kms");
    let mut total = 0;
    for entry in std::fs::read_dir(&kms_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("audit") {
            total += entry.metadata().unwrap().len();
        }
    }
    assert!(
        total <= cap + 1024 * 1024,
        "{total} bytes of audit trail, cap {cap}"
    );
    let records = emulator.get_json("/_hsmkms/audit?limit=50");
    let text = records.to_string();
    assert!(text.len() < 50 * 16 * 1024, "records are bounded");
    assert!(!text.contains(&"A".repeat(5000)), "no body in the trail");
    // Memory did not grow with what was sent ({sent} MiB).
    let resident_after = emulator.resident_bytes();
    assert!(
        resident_after < resident_before + 150 * 1024 * 1024,
        "{sent} 1 MiB requests took resident memory from {resident_before} to {resident_after}"
    );
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_that_never_answers_fails_encrypt_within_its_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let emulator = Emulator::start_with(&data_dir, free_port(), &["--hsm-processes"]);
    let kms = emulator.kms_without_retries();
    let store = emulator.create_connected_store(&kms, "silent-store").await;
    let key = kms_common::create_store_key(&kms, &store).await;
    let encrypt = || {
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
    };
    encrypt().await.unwrap();

    // Every HSM stops answering (alive, connected, silent).
    let pids: Vec<i32> = node_pids(&data_dir).iter().map(|(p, _)| *p).collect();
    for pid in &pids {
        kill(Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
    }
    let started = Instant::now();
    let err = encrypt().await.unwrap_err().into_service_error();
    let first = started.elapsed();
    let code = err.meta().code().unwrap_or_default().to_string();
    assert!(
        code == "KMSInvalidStateException" || code == "DependencyTimeoutException",
        "{err:?}"
    );
    assert!(
        first < Duration::from_secs(14),
        "the first call took {first:?}"
    );
    // The sessions that timed out are set aside: the next call does not wait on them.
    let started = Instant::now();
    assert!(encrypt().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The HSMs answer again: the store logs in again by itself and the key works.
    for pid in &pids {
        kill(Pid::from_raw(*pid), Signal::SIGCONT).unwrap();
    }
    let started = Instant::now();
    loop {
        if encrypt().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the key works again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_disk_meets_the_request_deadline_and_the_change_still_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start_with(
        &tmp.path().join("data"),
        free_port(),
        &["--request-deadline", "2"],
    );
    let kms = emulator.kms_without_retries();
    let key = create_kms_key(&kms).await;
    let id = key.key_id();

    // The store's disk stops answering for 10 s: a change cannot commit, and its caller gets
    // DependencyTimeoutException at the 2 s deadline instead of waiting on the disk.
    emulator.post_json(
        "/_hsmkms/faults",
        &serde_json::json!({"action": "stall-commits", "seconds": 10}),
    );
    let started = Instant::now();
    let err = kms
        .update_key_description()
        .key_id(id)
        .description("landed late")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    let waited = started.elapsed();
    assert_eq!(
        err.meta().code(),
        Some("DependencyTimeoutException"),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    // An operation whose errors in KMS's model have no DependencyTimeoutException answers
    // KMSInternalException instead.
    let err = kms
        .tag_resource()
        .key_id(id)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("landed")
                .tag_value("late")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.meta().code(), Some("KMSInternalException"), "{err:?}");
    // Clients that keep retrying cannot pile up changes without end: past 64 still running
    // after their callers gave up, a new change is refused at once with ThrottlingException
    // (which SDKs retry with backoff).
    let retries = (0..64).map(|i| {
        kms.update_key_description()
            .key_id(id)
            .description(format!("retry {i}"))
            .send()
    });
    for answer in futures::future::join_all(retries).await {
        let code = answer.unwrap_err().into_service_error();
        assert_eq!(code.meta().code(), Some("DependencyTimeoutException"));
    }
    let started = Instant::now();
    let err = kms
        .update_key_description()
        .key_id(id)
        .description("refused")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.meta().code(), Some("ThrottlingException"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Crypto does not need the disk and is served meanwhile.
    kms.encrypt()
        .key_id(id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();

    // The changes that timed out were not cancelled: once the disk answers they commit and
    // are installed, as a call that timed out on AWS may still have happened; the refused one
    // never is.
    let started = Instant::now();
    loop {
        let described = kms_common::describe(&kms, id).await;
        let tags = kms.list_resource_tags().key_id(id).send().await.unwrap();
        let description = described.description().unwrap_or_default();
        assert_ne!(description, "refused");
        if description.starts_with("retry ") && tags.tags().iter().any(|t| t.tag_key() == "landed")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the changes landed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // They are done, so changes are taken again.
    kms.update_key_description()
        .key_id(id)
        .description("after")
        .send()
        .await
        .unwrap();
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_on_an_hsm_port_locks_nobody_out() {
    raise_open_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let store = emulator.create_connected_store(&kms, "flooded-store").await;
    let key = kms_common::create_store_key(&kms, &store).await;

    // 2,000 connections to the first HSM that never start TLS, held open.
    let cluster: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(emulator.data_dir.join("cluster.json")).unwrap(),
    )
    .unwrap();
    let address = cluster["hsms"][0]["address"].as_str().unwrap().to_string();
    let flood: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(flood.len() > 1_024, "{} connections opened", flood.len());

    // The store's sessions keep working throughout.
    for _ in 0..20 {
        kms.encrypt()
            .key_id(key.key_id())
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .unwrap();
    }
    // Once the flood's handshakes have timed out, a new client (the CLI) gets in while the
    // flood is still open.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hsm = emulator.hsm_ids()[0].clone();
    let listed = emulator.admin_cli(&hsm, &["user", "list"]);
    assert!(listed["users"].as_array().is_some_and(|u| !u.is_empty()));
    drop(flood);
    emulator.stop();
}
