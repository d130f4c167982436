//! The launcher as a newcomer uses it: `hsmkms` prints `Ready.`, `hsmkms hsm-cli` manages users
//! and keys on either HSM, a restart finds everything, Ctrl-C/SIGTERM stop it cleanly; with
//! `--hsm-processes` a killed HSM process is restarted, and none outlives the launcher.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod kms_common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::hsmkms_exe;
use kms_common::node_pids;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts `hsmkms` on `data_dir` with extra args and waits for `Ready.`.
fn start_launcher(data_dir: &Path, extra: &[&str]) -> Child {
    // Each test's emulator gets its own free port for the KMS endpoint.
    let port = hsmkms::cluster::free_port("127.0.0.1").unwrap();
    let mut child = Command::new(hsmkms_exe())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--port", &port.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "Ready." {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .expect("hsmkms printed Ready.");
    child
}

fn stop_launcher(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "hsmkms exits cleanly on SIGTERM: {status}"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "hsmkms did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `hsmkms hsm-cli --data-dir D <args>` (stdin from `input`); returns stdout, or panics
/// with stderr.
fn cli(data_dir: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(hsmkms_exe())
        .arg("hsm-cli")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "hsm-cli {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const AS_ADMIN: [&str; 6] = [
    "--username",
    "admin",
    "--role",
    "admin",
    "--password",
    "adminPassword1",
];
const AS_KMSUSER: [&str; 6] = [
    "--username",
    "kmsuser",
    "--role",
    "crypto-user",
    "--password",
    "kmsPassword1",
];

fn with<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

fn hsm_ids(data_dir: &Path) -> Vec<String> {
    hsmkms::cluster::ClusterDir::open(data_dir)
        .unwrap()
        .info
        .hsms
        .iter()
        .map(|h| h.hsm_id.clone())
        .collect()
}

#[test]
fn the_walkthrough_works_and_a_restart_finds_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let launcher = start_launcher(&data, &[]);
    let info = hsmkms::cluster::ClusterDir::open(&data).unwrap().info;
    assert_eq!(info.state, "ACTIVE");
    assert!(hsmkms_common::ids::is_valid_id(
        "cluster-",
        &info.cluster_id
    ));
    let azs: Vec<_> = info
        .hsms
        .iter()
        .map(|h| h.availability_zone.as_str())
        .collect();
    assert_eq!(azs, ["us-east-1a", "us-east-1b"]);
    assert!(data.join("customerCA.crt").exists());
    let hsms = hsm_ids(&data);

    // Log in as admin: both users are there.
    let users = cli(&data, &with(&AS_ADMIN, &["user", "list"]), None);
    assert!(
        users.contains("admin") && users.contains("kmsuser"),
        "{users}"
    );

    // Generate a key as kmsuser; it is listed on both HSMs.
    let out = cli(
        &data,
        &with(
            &AS_KMSUSER,
            &["--json", "key", "generate-aes", "--label", "walkthrough"],
        ),
        None,
    );
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let handle = created["key"]["handle"].as_u64().unwrap();
    assert_eq!(created["durable-on"].as_array().unwrap().len(), 2);
    for hsm in &hsms {
        let listed = cli(
            &data,
            &with(
                &AS_KMSUSER,
                &["--hsm", hsm, "key", "list", "--label", "walkthrough"],
            ),
            None,
        );
        assert!(listed.contains(&handle.to_string()), "on {hsm}: {listed}");
    }

    // Delete it in interactive mode on the second HSM: it is gone from both.
    let script = format!(
        "login --username kmsuser --role crypto-user --password kmsPassword1\nkey delete --handle {handle}\nlogout\n"
    );
    let out = cli(&data, &["--hsm", &hsms[1]], Some(&script));
    assert!(out.contains(&format!("deleted key {handle}")), "{out}");
    for hsm in &hsms {
        let listed = cli(
            &data,
            &with(&AS_KMSUSER, &["--hsm", hsm, "--json", "key", "list"]),
            None,
        );
        let keys: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert!(
            keys["keys"].as_array().unwrap().is_empty(),
            "on {hsm}: {listed}"
        );
    }

    // A key made now is still there after a restart, in the same cluster.
    let out = cli(
        &data,
        &with(
            &AS_KMSUSER,
            &["--json", "key", "generate-aes", "--label", "kept"],
        ),
        None,
    );
    let kept: serde_json::Value = serde_json::from_str(&out).unwrap();
    stop_launcher(launcher);
    let launcher = start_launcher(&data, &[]);
    assert_eq!(
        hsmkms::cluster::ClusterDir::open(&data)
            .unwrap()
            .info
            .cluster_id,
        info.cluster_id
    );
    for hsm in &hsms {
        let listed = cli(
            &data,
            &with(
                &AS_KMSUSER,
                &["--hsm", hsm, "key", "list", "--label", "kept"],
            ),
            None,
        );
        assert!(
            listed.contains(&kept["key"]["handle"].to_string()),
            "{listed}"
        );
    }
    stop_launcher(launcher);
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hsm_processes_are_restarted_when_killed_and_stop_with_the_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let launcher = start_launcher(&data, &["--hsm-processes", "--hsms", "3"]);
    let hsms = hsm_ids(&data);
    assert_eq!(hsms.len(), 3);
    let before = node_pids(&data);
    assert_eq!(before.len(), 3, "one process per HSM: {before:?}");

    // SIGKILL one HSM process: the supervisor starts it again, and it serves.
    let (victim, dir) = before[0].clone();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    wait_for(
        "the killed HSM is running again",
        Duration::from_secs(30),
        || {
            node_pids(&data)
                .iter()
                .any(|(pid, d)| *d == dir && *pid != victim)
        },
    );
    let hsm = hsms.iter().find(|h| dir.contains(h.as_str())).unwrap();
    wait_for("the restarted HSM serves", Duration::from_secs(30), || {
        let out = Command::new(hsmkms_exe())
            .args(["hsm-cli", "--data-dir"])
            .arg(&data)
            .args(["--hsm", hsm])
            .args(AS_KMSUSER)
            .args(["key", "list"])
            .output()
            .unwrap();
        out.status.success()
    });
    let out = cli(
        &data,
        &with(
            &AS_KMSUSER,
            &[
                "--hsm",
                hsm,
                "key",
                "generate-aes",
                "--label",
                "after-restart",
            ],
        ),
        None,
    );
    assert!(out.contains("durable on"), "{out}");

    // SIGTERM the launcher: every HSM process stops with it.
    stop_launcher(launcher);
    wait_for("no HSM process is left", Duration::from_secs(15), || {
        node_pids(&data).is_empty()
    });

    // Even a launcher killed with SIGKILL leaves no HSM process behind.
    let mut launcher = start_launcher(&data, &["--hsm-processes"]);
    assert_eq!(node_pids(&data).len(), 3);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    wait_for(
        "orphaned HSM processes stopped",
        Duration::from_secs(15),
        || node_pids(&data).is_empty(),
    );
}

