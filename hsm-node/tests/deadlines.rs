//! Every wait has a deadline: a key generation whose quorum cannot be reached answers by its
//! caller's deadline rather than the node's own (longer) one, and a call without a deadline
//! (0 on the wire) is run under the node's cap rather than none.

mod support;

use std::time::{Duration, Instant};

use hsm_node::NodeOptions;
use hsmkms_common::wire::{ErrorCode, Request, Response};
use support::now_millis;

#[actix_rt::test]
async fn a_generation_that_cannot_reach_its_quorum_answers_by_its_callers_deadline() {
    let mut nodes = support::cluster(2, NodeOptions::default()).await;
    let second = nodes.pop().unwrap();
    let first = nodes.pop().unwrap();
    let mut kms = first.kmsuser().await;
    // The second HSM is down: the first waits for it (5 s at most) to make a key durable on
    // two HSMs; but this caller gives up after 1.5 s.
    let _stopped = second.stop();
    let started = Instant::now();
    let answer = kms
        .call_with(
            Request::GenerateAesKey {
                label: "hasty".into(),
                length_bytes: 32,
            },
            now_millis() + 1_500,
            Duration::from_secs(4),
        )
        .await;
    match answer {
        Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::DeadlineExceeded, "{e}"),
        other => panic!("expected DeadlineExceeded within its deadline, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "answered after {:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn a_call_without_a_deadline_runs_under_the_nodes_cap() {
    let hsm = support::OneNode::start().await;
    let mut kms = hsm.kmsuser().await;
    // 0 on the wire: run, not refused, and a key is acknowledged as under any deadline.
    let status = kms
        .call_with(Request::Status, 0, Duration::from_secs(5))
        .await;
    assert!(matches!(status, Some(Response::Status(_))), "{status:?}");
    let generated = kms
        .call_with(
            Request::GenerateAesKey {
                label: "patient".into(),
                length_bytes: 32,
            },
            0,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(generated, Some(Response::KeyCreated { .. })),
        "{generated:?}"
    );
}
