//! Resource policies on CloudHSM backups (GetResourcePolicy, PutResourcePolicy,
//! DeleteResourcePolicy) with the official SDK against the real `hsmkms` process: a round trip,
//! bad requests that get AWS-shaped errors and change nothing, the policy through DeleteBackup
//! and RestoreBackup, and a policy that survives SIGTERM and a kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_cloudhsmv2::types::BackupState;
use kms_common::{assert_error, backups, free_port, wait_until_async, Emulator};
use serde_json::json;

const NOT_FOUND: &str = "CloudHsmResourceNotFoundException";
const INVALID: &str = "CloudHsmInvalidRequestException";

/// A policy sharing a backup with another account, as AWS's guide shows one.
fn sharing_policy(backup_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
            "Action": ["cloudhsm:CreateCluster", "cloudhsm:DescribeBackups"],
            "Resource": backup_arn,
        }],
    })
    .to_string()
}

/// The Region's first backup (the one taken at start), once it is there.
async fn first_backup(hsm: &aws_sdk_cloudhsmv2::Client) -> aws_sdk_cloudhsmv2::types::Backup {
    wait_until_async("the backup taken at start", || async {
        backups(hsm).await.into_iter().next()
    })
    .await
}

async fn policy_of(hsm: &aws_sdk_cloudhsmv2::Client, arn: &str) -> Option<String> {
    hsm.get_resource_policy()
        .resource_arn(arn)
        .send()
        .await
        .unwrap()
        .policy()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_policy_round_trips_and_follows_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();
    let backup = first_backup(&hsm).await;
    let arn = backup.backup_arn().unwrap().to_string();
    let id = backup.backup_id().to_string();

    // A backup starts without a policy: Get answers no Policy, Delete answers none either.
    assert_eq!(policy_of(&hsm, &arn).await, None);
    let deleted = hsm
        .delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.resource_arn(), Some(arn.as_str()));
    assert_eq!(deleted.policy(), None);

    // Put answers the ARN and the policy; Get then returns it as sent, and a second Put
    // replaces it.
    let policy = sharing_policy(&arn);
    let put = hsm
        .put_resource_policy()
        .resource_arn(&arn)
        .policy(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(put.resource_arn(), Some(arn.as_str()));
    assert_eq!(put.policy(), Some(policy.as_str()));
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(policy.as_str())
    );
    let narrower = policy.replace("\"cloudhsm:CreateCluster\",", "");
    hsm.put_resource_policy()
        .resource_arn(&arn)
        .policy(&narrower)
        .send()
        .await
        .unwrap();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(narrower.as_str())
    );

    // The same answer to requests made by hand, in AWS JSON 1.1 (as the SDK sends them) and
    // in Smithy RPCv2 CBOR (as newer SDKs may).
    let (status, body) =
        emulator.baldr_json("GetResourcePolicy", &json!({"ResourceArn": arn.clone()}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Policy"], narrower.as_str());
    let mut request = Vec::new();
    ciborium::ser::into_writer(&json!({"ResourceArn": arn.clone()}), &mut request).unwrap();
    let (status, body) = emulator.baldr_cbor("GetResourcePolicy", &request);
    assert_eq!(status, 200, "{body:?}");
    let member = body
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("Policy"))
        .and_then(|(_, v)| v.as_text().map(str::to_string));
    assert_eq!(member.as_deref(), Some(narrower.as_str()));

    // DeleteBackup keeps the policy while the backup is pending deletion; no new one can be
    // put then; RestoreBackup gives the backup back with it.
    hsm.delete_backup().backup_id(&id).send().await.unwrap();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(narrower.as_str())
    );
    let err = hsm
        .put_resource_policy()
        .resource_arn(&arn)
        .policy(&policy)
        .send()
        .await
        .unwrap_err();
    assert_error(
        &err,
        INVALID,
        Some(&format!(
            "Backup {id} is PENDING_DELETION; a resource policy can only be put on a READY backup."
        )),
    );
    hsm.restore_backup().backup_id(&id).send().await.unwrap();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(narrower.as_str())
    );

    // A copy in another Region does not share the source's policy.
    hsm.copy_backup_to_region()
        .backup_id(&id)
        .destination_region("eu-west-1")
        .send()
        .await
        .unwrap();
    let ireland = emulator.cloudhsm_in("eu-west-1");
    let copy = backups(&ireland).await.remove(0);
    assert_eq!(policy_of(&ireland, copy.backup_arn().unwrap()).await, None);

    // Delete answers the policy it removed; after it the backup has none.
    let deleted = hsm
        .delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.resource_arn(), Some(arn.as_str()));
    assert_eq!(deleted.policy(), Some(narrower.as_str()));
    assert_eq!(policy_of(&hsm, &arn).await, None);
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_requests_get_aws_shaped_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let hsm = emulator.cloudhsm();
    let backup = first_backup(&hsm).await;
    let arn = backup.backup_arn().unwrap().to_string();
    let policy = sharing_policy(&arn);
    hsm.put_resource_policy()
        .resource_arn(&arn)
        .policy(&policy)
        .send()
        .await
        .unwrap();
    let before = backups(&hsm).await;

    let account_and_region = arn.split(":backup/").next().unwrap().to_string();
    let unknown = format!("{account_and_region}:backup/backup-aaaaaaaaaaa");
    let cluster_arn = format!("{account_and_region}:cluster/{}", emulator.cluster_id());
    let other_account = arn.replace(":111122223333:", ":444455556666:");
    let other_region = arn.replace(":us-east-1:", ":eu-west-1:");
    let too_long = {
        let base = sharing_policy(&arn);
        let sid = r#""Sid":"","#.chars().count();
        let fill = "x".repeat(20_001 - base.chars().count() - sid);
        base.replace("\"Version\"", &format!("\"Sid\":\"{fill}\",\"Version\""))
    };
    assert_eq!(too_long.chars().count(), 20_001);
    let pattern = "Member must satisfy regular expression pattern: arn:aws(-(us-gov))?:cloudhsm:";

    // (ResourceArn, Policy, error, a part of its message) for PutResourcePolicy.
    let cases: Vec<(Option<&str>, Option<&str>, &str, String)> = vec![
        (
            Some(&unknown),
            Some(&policy),
            NOT_FOUND,
            "Backup backup-aaaaaaaaaaa not found.".into(),
        ),
        (
            Some("backup-aaaaaaaaaaa"),
            Some(&policy),
            INVALID,
            "at 'resourceArn' failed to satisfy constraint: ".to_string() + pattern,
        ),
        (
            Some("arn:aws:cloudhsm:us-east-1:111122223333:backup/backup-1"),
            Some(&policy),
            INVALID,
            pattern.into(),
        ),
        (
            None,
            Some(&policy),
            INVALID,
            "Value null at 'resourceArn' failed to satisfy constraint: Member must not be null"
                .into(),
        ),
        (
            Some(&arn),
            None,
            INVALID,
            "Value null at 'policy' failed to satisfy constraint: Member must not be null".into(),
        ),
        (
            Some(&cluster_arn),
            Some(&policy),
            INVALID,
            "only backups take resource policies".into(),
        ),
        (
            Some(&other_account),
            Some(&policy),
            "CloudHsmAccessDeniedException",
            "belongs to account 444455556666".into(),
        ),
        (
            Some(&other_region),
            Some(&policy),
            NOT_FOUND,
            "the Region this request was sent to".into(),
        ),
        (
            Some(&arn),
            Some(&too_long),
            INVALID,
            "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 20000".into(),
        ),
        (
            Some(&arn),
            Some(""),
            INVALID,
            "Member must have length greater than or equal to 1".into(),
        ),
        (
            Some(&arn),
            Some("{not json"),
            INVALID,
            "The resource policy is malformed: it is not valid JSON".into(),
        ),
        (
            Some(&arn),
            Some(r#"{"Statement":[{"Effect":"Allow","Action":"cloudhsm:*"}]}"#),
            INVALID,
            "statement 1 names no Principal".into(),
        ),
        (
            Some(&arn),
            Some(r#"["Allow"]"#),
            INVALID,
            "it must be a JSON object".into(),
        ),
    ];
    for (resource_arn, body_policy, error, message) in &cases {
        let err = hsm
            .put_resource_policy()
            .set_resource_arn(resource_arn.map(str::to_string))
            .set_policy(body_policy.map(str::to_string))
            .send()
            .await
            .unwrap_err();
        let what = format!("PutResourcePolicy {resource_arn:?}");
        assert_error(&err, error, None);
        let said = aws_sdk_cloudhsmv2::error::ProvideErrorMetadata::message(&err).unwrap();
        assert!(said.contains(message.as_str()), "{what}: {said}");
    }

    // Get and Delete check the ARN the same way.
    for (resource_arn, error) in [
        (unknown.as_str(), NOT_FOUND),
        ("not an arn", INVALID),
        (cluster_arn.as_str(), INVALID),
        (other_account.as_str(), "CloudHsmAccessDeniedException"),
    ] {
        let err = hsm
            .get_resource_policy()
            .resource_arn(resource_arn)
            .send()
            .await
            .unwrap_err();
        assert_error(&err, error, None);
        let err = hsm
            .delete_resource_policy()
            .resource_arn(resource_arn)
            .send()
            .await
            .unwrap_err();
        assert_error(&err, error, None);
    }
    let err = hsm.get_resource_policy().send().await.unwrap_err();
    assert_error(&err, INVALID, None);

    // Bodies of the wrong shape, over JSON.
    for body in [
        json!({"ResourceArn": 7}),
        json!({"ResourceArn": arn, "Policy": {"Statement": []}}),
    ] {
        let (status, answer) = emulator.baldr_json("PutResourcePolicy", &body);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["__type"], INVALID, "{answer}");
    }

    // Nothing changed: the backup and its policy are as they were.
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(policy.as_str())
    );
    assert_eq!(backups(&hsm).await, before);
    emulator.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_policy_survives_sigterm_and_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let emulator = Emulator::start(&data, port);
    let hsm = emulator.cloudhsm();
    let backup = first_backup(&hsm).await;
    let arn = backup.backup_arn().unwrap().to_string();
    let id = backup.backup_id().to_string();
    let policy = sharing_policy(&arn);
    hsm.put_resource_policy()
        .resource_arn(&arn)
        .policy(&policy)
        .send()
        .await
        .unwrap();

    // Stopped as an operator stops it, the policy is there after the start.
    emulator.stop();
    let emulator = Emulator::start(&data, port);
    let hsm = emulator.cloudhsm();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(policy.as_str())
    );

    // An acknowledged change is durable: a kill -9 right after the answer loses nothing,
    // neither a new policy nor a DeleteBackup of the shared backup.
    let replaced = policy.replace("444455556666", "777788889999");
    hsm.put_resource_policy()
        .resource_arn(&arn)
        .policy(&replaced)
        .send()
        .await
        .unwrap();
    hsm.delete_backup().backup_id(&id).send().await.unwrap();
    emulator.crash();
    let emulator = Emulator::start(&data, port);
    let hsm = emulator.cloudhsm();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(replaced.as_str())
    );
    let after = backups(&hsm).await;
    let kept = after.iter().find(|b| b.backup_id() == id).unwrap();
    assert_eq!(kept.backup_state(), Some(&BackupState::PendingDeletion));

    // Restored after the crash, it is READY with its policy; removed, it stays removed
    // through another kill -9.
    hsm.restore_backup().backup_id(&id).send().await.unwrap();
    assert_eq!(
        policy_of(&hsm, &arn).await.as_deref(),
        Some(replaced.as_str())
    );
    hsm.delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    emulator.crash();
    let emulator = Emulator::start(&data, port);
    assert_eq!(policy_of(&emulator.cloudhsm(), &arn).await, None);
    emulator.stop();
}
