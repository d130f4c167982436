//! Every fault of `POST /_hsmkms/faults` on demand: each puts the cluster (or KMS) into a
//! condition, a connect then fails with the ConnectionErrorCode the reference gives for it,
//! `GET /_hsmkms/faults` lists it, and once it is reverted (its own action, `clear`, or the
//! AWS guide's fix) a connect succeeds. In-process HSMs and `--hsm-processes` alike. The subnet
//! faults also refuse CloudHSM's CreateHsm in their zone, and the refusal changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{ConnectionErrorCodeType, ConnectionStateType};
use kms_common::*;
use serde_json::{json, Value};

/// Longest a fault-related wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(60);

fn fault(emu: &Emulator, body: Value) -> Value {
    emu.post_json("/_hsmkms/faults", &body)
}

/// The faults in force, as `(action, hsmId or subnetId)`.
fn faults(emu: &Emulator) -> Vec<(String, String)> {
    emu.get_json("/_hsmkms/faults")["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let id = f["hsmId"].as_str().or(f["subnetId"].as_str()).unwrap_or("");
            (f["action"].as_str().unwrap().to_string(), id.to_string())
        })
        .collect()
}

fn listed(action: &str, id: &str) -> (String, String) {
    (action.to_string(), id.to_string())
}

/// The cluster's subnets, as DescribeClusters maps them.
async fn subnets(emu: &Emulator) -> Vec<String> {
    let cluster = describe_cluster(&emu.cloudhsm(), &emu.cluster_id()).await;
    let mut subnets: Vec<String> = cluster
        .subnet_mapping()
        .unwrap()
        .values()
        .cloned()
        .collect();
    subnets.sort();
    subnets
}

