//! Harness for the KMS tests: the `hsmkms` launcher as a child process on a free port, a KMS
//! client from the official AWS SDK pointed at it, the emulator's control API, and `hsm-cli` to
//! look inside the cluster the way the AWS guide does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::types::{ConnectionStateType, CustomKeyStoresListEntry, KeyMetadata, OriginType};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub const KMSUSER_PASSWORD: &str = "kmsPassword1";
pub const ADMIN_PASSWORD: &str = "adminPassword1";
/// Seven days, the shortest waiting period, and eight, one day past it.
pub const SEVEN_DAYS_SECONDS: u64 = 7 * 24 * 3600;
pub const EIGHT_DAYS_SECONDS: u64 = 8 * 24 * 3600;

/// How long the launcher may take to print `Ready.` (it creates a cluster on first start).
const READY_LIMIT: Duration = Duration::from_secs(90);
/// How long a custom key store may take to connect or disconnect.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// How long an effect that is written or replicated in the background may take to show.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// Longest any single call to the emulator may take.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A free port on 127.0.0.1, for one emulator.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn hsmkms_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hsmkms"))
}

/// A running `hsmkms`; killed if dropped, so a failing test leaves no process behind.
pub struct Emulator {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
}

impl Emulator {
    /// Starts `hsmkms --data-dir <data_dir> --port <port>` and waits for `Ready.`.
    pub fn start(data_dir: &Path, port: u16) -> Self {
        let mut child = Command::new(hsmkms_exe())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", &port.to_string()])
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
        let ready = rx.recv_timeout(READY_LIMIT);
        let emulator = Emulator {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            port,
        };
        assert!(ready.is_ok(), "hsmkms printed Ready. on port {port}");
        emulator
    }

    /// SIGTERM, as an operator stops it; it must exit cleanly.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
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

