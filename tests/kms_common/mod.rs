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
use aws_sdk_kms::types::{
    ConnectionErrorCodeType, ConnectionStateType, CustomKeyStoresListEntry, KeyMetadata, OriginType,
};
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

/// The SDKs' HTTP client: plain HTTP only, so no trust roots are needed (nor looked for on the
/// machine), and rustls with ring rather than the aws-lc default.
fn sdk_http_client() -> aws_sdk_kms::config::SharedHttpClient {
    let tls_context = TlsContext::builder()
        .with_trust_store(TrustStore::empty())
        .build()
        .unwrap();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https()
}

/// The botocore the Python tests use (its models are checked by `kms_model`): the newest at
/// the time of writing (KMS: 56 operations, CloudHSMv2: 18); boto3 of the same version.
pub const BOTOCORE: &str = "1.44.8";

/// The tests' Python: a venv in `target/model-venv`, made on first use, with `packages`
/// (pip requirement specifiers) installed once each (a marker file per specifier), safe to
/// call from tests that run at once. Returns its `python3`.
pub fn python_venv(packages: &[&str]) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/model-venv");
    let python = venv.join("bin/python3");
    // Tests of one binary run on several threads and binaries may run at once: an exclusive
    // lock on a file beside the venv (an flock, released when `lock` drops) makes one of them
    // create it and install into it while the others wait, rather than racing on its mkdir.
    std::fs::create_dir_all(root.join("target")).unwrap();
    let lock = std::fs::File::create(root.join("target/model-venv.lock")).unwrap();
    lock.lock().unwrap();
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !venv.join(format!("installed-{p}")).exists())
        .collect();
    if !missing.is_empty() {
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(&missing)
            .status()
            .unwrap();
        assert!(installed.success(), "pip install {missing:?} failed");
        for p in missing {
            std::fs::write(venv.join(format!("installed-{p}")), b"").unwrap();
        }
    }
    python
}

