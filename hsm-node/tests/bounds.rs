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