    /// SIGKILL, as a crash: nothing gets a chance to flush.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A KMS client from the official SDK, for this emulator, reading nothing from the
    /// environment.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        // Plain HTTP only: no trust roots are needed (nor looked for on the machine).
        let tls_context = TlsContext::builder()
            .with_trust_store(TrustStore::empty())
            .build()
            .unwrap();
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context)
            .build_https();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(self.url(""))
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_LIMIT)
                    .build(),
            )
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(CALL_LIMIT))
            .build()
            .into()
    }

    fn get_json(&self, path: &str) -> Value {
        let body = Self::agent()
            .get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The emulator's clock, in seconds since the epoch.
    pub fn now_seconds(&self) -> f64 {
        self.get_json("/_hsmkms/clock")["epochSeconds"]
            .as_f64()
            .unwrap()
    }

    /// Moves the emulator's clock forward; returns how many keys it deleted on the way.
    pub fn advance_clock(&self, seconds: u64) -> u64 {
        let body = Self::agent()
            .post(&self.url("/_hsmkms/clock"))
            .header("content-type", "application/json")
            .send(serde_json::json!({ "advanceSeconds": seconds }).to_string())
            .unwrap_or_else(|e| panic!("POST /_hsmkms/clock: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["deletedKeys"]
            .as_u64()
            .unwrap_or_else(|| panic!("the clock answer counts deletedKeys: {body}"))
    }

    /// The value of one Prometheus counter at `/_hsmkms/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = Self::agent()
            .get(&self.url("/_hsmkms/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in the metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// The audit trail's `DeleteKey` service event for a key, once it is written.
    pub fn wait_for_delete_key_record(&self, key_id: &str) -> Value {
        wait_until(
            &format!("the audit trail records DeleteKey for {key_id}"),
            SETTLE_LIMIT,
            || {
                let audit = self.get_json(&format!("/_hsmkms/audit?key={key_id}"));
                audit["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["eventName"] == "DeleteKey")
                    .cloned()
            },
        )
    }

    /// The `KMS CMK Deletion` event for a key, once it is published.
    pub fn wait_for_deletion_event(&self, key_arn: &str, key_id: &str) -> Value {
        wait_until(
            &format!("a KMS CMK Deletion event names {key_arn}"),
            SETTLE_LIMIT,
            || {
                let events = self.get_json("/_hsmkms/events");
                events["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| {
                        e["detail-type"] == "KMS CMK Deletion"
                            && e["resources"] == serde_json::json!([key_arn])
                            && e["detail"]["key-id"] == key_id
                    })
                    .cloned()
            },
        )
    }

    /// The cluster's id, as `cluster.json` records it.
    pub fn cluster_id(&self) -> String {
        self.cluster_json()["cluster_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The ids of the cluster's HSMs.
    pub fn hsm_ids(&self) -> Vec<String> {
        self.cluster_json()["hsms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hsm_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn cluster_json(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir.join("cluster.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The cluster's trust anchor (`customerCA.crt`), as a user pastes it into
    /// CreateCustomKeyStore.
    pub fn trust_anchor(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("customerCA.crt")).unwrap()
    }

    /// Keys on one HSM labelled `label`, as `hsm-cli key list` shows them to the admin (who
    /// sees every key).
    pub fn keys_labelled(&self, hsm_id: &str, label: &str) -> Vec<Value> {
        let out = Command::new(hsmkms_exe())
            .arg("hsm-cli")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--hsm", hsm_id, "--json"])
            .args(["--username", "admin", "--role", "admin"])
            .args(["--password", ADMIN_PASSWORD])
            .args(["key", "list"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "hsm-cli key list on {hsm_id} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Value = serde_json::from_str(&stdout).unwrap();
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["label"] == label)
            .cloned()
            .collect()
    }

    /// Creates a custom key store on the cluster; it starts DISCONNECTED.
    pub async fn create_store(&self, kms: &aws_sdk_kms::Client, name: &str) -> String {
        kms.create_custom_key_store()
            .custom_key_store_name(name)
            .cloud_hsm_cluster_id(self.cluster_id())
            .trust_anchor_certificate(self.trust_anchor())
            .key_store_password(KMSUSER_PASSWORD)
            .send()
            .await
            .unwrap()
            .custom_key_store_id()
            .unwrap()
            .to_string()
    }

    /// Creates a custom key store and connects it.
    pub async fn create_connected_store(&self, kms: &aws_sdk_kms::Client, name: &str) -> String {
        let store = self.create_store(kms, name).await;
        kms.connect_custom_key_store()
            .custom_key_store_id(&store)
            .send()
            .await
            .unwrap();
        wait_for_connection_state(kms, &store, ConnectionStateType::Connected).await;
        store
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls `check` until it gives a value, for at most `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A store as DescribeCustomKeyStores shows it.
pub async fn describe_store(kms: &aws_sdk_kms::Client, store: &str) -> CustomKeyStoresListEntry {
    let described = kms
        .describe_custom_key_stores()
        .custom_key_store_id(store)
        .send()
        .await
        .unwrap();
    described.custom_key_stores()[0].clone()
}

/// A store's connection state, as DescribeCustomKeyStores shows it.
pub async fn connection_state(kms: &aws_sdk_kms::Client, store: &str) -> ConnectionStateType {
    describe_store(kms, store)
        .await
        .connection_state()
        .unwrap()
        .clone()
}

/// Polls DescribeCustomKeyStores until the store reaches `want`, for at most 30 s.
pub async fn wait_for_connection_state(
    kms: &aws_sdk_kms::Client,
    store: &str,
    want: ConnectionStateType,
) {
    let start = Instant::now();
    loop {
        let entry = describe_store(kms, store).await;
        if entry.connection_state() == Some(&want) {
            return;
        }
        assert!(
            start.elapsed() < CONNECT_LIMIT,
            "store {store} did not become {want:?}: {:?} ({:?})",
            entry.connection_state(),
            entry.connection_error_code()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates a KMS key whose key material is a backing key in the store's cluster.
pub async fn create_store_key(kms: &aws_sdk_kms::Client, store: &str) -> KeyMetadata {
    kms.create_key()
        .origin(OriginType::AwsCloudhsm)
        .custom_key_store_id(store)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone()
}

/// Creates a KMS key whose key material KMS itself holds.
pub async fn create_kms_key(kms: &aws_sdk_kms::Client) -> KeyMetadata {
    kms.create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone()
}

/// DescribeKey, which must succeed.
pub async fn describe(kms: &aws_sdk_kms::Client, key_id: &str) -> KeyMetadata {
    kms.describe_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone()
}

/// Asserts the error a caller sees: its code and, when given, its exact message.
pub fn assert_error(err: &(impl ProvideErrorMetadata + Debug), code: &str, message: Option<&str>) {
    assert_eq!(err.code(), Some(code), "error code of {err:?}");
    if let Some(message) = message {
        assert_eq!(err.message(), Some(message), "error message of {err:?}");
    }
}

/// The `(hsmId, deletionStatus)` pairs of a DeleteKey record's `backingKeysDeletionStatus`.
pub fn backing_key_deletion_statuses(record: &Value) -> Vec<(String, String)> {
    let encoded = record["additionalEventData"]["backingKeysDeletionStatus"]
        .as_str()
        .unwrap_or_else(|| panic!("backingKeysDeletionStatus is a JSON string: {record}"));
    let statuses: Vec<Value> = serde_json::from_str(encoded).unwrap();
    statuses
        .iter()
        .map(|s| {
            (
                s["hsmId"].as_str().unwrap_or_default().to_string(),
                s["deletionStatus"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
