//! Bad input from clients and would-be peers: each is refused with a clear error or a closed
//! connection, changes nothing, and the node keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmkms_common::client::NodeClient;
use hsmkms_common::secret::SecretString;
use hsmkms_common::tls::{self, node_server_name, CertKind, ClusterCa};
use hsmkms_common::wire::{
    ErrorCode, Object, ObjectBody, ObjectId, Request, Response, Role, UserRecord, Version,
};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the other side closed the connection (or reset it) within a few seconds.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    // Anything it sends first (a TLS alert) is read and dropped; then it must hang up.
    let mut buf = [0u8; 1024];
    let hang_up = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), hang_up)
        .await
        .is_ok()
}

/// A TLS stream to HSM 0 with the cluster's client certificate, below the framing layer.
async fn raw_tls(cluster: &TestCluster) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(&cluster.hsm(0).address).await.unwrap();
    tokio_rustls::TlsConnector::from(cluster.cluster.client_tls().unwrap())
        .connect(node_server_name(), tcp)
        .await
        .unwrap()
}

async fn still_serves(cluster: &TestCluster) {
    let c = cluster.kmsuser(0).await;
    generate(&c, "still-serving").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_cluster_certificate_are_refused() {
    let mut cluster = TestCluster::create(1).await;
    cluster.start_in_process(0).await;
    let ca_pem = cluster.cluster.trust_anchor().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    // No client certificate at all: the handshake or the first call fails.
    let no_cert = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    match NodeClient::connect(&cluster.hsm(0).address, Arc::new(no_cert), DEADLINE).await {
        Err(_) => {}
        Ok(c) => assert!(c
            .call(Request::Status, Duration::from_secs(5))
            .await
            .is_err()),
    }

    // A certificate from another cluster's CA: refused the same way.
    let other_ca = ClusterCa::generate("cluster-otherclusterx").unwrap();
    let stranger = other_ca.issue(CertKind::Node, "hsm-strangerxxxx").unwrap();
    let stranger_cfg = tls::client_config(&ca_pem, &stranger).unwrap();
    match NodeClient::connect(&cluster.hsm(0).address, stranger_cfg, DEADLINE).await {
        Err(_) => {}
        Ok(c) => assert!(c
            .call(Request::Status, Duration::from_secs(5))
            .await
            .is_err()),
    }

    // Plain TCP garbage instead of a TLS handshake: the connection is closed.
    let mut tcp = TcpStream::connect(&cluster.hsm(0).address).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut tcp).await);

    still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_the_connection() {
    let mut cluster = TestCluster::create(1).await;
    cluster.start_in_process(0).await;

    // A well-framed payload that is not a message.
    let mut s = raw_tls(&cluster).await;
    s.write_all(&[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert!(closed_by_peer(&mut s).await);

    // A frame announcing more than the limit (64 MiB).
    let mut s = raw_tls(&cluster).await;
    s.write_all(&[4, 0, 0, 0]).await.unwrap();
    s.write_all(&[0u8; 4096]).await.unwrap();
    s.flush().await.unwrap();
    assert!(closed_by_peer(&mut s).await);

    // A message of another protocol version.
    let mut s = raw_tls(&cluster).await;
    let body = postcard::to_stdvec(&(99u16, 1u64, 0u8)).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&body).await.unwrap();
    s.flush().await.unwrap();
    assert!(closed_by_peer(&mut s).await);

    still_serves(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_a_user_out_until_an_officer_resets_it() {
    let mut cluster = TestCluster::create(2).await;
    cluster.start_in_process(0).await;
    cluster.start_in_process(1).await;
    cluster.wait_linked().await;

    let c = cluster.client(0).await;
    for attempt in 1..=5 {
        let r = login(&c, "kmsuser", Role::CryptoUser, "wrongPassword9").await;
        assert_eq!(code(r), ErrorCode::InvalidCredentials, "attempt {attempt}");
    }
    // Locked out, even with the right password, and on the other HSM too.
    let r = login(&c, "kmsuser", Role::CryptoUser, KMSUSER_PASSWORD).await;
    let message = format!("{r:?}");
    assert_eq!(code(r), ErrorCode::UserLockedOut);
    assert!(message.contains("locked out"), "{message}");
    let other = cluster.client(1).await;
    eventually("the lockout replicated", DEADLINE, || async {
        matches!(login(&other, "kmsuser", Role::CryptoUser, KMSUSER_PASSWORD).await,
            Err(hsmkms_common::client::ClientError::Remote(e)) if e.code == ErrorCode::UserLockedOut)
    })
    .await;

    // Unknown users and wrong roles are refused too.
    assert_eq!(
        code(login(&c, "nobody", Role::CryptoUser, "whatever1").await),
        ErrorCode::UserNotFound
    );
    assert_eq!(
        code(login(&c, "admin", Role::CryptoUser, ADMIN_PASSWORD).await),
        ErrorCode::InvalidCredentials
    );

    // The crypto officer changes the password, which unlocks the user.
    let admin = cluster.admin(0).await;
    admin
        .call(
            Request::ChangePassword {
                username: "kmsuser".into(),
                role: Role::CryptoUser,
                new_password: SecretString::new("newPassword2"),
            },
            DEADLINE,
        )
        .await
        .unwrap();
    assert!(matches!(
        login(&c, "kmsuser", Role::CryptoUser, "newPassword2").await,
        Ok(Response::LoggedIn { .. })
    ));
    // A too-short new password is refused and changes nothing.
    let short = admin
        .call(
            Request::ChangePassword {
                username: "kmsuser".into(),
                role: Role::CryptoUser,
                new_password: SecretString::new("short"),
            },
            DEADLINE,
        )
        .await;
    assert_eq!(code(short), ErrorCode::InvalidRequest);
    let again = cluster.client(0).await;
    assert!(login(&again, "kmsuser", Role::CryptoUser, "newPassword2")
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_deletes_a_key_and_clients_cannot_act_as_peers() {
    let mut cluster = TestCluster::create(1).await;
    cluster.start_in_process(0).await;
    let kms = cluster.kmsuser(0).await;
    let (key, _) = generate(&kms, "kms-key").await.unwrap();

    // Another crypto user, created by the officer, may not delete kmsuser's key; nor may the
    // officer.
    let admin = cluster.admin(0).await;
    admin
        .call(
            Request::CreateUser {
                username: "alice".into(),
                role: Role::CryptoUser,
                password: SecretString::new("alicePassword1"),
            },
            DEADLINE,
        )
        .await
        .unwrap();
    let alice = cluster.client(0).await;
    login(&alice, "alice", Role::CryptoUser, "alicePassword1")
        .await
        .unwrap();
    let r = alice
        .call(Request::DeleteKey { handle: key.handle }, DEADLINE)
        .await;
    let message = format!("{r:?}");
    assert_eq!(code(r), ErrorCode::AccessDenied);
    assert!(message.contains("only the owner"), "{message}");
    assert_eq!(
        code(
            admin
                .call(Request::DeleteKey { handle: key.handle }, DEADLINE)
                .await
        ),
        ErrorCode::AccessDenied
    );
    assert_eq!(labels(&kms).await, ["kms-key"]);

    // Nor can anyone use it to encrypt but its owner.
    let r = alice
        .call(
            Request::Encrypt {
                handle: key.handle,
                plaintext: hsmkms_common::secret::SecretBytes::new(b"x".to_vec()),
                aad: vec![],
            },
            DEADLINE,
        )
        .await;
    assert_eq!(code(r), ErrorCode::KeyNotFound);

    // A client certificate cannot push objects as if it were a peer (say, a user with a known
    // password).
    let forged = Object {
        id: ObjectId::User("mallory".into()),
        version: Version {
            counter: 1_000_000,
            node: 9,
        },
        body: ObjectBody::User(UserRecord {
            username: "mallory".into(),
            role: Role::CryptoOfficer,
            password_hash: hsm_node::password::hash("malloryPass1").unwrap(),
            failed_logins: 0,
            locked: false,
        }),
    };
    let r = kms
        .call(
            Request::Replicate {
                objects: vec![forged],
            },
            DEADLINE,
        )
        .await;
    assert_eq!(code(r), ErrorCode::PeerOnly);
    let mallory = cluster.client(0).await;
    assert_eq!(
        code(login(&mallory, "mallory", Role::CryptoOfficer, "malloryPass1").await),
        ErrorCode::UserNotFound
    );

    // Out-of-range requests get clear errors.
    assert_eq!(
        code(
            kms.call(
                Request::GenerateAesKey {
                    label: "x".into(),
                    length_bytes: 16
                },
                DEADLINE
            )
            .await
        ),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(
            kms.call(Request::GenerateRandom { length: 1 << 20 }, DEADLINE)
                .await
        ),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(
            cluster
                .client(0)
                .await
                .call(
                    Request::FindKeys {
                        label: None,
                        owner: None
                    },
                    DEADLINE
                )
                .await
        ),
        ErrorCode::NotLoggedIn
    );
    // The owner can delete it.
    assert!(kms
        .call(Request::DeleteKey { handle: key.handle }, DEADLINE)
        .await
        .is_ok());
    assert!(labels(&kms).await.is_empty());
}
