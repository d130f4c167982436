//! A cluster made from scratch, the CloudHSM way: CreateCluster, a first HSM, the CSR signed by
//! the customer's own CA, InitializeCluster, `cluster activate`, a crypto user, a second HSM;
//! then KMS uses it with the customer's trust anchor, and refuses to move a store of another
//! cluster onto it (no shared backup history).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use aws_sdk_cloudhsmv2::types::ClusterState;
use aws_sdk_kms::types::ConnectionStateType;
use kms_common::{
    assert_error, create_store_key, describe_cluster, free_port, wait_for_active_hsms,
    wait_for_connection_state, wait_until_async, Emulator,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, KeyPair,
};

const ADMIN: &str = "chosenAdmin9";
const KMSUSER: &str = "kmsFromScratch1";

/// The customer's CA: its certificate (the trust anchor) and a signer for the cluster's CSR.
struct CustomerCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl CustomerCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn sign(&self, csr: &str) -> String {
        CertificateSigningRequestParams::from_pem(csr)
            .unwrap()
            .signed_by(&self.cert, &self.key)
            .unwrap()
            .pem()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_from_scratch_serves_kms_and_is_unrelated_to_others() {
    let tmp = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emulator.kms();
    let hsm = emulator.cloudhsm();

    // CreateCluster: UNINITIALIZED, no HSM, no CSR yet.
    let created = hsm
        .create_cluster()
        .hsm_type("hsm2m.medium")
        .subnet_ids("subnet-00000000000000a01")
        .subnet_ids("subnet-00000000000000b02")
        .send()
        .await
        .unwrap();
    let cluster = created.cluster().unwrap();
    let id = cluster.cluster_id().unwrap().to_string();
    assert_eq!(cluster.state(), Some(&ClusterState::Uninitialized));
    assert_eq!(cluster.subnet_mapping().map(|m| m.len()), Some(2));

    // The first HSM; once it is up the cluster offers its CSR. A second must wait.
    hsm.create_hsm()
        .cluster_id(&id)
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    wait_for_active_hsms(&hsm, &id, 1).await;
    let err = hsm
        .create_hsm()
        .cluster_id(&id)
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmInvalidRequestException", None);
    let described = describe_cluster(&hsm, &id).await;
    let csr = described
        .certificates()
        .and_then(|c| c.cluster_csr())
        .unwrap()
        .to_string();

    // InitializeCluster refuses a certificate the trust anchor did not sign.
    let customer = CustomerCa::new("Example Corp customer CA");
    let stranger = CustomerCa::new("Somebody else");
    let err = hsm
        .initialize_cluster()
        .cluster_id(&id)
        .signed_cert(stranger.sign(&csr))
        .trust_anchor(customer.cert.pem())
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmInvalidRequestException", None);
    assert_eq!(
        describe_cluster(&hsm, &id).await.state(),
        Some(&ClusterState::Uninitialized)
    );
    let signed = customer.sign(&csr);
    let initialized = hsm
        .initialize_cluster()
        .cluster_id(&id)
        .signed_cert(&signed)
        .trust_anchor(customer.cert.pem())
        .send()
        .await
        .unwrap();
    assert_eq!(initialized.state(), Some(&ClusterState::Initialized));
    let described = describe_cluster(&hsm, &id).await;
    assert_eq!(
        described
            .certificates()
            .and_then(|c| c.cluster_certificate()),
        Some(signed.as_str())
    );

    // `cluster activate` sets the admin's password; the service sees it and turns it ACTIVE.
    emulator.hsm_cli(&[
        "--cluster-id",
        &id,
        "cluster",
        "activate",
        "--password",
        ADMIN,
    ]);
    wait_until_async("the cluster turns ACTIVE", || async {
        (describe_cluster(&hsm, &id).await.state() == Some(&ClusterState::Active)).then_some(())
    })
    .await;
    let as_admin = [
        "--cluster-id",
        &id,
        "--username",
        "admin",
        "--role",
        "admin",
        "--password",
        ADMIN,
    ];
    let create_user = [
        "user",
        "create",
        "--username",
        "kmsuser",
        "--role",
        "crypto-user",
        "--password",
        KMSUSER,
    ];
    emulator.hsm_cli(&[&as_admin[..], &create_user[..]].concat());
    hsm.create_hsm()
        .cluster_id(&id)
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap();
    wait_for_active_hsms(&hsm, &id, 2).await;

    // KMS takes it with the customer's trust anchor (not the emulator's CA).
    let err = kms
        .create_custom_key_store()
        .custom_key_store_name("scratch-store")
        .cloud_hsm_cluster_id(&id)
        .trust_anchor_certificate(emulator.trust_anchor())
        .key_store_password(KMSUSER)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "IncorrectTrustAnchorException", None);
    let store = kms
        .create_custom_key_store()
        .custom_key_store_name("scratch-store")
        .cloud_hsm_cluster_id(&id)
        .trust_anchor_certificate(customer.cert.pem())
        .key_store_password(KMSUSER)
        .send()
        .await
        .unwrap()
        .custom_key_store_id()
        .unwrap()
        .to_string();
    kms.connect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Connected).await;
    let key = create_store_key(&kms, &store).await;
    assert_eq!(key.cloud_hsm_cluster_id(), Some(id.as_str()));

    // A store of the emulator's own cluster cannot move here: no shared backup history.
    let other = emulator.create_store(&kms, "original-store").await;
    let err = kms
        .update_custom_key_store()
        .custom_key_store_id(&other)
        .cloud_hsm_cluster_id(&id)
        .send()
        .await
        .unwrap_err();
    // The cluster is in use by `scratch-store` already, which KMS checks first.
    assert_error(&err, "CloudHsmClusterInUseException", None);
    kms.disconnect_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    wait_for_connection_state(&kms, &store, ConnectionStateType::Disconnected).await;
    kms.schedule_key_deletion()
        .key_id(key.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    emulator.advance_clock(8 * 24 * 3600);
    kms.delete_custom_key_store()
        .custom_key_store_id(&store)
        .send()
        .await
        .unwrap();
    let err = kms
        .update_custom_key_store()
        .custom_key_store_id(&other)
        .cloud_hsm_cluster_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_error(&err, "CloudHsmClusterNotRelatedException", None);
    emulator.stop();
}
