//! Replication across real `hsm-node` processes: keys reach every HSM, survive one HSM being
//! killed, reach it again when it comes back (deletions too), and are never acknowledged
//! without their quorum.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hsmkms_common::client::NodeClient;
use hsmkms_common::wire::{ErrorCode, Request};

/// How long a node that comes back may take to catch up ("within seconds").
const CATCH_UP: Duration = Duration::from_secs(10);

async fn labels_on(cluster: &TestCluster, i: usize) -> Vec<String> {
    labels(&cluster.kmsuser(i).await).await
}

async fn delete(c: &NodeClient, handle: u64) {
    c.call(Request::DeleteKey { handle }, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_replicate_survive_a_killed_node_and_reach_it_when_it_returns() {
    let mut cluster = TestCluster::running_processes(3).await;

    // A key generated on one node is acknowledged durable on two and reaches all three.
    let a = cluster.kmsuser(0).await;
    let (first, durable_on) = generate(&a, "first").await.unwrap();
    assert!(durable_on.len() >= 2, "acknowledged on {durable_on:?}");
    let (doomed, _) = generate(&a, "doomed").await.unwrap();
    for i in 0..3 {
        eventually("both keys on every node", CATCH_UP, || async {
            labels_on(&cluster, i).await == ["doomed", "first"]
        })
        .await;
    }

    // With one node killed, keys are still generated and acknowledged on the two others, and
    // deletions go ahead.
    cluster.kill_process(2);
    let mut created = vec!["first".to_string()];
    for n in 0..5 {
        let label = format!("while-down-{n}");
        let (_, durable_on) = generate(&a, &label).await.unwrap();
        assert_eq!(
            durable_on.len(),
            2,
            "durable on the two live nodes: {durable_on:?}"
        );
        assert!(!durable_on.contains(&cluster.hsm(2).hsm_id));
        created.push(label);
    }
    delete(&a, doomed.handle).await;
    created.sort();
    assert_eq!(labels_on(&cluster, 1).await, created);

    // The killed node restarts and, within seconds, holds every key created and misses every
    // key deleted while it was down.
    cluster.start_process(2).await;
    eventually("the returning node caught up", CATCH_UP, || async {
        labels_on(&cluster, 2).await == created
    })
    .await;
    assert!(
        cluster
            .kmsuser(2)
            .await
            .call(
                Request::GetKeyAttributes {
                    handle: doomed.handle
                },
                DEADLINE
            )
            .await
            .is_err(),
        "the deleted key is gone from the node that was down"
    );
    assert!(cluster
        .kmsuser(2)
        .await
        .call(
            Request::GetKeyAttributes {
                handle: first.handle
            },
            DEADLINE
        )
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_generation_fails_and_nothing_is_acknowledged() {
    let mut cluster = TestCluster::running_processes(3).await;
    let a = cluster.kmsuser(0).await;
    generate(&a, "before").await.unwrap();

    // Two of three nodes down: generation fails with a clear error.
    cluster.kill_process(1);
    cluster.kill_process(2);
    let err = a
        .call(
            Request::GenerateAesKey {
                label: "orphan".into(),
                length_bytes: 32,
            },
            DEADLINE,
        )
        .await;
    let message = format!("{err:?}");
    assert_eq!(code(err), ErrorCode::QuorumNotReached);
    assert!(message.contains("1 of the 2 HSMs"), "says why: {message}");
    assert_eq!(
        labels(&a).await,
        ["before"],
        "the failed key is not on the surviving node"
    );

    // When the others return, the failed key shows up nowhere.
    cluster.start_process(1).await;
    cluster.start_process(2).await;
    cluster.wait_linked().await;
    generate(&a, "after").await.unwrap();
    for i in 0..3 {
        eventually("the cluster converged", CATCH_UP, || async {
            labels_on(&cluster, i).await == ["after", "before"]
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_key_survives_killing_every_node() {
    let mut cluster = TestCluster::running_processes(3).await;
    let mut expected = Vec::new();
    for i in 0..3 {
        let c = cluster.kmsuser(i).await;
        for n in 0..4 {
            let label = format!("node{i}-key{n}");
            generate(&c, &label).await.unwrap();
            expected.push(label);
        }
    }
    expected.sort();

    // SIGKILL every node at once, then start them all again.
    for i in 0..3 {
        cluster.kill_process(i);
    }
    for i in 0..3 {
        cluster.start_process(i).await;
    }
    cluster.wait_linked().await;
    for i in 0..3 {
        eventually("every acknowledged key is back", CATCH_UP, || async {
            labels_on(&cluster, i).await == expected
        })
        .await;
    }
}
