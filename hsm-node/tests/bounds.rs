//! A connection's memory is bounded in bytes, not only in calls: a client that sends large
//! calls and reads none of the answers gets an error for the calls past the bound, instead of
//! the node holding every frame and every answer for it.

mod support;

use std::time::Duration;

use hsm_node::NodeOptions;
use hsmkms_common::secret::SecretBytes;
use hsmkms_common::wire::{ErrorCode, Request, Response};

/// The bound, small for the test (its default is 16 MiB), and the size of each call.
const BOUND: usize = 2 * 1024 * 1024;
const CALL: usize = 256 * 1024;

#[actix_rt::test]
async fn a_client_that_reads_no_answers_is_refused_past_the_byte_bound() {
    let options = NodeOptions {
        max_held_bytes_per_connection: BOUND,
        ..NodeOptions::default()
    };
    let hsm = support::cluster(1, options).await.pop().unwrap();
    // The client's socket holds little, so unread answers stay on the node.
    let small = hsm.connect_small_buffer(64 * 1024).await;
    let mut kms = support::OneNode::log_in_kmsuser(small).await;
    let handle = match kms
        .call(Request::GenerateAesKey {
            label: "k".into(),
            length_bytes: 32,
        })
        .await
    {
        Ok(Response::KeyCreated { key, .. }) => key.handle,
        other => panic!("{other:?}"),
    };

    // Calls of three times the bound in all, none of whose answers is read yet.
    let calls = 3 * BOUND / CALL;
    let mut ids = Vec::new();
    for _ in 0..calls {
        let request = Request::Encrypt {
            handle,
            plaintext: SecretBytes::new(vec![7u8; CALL]),
            aad: vec![],
        };
        ids.push(kms.send(request).await);
    }

    // Every call is answered (refusals may overtake answers); those past the bound with an
    // error saying so.
    let (mut encrypted, mut refused) = (0, 0);
    let mut unanswered: std::collections::BTreeSet<u64> = ids.into_iter().collect();
    while !unanswered.is_empty() {
        let answer = kms.next_answer(Duration::from_secs(10)).await;
        let Some((id, answer)) = answer else {
            panic!("no answer to {} calls", unanswered.len());
        };
        assert!(
            unanswered.remove(&id),
            "an answer to {id}, twice or unasked"
        );
        match answer {
            Response::Ciphertext(_) => encrypted += 1,
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::InvalidRequest, "{e}");
                assert!(e.message.contains("bytes"), "{e}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    eprintln!("{encrypted} calls encrypted, {refused} refused");
    assert!(refused > 0, "all {encrypted} calls were held at once");
    assert!(encrypted > 0);
    // The connection still serves once its answers are read.
    assert!(matches!(
        kms.call(Request::Status).await,
        Ok(Response::Status(_))
    ));
}

#[actix_rt::test]
async fn refusals_written_to_the_client_do_not_make_room_for_more_calls() {
    let generate = || Request::GenerateAesKey {
        label: "k".repeat(hsm_node::core::MAX_LABEL_LEN),
        length_bytes: 32,
    };
    let call_len = hsmkms_common::frame::encode_call(1, support::now_millis(), &generate())
        .unwrap()
        .len();
    // Room for four such calls, and not five. A key generation waits for a peer that is down,
    // so the calls admitted stay in flight for the whole test while each refusal is written
    // out at once.
    let admissible = 4;
    let options = NodeOptions {
        max_held_bytes_per_connection: admissible * call_len + call_len / 2,
        call_deadline: Duration::from_secs(3),
        ..NodeOptions::default()
    };
    let mut nodes = support::cluster(2, options).await;
    let _second = nodes.pop().unwrap().stop();
    let first = nodes.pop().unwrap();
    let mut kms = first.kmsuser().await;

    // Calls sent a few milliseconds apart, none of whose answers is read: past the first four,
    // each is refused, and its refusal written out before the next arrives. A refusal is not
    // counted against the bound, so writing it must not free any of it either.
    let calls = 40;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..calls {
        ids.insert(kms.send(generate()).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Every call is answered: the four in flight once their quorum wait ends, the others at
    // once with an error saying why.
    let (mut admitted, mut refused) = (0, 0);
    while !ids.is_empty() {
        let Some((id, answer)) = kms.next_answer(Duration::from_secs(10)).await else {
            panic!("no answer to {} calls", ids.len());
        };
        assert!(ids.remove(&id), "an answer to {id}, twice or unasked");
        match answer {
            Response::Error(e) if e.code == ErrorCode::InvalidRequest => {
                assert!(e.message.contains("bytes"), "{e}");
                refused += 1;
            }
            _ => admitted += 1,
        }
    }
    eprintln!("{admitted} calls admitted, {refused} refused");
    assert_eq!(
        admitted, admissible,
        "{admitted} calls of {call_len} bytes held at once under a bound of {admissible}"
    );
}
