//! The `hsm-node` command: runs one HSM node from its directory until SIGINT or SIGTERM.
//! The same code runs behind `hsmkms hsm-node`, which is what the launcher spawns in
//! `--hsm-processes` mode.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use hsmkms_common::clock::SystemClock;

use crate::config;
use crate::handle::NodeHandle;
use crate::options::NodeOptions;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Runs one HSM node of an hsmkms cluster.
#[derive(Debug, Parser)]
#[command(name = "hsm-node", version)]
pub struct NodeArgs {
    /// The node's directory, as provisioned by `hsmkms` (or `hsmkms add-hsm`).
    #[arg(long, env = "HSMKMS_NODE_DIR")]
    pub node_dir: PathBuf,
    /// Addresses of running nodes to join (added to the node's join list).
    #[arg(long, env = "HSMKMS_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Stop (cleanly, as on SIGTERM) when the process that started this one exits: set by the
    /// launcher, so no HSM process outlives it even if it is killed.
    #[arg(long)]
    pub exit_with_parent: bool,
    /// Log format.
    #[arg(long, env = "HSMKMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Sets up logging to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr sent to a file on a full disk, a closed
    // pipe) is dropped: by default the subscriber reports it with `eprintln!`, which panics
    // when stderr fails too, and so would take down whichever thread logged (the storage
    // thread, on a full disk).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the node until a termination signal.
pub fn run(args: NodeArgs) -> Result<()> {
    init_logging(args.log_format);
    if !args.join.is_empty() {
        // Record the join targets in the node's config, so a restart rejoins the same way.
        config::add_join(&args.node_dir, &args.join)?;
    }
    if args.exit_with_parent {
        // The kernel tells this process at once when the launcher dies, however it dies; the
        // poll below covers a launcher that died before this line ran.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    }
    let node = NodeHandle::start(
        &args.node_dir,
        NodeOptions::default(),
        Arc::new(SystemClock),
    )?;
    tracing::info!(hsm_id = %node.hsm_id(), address = %node.address(), "hsm-node serving");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if args.exit_with_parent {
            tokio::select! {
                r = wait_for_termination() => r,
                () = parent_exit() => Ok(()),
            }
        } else {
            wait_for_termination().await
        }
    })?;
    tracing::info!(hsm_id = %node.hsm_id(), "hsm-node stopping");
    node.shutdown();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_termination() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Resolves once the parent process is gone (this process was re-parented).
async fn parent_exit() {
    let parent = nix::unistd::getppid();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if nix::unistd::getppid() != parent {
            tracing::warn!("the launcher is gone; stopping");
            return;
        }
    }
}
