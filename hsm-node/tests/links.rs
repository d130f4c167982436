//! A change made while this node's link to a peer is down (the peer was not listening yet
//! when this node started, say) cannot be pushed there; it must reach the peer as soon as the
//! two are linked again, not at the peer's next anti-entropy round. KMS rotates kmsuser's
//! password right after it connects, and logs in on every HSM at its next connect: an HSM
//! still on the old password then refuses it.

mod support;

use std::time::{Duration, Instant};

use hsm_node::NodeOptions;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{Request, Response, Role};
use support::KMSUSER_PASSWORD;

const NEW_PASSWORD: &str = "rotatedPassword1";

/// Whether kmsuser logs in on `node` with `password`.
async fn takes(node: &support::OneNode, password: &str) -> bool {
    let mut conn = node.connect().await;
    matches!(
        conn.call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new(password.to_string()),
        })
        .await,
        Ok(Response::LoggedIn { .. })
    )
}

#[actix_rt::test]
async fn a_change_the_link_could_not_push_reaches_the_peer_when_the_link_comes_up() {
    // Links retry every 3 s, and compare digests only every 10 minutes: within this test, a
    // change travels by a push or by the pull a link coming up starts.
    let options = NodeOptions {
        reconnect_interval: Duration::from_secs(3),
        anti_entropy_interval: Duration::from_secs(600),
        ..NodeOptions::default()
    };
    let mut stopped = support::provision(2, |_, _| {}).await;
    let b = stopped.pop().unwrap();
    let a = stopped.pop().unwrap();

    // A starts while B is down: its link to B fails and would retry 3 s later. B starts: its
    // own link to A comes up at once (and pulls from A, which has nothing new yet).
    let started = Instant::now();
    let a = a.start(options.clone()).unwrap();
    let b = b.start(options).unwrap();

    // kmsuser's password changes on A right away, before A's link to B would retry: its push
    // may find no link.
    let mut kms = a.kmsuser().await;
    let changed = kms
        .call(Request::ChangePassword {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            new_password: SecretString::new(NEW_PASSWORD.to_string()),
        })
        .await;
    assert!(matches!(changed, Ok(Response::Ok)), "{changed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the change was made after A's link to B retried ({:?}); the test proves nothing",
        started.elapsed()
    );

    // B has the new password within seconds, long before its next anti-entropy round: B's
    // Hello makes A's link reconnect at once, and A's Hello makes B pull from A.
    let limit = Duration::from_secs(15);
    loop {
        if takes(&b, NEW_PASSWORD).await {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "B never got the password changed on A"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!takes(&b, KMSUSER_PASSWORD).await);
}
