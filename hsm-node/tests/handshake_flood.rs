//! An idle flood cannot lock clients out: hundreds of TCP connections that never start a TLS
//! handshake, renewed as they time out, take every handshake slot, yet a real client still
//! connects and is served within a few seconds.

mod support;

use std::time::Duration;

use hsmkms_common::wire::{Request, Response};
use support::OneNode;
use tokio::net::TcpStream;

/// Opens `n` TCP connections to the node that send nothing, and keeps them open.
async fn idle_flood(hsm: &OneNode, n: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(tcp) = TcpStream::connect(hsm.node.address()).await {
            flood.push(tcp);
        }
    }
    flood
}

#[actix_rt::test]
async fn an_idle_flood_of_connections_does_not_lock_out_a_real_client() {
    let hsm = OneNode::start().await;

    // 300 connections that never say a word, more than there are handshake slots; the node
    // accepts them all meanwhile.
    let flood = idle_flood(&hsm, 300).await;
    assert_eq!(flood.len(), 300);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A real client connects, logs in and is served, well before the flood times out.
    let served = tokio::time::timeout(Duration::from_secs(3), async {
        let mut admin = hsm.admin().await;
        admin.call(Request::Status).await
    })
    .await;
    assert!(
        matches!(served, Ok(Ok(Response::Status(_)))),
        "a client was locked out by an idle flood: {served:?}"
    );

    // The flood renews itself: the same again.
    let renewed = idle_flood(&hsm, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = tokio::time::timeout(Duration::from_secs(3), async {
        let mut kms = hsm.kmsuser().await;
        kms.call(Request::Status).await
    })
    .await;
    assert!(matches!(served, Ok(Ok(Response::Status(_)))), "{served:?}");
    drop((flood, renewed));
}
