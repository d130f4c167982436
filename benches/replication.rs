//! A replicated key generation across three in-process HSM nodes on loopback TLS: the time from
//! `GenerateAesKey` to the acknowledgement, which waits until the key is fsync'd on a quorum
//! (2 of 3). One call at a time gives the latency; 16 pipelined calls give the rate that group
//! commit reaches when writes share fsyncs.

// A benchmark panics on a broken setup by design: there is no caller to hand an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use hsm_node::{NodeHandle, NodeOptions};
use hsmkms::cluster::{ClusterDir, ClusterSpec};
use hsmkms::launcher::wait_until_serving;
use hsmkms_common::client::NodeClient;
use hsmkms_common::clock::SystemClock;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{Request, Response, Role};

/// Deadline on every call; far above a generation, so a timeout means something broke.
const DEADLINE: Duration = Duration::from_secs(10);

/// Generations in flight at once in the concurrent variant.
const CONCURRENT: usize = 16;

/// One replicated generation; panics unless the key is durable on a quorum.
async fn generate(client: &NodeClient) {
    let answer = client
        .call(
            Request::GenerateAesKey {
                label: "bench".into(),
                length_bytes: 32,
            },
            DEADLINE,
        )
        .await
        .expect("GenerateAesKey failed");
    match answer {
        Response::KeyCreated { durable_on, .. } => {
            assert!(
                durable_on.len() >= 2,
                "acknowledged before quorum: {durable_on:?}"
            )
        }
        other => panic!("unexpected answer to GenerateAesKey: {other:?}"),
    }
}

fn replication(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Setup, outside anything measured: a three-node cluster, its nodes, a logged-in session.
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec {
        region: "us-east-1".into(),
        account_id: "111122223333".into(),
        hsms: 3,
        admin_password: SecretString::new("adminPassword1"),
        kmsuser_password: SecretString::new("kmsPassword1"),
        host: "127.0.0.1".into(),
    };
    let cluster = runtime
        .block_on(ClusterDir::create(dir.path(), &spec, &SystemClock))
        .unwrap();
    let nodes: Vec<NodeHandle> = cluster
        .info
        .hsms
        .iter()
        .map(|h| {
            NodeHandle::start(
                &cluster.node_dir(h),
                NodeOptions::default(),
                Arc::new(SystemClock),
            )
            .unwrap()
        })
        .collect();
    let session = runtime.block_on(async {
        wait_until_serving(&cluster).await.unwrap();
        let client = NodeClient::connect(
            &cluster.info.hsms[0].address,
            cluster.client_tls().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let login = client
            .call(
                Request::Login {
                    username: "kmsuser".into(),
                    role: Role::CryptoUser,
                    password: SecretString::new("kmsPassword1"),
                },
                DEADLINE,
            )
            .await
            .unwrap();
        assert!(matches!(login, Response::LoggedIn { .. }), "{login:?}");
        client
    });
    let client = &session;

    // Each generation costs an fsync on two nodes: few samples, short windows.
    let mut group = c.benchmark_group("replication");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.throughput(Throughput::Elements(1));
    group.bench_function("generate_aes_key", |b| {
        b.to_async(&runtime).iter(|| generate(client))
    });

    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("generate_aes_key_x16_pipelined", |b| {
        b.to_async(&runtime)
            .iter(|| join_all((0..CONCURRENT).map(|_| generate(client))))
    });
    group.finish();

    // Close the session and its connection task before the nodes go, then stop each node
    // (dropping a handle waits until its store is closed).
    drop(session);
    drop(runtime);
    drop(nodes);
}

criterion_group!(benches, replication);
criterion_main!(benches);
