//! The stall switch: a stalled in-process HSM keeps its socket and connections but answers
//! nothing; once it runs again it answers what is still wanted, refuses what its caller gave
//! up on (the deadline passed during the stall), and leaves nothing of the refused call behind.

mod support;

use std::time::Duration;

use hsmkms_common::wire::{ErrorCode, Request, Response};
use support::{now_millis, OneNode};

#[actix_rt::test]
async fn a_stalled_node_answers_nothing_and_refuses_afterwards_what_outlived_its_deadline() {
    let hsm = OneNode::start().await;
    let mut patient = hsm.kmsuser().await;
    let mut hasty = hsm.kmsuser().await;
    let mut admin = hsm.admin().await;

    // Stalled: a call gets no answer within 300 ms, though its caller would wait 10 s.
    hsm.node.set_stalled(true);
    assert!(hsm.node.is_stalled());
    let held = patient
        .call_with(
            Request::Status,
            now_millis() + 10_000,
            Duration::from_millis(300),
        )
        .await;
    assert!(held.is_none(), "a stalled HSM answered: {held:?}");

    // A key generation whose caller gives up after 200 ms arrives meanwhile, and sits there.
    let generate_id = hasty.next_id();
    let early = hasty
        .call_with(
            Request::GenerateAesKey {
                label: "too-late".into(),
                length_bytes: 32,
            },
            now_millis() + 200,
            Duration::from_millis(400),
        )
        .await;
    assert!(early.is_none(), "a stalled HSM answered: {early:?}");

    // Nor does it take new connections: the TLS handshake does not finish.
    let newcomer = tokio::time::timeout(Duration::from_millis(300), hsm.connect()).await;
    assert!(newcomer.is_err(), "a stalled HSM completed a handshake");

    // Running again: the patient call is answered at last, the late generation is refused
    // for its deadline, and fresh calls are answered.
    hsm.node.set_stalled(false);
    let status_id = patient.next_id() - 1;
    assert!(matches!(
        patient.answer(status_id, Duration::from_secs(5)).await,
        Some(Response::Status(_))
    ));
    match hasty.answer(generate_id, Duration::from_secs(5)).await {
        Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::DeadlineExceeded, "{e}"),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(matches!(
        patient.call(Request::GenerateRandom { length: 16 }).await,
        Ok(Response::Random(_))
    ));

    // The refused generation left no key object: not for its owner, not for an officer.
    match admin
        .call(Request::FindKeys {
            label: None,
            owner: None,
        })
        .await
    {
        Ok(Response::Keys(keys)) => assert!(keys.is_empty(), "{keys:?}"),
        other => panic!("{other:?}"),
    }
    match hasty.call(Request::Status).await {
        Ok(Response::Status(status)) => assert_eq!(status.key_count, 0),
        other => panic!("{other:?}"),
    }
    // And a new generation works as ever.
    assert!(matches!(
        hasty
            .call(Request::GenerateAesKey {
                label: "in-time".into(),
                length_bytes: 32,
            })
            .await,
        Ok(Response::KeyCreated { .. })
    ));
}

/// Waits until `check` holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn key_count(conn: &mut support::Conn) -> u64 {
    match conn.call(Request::Status).await {
        Ok(Response::Status(status)) => status.key_count,
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn a_key_made_while_its_second_hsm_is_stalled_is_rolled_back_there_too() {
    let options = hsm_node::NodeOptions {
        call_deadline: Duration::from_millis(800),
        ..Default::default()
    };
    let hsms = support::cluster(2, options).await;
    let mut a = hsms[0].kmsuser().await;
    let mut b = hsms[1].kmsuser().await;

    // Linked: a key made on A is durable on both.
    eventually("a key on two HSMs", async || {
        matches!(
            a.call(Request::GenerateAesKey { label: "first".into(), length_bytes: 32 }).await,
            Ok(Response::KeyCreated { durable_on, .. }) if durable_on.len() == 2
        )
    })
    .await;
    let made = key_count(&mut a).await;
    eventually("B holds every key", async || {
        key_count(&mut b).await == made
    })
    .await;

    // B stalls: a key made on A cannot reach its quorum and is rolled back.
    hsms[1].node.set_stalled(true);
    let stalled = a
        .call(Request::GenerateAesKey {
            label: "while-stalled".into(),
            length_bytes: 32,
        })
        .await;
    assert_eq!(
        stalled.err().map(|e| e.code),
        Some(ErrorCode::QuorumNotReached)
    );
    assert_eq!(key_count(&mut a).await, made);

    // B runs again and replays what it held: it ends without the rolled-back key too.
    hsms[1].node.set_stalled(false);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(key_count(&mut b).await, made);
    match b
        .call(Request::FindKeys {
            label: Some("while-stalled".into()),
            owner: None,
        })
        .await
    {
        Ok(Response::Keys(keys)) => assert!(keys.is_empty(), "{keys:?}"),
        other => panic!("{other:?}"),
    }
}
