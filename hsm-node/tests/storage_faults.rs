//! A commit the disk refuses changes nothing: the caller hears an error (`Internal`, or
//! `QuorumNotReached` for a key generation), every call after
//! sees the node as it was, and the next commit works.

mod support;

use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{ErrorCode, Request, Response, Role};
use support::OneNode;

fn key_count(status: Result<Response, hsmkms_common::wire::WireError>) -> u64 {
    match status {
        Ok(Response::Status(s)) => s.key_count,
        other => panic!("not a status: {other:?}"),
    }
}

#[actix_rt::test]
async fn a_refused_commit_leaves_no_key_no_user_and_no_session_and_the_next_one_works() {
    let hsm = OneNode::start().await;
    let mut kms = hsm.kmsuser().await;
    let mut admin = hsm.admin().await;

    // A key generation whose commit fails: refused (as any generation that did not become
    // durable on its quorum), and no key anywhere.
    hsm.node.fail_next_commits(1);
    let generated = kms
        .call(Request::GenerateAesKey {
            label: "doomed".into(),
            length_bytes: 32,
        })
        .await;
    assert_eq!(
        generated.err().map(|e| e.code),
        Some(ErrorCode::QuorumNotReached)
    );
    assert_eq!(key_count(kms.call(Request::Status).await), 0);
    assert!(matches!(
        kms.call(Request::FindKeys { label: None, owner: None }).await,
        Ok(Response::Keys(keys)) if keys.is_empty()
    ));

    // A user creation whose commit fails: refused, the user does not exist, cannot log in.
    hsm.node.fail_next_commits(1);
    let created = admin
        .call(Request::CreateUser {
            username: "bob".into(),
            role: Role::CryptoUser,
            password: SecretString::new("bobPassword1".to_string()),
        })
        .await;
    assert_eq!(created.err().map(|e| e.code), Some(ErrorCode::Internal));
    match admin.call(Request::ListUsers).await {
        Ok(Response::Users(users)) => assert!(users.iter().all(|u| u.username != "bob")),
        other => panic!("{other:?}"),
    }

    // A failed login whose counter cannot be stored is refused like any other; a login whose
    // commit fails opens no session (the next call is not logged in).
    let mut bad = hsm.connect().await;
    let wrong = bad
        .call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new("wrongPassword".to_string()),
        })
        .await;
    assert_eq!(
        wrong.err().map(|e| e.code),
        Some(ErrorCode::InvalidCredentials)
    );
    hsm.node.fail_next_commits(1);
    let login = bad
        .call(Request::Login {
            username: "kmsuser".into(),
            role: Role::CryptoUser,
            password: SecretString::new(support::KMSUSER_PASSWORD.to_string()),
        })
        .await;
    assert_eq!(login.err().map(|e| e.code), Some(ErrorCode::Internal));
    assert_eq!(
        bad.call(Request::GenerateRandom { length: 8 })
            .await
            .err()
            .map(|e| e.code),
        Some(ErrorCode::NotLoggedIn)
    );

    // The next commits work: a key is created and a deletion whose commit fails keeps it.
    let key = match kms
        .call(Request::GenerateAesKey {
            label: "kept".into(),
            length_bytes: 32,
        })
        .await
    {
        Ok(Response::KeyCreated { key, .. }) => key,
        other => panic!("{other:?}"),
    };
    hsm.node.fail_next_commits(1);
    let deleted = kms.call(Request::DeleteKey { handle: key.handle }).await;
    assert_eq!(deleted.err().map(|e| e.code), Some(ErrorCode::Internal));
    assert!(matches!(
        kms.call(Request::GetKeyAttributes { handle: key.handle })
            .await,
        Ok(Response::Key(_))
    ));
    assert!(matches!(
        kms.call(Request::DeleteKey { handle: key.handle }).await,
        Ok(Response::KeyDeleted { .. })
    ));
    assert_eq!(key_count(kms.call(Request::Status).await), 0);
}