/// A free port on 127.0.0.1 for one emulator, below the ephemeral range (as the launcher
/// picks HSM ports), so a restart on the same port never finds it taken by a connection's
/// source port.
pub fn free_port() -> u16 {
    hsmkms::cluster::free_port("127.0.0.1").unwrap()
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
        Self::start_with(data_dir, port, &[])
    }

    /// The same, with more options (`--hsm-processes`, ...).
    pub fn start_with(data_dir: &Path, port: u16, options: &[&str]) -> Self {
        let mut child = Command::new(hsmkms_exe())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", &port.to_string()])
            .args(options)
            // HSMKMS_TEST_LOG=info shows the emulator's log (on the test's stderr).
            .env(
                "RUST_LOG",
                std::env::var("HSMKMS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("HSMKMS_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                // Kept beside the data directory, so a start that fails can say why.
                Stdio::from(Self::open_log(data_dir))
            })
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
        assert!(
            ready.is_ok(),
            "hsmkms printed Ready. on port {port}; the end of its log:\n{}",
            emulator.log_tail(40)
        );
        emulator
    }

    /// The emulator's log file, appended to by every start on `data_dir`.
    fn open_log(data_dir: &Path) -> std::fs::File {
        if let Some(parent) = data_dir.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Self::log_path(data_dir))
            .unwrap()
    }

    /// Where the emulator's log goes (unless `HSMKMS_TEST_LOG` shows it).
    fn log_path(data_dir: &Path) -> PathBuf {
        data_dir.with_extension("log")
    }

    /// The last `lines` lines of the emulator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(Self::log_path(&self.data_dir)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
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

    /// The launcher's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The launcher's resident memory, in bytes (VmRSS).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }

    /// Waits up to `limit` for the process to end by itself (at a crash point a fault
    /// armed); answers whether it did.
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL, as a crash: nothing gets a chance to flush.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A KMS client that does not retry: every failed attempt reaches the test (the SDK
    /// retries 5xx answers such as KMSInternalException by itself).
    pub fn kms_without_retries(&self) -> aws_sdk_kms::Client {
        let config = self
            .kms()
            .config()
            .to_builder()
            .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// A KMS client from the official SDK, for this emulator, reading nothing from the
    /// environment.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        self.kms_as("us-east-1", "test")
    }

    /// A KMS client signing for `region` with access key id `access_key` (a 12-digit one names
    /// the account the emulator serves it in).
    pub fn kms_as(&self, region: &str, access_key: &str) -> aws_sdk_kms::Client {
        self.kms_signed(region, access_key, "test")
    }

    /// A KMS client signing for `region` with the access key `access_key` / `secret_key`.
    pub fn kms_signed(
        &self,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> aws_sdk_kms::Client {
        let http_client = sdk_http_client();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
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

    /// A CloudHSMv2 client from the official SDK (AWS JSON 1.1), for `region`.
    pub fn cloudhsm_in(&self, region: &str) -> aws_sdk_cloudhsmv2::Client {
        self.cloudhsm_signed(region, "test", "test")
    }

    /// A CloudHSMv2 client signing for `region` with `access_key` / `secret_key`.
    pub fn cloudhsm_signed(
        &self,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> aws_sdk_cloudhsmv2::Client {
        let http_client = sdk_http_client();
        let config = aws_sdk_cloudhsmv2::Config::builder()
            .behavior_version(aws_sdk_cloudhsmv2::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudhsmv2::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_cloudhsmv2::config::Credentials::new(
                access_key, secret_key, None, None, "test",
            ))
            .endpoint_url(self.url(""))
            .http_client(http_client)
            .timeout_config(
                aws_sdk_cloudhsmv2::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(CALL_LIMIT)
                    .build(),
            )
            .build();
        aws_sdk_cloudhsmv2::Client::from_conf(config)
    }

    /// A CloudHSMv2 client for the emulator's Region.
    pub fn cloudhsm(&self) -> aws_sdk_cloudhsmv2::Client {
        self.cloudhsm_in("us-east-1")
    }

    /// `GET /_hsmkms/orphans`: per cluster id, the labels of its orphaned key objects.
    pub fn orphans(&self) -> Vec<(String, Vec<String>)> {
        let report = self.get_json("/_hsmkms/orphans");
        report["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert!(c.get("error").is_none(), "the orphan report failed: {c}");
                let labels = c["orphans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["label"].as_str().unwrap().to_string())
                    .collect();
                (c["clusterId"].as_str().unwrap().to_string(), labels)
            })
            .collect()
    }

    /// `GET /_hsmkms/backups?containsKey=<arn>`: ids of the backups that hold the key.
    pub fn backups_containing(&self, arn: &str) -> Vec<String> {
        let report = self.get_json(&format!("/_hsmkms/backups?containsKey={arn}"));
        report["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["backupId"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs `hsmkms hsm-cli --json` with `args` (and `--data-dir`); returns its JSON answer.
    pub fn hsm_cli(&self, args: &[&str]) -> Value {
        let out = Command::new(hsmkms_exe())
            .arg("hsm-cli")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "hsm-cli {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("hsm-cli {args:?} answered {stdout}: {e}"))
    }

    /// `hsm-cli --json` on one HSM, logged in as the admin (who sees every user and key).
    pub fn admin_cli(&self, hsm_id: &str, args: &[&str]) -> Value {
        let mut all = vec![
            "--hsm",
            hsm_id,
            "--username",
            "admin",
            "--role",
            "admin",
            "--password",
            ADMIN_PASSWORD,
        ];
        all.extend_from_slice(args);
        self.hsm_cli(&all)
    }

    /// Sets kmsuser's password as the cluster's admin, as the AWS guide does before a store
    /// is given a password KMS does not know yet.
    pub fn reset_kmsuser_password(&self, password: &str) {
        let hsm = self.hsm_ids()[0].clone();
        self.admin_cli(
            &hsm,
            &[
                "user",
                "change-password",
                "--username",
                "kmsuser",
                "--role",
                "crypto-user",
                "--password",
                password,
            ],
        );
    }

    /// Stops or starts an HSM through the control API's fault injection.
    pub fn fault(&self, hsm_id: &str, action: &str) {
        let status = Self::agent()
            .post(&self.url("/_hsmkms/faults"))
            .header("content-type", "application/json")
            .send(serde_json::json!({"hsmId": hsm_id, "action": action}).to_string())
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }

    /// One raw KMS call over AWS JSON 1.1 (the emulator takes unsigned requests): (status,
    /// answer). For what the SDK would not send, or members it would not show.
    pub fn kms_json(&self, op: &str, body: &Value) -> (u16, Value) {
        let response = Self::agent()
            .post(&self.url("/"))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &format!("TrentService.{op}"))
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string());
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }

    /// One raw CloudHSMv2 call over AWS JSON 1.1: (status, answer).
    pub fn baldr_json(&self, op: &str, body: &Value) -> (u16, Value) {
        let response = Self::agent()
            .post(&self.url("/"))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &format!("BaldrApiService.{op}"))
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string());
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }

    /// One raw CloudHSMv2 call over Smithy RPCv2 CBOR: (status, answer as CBOR).
    pub fn baldr_cbor(&self, op: &str, body: &[u8]) -> (u16, ciborium::Value) {
        let response = Self::agent()
            .post(&self.url(&format!("/service/BaldrApiService/operation/{op}")))
            .header("content-type", "application/cbor")
            .header("smithy-protocol", "rpc-v2-cbor")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body);
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get("smithy-protocol")
                .map(|v| v.to_str().unwrap()),
            Some("rpc-v2-cbor")
        );
        let bytes = response.body_mut().read_to_vec().unwrap();
        (status, ciborium::de::from_reader(bytes.as_slice()).unwrap())
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(CALL_LIMIT))
            .build()
            .into()
    }

    /// POSTs a JSON body to the control API; the answer, whatever its status.
    pub fn post_json_status(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut response = Self::agent()
            .post(&self.url(path))
            .header("content-type", "application/json")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}")),
        )
    }

    /// POSTs a JSON body to the control API, which must answer 200.
    pub fn post_json(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post_json_status(path, body);
        assert_eq!(status, 200, "POST {path}: {answer}");
        answer
    }

    /// GETs a JSON answer whatever its status (health answers 503 when unhealthy).
    pub fn get_json_any_status(&self, path: &str) -> Value {
        let mut response = Self::agent()
            .get(&self.url(path))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let text = response.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    pub fn get_json(&self, path: &str) -> Value {
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
    /// GETs a control API page as text (the metrics).
    pub fn get_text(&self, path: &str) -> String {
        Self::agent()
            .get(&self.url(path))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

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

/// Connects and waits until the store is FAILED with `code`.
pub async fn connect_fails_with(
    kms: &aws_sdk_kms::Client,
    store: &str,
    code: ConnectionErrorCodeType,
) {
    kms.connect_custom_key_store()
        .custom_key_store_id(store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(kms, store, ConnectionStateType::Failed).await;
    assert_eq!(
        describe_store(kms, store).await.connection_error_code(),
        Some(&code)
    );
}

/// Disconnects the store and waits until it is DISCONNECTED.
pub async fn disconnect(kms: &aws_sdk_kms::Client, store: &str) {
    kms.disconnect_custom_key_store()
        .custom_key_store_id(store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(kms, store, ConnectionStateType::Disconnected).await;
}

/// Connects the store and waits until it is CONNECTED.
pub async fn reconnect(kms: &aws_sdk_kms::Client, store: &str) {
    kms.connect_custom_key_store()
        .custom_key_store_id(store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(kms, store, ConnectionStateType::Connected).await;
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
/// Waits until the cluster has exactly `count` HSMs, all ACTIVE; returns them.
pub async fn wait_for_active_hsms(
    hsm: &aws_sdk_cloudhsmv2::Client,
    cluster_id: &str,
    count: usize,
) -> Vec<aws_sdk_cloudhsmv2::types::Hsm> {
    let started = Instant::now();
    loop {
        let cluster = describe_cluster(hsm, cluster_id).await;
        let hsms = cluster.hsms().to_vec();
        if hsms.len() == count
            && hsms
                .iter()
                .all(|h| h.state() == Some(&aws_sdk_cloudhsmv2::types::HsmState::Active))
        {
            return hsms;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "cluster {cluster_id} has {count} ACTIVE HSMs: {hsms:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One cluster, as DescribeClusters shows it.
pub async fn describe_cluster(
    hsm: &aws_sdk_cloudhsmv2::Client,
    cluster_id: &str,
) -> aws_sdk_cloudhsmv2::types::Cluster {
    hsm.describe_clusters()
        .filters("clusterIds", vec![cluster_id.to_string()])
        .send()
        .await
        .unwrap()
        .clusters()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("DescribeClusters shows {cluster_id}"))
}

/// Every backup of the Region, as DescribeBackups shows it (oldest first).
pub async fn backups(hsm: &aws_sdk_cloudhsmv2::Client) -> Vec<aws_sdk_cloudhsmv2::types::Backup> {
    let pages = hsm
        .describe_backups()
        .sort_ascending(true)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    pages.iter().flat_map(|p| p.backups().to_vec()).collect()
}

/// Restores a cluster from a backup, gives it HSMs in `zones`, and waits until it is ACTIVE.
pub async fn restore_cluster(
    hsm: &aws_sdk_cloudhsmv2::Client,
    backup_id: &str,
    zones: &[&str],
) -> String {
    let subnets: Vec<String> = (0..zones.len())
        .map(|i| format!("subnet-{:017x}", 0xabc000 + i))
        .collect();
    let cluster = hsm
        .create_cluster()
        .hsm_type("hsm1.medium")
        .source_backup_id(backup_id)
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap()
        .cluster()
        .cloned()
        .unwrap();
    let id = cluster.cluster_id().unwrap().to_string();
    assert_eq!(cluster.source_backup_id(), Some(backup_id));
    // The first HSM brings the backup and activates the cluster; only then can others join.
    for (i, zone) in zones.iter().enumerate() {
        hsm.create_hsm()
            .cluster_id(&id)
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        if i == 0 {
            wait_for_active_hsms(hsm, &id, 1).await;
        }
    }
    wait_for_active_hsms(hsm, &id, zones.len()).await;
    let state = describe_cluster(hsm, &id).await.state().cloned();
    assert_eq!(state, Some(aws_sdk_cloudhsmv2::types::ClusterState::Active));
    id
}

/// Deletes every HSM of a cluster, waits until they are gone, and deletes the cluster.
pub async fn delete_cluster_and_hsms(hsm: &aws_sdk_cloudhsmv2::Client, cluster_id: &str) {
    let cluster = describe_cluster(hsm, cluster_id).await;
    for h in cluster.hsms() {
        hsm.delete_hsm()
            .cluster_id(cluster_id)
            .hsm_id(h.hsm_id())
            .send()
            .await
            .unwrap();
    }
    wait_until_async(&format!("cluster {cluster_id} has no HSMs"), || async {
        describe_cluster(hsm, cluster_id)
            .await
            .hsms()
            .is_empty()
            .then_some(())
    })
    .await;
    hsm.delete_cluster()
        .cluster_id(cluster_id)
        .send()
        .await
        .unwrap();
}

/// Pids of running `hsm-node` processes serving a node directory under `data_dir`.
pub fn node_pids(data_dir: &Path) -> Vec<(i32, String)> {
    let needle = data_dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == "hsm-node") {
            if let Some(dir) = args
                .iter()
                .find(|a| a.contains(&needle) && a.contains("hsms"))
            {
                // Zombies (exited, not yet reaped) do not count.
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                if !stat.contains(") Z ") {
                    found.push((pid, dir.clone()));
                }
            }
        }
    }
    found
}

/// Polls an async check until it answers, within the settle limit.
pub async fn wait_until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn create_kms_key(kms: &aws_sdk_kms::Client) -> KeyMetadata {
    kms.create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone()
}

/// A key's tags, as ListResourceTags shows them.
pub async fn key_tags(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
) -> std::collections::BTreeMap<String, String> {
    kms.list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
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

/// Runs `hsmkms` with `options` and no token in the environment; it must exit by itself,
/// unsuccessfully: its stderr.
pub fn refused_start(dir: &Path, options: &[&str]) -> String {
    let mut child = Command::new(hsmkms_exe())
        .arg("--data-dir")
        .arg(dir)
        .args(["--port", &free_port().to_string()])
        .args(options)
        .env_remove("HSMKMS_CONTROL_TOKEN")
        .env_remove("HSMKMS_ACCESS_KEYS")
        .env_remove("HSMKMS_CREDENTIALS_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("hsmkms {options:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The Python of the tests' venv with the pinned botocore (made on first use).
pub fn model_python() -> PathBuf {
    python_venv(&[&format!("botocore=={BOTOCORE}")])
}
