//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant with the
//! Rust SDK against a real emulator: what is stored is listed whole, survives kill -9, goes
//! with its key, and bad requests get AWS's errors and change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_kms::types::{GrantConstraints, GrantListEntry, GrantOperation};
use kms_common::{assert_error, create_kms_key, free_port, Emulator, EIGHT_DAYS_SECONDS};

const APP: &str = "arn:aws:iam::111122223333:role/app";
const ADMIN: &str = "arn:aws:iam::111122223333:role/admin";

async fn grants(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<GrantListEntry> {
    kms.list_grants()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .grants()
        .to_vec()
}

async fn retirable(kms: &aws_sdk_kms::Client, principal: &str) -> Vec<GrantListEntry> {
    kms.list_retirable_grants()
        .retiring_principal(principal)
        .send()
        .await
        .unwrap()
        .grants()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_stored_listed_retired_and_revoked_and_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id().to_string();

    let constraints = GrantConstraints::builder()
        .encryption_context_subset("purpose", "test")
        .build();
    let create_named = || {
        kms.create_grant()
            .key_id(&key_id)
            .grantee_principal(APP)
            .retiring_principal(ADMIN)
            .operations(GrantOperation::Encrypt)
            .operations(GrantOperation::Decrypt)
            .constraints(constraints.clone())
            .name("app-grant")
            .send()
    };
    let first = create_named().await.unwrap();
    let grant_id = first.grant_id().unwrap().to_string();
    let token = first.grant_token().unwrap().to_string();
    // The token is usable at once; a string that is no grant token is refused.
    kms.encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new("x"))
        .encryption_context("purpose", "test")
        .grant_tokens(&token)
        .send()
        .await
        .unwrap();
    let err = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new("x"))
        .grant_tokens("not-a-grant-token")
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidGrantTokenException",
        Some("The grant token is not valid."),
    );
    assert_eq!(grant_id.len(), 64, "{grant_id}");
    // The same name and terms again: the same grant, not a second one.
    let again = create_named().await.unwrap();
    assert_eq!(again.grant_id(), Some(grant_id.as_str()));
    let second = kms
        .create_grant()
        .key_id(key.arn().unwrap())
        .grantee_principal("arn:aws:iam::111122223333:user/batch")
        .operations(GrantOperation::GenerateDataKey)
        .send()
        .await
        .unwrap();
    let second_id = second.grant_id().unwrap().to_string();
    assert_ne!(second_id, grant_id);

    let listed = grants(&kms, &key_id).await;
    assert_eq!(listed.len(), 2);
    let named = listed
        .iter()
        .find(|g| g.grant_id() == Some(grant_id.as_str()))
        .unwrap();
    assert_eq!(named.key_id(), key.arn());
    assert_eq!(named.name(), Some("app-grant"));
    assert_eq!(named.grantee_principal(), Some(APP));
    assert_eq!(named.retiring_principal(), Some(ADMIN));
    assert_eq!(
        named.issuing_account(),
        Some("arn:aws:iam::111122223333:root")
    );
    assert_eq!(
        named.operations(),
        &[GrantOperation::Encrypt, GrantOperation::Decrypt]
    );
    assert_eq!(named.constraints(), Some(&constraints));
    assert!(named.creation_date().is_some());

    // Filters and pages.
    let for_app = kms
        .list_grants()
        .key_id(&key_id)
        .grantee_principal(APP)
        .send()
        .await
        .unwrap();
    assert_eq!(for_app.grants().len(), 1);
    let page = kms
        .list_grants()
        .key_id(&key_id)
        .limit(1)
        .send()
        .await
        .unwrap();
    assert_eq!(page.grants().len(), 1);
    assert!(page.truncated());
    let rest = kms
        .list_grants()
        .key_id(&key_id)
        .marker(page.next_marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.grants().len(), 1);
    assert!(!rest.truncated());
    assert_ne!(rest.grants()[0].grant_id(), page.grants()[0].grant_id());
    assert_eq!(retirable(&kms, ADMIN).await.len(), 1);

    // Acknowledged grants survive kill -9.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    assert_eq!(grants(&kms, &key_id).await, listed);

    // Retired by its token (usable at once, and after the restart), then gone.
    kms.retire_grant().grant_token(&token).send().await.unwrap();
    let left = grants(&kms, &key_id).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].grant_id(), Some(second_id.as_str()));
    assert!(retirable(&kms, ADMIN).await.is_empty());
    let err = kms
        .retire_grant()
        .grant_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "NotFoundException", None);

    // Revoked by key and id.
    kms.revoke_grant()
        .key_id(&key_id)
        .grant_id(&second_id)
        .send()
        .await
        .unwrap();
    assert!(grants(&kms, &key_id).await.is_empty());
    let err = kms
        .revoke_grant()
        .key_id(&key_id)
        .grant_id(&second_id)
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "NotFoundException", None);
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grant_requests_get_aws_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();

    let err = kms
        .create_grant()
        .key_id(key_id)
        .grantee_principal(APP)
        .operations(GrantOperation::from("Fly"))
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "ValidationException", None);
    let err = kms
        .create_grant()
        .key_id(key_id)
        .grantee_principal("not a principal")
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert_error(err.as_service_error().unwrap(), "ValidationException", None);
    let err = kms
        .create_grant()
        .key_id(key_id)
        .grantee_principal(APP)
        .operations(GrantOperation::Encrypt)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "DryRunOperationException",
        None,
    );
    let err = kms
        .revoke_grant()
        .key_id(key_id)
        .grant_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidGrantIdException",
        None,
    );
    let err = kms
        .retire_grant()
        .grant_token("garbage")
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "InvalidGrantTokenException",
        None,
    );
    let err = kms
        .create_grant()
        .key_id("alias/nothing")
        .grantee_principal(APP)
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().is_some(), "{err:?}");
    assert!(
        grants(&kms, key_id).await.is_empty(),
        "a refused request left a grant"
    );

    // A disabled key takes no grant; a key pending deletion neither.
    kms.disable_key().key_id(key_id).send().await.unwrap();
    let err = kms
        .create_grant()
        .key_id(key_id)
        .grantee_principal(APP)
        .operations(GrantOperation::Encrypt)
        .send()
        .await
        .unwrap_err();
    assert_error(
        err.as_service_error().unwrap(),
        "DisabledException",
        Some(&format!("{} is disabled.", key.arn().unwrap())),
    );
    assert!(grants(&kms, key_id).await.is_empty());
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_takes_its_grants_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data_dir, port);
    let kms = emulator.kms();
    let key = create_kms_key(&kms).await;
    let key_id = key.key_id();
    kms.create_grant()
        .key_id(key_id)
        .grantee_principal(APP)
        .retiring_principal(ADMIN)
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    kms.schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    // Listed while the key waits for its deletion.
    assert_eq!(grants(&kms, key_id).await.len(), 1);
    emulator.advance_clock(EIGHT_DAYS_SECONDS);
    emulator.wait_for_delete_key_record(key_id);
    assert!(retirable(&kms, ADMIN).await.is_empty());
    // And they stay gone after a restart.
    emulator.crash();
    let emulator = Emulator::start(&data_dir, port);
    assert!(retirable(&emulator.kms(), ADMIN).await.is_empty());
    emulator.stop();
}
