//! `--hsm-processes` mode: each HSM runs as an `hsm-node` process of its own (the launcher's
//! own executable, `hsmkms hsm-node`). The supervisor restarts one that dies, with a capped
//! backoff, and on shutdown sends each a SIGTERM and waits for it (SIGKILL after a deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm_node::cli::LogFormat;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// First wait before restarting a node that died.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between restarts of a node that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A node that ran this long before dying is restarted at once again next time.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// One supervised HSM process.
#[derive(Debug, Clone)]
pub struct NodeProcess {
    pub hsm_id: String,
    pub node_dir: PathBuf,
}

/// Runs and watches the HSM processes; HSMs can be added and removed while it runs.
#[derive(Debug)]
pub struct Supervisor {
    exe: PathBuf,
    log_format: LogFormat,
    /// The launcher's runtime, so that nodes can be added from any thread.
    runtime: tokio::runtime::Handle,
    nodes: Mutex<BTreeMap<String, Supervised>>,
}

#[derive(Debug)]
struct Supervised {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The running process's pid (0 between processes), for stalling it.
    pid: Arc<AtomicI32>,
}

impl Supervisor {
    /// A supervisor that spawns `exe hsm-node`; call from within the launcher's runtime.
    pub fn new(exe: PathBuf, log_format: LogFormat) -> Self {
        Self {
            exe,
            log_format,
            runtime: tokio::runtime::Handle::current(),
            nodes: Mutex::new(BTreeMap::new()),
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Supervised>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a node and keeps it running.
    pub fn add(&self, node: NodeProcess) {
        let (stop, stopping) = watch::channel(false);
        let hsm_id = node.hsm_id.clone();
        let pid = Arc::new(AtomicI32::new(0));
        let task = self.runtime.spawn(supervise(
            self.exe.clone(),
            node,
            self.log_format,
            stopping,
            pid.clone(),
        ));
        self.nodes().insert(hsm_id, Supervised { stop, task, pid });
    }

    /// Fault injection: stalls the node's process (SIGSTOP: its sockets stay open, it answers
    /// nothing) or lets it run again (SIGCONT).
    pub fn set_stalled(&self, hsm_id: &str, stalled: bool) -> Result<(), String> {
        let nodes = self.nodes();
        let node = nodes
            .get(hsm_id)
            .ok_or_else(|| format!("HSM {hsm_id} is not running; start it first"))?;
        let pid = node.pid.load(Ordering::SeqCst);
        if pid <= 0 {
            return Err(format!("HSM {hsm_id} is restarting; try again"));
        }
        let signal = if stalled {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(pid), signal).map_err(|e| format!("cannot signal {hsm_id}: {e}"))
    }

    /// Whether the node is supervised (started and not removed).
    pub fn contains(&self, hsm_id: &str) -> bool {
        self.nodes().contains_key(hsm_id)
    }

    /// Stops a node for good; blocks until its process has exited. Not from an async task.
    pub fn remove_blocking(&self, hsm_id: &str) {
        let removed = self.nodes().remove(hsm_id);
        if let Some(node) = removed {
            let _ = node.stop.send(true);
            let _ = futures::executor::block_on(node.task);
        }
    }

    /// Stops every node for good; blocks until their processes have exited. Not from an async
    /// task.
    pub fn remove_all_blocking(&self) {
        let nodes: Vec<Supervised> = std::mem::take(&mut *self.nodes()).into_values().collect();
        for node in &nodes {
            let _ = node.stop.send(true);
        }
        for node in nodes {
            let _ = futures::executor::block_on(node.task);
        }
    }

    /// Stops every node and waits for them.
    pub async fn shutdown(&self) {
        let nodes: Vec<Supervised> = std::mem::take(&mut *self.nodes()).into_values().collect();
        for node in &nodes {
            let _ = node.stop.send(true);
        }
        for node in nodes {
            let _ = node.task.await;
        }
    }
}

fn spawn(exe: &PathBuf, node: &NodeProcess, log_format: LogFormat) -> std::io::Result<Child> {
    Command::new(exe)
        .arg("hsm-node")
        .arg("--node-dir")
        .arg(&node.node_dir)
        .arg("--log-format")
        .arg(match log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
        .arg("--exit-with-parent")
        .kill_on_drop(true)
        .spawn()
}

async fn supervise(
    exe: PathBuf,
    node: NodeProcess,
    log_format: LogFormat,
    mut stopping: watch::Receiver<bool>,
    pid: Arc<AtomicI32>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        match spawn(&exe, &node, log_format) {
            Ok(mut child) => {
                tracing::info!(hsm_id = %node.hsm_id, pid = child.id(), "HSM process started");
                let running = child.id().and_then(|p| i32::try_from(p).ok());
                pid.store(running.unwrap_or(0), Ordering::SeqCst);
                let outcome = tokio::select! {
                    status = child.wait() => Some(status),
                    _ = stopping.changed() => None,
                };
                pid.store(0, Ordering::SeqCst);
                match outcome {
                    Some(status) => {
                        tracing::warn!(hsm_id = %node.hsm_id, ?status, "HSM process exited; restarting it");
                    }
                    None => {
                        terminate(&node, &mut child).await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(hsm_id = %node.hsm_id, error = %e, "cannot start HSM process")
            }
        }
        backoff = if started.elapsed() > STABLE_AFTER {
            MIN_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
    }
}

async fn terminate(node: &NodeProcess, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // A stalled (SIGSTOPped) node must run again to hear the SIGTERM.
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_DEADLINE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(hsm_id = %node.hsm_id, "HSM process ignored SIGTERM; killing it");
        let _ = child.kill().await;
    }
}