#[test]
fn an_hsm_provisioned_by_hand_joins_by_address_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let launcher = start_launcher(&data, &[]);
    let out = cli(
        &data,
        &with(
            &AS_KMSUSER,
            &["--json", "key", "generate-aes", "--label", "before-join"],
        ),
        None,
    );
    let before: serde_json::Value = serde_json::from_str(&out).unwrap();

    // Provision a third HSM as for another host, and start it by hand.
    let port = hsmkms::cluster::free_port("127.0.0.1").unwrap();
    let address = format!("127.0.0.1:{port}");
    let node_dir = tmp.path().join("hsm-c");
    let status = Command::new(hsmkms_exe())
        .args(["add-hsm", "--data-dir"])
        .arg(&data)
        .args([
            "--availability-zone",
            "us-east-1c",
            "--listen",
            &address,
            "--out",
        ])
        .arg(&node_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let new_id = hsm_ids(&data).pop().unwrap();
    let mut node = Command::new(hsmkms_exe())
        .args(["hsm-node", "--node-dir"])
        .arg(&node_dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // It learns the users and the key made before it joined...
    wait_for("the new HSM caught up", Duration::from_secs(30), || {
        let out = Command::new(hsmkms_exe())
            .args(["hsm-cli", "--data-dir"])
            .arg(&data)
            .args(["--hsm", &new_id])
            .args(AS_KMSUSER)
            .args(["key", "list", "--label", "before-join"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&before["key"]["handle"].to_string())
    });
    // ...the others count it as a member, and a key made on it reaches them.
    wait_for(
        "the first HSM links to the new one",
        Duration::from_secs(30),
        || {
            cli(&data, &["cluster", "status"], None)
                .contains(&format!("{new_id} us-east-1c {address} (connected)"))
        },
    );
    let out = cli(
        &data,
        &with(
            &AS_KMSUSER,
            &[
                "--hsm",
                &new_id,
                "--json",
                "key",
                "generate-aes",
                "--label",
                "made-on-c",
            ],
        ),
        None,
    );
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["durable-on"].as_array().unwrap().len(), 2);
    let first = hsm_ids(&data).remove(0);
    wait_for(
        "the key made on the new HSM replicated",
        Duration::from_secs(30),
        || {
            cli(
                &data,
                &with(
                    &AS_KMSUSER,
                    &["--hsm", &first, "key", "list", "--label", "made-on-c"],
                ),
                None,
            )
            .contains(&made["key"]["handle"].to_string())
        },
    );

    kill(Pid::from_raw(node.id() as i32), Signal::SIGTERM).unwrap();
    assert!(node.wait().unwrap().success());
    stop_launcher(launcher);
}

#[test]
fn a_first_start_interrupted_before_the_cluster_was_recorded_starts_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec = hsmkms::cluster::ClusterSpec {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
        hsms: 2,
        admin_password: "adminPassword1".into(),
        kmsuser_password: "kmsPassword1".into(),
        host: "127.0.0.1".into(),
    };
    let clock = hsmkms_common::clock::SystemClock;
    let first = runtime
        .block_on(hsmkms::cluster::ClusterDir::create(
            tmp.path(),
            &spec,
            &clock,
        ))
        .unwrap();
    // As if killed just before cluster.json was written: keys files and node directories exist.
    std::fs::remove_file(tmp.path().join("cluster.json")).unwrap();
    let again = runtime
        .block_on(hsmkms::cluster::ClusterDir::open_or_create(
            tmp.path(),
            &spec,
            &clock,
        ))
        .unwrap();
    assert_ne!(again.info.cluster_id, first.info.cluster_id);
    let dirs: Vec<_> = std::fs::read_dir(tmp.path().join("hsms"))
        .unwrap()
        .collect();
    assert_eq!(dirs.len(), 2, "the unfinished HSMs were cleared away");
}
