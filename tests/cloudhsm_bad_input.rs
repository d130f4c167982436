//! Bad CloudHSMv2 requests get the CloudHsm* error of the model, over JSON and CBOR, and change
//! nothing: unknown cluster, HSM and backup ids, a zone without a subnet, a restore outside the
//! 7 days, a cluster deleted with HSMs left, malformed bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::time::Duration;

use kms_common::{free_port, wait_until, Emulator};
use serde_json::{json, Value};

/// The state a client can see: clusters and backups, as the JSON protocol shows them.
fn visible_state(emulator: &Emulator) -> (Value, Value) {
    let (_, clusters) = emulator.baldr_json("DescribeClusters", &json!({}));
    let (_, backups) = emulator.baldr_json("DescribeBackups", &json!({}));
    (clusters, backups)
}

fn assert_refused(answer: (u16, Value), error: &str, what: &str) {
    let (status, body) = answer;
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["__type"], error, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn bad_cloudhsm_requests_get_cloudhsm_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let cluster_id = emulator.cluster_id();
    wait_until("the backup taken at start", Duration::from_secs(15), || {
        let (_, backups) = emulator.baldr_json("DescribeBackups", &json!({}));
        (backups["Backups"].as_array().unwrap().len() == 1).then_some(())
    });
    let before = visible_state(&emulator);
    let backup_id = before.1["Backups"][0]["BackupId"]
        .as_str()
        .unwrap()
        .to_string();
    const NOT_FOUND: &str = "CloudHsmResourceNotFoundException";
    const INVALID: &str = "CloudHsmInvalidRequestException";
    let unknown_cluster = "cluster-aaaaaaaaaaa";
    let cases = [
        (
            "DeleteCluster",
            json!({"ClusterId": unknown_cluster}),
            NOT_FOUND,
        ),
        ("DeleteCluster", json!({"ClusterId": "cluster-1"}), INVALID),
        ("DeleteCluster", json!({}), INVALID),
        ("DeleteCluster", json!({"ClusterId": cluster_id}), INVALID),
        (
            "ModifyCluster",
            json!({"ClusterId": unknown_cluster, "BackupRetentionPolicy": {"Type": "DAYS", "Value": "30"}}),
            NOT_FOUND,
        ),
        (
            "ModifyCluster",
            json!({"ClusterId": cluster_id, "BackupRetentionPolicy": {"Type": "DAYS", "Value": "5"}}),
            INVALID,
        ),
        (
            "CreateHsm",
            json!({"ClusterId": unknown_cluster, "AvailabilityZone": "us-east-1a"}),
            NOT_FOUND,
        ),
        (
            "CreateHsm",
            json!({"ClusterId": cluster_id, "AvailabilityZone": "us-east-1f"}),
            INVALID,
        ),
        (
            "CreateHsm",
            json!({"ClusterId": cluster_id, "AvailabilityZone": "eu-west-1a"}),
            INVALID,
        ),
        ("CreateHsm", json!({"ClusterId": cluster_id}), INVALID),
        (
            "DeleteHsm",
            json!({"ClusterId": cluster_id, "HsmId": "hsm-aaaaaaaaaaa"}),
            NOT_FOUND,
        ),
        (
            "DeleteHsm",
            json!({"ClusterId": cluster_id, "EniIp": "10.0.0.9"}),
            NOT_FOUND,
        ),
        ("DeleteHsm", json!({"ClusterId": cluster_id}), INVALID),
        (
            "DeleteHsm",
            json!({"ClusterId": unknown_cluster, "HsmId": "hsm-aaaaaaaaaaa"}),
            NOT_FOUND,
        ),
        (
            "DeleteBackup",
            json!({"BackupId": "backup-aaaaaaaaaaa"}),
            NOT_FOUND,
        ),
        (
            "RestoreBackup",
            json!({"BackupId": "backup-aaaaaaaaaaa"}),
            NOT_FOUND,
        ),
        ("RestoreBackup", json!({"BackupId": backup_id}), INVALID),
        (
            "ModifyBackupAttributes",
            json!({"BackupId": "backup-aaaaaaaaaaa", "NeverExpires": true}),
            NOT_FOUND,
        ),
        (
            "ModifyBackupAttributes",
            json!({"BackupId": backup_id}),
            INVALID,
        ),
        (
            "CopyBackupToRegion",
            json!({"BackupId": backup_id, "DestinationRegion": "us-east-1"}),
            INVALID,
        ),
        (
            "CopyBackupToRegion",
            json!({"BackupId": backup_id, "DestinationRegion": "nowhere"}),
            INVALID,
        ),
        (
            "CreateCluster",
            json!({"HsmType": "hsm1.medium", "SubnetIds": ["subnet-xyz"]}),
            INVALID,
        ),
        (
            "CreateCluster",
            json!({"SubnetIds": ["subnet-0123456789abcdef0"]}),
            INVALID,
        ),
        (
            "CreateCluster",
            json!({"HsmType": "hsm9.huge", "SubnetIds": ["subnet-0123456789abcdef0"]}),
            INVALID,
        ),
        (
            "CreateCluster",
            json!({"HsmType": "hsm1.medium", "SubnetIds": ["subnet-0123456789abcdef0"], "SourceBackupId": "backup-aaaaaaaaaaa"}),
            NOT_FOUND,
        ),
        (
            "InitializeCluster",
            json!({"ClusterId": cluster_id, "SignedCert": "x", "TrustAnchor": "y"}),
            INVALID,
        ),
        (
            "TagResource",
            json!({"ResourceId": unknown_cluster, "TagList": [{"Key": "a", "Value": "b"}]}),
            NOT_FOUND,
        ),
        (
            "TagResource",
            json!({"ResourceId": cluster_id, "TagList": (0..51).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect::<Vec<_>>()}),
            "CloudHsmTagException",
        ),
        (
            "ListTags",
            json!({"ResourceId": "hsm-aaaaaaaaaaa"}),
            INVALID,
        ),
        ("DescribeBackups", json!({"MaxResults": "ten"}), INVALID),
        (
            "DescribeBackups",
            json!({"Filters": {"color": ["blue"]}}),
            INVALID,
        ),
        ("DescribeClusters", json!({"NextToken": "999"}), INVALID),
    ];
    for (op, body, error) in cases {
        assert_refused(
            emulator.baldr_json(op, &body),
            error,
            &format!("{op} {body}"),
        );
    }
    // Bodies that are not a request at all.
    let (status, body) = emulator.baldr_cbor("DescribeClusters", &[0xff, 0x00, 0x13]);
    assert_eq!(status, 400);
    assert_eq!(
        body.as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some("__type"))
            .map(|(_, v)| v.as_text()),
        Some(Some(
            "com.amazonaws.cloudhsmv2#CloudHsmInvalidRequestException"
        ))
    );
    let (status, _) = emulator.baldr_cbor("DeleteCluster", &[0x83, 0x01, 0x02, 0x03]);
    assert_eq!(status, 400);
    let (status, _) = emulator.baldr_cbor("DeleteCluster", &[0xa1, 0x01]);
    assert_eq!(status, 400);
    assert_refused(
        emulator.baldr_json("UnknownThing", &json!({})),
        "UnknownOperationException",
        "an unknown operation",
    );
    assert_eq!(visible_state(&emulator), before, "nothing changed");

    // A backup deleted more than 7 days ago is gone: it cannot be restored.
    let (status, _) = emulator.baldr_json("DeleteBackup", &json!({"BackupId": backup_id}));
    assert_eq!(status, 200);
    emulator.advance_clock(8 * 24 * 3600);
    assert_refused(
        emulator.baldr_json("RestoreBackup", &json!({"BackupId": backup_id})),
        INVALID,
        "a restore after 7 days",
    );
    assert_refused(
        emulator.baldr_json("CreateCluster", &json!({"HsmType": "hsm1.medium", "SubnetIds": ["subnet-0123456789abcdef0"], "SourceBackupId": backup_id})),
        INVALID,
        "a cluster from a deleted backup",
    );
    let (_, backups) = emulator.baldr_json(
        "DescribeBackups",
        &json!({"Filters": {"backupIds": [backup_id]}}),
    );
    assert_eq!(backups["Backups"][0]["BackupState"], "DELETED");
    emulator.stop();
}
