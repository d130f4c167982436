//! A one-HSM cluster in a temporary directory, run in this process, and a bare client
//! connection that sets each call's deadline itself (the library client always derives it from
//! how long it waits, so it could never see a call refused for a deadline that passed while
//! the node was stalled).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hsm_node::config::{self, NodeConfig};
use hsm_node::core::{Entry, Stored};
use hsm_node::{NodeHandle, NodeOptions};
use hsmkms_common::clock::SystemClock;
use hsmkms_common::frame;
use hsmkms_common::secret::{KeyMaterial, SecretString};
use hsmkms_common::tls::{self, CertKind, ClusterCa};
use hsmkms_common::wire::{
    MemberRecord, ObjectId, Request, Response, Role, UserRecord, Version, WireError,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub const KMSUSER_PASSWORD: &str = "kmsPassword1";
pub const ADMIN_PASSWORD: &str = "adminPassword1";

/// One running HSM and what a client needs to reach it.
pub struct OneNode {
    pub node: NodeHandle,
    pub client_tls: Arc<rustls::ClientConfig>,
    /// The node's directory.
    pub node_dir: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// A node of a cluster, stopped: its directory stays, to be changed and started again.
pub struct StoppedNode {
    pub client_tls: Arc<rustls::ClientConfig>,
    pub node_dir: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl StoppedNode {
    /// Starts the node again from its directory.
    pub fn start(&self, options: NodeOptions) -> anyhow::Result<OneNode> {
        let node = NodeHandle::start(&self.node_dir, options, Arc::new(SystemClock))?;
        Ok(OneNode {
            node,
            client_tls: self.client_tls.clone(),
            node_dir: self.node_dir.clone(),
            _dir: self._dir.clone(),
        })
    }
}

fn seed(id: ObjectId, entry: Entry) -> Stored {
    Stored {
        id,
        version: Version {
            counter: 1,
            node: 0,
        },
        entry,
    }
}

fn user(name: &str, role: Role, password: &str) -> Stored {
    seed(
        ObjectId::User(name.into()),
        Entry::User(Box::new(UserRecord {
            username: name.into(),
            role,
            password_hash: hsm_node::password::hash(password).unwrap(),
            failed_logins: 0,
            locked: false,
        })),
    )
}

fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Starts a cluster of `n` HSMs (`admin` and `kmsuser` on each), each in this process.
pub async fn cluster(n: u32, options: NodeOptions) -> Vec<OneNode> {
    provision(n, |_, _| {})
        .await
        .iter()
        .map(|stopped| stopped.start(options.clone()).unwrap())
        .collect()
}

/// Provisions a cluster of `n` HSMs as [`cluster`] does, without starting any; `adjust` may
/// change the objects node `i` (from 1) starts with, as a store that missed some change would.
pub async fn provision(n: u32, adjust: impl Fn(u32, &mut Vec<Stored>)) -> Vec<StoppedNode> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let cluster_id = "cluster-abcdefghijk".to_string();
    let ca = ClusterCa::generate(&cluster_id).unwrap();
    let sync_key = KeyMaterial::generate();
    let configs: Vec<NodeConfig> = (1..=n)
        .map(|i| {
            let address = free_address();
            NodeConfig {
                cluster_id: cluster_id.clone(),
                hsm_id: format!("hsm-abcdefghij{i}"),
                availability_zone: format!("us-east-1{}", (b'a' + i as u8) as char),
                listen: address.clone(),
                advertise: address,
                node_number: i,
                join: vec![],
            }
        })
        .collect();
    let mut seeds = vec![
        user("admin", Role::CryptoOfficer, ADMIN_PASSWORD),
        user("kmsuser", Role::CryptoUser, KMSUSER_PASSWORD),
    ];
    for config in &configs {
        let member: MemberRecord = config.member();
        seeds.push(seed(
            ObjectId::Member(member.hsm_id.clone()),
            Entry::Member(Box::new(member)),
        ));
    }
    let client = ca.issue(CertKind::Client, "test-client").unwrap();
    let client_tls = tls::client_config(&ca.identity.cert_pem, &client).unwrap();
    let mut nodes = Vec::new();
    for config in &configs {
        let node_dir = dir.path().join(&config.hsm_id);
        let mut seeds = seeds.clone();
        adjust(config.node_number, &mut seeds);
        config::provision(&node_dir, config, &ca, &sync_key, seeds)
            .await
            .unwrap();
        nodes.push(StoppedNode {
            client_tls: client_tls.clone(),
            node_dir,
            _dir: dir.clone(),
        });
    }
    nodes
}

impl OneNode {
    /// Stops the node (waiting until its store is closed), keeping its directory.
    pub fn stop(self) -> StoppedNode {
        self.node.shutdown();
        StoppedNode {
            client_tls: self.client_tls,
            node_dir: self.node_dir,
            _dir: self._dir,
        }
    }

    pub async fn start() -> Self {
        let mut nodes = cluster(1, NodeOptions::default()).await;
        nodes.pop().unwrap()
    }

    pub async fn connect(&self) -> Conn {
        let tcp = TcpStream::connect(self.node.address()).await.unwrap();
        self.tls(tcp).await
    }

    /// A connection whose socket buffers only `bytes` of answers not yet read (the kernel
    /// otherwise grows it to megabytes), for tests of what a node holds for a slow reader.
    pub async fn connect_small_buffer(&self, bytes: u32) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let tcp = socket.connect(self.node.address()).await.unwrap();
        self.tls(tcp).await
    }

    async fn tls(&self, tcp: TcpStream) -> Conn {
        let stream = tokio_rustls::TlsConnector::from(self.client_tls.clone())
            .connect(tls::node_server_name(), tcp)
            .await
            .unwrap();
        Conn {
            framed: Framed::new(stream, frame::codec()),
            next_id: 1,
        }
    }

    /// A connection with `kmsuser` logged in.
    pub async fn kmsuser(&self) -> Conn {
        self.logged_in("kmsuser", Role::CryptoUser, KMSUSER_PASSWORD)
            .await
    }

    /// A connection with `admin` logged in.
    pub async fn admin(&self) -> Conn {
        self.logged_in("admin", Role::CryptoOfficer, ADMIN_PASSWORD)
            .await
    }

    async fn logged_in(&self, username: &str, role: Role, password: &str) -> Conn {
        let conn = self.connect().await;
        Self::log_in(conn, username, role, password).await
    }

    /// Logs `conn` in as kmsuser.
    pub async fn log_in_kmsuser(conn: Conn) -> Conn {
        Self::log_in(conn, "kmsuser", Role::CryptoUser, KMSUSER_PASSWORD).await
    }

    async fn log_in(mut conn: Conn, username: &str, role: Role, password: &str) -> Conn {
        let answer = conn
            .call(Request::Login {
                username: username.into(),
                role,
                password: SecretString::new(password.to_string()),
            })
            .await;
        assert!(
            matches!(answer, Ok(Response::LoggedIn { .. })),
            "{answer:?}"
        );
        conn
    }
}

/// Unix milliseconds, as deadlines are written.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A bare client connection: one call at a time, the deadline chosen by the caller.
pub struct Conn {
    framed:
        Framed<tokio_rustls::client::TlsStream<TcpStream>, tokio_util::codec::LengthDelimitedCodec>,
    next_id: u64,
}

impl Conn {
    /// A call with a 10 s deadline, answered within it.
    pub async fn call(&mut self, request: Request) -> Result<Response, WireError> {
        let answer = self
            .call_with(request, now_millis() + 10_000, Duration::from_secs(10))
            .await
            .expect("an answer within 10 s");
        match answer {
            Response::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Sends a call carrying `deadline_unix_millis` and waits `wait` for its answer: `None` if
    /// none came.
    pub async fn call_with(
        &mut self,
        request: Request,
        deadline_unix_millis: u64,
        wait: Duration,
    ) -> Option<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = frame::encode_call(id, deadline_unix_millis, &request).unwrap();
        self.framed.send(bytes).await.unwrap();
        self.answer(id, wait).await
    }

    /// Sends a call with a 10 s deadline and does not wait for its answer; returns its id.
    pub async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = frame::encode_call(id, now_millis() + 10_000, &request).unwrap();
        self.framed.send(bytes).await.unwrap();
        id
    }

    /// Waits `wait` for the next answer, whichever call it answers.
    pub async fn next_answer(&mut self, wait: Duration) -> Option<(u64, Response)> {
        let payload = tokio::time::timeout(wait, self.framed.next())
            .await
            .ok()??;
        let envelope = frame::decode::<Response>(&payload.unwrap()).unwrap();
        Some((envelope.id, envelope.body))
    }

    /// Waits `wait` for the answer to call `id`.
    pub async fn answer(&mut self, id: u64, wait: Duration) -> Option<Response> {
        let payload = tokio::time::timeout(wait, self.framed.next())
            .await
            .ok()??;
        let envelope = frame::decode::<Response>(&payload.unwrap()).unwrap();
        assert_eq!(envelope.id, id, "answers come in order here");
        Some(envelope.body)
    }

    /// The id the next call will carry.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}
