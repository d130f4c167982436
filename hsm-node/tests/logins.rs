//! A connection that closes while its login is still being checked leaves no session: the
//! user is not "logged in" on the HSM afterwards, which KMS would read as USER_LOGGED_IN and
//! refuse to connect the key store.

mod support;

use std::time::Duration;

use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{Request, Response, Role};
use support::{now_millis, OneNode, KMSUSER_PASSWORD};

#[actix_rt::test]
async fn a_login_whose_connection_closed_first_opens_no_session() {
    let hsm = OneNode::start().await;
    for _ in 0..5 {
        // The login is sent, and the connection closes before its answer (the password check
        // takes a while).
        let mut conn = hsm.connect().await;
        let answer = conn
            .call_with(
                Request::Login {
                    username: "kmsuser".into(),
                    role: Role::CryptoUser,
                    password: SecretString::new(KMSUSER_PASSWORD.to_string()),
                },
                now_millis() + 10_000,
                Duration::ZERO,
            )
            .await;
        assert!(answer.is_none(), "answered at once: {answer:?}");
        drop(conn);
    }
    // Once those logins are done, kmsuser has no session open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut admin = hsm.admin().await;
    let Ok(Response::Users(users)) = admin.call(Request::ListUsers).await else {
        panic!("no user list");
    };
    let kmsuser = users.iter().find(|u| u.username == "kmsuser").unwrap();
    assert_eq!(kmsuser.sessions, 0, "stale sessions of closed connections");
}
