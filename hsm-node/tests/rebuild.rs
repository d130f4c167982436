//! A node whose store was lost rebuilds from every peer before it serves. With three HSMs a
//! key it generated may live only on one peer (the other was down when the key was made); if
//! it served after catching up with the other, it would mint that key's handle again.

mod support;

use std::time::{Duration, Instant};

use hsm_node::config::{self, STORE_FILE};
use hsm_node::NodeOptions;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{ErrorCode, Request, Response, Role};
use support::KMSUSER_PASSWORD;

/// Tries to log in as kmsuser on `node`: `Ok` with the connection, or the error code.
async fn try_kmsuser(node: &support::OneNode) -> Result<support::Conn, ErrorCode> {
    let mut conn = node.connect().await;
    match conn
        .call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new(KMSUSER_PASSWORD.to_string()),
        })
        .await
    {
        Ok(Response::LoggedIn { .. }) => Ok(conn),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.code),
    }
}

#[actix_rt::test]
async fn a_rebuilding_node_serves_only_once_every_peer_caught_it_up() {
    let mut nodes = support::cluster(3, NodeOptions::default()).await;
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let addresses: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| n.node.address().to_string())
        .collect();

    // C is down; A generates a key, durable on A and B only.
    let c = c.stop();
    let mut kms = a.kmsuser().await;
    let key = match kms
        .call(Request::GenerateAesKey {
            label: "only-on-a-and-b".into(),
            length_bytes: 32,
        })
        .await
    {
        Ok(Response::KeyCreated { key, .. }) => key,
        other => panic!("{other:?}"),
    };
    drop(kms);

    // A loses its store (damaged), B stalls, C comes back without the key, A starts again.
    let a = a.stop();
    let store = a.node_dir.join(STORE_FILE);
    let mut damaged = std::fs::read(&store).unwrap();
    damaged.truncate(100);
    std::fs::write(&store, damaged).unwrap();
    config::add_join(&a.node_dir, &addresses[1..]).unwrap();
    b.node.set_stalled(true);
    let c = c.start(NodeOptions::default()).unwrap();
    let a = a.start(NodeOptions::default()).unwrap();

    // While B does not answer, A serves no client, though C has caught it up.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        match try_kmsuser(&a).await {
            Ok(_) => panic!(
                "A served after {:?} without B, which alone holds its key",
                started.elapsed()
            ),
            Err(code) => assert_eq!(code, ErrorCode::Rebuilding),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // B runs again: A catches up with it, serves, holds the key, and mints a new handle.
    b.node.set_stalled(false);
    let started = Instant::now();
    let mut kms = loop {
        match try_kmsuser(&a).await {
            Ok(conn) => break conn,
            Err(code) => assert_eq!(code, ErrorCode::Rebuilding),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A never finished rebuilding"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(matches!(
        kms.call(Request::GetKeyAttributes { handle: key.handle }).await,
        Ok(Response::Key(k)) if k.label == key.label
    ));
    match kms
        .call(Request::GenerateAesKey {
            label: "new".into(),
            length_bytes: 32,
        })
        .await
    {
        Ok(Response::KeyCreated { key: new, .. }) => {
            assert_ne!(new.handle, key.handle, "a handle was minted twice")
        }
        other => panic!("{other:?}"),
    }
    drop((a, b, c));
}