/// Encrypts with the key until it works, within [`LIMIT`].
async fn until_encrypt_works(kms: &aws_sdk_kms::Client, key_id: &str) {
    let started = Instant::now();
    loop {
        let r = kms
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(b"again".to_vec()))
            .send()
            .await;
        if r.is_ok() {
            return;
        }
        assert!(started.elapsed() < LIMIT, "encrypt works again: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_fault_produces_its_code_and_clearing_it_heals() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();
    let hsms = emu.hsm_ids();
    let subnets = subnets(&emu).await;
    assert!(!subnets.is_empty());
    let store = emu.create_store(&kms, "faulty-store").await;
    assert!(faults(&emu).is_empty(), "no fault at the start");

    // A deleted subnet: KMS cannot create its network interface there.
    fault(
        &emu,
        json!({"action": "delete-subnet", "subnetId": subnets[0]}),
    );
    assert_eq!(faults(&emu), vec![listed("delete-subnet", &subnets[0])]);
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::SubnetNotFound).await;
    disconnect(&kms, &store).await;
    fault(
        &emu,
        json!({"action": "restore-subnet", "subnetId": subnets[0]}),
    );
    assert!(faults(&emu).is_empty());
    reconnect(&kms, &store).await;
    disconnect(&kms, &store).await;

    // A subnet without a free address: the same step fails for another reason; `clear` fixes.
    fault(
        &emu,
        json!({"action": "exhaust-subnet", "subnetId": subnets[1]}),
    );
    assert_eq!(faults(&emu), vec![listed("exhaust-subnet", &subnets[1])]);
    connect_fails_with(
        &kms,
        &store,
        ConnectionErrorCodeType::InsufficientFreeAddressesInSubnet,
    )
    .await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    assert!(faults(&emu).is_empty());
    reconnect(&kms, &store).await;
    disconnect(&kms, &store).await;

    // KMS fails on its own side: INTERNAL_ERROR; the guide says retry.
    fault(&emu, json!({"action": "fail-connects"}));
    assert_eq!(faults(&emu), vec![listed("fail-connects", "")]);
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::InternalError).await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "heal-connects"}));
    reconnect(&kms, &store).await;
    disconnect(&kms, &store).await;

    // The network to every HSM is cut: NETWORK_ERRORS.
    for h in &hsms {
        fault(&emu, json!({"action": "cut-network", "hsmId": h}));
    }
    assert_eq!(faults(&emu).len(), hsms.len());
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::NetworkErrors).await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    reconnect(&kms, &store).await;

    // A connected store whose network is cut stays CONNECTED and its keys fail; restoring the
    // network, they work again (the store logs in again by itself).
    let key = create_store_key(&kms, &store).await;
    for h in &hsms {
        fault(&emu, json!({"action": "cut-network", "hsmId": h}));
    }
    let refused = kms
        .encrypt()
        .key_id(key.key_id())
        .plaintext(Blob::new(b"cut".to_vec()))
        .send()
        .await;
    assert!(refused.is_err(), "a cut cluster encrypts nothing");
    assert_eq!(
        connection_state(&kms, &store).await,
        ConnectionStateType::Connected
    );
    for h in &hsms {
        fault(&emu, json!({"action": "restore-network", "hsmId": h}));
    }
    until_encrypt_works(&kms, key.key_id()).await;
    disconnect(&kms, &store).await;

    // Every HSM stalled for good: the connect's deadlines fire, NETWORK_ERRORS.
    for h in &hsms {
        fault(&emu, json!({"action": "stall", "hsmId": h}));
    }
    let mut want: Vec<_> = hsms.iter().map(|h| listed("stall", h)).collect();
    want.sort();
    assert_eq!(faults(&emu), want);
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::NetworkErrors).await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    assert!(faults(&emu).is_empty());
    reconnect(&kms, &store).await;

    // A timed stall answers again by itself once its seconds have passed.
    fault(
        &emu,
        json!({"action": "stall", "hsmId": hsms[0], "seconds": 2}),
    );
    assert_eq!(faults(&emu), vec![listed("stall", &hsms[0])]);
    wait_until("the timed stall ends", LIMIT, || {
        faults(&emu).is_empty().then_some(())
    });
    until_encrypt_works(&kms, key.key_id()).await;

    // Stopped HSMs are listed; `clear` starts them again.
    for h in &hsms {
        fault(&emu, json!({"action": "stop", "hsmId": h}));
    }
    assert_eq!(faults(&emu).len(), hsms.len());
    disconnect(&kms, &store).await;
    connect_fails_with(
        &kms,
        &store,
        ConnectionErrorCodeType::InsufficientCloudhsmHsms,
    )
    .await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    wait_for_active_hsms(&emu.cloudhsm(), &emu.cluster_id(), hsms.len()).await;
    reconnect(&kms, &store).await;

    // Bad requests are AWS-shaped 400s, never a panic.
    for body in [
        json!({"action": "delete-subnet"}),
        json!({"action": "delete-subnet", "subnetId": "subnet-00000000000000000"}),
        json!({"action": "cut-network", "hsmId": "hsm-nope"}),
        json!({"action": "stall", "hsmId": hsms[0], "seconds": 0}),
        json!({"action": "meltdown"}),
    ] {
        let (status, answer) = emu.post_json_status("/_hsmkms/faults", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["__type"].is_string(), "{answer}");
    }
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subnet_is_fixed_the_guides_way_by_a_cluster_restored_from_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();
    let hsm = emu.cloudhsm();
    let store = emu.create_connected_store(&kms, "subnet-store").await;
    let key = create_store_key(&kms, &store).await;

    // A subnet of the cluster is deleted; the store is disconnected and cannot reconnect.
    disconnect(&kms, &store).await;
    let subnets = subnets(&emu).await;
    fault(
        &emu,
        json!({"action": "delete-subnet", "subnetId": subnets[0]}),
    );
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::SubnetNotFound).await;

    // The guide: create a cluster from a recent backup (new subnets), disconnect, switch the
    // store's cluster ID, reconnect. The deleted subnet stays deleted.
    emu.advance_clock(24 * 3600 + 60);
    let backup = emu.backups_containing(key.arn().unwrap());
    let restored = restore_cluster(&hsm, &backup[0], &["us-east-1a", "us-east-1b"]).await;
    disconnect(&kms, &store).await;
    kms.update_custom_key_store()
        .custom_key_store_id(&store)
        .cloud_hsm_cluster_id(&restored)
        .send()
        .await
        .unwrap();
    reconnect(&kms, &store).await;
    until_encrypt_works(&kms, key.key_id()).await;
    assert_eq!(faults(&emu), vec![listed("delete-subnet", &subnets[0])]);
    emu.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_processes_stop_start_stall_and_lose_their_network_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let emu = Emulator::start_with(&data, free_port(), &["--hsm-processes"]);
    let kms = emu.kms();
    let hsms = emu.hsm_ids();
    let store = emu.create_store(&kms, "process-store").await;
    let processes = node_pids(&data).len();
    assert_eq!(processes, hsms.len());

    // Stopping an HSM ends its process; with every one stopped, INSUFFICIENT_CLOUDHSM_HSMS.
    for h in &hsms {
        fault(&emu, json!({"action": "stop", "hsmId": h}));
    }
    wait_until("the HSM processes exit", LIMIT, || {
        node_pids(&data).is_empty().then_some(())
    });
    assert_eq!(faults(&emu).len(), hsms.len());
    connect_fails_with(
        &kms,
        &store,
        ConnectionErrorCodeType::InsufficientCloudhsmHsms,
    )
    .await;
    disconnect(&kms, &store).await;

    // Starting them runs the processes again; the store connects.
    for h in &hsms {
        fault(&emu, json!({"action": "start", "hsmId": h}));
    }
    assert!(faults(&emu).is_empty());
    wait_until("the HSM processes run again", LIMIT, || {
        (node_pids(&data).len() == hsms.len()).then_some(())
    });
    wait_for_active_hsms(&emu.cloudhsm(), &emu.cluster_id(), hsms.len()).await;
    reconnect(&kms, &store).await;
    disconnect(&kms, &store).await;

    // The network to every HSM process is cut: NETWORK_ERRORS; cleared, it connects.
    for h in &hsms {
        fault(&emu, json!({"action": "cut-network", "hsmId": h}));
    }
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::NetworkErrors).await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    reconnect(&kms, &store).await;
    disconnect(&kms, &store).await;

    // Stalled processes (SIGSTOP) answer nothing: NETWORK_ERRORS; cleared (SIGCONT), it
    // connects.
    for h in &hsms {
        fault(&emu, json!({"action": "stall", "hsmId": h}));
    }
    assert_eq!(faults(&emu).len(), hsms.len());
    connect_fails_with(&kms, &store, ConnectionErrorCodeType::NetworkErrors).await;
    disconnect(&kms, &store).await;
    fault(&emu, json!({"action": "clear"}));
    assert!(faults(&emu).is_empty());
    reconnect(&kms, &store).await;
    emu.stop();
}

