//! Running a node: [`NodeHandle::start`] opens a node directory, binds its listener and runs
//! the node's actors on a thread of its own (its own actix system), whether the node lives in
//! the launcher's process or in an `hsm-node` process of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::prelude::*;
use anyhow::{anyhow, Context as _, Result};
use hsmkms_common::clock::Clock;
use hsmkms_common::entropy::{Entropy, OsEntropy};
use tokio::sync::oneshot;

use crate::actors::connection::serve;
use crate::actors::node::NodeActor;
use crate::config::{self, STORE_FILE};
use crate::core::NodeCore;
use crate::options::NodeOptions;
use crate::stall::StallSwitch;
use crate::store::{Store, StoreError, StoreFaults};

/// A running node. Dropping it stops the node and waits until its store is closed.
pub struct NodeHandle {
    hsm_id: String,
    address: SocketAddr,
    actor: Addr<NodeActor>,
    faults: StoreFaults,
    stall: StallSwitch,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("hsm_id", &self.hsm_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Starts the node kept in `dir`. Returns once it accepts connections.
    pub fn start(dir: &Path, options: NodeOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::start_with_entropy(dir, options, clock, Arc::new(OsEntropy))
    }

    /// Starts the node kept in `dir`, drawing its key material, random bytes and password
    /// salts from `entropy` (seeded, in a simulation). Returns once it accepts connections.
    pub fn start_with_entropy(
        dir: &Path,
        options: NodeOptions,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self> {
        let lock = config::lock(dir, config::LOCK_WAIT)?;
        let mut node = config::load(dir)?;
        let (server_tls, client_tls) = config::tls_configs(&node)?;
        let listener = match std::net::TcpListener::bind(&node.config.listen) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                // Another process took the recorded port while this node was down: listen on
                // another port of the same host and record it; peers learn the new address
                // from its Hello and its member record, the launcher from node.json.
                let host = node
                    .config
                    .listen
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_else(|| "127.0.0.1".into());
                let l = std::net::TcpListener::bind((host.as_str(), 0))
                    .with_context(|| format!("binding {host}:0"))?;
                let moved = l.local_addr()?.to_string();
                tracing::warn!(taken = %node.config.listen, now = %moved, "the HSM's port is taken; listening on another");
                config::set_address(dir, &mut node.config, &moved)?;
                l
            }
            Err(e) => {
                return Err(e).with_context(|| format!("binding {}", node.config.listen));
            }
        };
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let store_path = dir.join(STORE_FILE);
        let (store, objects, store_thread, rebuilding) = match Store::open(
            &store_path,
            node.storage.clone(),
            &node.config.cluster_id,
        ) {
            Ok((store, objects, thread)) => (store, objects, thread, false),
            Err(e @ StoreError::Corrupt(_)) if !node.config.join.is_empty() => {
                // The peers hold every acknowledged object: move the damaged file aside and
                // start empty, serving no client until a peer has been caught up with.
                let aside =
                    store_path.with_extension(format!("redb.damaged-{}", clock.now_millis()));
                std::fs::rename(&store_path, &aside)
                    .with_context(|| format!("moving {} aside", store_path.display()))?;
                tracing::error!(error = %e, moved_to = %aside.display(), "the HSM's store is unreadable; rebuilding it from its peers");
                let (store, objects, thread) =
                    Store::open(&store_path, node.storage.clone(), &node.config.cluster_id)
                        .with_context(|| format!("opening a new store in {}", dir.display()))?;
                (store, objects, thread, true)
            }
            Err(e @ StoreError::Corrupt(_)) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "opening the store in {} (no peer to rebuild it from: restore the file \
                         from a copy)",
                        dir.display()
                    )
                })
            }
            Err(e) => {
                // Not damage: the file may hold changes only this HSM has, so it is neither
                // moved aside nor rebuilt.
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "the HSM cannot open its store {} (left as it is): fix the cause, such \
                         as the file's permissions or the disk, and start it again",
                        store_path.display()
                    )
                });
            }
        };
        let hsm_id = node.config.hsm_id.clone();
        let faults = store.faults();
        let (stall, gate) = StallSwitch::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(hsm_id.clone())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!(e)));
                            return;
                        }
                    };
                    let core = NodeCore::new(
                        node.config.member(),
                        node.config.cluster_id.clone(),
                        objects,
                    )
                    .with_entropy(entropy);
                    let serve_clock = clock.clone();
                    let actor = NodeActor::new(
                        core,
                        store,
                        node.sync.clone(),
                        clock,
                        client_tls,
                        options.clone(),
                        node.config.join.clone(),
                    )
                    .rebuilding(rebuilding)
                    .stall_gate(gate.clone())
                    .start();
                    actix::spawn(serve(
                        listener,
                        server_tls,
                        actor.clone(),
                        options,
                        gate,
                        serve_clock,
                    ));
                    let _ = ready_tx.send(Ok(actor));
                    let _ = stop_rx.await;
                });
                // Dropping the system drops every actor and task, and with them the last
                // handles on the store: its thread finishes pending commits and closes the file.
                drop(system);
                let _ = store_thread.join();
                // Only now may another node serve the directory.
                drop(lock);
            })?;
        let actor = ready_rx
            .recv()
            .map_err(|_| anyhow!("node thread ended during start"))??;
        Ok(Self {
            hsm_id,
            address,
            actor,
            faults,
            stall,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The node actor, for in-process callers that want to talk to it without a connection.
    pub fn actor(&self) -> &Addr<NodeActor> {
        &self.actor
    }

    pub fn hsm_id(&self) -> &str {
        &self.hsm_id
    }

    /// Where the node listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Fault injection: the node's next `count` commits fail, as if its disk had refused them.
    /// Calls whose changes they held answer `Internal` and change nothing.
    pub fn fail_next_commits(&self, count: u32) {
        self.faults.fail_after(0, count);
    }

    /// Fault injection: the node's next `skip` commits succeed, then `count` fail.
    pub fn fail_commits_after(&self, skip: u32, count: u32) {
        self.faults.fail_after(skip, count);
    }

    /// Fault injection: stalls the node (`true`) as SIGSTOP stalls a process, or lets it run
    /// again (`false`). While stalled it keeps its listening socket and open connections but
    /// accepts, reads, answers and replicates nothing; what arrives is held (within the
    /// existing bounds) and handled once it runs again, when calls whose caller's deadline
    /// passed meanwhile are refused (`DeadlineExceeded`). Stopping a stalled node drops what
    /// it holds unanswered, like killing a stopped process.
    pub fn set_stalled(&self, stalled: bool) {
        if stalled != self.stall.is_on() {
            tracing::warn!(hsm_id = %self.hsm_id, stalled, "fault injection: HSM stall switch");
        }
        self.stall.set(stalled);
    }

    /// Whether the node is stalled ([`NodeHandle::set_stalled`]).
    pub fn is_stalled(&self) -> bool {
        self.stall.is_on()
    }

    /// Stops the node and waits until its store is closed.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Tests only: a key's plaintext material, read in-process.
    #[cfg(feature = "test-util")]
    pub async fn material_for_test(&self, handle: u64) -> Option<[u8; 32]> {
        self.actor
            .send(crate::actors::messages::MaterialForTest(handle))
            .await
            .ok()
            .flatten()
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
