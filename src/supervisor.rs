//! `--hsm-processes` mode: each HSM runs as an `hsm-node` process of its own (the launcher's
//! own executable, `hsmkms hsm-node`). The supervisor restarts one that dies, with a capped
//! backoff, and on shutdown sends each a SIGTERM and waits for it (SIGKILL after a deadline).

use std::path::PathBuf;
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

/// Runs and watches the HSM processes.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Spawns every node with `exe hsm-node`, and keeps them running.
    pub fn start(exe: PathBuf, nodes: Vec<NodeProcess>, log_format: LogFormat) -> Self {
        let (stop, stopping) = watch::channel(false);
        let tasks = nodes
            .into_iter()
            .map(|node| {
                let exe = exe.clone();
                let stopping = stopping.clone();
                actix_rt::spawn(supervise(exe, node, log_format, stopping))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops every node and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
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
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        match spawn(&exe, &node, log_format) {
            Ok(mut child) => {
                tracing::info!(hsm_id = %node.hsm_id, pid = child.id(), "HSM process started");
                tokio::select! {
                    status = child.wait() => {
                        tracing::warn!(hsm_id = %node.hsm_id, ?status, "HSM process exited; restarting it");
                    }
                    _ = stopping.changed() => {
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
