//! A key store connects when the cluster's HSMs do not agree on kmsuser's password yet (one is
//! behind on a password change, which replication brings it later): KMS logs in where the
//! password works, leaves the HSM that is behind out, and logs in there once it has caught up,
//! as it does for an HSM that does not answer. Here the two HSMs are not linked (neither lists
//! the other as a member), so one stays behind until the test changes its password itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_node::config::{self, NodeConfig};
use hsm_node::core::{Entry, Stored};
use hsm_node::{NodeHandle, NodeOptions};
use hsmkms_common::client::NodeClient;
use hsmkms_common::clock::SystemClock;
use hsmkms_common::secret::{KeyMaterial, SecretString};
use hsmkms_common::tls::{self, CertKind, ClusterCa};
use hsmkms_common::wire::{ObjectId, Request, Response, Role, UserRecord, Version};
use kms_frontend::actors::HsmGateway;
use kms_frontend::cluster::{ClusterDirectory, ClusterView, HsmState, HsmView};
use kms_frontend::faults::Faults;
use kms_frontend::service::connection_state::ConnectionErrorCode;

const CLUSTER: &str = "cluster-abcdefghijk";
const STORE: &str = "cks-1234567890abcdef0";
const OLD: &str = "oldPassword1";
const NEW: &str = "newPassword1";
const ADMIN: &str = "adminPassword1";
const WAIT: Duration = Duration::from_secs(15);

