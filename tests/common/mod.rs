//! Test harness: a real cluster in a temporary data directory, its HSMs either as real
//! `hsm-node` processes (the `hsmkms hsm-node` executable) or in-process, and clients that
//! speak the node protocol with the cluster's client certificate.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_node::{NodeHandle, NodeOptions};
use hsmkms::cluster::{ClusterDir, ClusterSpec, HsmEntry};
use hsmkms_common::client::{ClientError, NodeClient};
use hsmkms_common::clock::SystemClock;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{ErrorCode, KeyAttributes, Request, Response, Role};

pub const ADMIN_PASSWORD: &str = "adminPassword1";
pub const KMSUSER_PASSWORD: &str = "kmsPassword1";
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Where the test's cluster lives; removed when dropped.
pub struct TestCluster {
    pub tmp: tempfile::TempDir,
    pub cluster: ClusterDir,
    processes: HashMap<String, Child>,
    in_process: HashMap<String, NodeHandle>,
}

pub fn hsmkms_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hsmkms"))
}

impl TestCluster {
    /// A new ACTIVE cluster of `hsms` HSMs, none running yet.
    pub async fn create(hsms: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let spec = ClusterSpec {
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
            hsms,
            admin_password: SecretString::new(ADMIN_PASSWORD),
            kmsuser_password: SecretString::new(KMSUSER_PASSWORD),
            host: "127.0.0.1".into(),
        };
        let cluster = ClusterDir::create(tmp.path(), &spec, &SystemClock)
            .await
            .unwrap();
        Self {
            tmp,
            cluster,
            processes: HashMap::new(),
            in_process: HashMap::new(),
        }
    }

    pub fn hsm(&self, i: usize) -> HsmEntry {
        self.cluster.info.hsms[i].clone()
    }

    pub fn hsm_ids(&self) -> Vec<String> {
        self.cluster
            .info
            .hsms
            .iter()
            .map(|h| h.hsm_id.clone())
            .collect()
    }

    /// Starts HSM `i` as a real `hsm-node` process and waits until it accepts connections.
    pub async fn start_process(&mut self, i: usize) {
        let hsm = self.hsm(i);
        let child = Command::new(hsmkms_exe())
            .arg("hsm-node")
            .arg("--node-dir")
            .arg(self.cluster.node_dir(&hsm))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.processes.insert(hsm.hsm_id.clone(), child);
        self.wait_accepting(i).await;
    }

    /// A new cluster of `hsms` HSMs, each a running `hsm-node` process, all linked.
    pub async fn running_processes(hsms: usize) -> Self {
        let mut cluster = Self::create(hsms).await;
        for i in 0..hsms {
            cluster.start_process(i).await;
        }
        cluster.wait_linked().await;
        cluster
    }

    /// Kills HSM `i`'s process with SIGKILL: no chance to clean up.
    pub fn kill_process(&mut self, i: usize) {
        let id = self.hsm(i).hsm_id;
        let mut child = self.processes.remove(&id).expect("process not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts HSM `i` in this process.
    pub async fn start_in_process(&mut self, i: usize) {
        let hsm = self.hsm(i);
        let handle = NodeHandle::start(
            &self.cluster.node_dir(&hsm),
            NodeOptions::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        self.in_process.insert(hsm.hsm_id.clone(), handle);
        self.wait_accepting(i).await;
    }

    pub fn in_process(&self, i: usize) -> &NodeHandle {
        &self.in_process[&self.hsm(i).hsm_id]
    }

    /// Stops an in-process HSM (cleanly; its store is closed when this returns).
    pub fn stop_in_process(&mut self, i: usize) {
        let id = self.hsm(i).hsm_id;
        if let Some(h) = self.in_process.remove(&id) {
            h.shutdown();
        }
    }

    async fn wait_accepting(&self, i: usize) {
        let address = self.hsm(i).address;
        let tls = self.cluster.client_tls().unwrap();
        eventually("HSM accepts connections", Duration::from_secs(20), || {
            let tls = tls.clone();
            let address = address.clone();
            async move {
                NodeClient::connect(&address, tls, Duration::from_secs(2))
                    .await
                    .is_ok()
            }
        })
        .await;
    }

    /// Waits until every running HSM is linked to every other one.
    pub async fn wait_linked(&self) {
        hsmkms::launcher::wait_until_serving(&self.cluster)
            .await
            .unwrap();
    }

    /// A connection to HSM `i`, not logged in.
    pub async fn client(&self, i: usize) -> NodeClient {
        NodeClient::connect(
            &self.hsm(i).address,
            self.cluster.client_tls().unwrap(),
            DEADLINE,
        )
        .await
        .unwrap()
    }

    /// A connection to HSM `i`, logged in as `kmsuser`.
    pub async fn kmsuser(&self, i: usize) -> NodeClient {
        let c = self.client(i).await;
        login(&c, "kmsuser", Role::CryptoUser, KMSUSER_PASSWORD)
            .await
            .unwrap();
        c
    }

    /// A connection to HSM `i`, logged in as `admin`.
    pub async fn admin(&self, i: usize) -> NodeClient {
        let c = self.client(i).await;
        login(&c, "admin", Role::CryptoOfficer, ADMIN_PASSWORD)
            .await
            .unwrap();
        c
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, mut child) in self.processes.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, h) in self.in_process.drain() {
            h.shutdown();
        }
    }
}

pub async fn login(
    c: &NodeClient,
    user: &str,
    role: Role,
    password: &str,
) -> Result<Response, ClientError> {
    c.call(
        Request::Login {
            username: user.into(),
            role,
            password: SecretString::new(password),
        },
        DEADLINE,
    )
    .await
}

/// Generates a key; returns its attributes and the HSMs it was durable on when acknowledged.
pub async fn generate(
    c: &NodeClient,
    label: &str,
) -> Result<(KeyAttributes, Vec<String>), ClientError> {
    match c
        .call(
            Request::GenerateAesKey {
                label: label.into(),
                length_bytes: 32,
            },
            DEADLINE,
        )
        .await?
    {
        Response::KeyCreated { key, durable_on } => Ok((key, durable_on)),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Labels of the keys the session can see.
pub async fn labels(c: &NodeClient) -> Vec<String> {
    match c
        .call(
            Request::FindKeys {
                label: None,
                owner: None,
            },
            DEADLINE,
        )
        .await
        .unwrap()
    {
        Response::Keys(keys) => {
            let mut l: Vec<String> = keys.into_iter().map(|k| k.label).collect();
            l.sort();
            l
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The error code of a failed call.
pub fn code(result: Result<Response, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Remote(e)) => e.code,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