/// CreateHsm in `zone` of the cluster.
async fn create_hsm_in(
    hsm: &aws_sdk_cloudhsmv2::Client,
    cluster: &str,
    zone: &str,
) -> Result<
    aws_sdk_cloudhsmv2::operation::create_hsm::CreateHsmOutput,
    aws_sdk_cloudhsmv2::error::SdkError<aws_sdk_cloudhsmv2::operation::create_hsm::CreateHsmError>,
> {
    hsm.create_hsm()
        .cluster_id(cluster)
        .availability_zone(zone)
        .send()
        .await
}

/// The cluster's HSMs as `(hsmId, state)`, in id order.
async fn hsm_states(hsm: &aws_sdk_cloudhsmv2::Client, cluster: &str) -> Vec<(String, String)> {
    let mut hsms: Vec<(String, String)> = describe_cluster(hsm, cluster)
        .await
        .hsms()
        .iter()
        .map(|h| {
            (
                h.hsm_id().to_string(),
                h.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    hsms.sort();
    hsms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_hsm_needs_its_zones_subnet_with_a_free_address_and_a_refusal_changes_nothing() {
    // An account quota of 3 HSMs: the launcher's cluster has 2, so exactly one more fits. A
    // refused CreateHsm that still counted against the quota would leave no room for the one
    // that works at the end.
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start_with(&tmp.path().join("data"), free_port(), &["--max-hsms", "3"]);
    let hsm = emu.cloudhsm();
    let cluster = emu.cluster_id();
    let described = describe_cluster(&hsm, &cluster).await;
    let used: Vec<&str> = described
        .hsms()
        .iter()
        .filter_map(|h| h.availability_zone())
        .collect();
    let (zone, subnet) = described
        .subnet_mapping()
        .unwrap()
        .iter()
        .find(|(z, _)| !used.contains(&z.as_str()))
        .map(|(z, s)| (z.clone(), s.clone()))
        .expect("a zone of the cluster without an HSM");
    let before = hsm_states(&hsm, &cluster).await;
    assert_eq!(before.len(), 2);

    // The zone's subnet is deleted: CreateHsm there is refused at once, in EC2's words, and
    // the cluster is as it was (no HSM CREATE_IN_PROGRESS, none added).
    fault(&emu, json!({"action": "delete-subnet", "subnetId": subnet}));
    let err = create_hsm_in(&hsm, &cluster, &zone).await.unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_cloud_hsm_invalid_request_exception()),
        "{err:?}"
    );
    assert_error(
        &err,
        "CloudHsmInvalidRequestException",
        Some(&format!("The subnet ID '{subnet}' does not exist")),
    );
    assert_eq!(hsm_states(&hsm, &cluster).await, before);

    // Restored, the subnet has no free address left: refused again, for that reason.
    fault(
        &emu,
        json!({"action": "restore-subnet", "subnetId": subnet}),
    );
    fault(
        &emu,
        json!({"action": "exhaust-subnet", "subnetId": subnet}),
    );
    let err = create_hsm_in(&hsm, &cluster, &zone).await.unwrap_err();
    assert_error(
        &err,
        "CloudHsmInvalidRequestException",
        Some("The specified subnet does not have enough free addresses to satisfy the request."),
    );
    assert_eq!(hsm_states(&hsm, &cluster).await, before);
    assert_eq!(faults(&emu), vec![listed("exhaust-subnet", &subnet)]);

    // Addresses freed, CreateHsm works: the new HSM is in that zone's subnet and turns ACTIVE,
    // in the quota's last place, which no refusal took.
    fault(&emu, json!({"action": "free-subnet", "subnetId": subnet}));
    assert!(faults(&emu).is_empty());
    let created = create_hsm_in(&hsm, &cluster, &zone).await.unwrap();
    let new = created.hsm().unwrap();
    assert_eq!(new.availability_zone(), Some(zone.as_str()));
    assert_eq!(new.subnet_id(), Some(subnet.as_str()));
    wait_for_active_hsms(&hsm, &cluster, 3).await;

    // The quota is full now: the next CreateHsm is refused for that, not for a subnet.
    let err = create_hsm_in(&hsm, &cluster, used[0]).await.unwrap_err();
    assert_error(&err, "CloudHsmServiceException", None);
    emu.stop();
}