fn user(name: &str, role: Role, password: &str, counter: u64) -> Stored {
    Stored {
        id: ObjectId::User(name.into()),
        version: Version { counter, node: 0 },
        entry: Entry::User(Box::new(UserRecord {
            username: name.into(),
            role,
            password_hash: hsm_node::password::hash(password).unwrap(),
            failed_logins: 0,
            locked: false,
        })),
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// The cluster as the CloudHSM service would describe it to KMS: both HSMs ACTIVE.
#[derive(Debug)]
struct Directory {
    hsms: Vec<HsmView>,
    tls: Arc<rustls::ClientConfig>,
}

impl ClusterDirectory for Directory {
    fn clusters(&self) -> Vec<ClusterView> {
        vec![ClusterView {
            cluster_id: CLUSTER.into(),
            state: "ACTIVE".into(),
            hsm_type: "hsm1.medium".into(),
            hsms: self.hsms.clone(),
            trust_anchor: String::new(),
            created_at_millis: 0,
            vpc_id: "vpc-1".into(),
            security_group: "sg-1".into(),
            subnet_mapping: vec![],
            backup_retention_days: 90,
        }]
    }

    fn client_tls(&self, cluster_id: &str) -> Option<Arc<rustls::ClientConfig>> {
        (cluster_id == CLUSTER).then(|| self.tls.clone())
    }
}

/// Provisions and starts HSM `n` in `root`, kmsuser's password on it `kmsuser` (at version
/// `counter`), and no other member: it links to no peer.
async fn start_hsm(
    root: &Path,
    ca: &ClusterCa,
    sync: &KeyMaterial,
    n: u32,
    kmsuser: &str,
    counter: u64,
) -> (NodeHandle, HsmView) {
    let address = free_address();
    let config = NodeConfig {
        cluster_id: CLUSTER.into(),
        hsm_id: format!("hsm-abcdefghij{n}"),
        availability_zone: format!("us-east-1{}", (b'a' + n as u8) as char),
        listen: address.clone(),
        advertise: address.clone(),
        node_number: n,
        join: vec![],
    };
    let member = config.member();
    let seeds = vec![
        user("admin", Role::CryptoOfficer, ADMIN, 1),
        user("kmsuser", Role::CryptoUser, kmsuser, counter),
        Stored {
            id: ObjectId::Member(member.hsm_id.clone()),
            version: Version {
                counter: 1,
                node: 0,
            },
            entry: Entry::Member(Box::new(member)),
        },
    ];
    let dir = root.join(&config.hsm_id);
    config::provision(&dir, &config, ca, sync, seeds)
        .await
        .unwrap();
    let handle = NodeHandle::start(&dir, NodeOptions::default(), Arc::new(SystemClock)).unwrap();
    let view = HsmView {
        hsm_id: config.hsm_id,
        availability_zone: config.availability_zone,
        address,
        state: HsmState::Active,
    };
    (handle, view)
}

/// Waits until the store has sessions on exactly `want` (sorted).
async fn wait_for_sessions(gateway: &HsmGateway, want: &[&str]) {
    let started = Instant::now();
    loop {
        let mut have = gateway.session_hsms(STORE).await;
        have.sort();
        if have == want {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "sessions on {have:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_rt::test]
async fn a_connect_leaves_out_an_hsm_behind_on_a_password_change_and_logs_in_there_later() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let sync = KeyMaterial::generate();
    let client = ca.issue(CertKind::Client, "kms").unwrap();
    let client_tls = tls::client_config(&ca.identity.cert_pem, &client).unwrap();
    // HSM 1 has kmsuser's newer password; HSM 2 is behind, on the older one.
    let (hsm1, view1) = start_hsm(tmp.path(), &ca, &sync, 1, NEW, 2).await;
    let (hsm2, view2) = start_hsm(tmp.path(), &ca, &sync, 2, OLD, 1).await;
    let (id1, id2) = (view1.hsm_id.clone(), view2.hsm_id.clone());
    let directory = Arc::new(Directory {
        hsms: vec![view1, view2.clone()],
        tls: client_tls.clone(),
    });
    let gateway = HsmGateway::new(directory, Arc::new(Faults::default()));

    // A connect that KMS interrupted mid-rotation: the store holds OLD as current and NEW as
    // pending. HSM 2 still takes OLD, but NEW, the newer, is what the cluster converges on:
    // the store connects with NEW on HSM 1 only, and does not rotate (out of step).
    let opened = gateway
        .open(
            STORE,
            1,
            CLUSTER,
            SecretString::new(OLD),
            Some(SecretString::new(NEW)),
        )
        .await
        .unwrap();
    assert_eq!(opened.password.expose(), NEW);
    assert!(opened.pending);
    assert!(!opened.in_step);
    wait_for_sessions(&gateway, &[&id1]).await;
    gateway.close(STORE, 2).await;

    // With NEW as current: HSM 2 refuses it, and is left out rather than failing the connect
    // (INVALID_CREDENTIALS).
    let opened = gateway
        .open(STORE, 3, CLUSTER, SecretString::new(NEW), None)
        .await
        .unwrap();
    assert_eq!(opened.password.expose(), NEW);
    assert!(!opened.pending);
    assert!(!opened.in_step);
    wait_for_sessions(&gateway, &[&id1]).await;

    // HSM 2 catches up (here the admin sets the password replication would have brought):
    // the store's background re-login logs in there too.
    let admin = NodeClient::connect(&view2.address, client_tls.clone(), WAIT)
        .await
        .unwrap();
    let logged_in = admin
        .call(
            Request::Login {
                username: "admin".into(),
                role: Role::CryptoOfficer,
                password: SecretString::new(ADMIN),
            },
            WAIT,
        )
        .await
        .unwrap();
    assert!(matches!(logged_in, Response::LoggedIn { .. }));
    admin
        .call(
            Request::ChangePassword {
                username: "kmsuser".into(),
                role: Role::CryptoUser,
                new_password: SecretString::new(NEW),
            },
            WAIT,
        )
        .await
        .unwrap();
    let mut both = vec![id1.as_str(), id2.as_str()];
    both.sort();
    wait_for_sessions(&gateway, &both).await;

    // Now in step, a connect keeps every HSM (and would rotate the password).
    gateway.close(STORE, 4).await;
    let opened = gateway
        .open(STORE, 5, CLUSTER, SecretString::new(NEW), None)
        .await
        .unwrap();
    assert!(opened.in_step);
    wait_for_sessions(&gateway, &both).await;
    gateway.close(STORE, 6).await;

    // A password no HSM takes still fails the connect, as INVALID_CREDENTIALS.
    let refused = gateway
        .open(STORE, 7, CLUSTER, SecretString::new("wrongPassword1"), None)
        .await;
    assert_eq!(refused.err(), Some(ConnectionErrorCode::InvalidCredentials));
    drop(admin);
    hsm1.shutdown();
    hsm2.shutdown();
}
