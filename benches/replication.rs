//! The replication hot path, on in-process HSM nodes over loopback TLS:
//!
//! - `replication/generate_aes_key`: from `GenerateAesKey` to its acknowledgement, which waits
//!   until the key is fsync'd on a quorum (2 of 3). One call at a time gives the latency; 16
//!   pipelined calls give the rate that group commit reaches when writes share fsyncs.
//! - `catch_up/<N>`: an HSM that was down while N keys were created comes back; the time from
//!   starting it until its digest equals its peers' (it serves every key). Each sample builds a
//!   fresh cluster and creates the N keys untimed, so samples do not grow with earlier ones,
//!   and afterwards restarts the HSM to check that it kept them all on disk.
//! - `node_store/commit_*`: the node store's durable commit (one fsync'd transaction) of one
//!   key object, and of 16 concurrent commits that group commit folds into shared fsyncs.

// A benchmark panics on a broken setup by design: there is no caller to hand an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::future::join_all;
use futures::StreamExt;
use hsm_node::core::{Entry, KeyEntry, Stored};
use hsm_node::node::LocalDigest;
use hsm_node::store::Store;
use hsm_node::{NodeHandle, NodeOptions};
use hsmkms::cluster::{ClusterDir, ClusterSpec};
use hsmkms::launcher::wait_until_serving;
use hsmkms_common::aead::Sealer;
use hsmkms_common::client::NodeClient;
use hsmkms_common::clock::SystemClock;
use hsmkms_common::secret::{KeyMaterial, SecretString};
use hsmkms_common::wire::{
    KeyAttributes, KeyClass, KeyType, ObjectId, Request, Response, Role, Version,
};

/// Deadline on every call; far above a generation, so a timeout means something broke.
const DEADLINE: Duration = Duration::from_secs(10);

/// Generations in flight at once in the concurrent variant.
const CONCURRENT: usize = 16;

/// How long a returning HSM may take to catch up before the bench gives up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// Generations in flight while filling a cluster for the catch-up bench.
const FILL_CONCURRENCY: usize = 64;

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A three-HSM cluster in a temporary directory, with its nodes started.
struct Cluster {
    dir: ClusterDir,
    nodes: Vec<Option<NodeHandle>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(runtime: &tokio::runtime::Runtime) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let spec = ClusterSpec {
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
            hsms: 3,
            admin_password: SecretString::new("adminPassword1"),
            kmsuser_password: SecretString::new("kmsPassword1"),
            host: "127.0.0.1".into(),
        };
        let dir = runtime
            .block_on(ClusterDir::create(tmp.path(), &spec, &SystemClock))
            .unwrap();
        let mut cluster = Self {
            nodes: (0..dir.info.hsms.len()).map(|_| None).collect(),
            dir,
            _tmp: tmp,
        };
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i);
        }
        runtime.block_on(wait_until_serving(&cluster.dir)).unwrap();
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let dir = self.dir.node_dir(&self.dir.info.hsms[i]);
        self.nodes[i] =
            Some(NodeHandle::start(&dir, NodeOptions::default(), Arc::new(SystemClock)).unwrap());
    }

    /// Stops a node; returns once its store is closed.
    fn stop_node(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown();
        }
    }

    /// A kmsuser session on HSM `i`.
    async fn session(&self, i: usize) -> NodeClient {
        let client = NodeClient::connect(
            &self.dir.info.hsms[i].address,
            self.dir.client_tls().unwrap(),
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
    }

    async fn digest(&self, i: usize) -> Vec<u64> {
        let node = self.nodes[i].as_ref().expect("node is running");
        node.actor().send(LocalDigest).await.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}

fn replication(c: &mut Criterion) {
    let runtime = runtime();
    // Setup, outside anything measured: a three-node cluster and a logged-in session.
    let cluster = Cluster::start(&runtime);
    let session = runtime.block_on(cluster.session(0));
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

    // Close the session and its connection task before the nodes go.
    drop(session);
    drop(cluster);
    drop(runtime);
}

/// One catch-up: a fresh cluster, HSM 2 down while `n` keys are made on the others, then the
/// time from restarting it until it holds everything they hold.
fn catch_up_once(runtime: &tokio::runtime::Runtime, n: usize) -> Duration {
    let mut cluster = Cluster::start(runtime);
    cluster.stop_node(2);
    runtime.block_on(async {
        let session = cluster.session(0).await;
        let session = &session;
        futures::stream::iter(0..n)
            .for_each_concurrent(FILL_CONCURRENCY, |_| generate(session))
            .await;
    });
    let started = Instant::now();
    cluster.start_node(2);
    runtime.block_on(async {
        let target = cluster.digest(0).await;
        while cluster.digest(2).await != target {
            assert!(
                started.elapsed() < CATCH_UP_LIMIT,
                "HSM did not catch up {n} keys within {CATCH_UP_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let took = started.elapsed();
    // Untimed: what it holds, it holds on disk. Restarted alone (no peer to pull from), it
    // must load the same digest. The timing above ends when the keys are served, which can be
    // one batch's fsync before they are all on disk.
    let target = runtime.block_on(cluster.digest(0));
    for i in 0..3 {
        cluster.stop_node(i);
    }
    cluster.start_node(2);
    let reloaded = runtime.block_on(cluster.digest(2));
    assert_eq!(reloaded, target, "caught-up keys lost in a restart");
    took
}

fn catch_up(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("catch_up");
    // Every sample is a whole cluster's life and its untimed fill: one iteration per sample
    // (criterion sizes iterations from the timed part alone, so a longer target time would
    // mean hundreds of fills), ten samples. Criterion warns that it cannot fit them in 1 ms.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for n in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| catch_up_once(&runtime, n)).sum())
        });
    }
    group.finish();
}

/// A key object as the node stores it.
fn key_object(handle: u64) -> Stored {
    let attributes = KeyAttributes {
        handle,
        label: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        owner: "kmsuser".into(),
        class: KeyClass::SecretKey,
        key_type: KeyType::Aes,
        length_bytes: 32,
        extractable: false,
        token: true,
        created_at_millis: 0,
    };
    Stored {
        id: ObjectId::Key(handle),
        version: Version {
            counter: handle,
            node: 1,
        },
        entry: Entry::Key(Arc::new(KeyEntry::new(attributes, KeyMaterial::generate()))),
    }
}

fn node_store(c: &mut Criterion) {
    let runtime = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(Sealer::new(&KeyMaterial::generate()));
    let (store, _, thread) =
        Store::open(&tmp.path().join("node.redb"), storage, "cluster-bench").unwrap();
    let mut next = 0u64;
    let mut handle = move || {
        next += 1;
        next
    };

    // Each commit is an fsync: few samples, short windows.
    let mut group = c.benchmark_group("node_store");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    group.bench_function("commit_one", |b| {
        b.to_async(&runtime).iter_batched(
            || key_object(handle()),
            |object| {
                let commit = store.commit(vec![object]);
                async move { commit.await.unwrap() }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("commit_x16_concurrent", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                (0..CONCURRENT)
                    .map(|_| key_object(handle()))
                    .collect::<Vec<_>>()
            },
            |objects| {
                let commits: Vec<_> = objects.into_iter().map(|o| store.commit(vec![o])).collect();
                async move {
                    for result in join_all(commits).await {
                        result.unwrap();
                    }
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
    drop(store);
    thread.join().unwrap();
}

criterion_group!(benches, replication, catch_up, node_store);
criterion_main!(benches);
