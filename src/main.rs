//! `hsmkms`: see the crate documentation of the `hsmkms` library and the README.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hsmkms::cluster::ClusterDir;
use hsmkms::hsm_cli::CliArgs;
use hsmkms::launcher::RunArgs;

/// A local emulator of AWS KMS custom key stores and the CloudHSM clusters behind them.
#[derive(Debug, Parser)]
#[command(name = "hsmkms", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The counterpart of the CloudHSM CLI: users and keys on one HSM of the cluster.
    HsmCli(CliArgs),
    /// Run one HSM node from its directory (what `--hsm-processes` spawns; the same as the
    /// `hsm-node` binary).
    HsmNode(hsm_node::cli::NodeArgs),
    /// Provision a node directory for a new HSM that joins the running cluster by address,
    /// possibly on another host; start it there with `hsm-node --node-dir DIR`.
    AddHsm(AddHsm),
}

#[derive(Debug, clap::Args)]
struct AddHsm {
    /// The emulator's data directory.
    #[arg(long, env = "HSMKMS_DATA_DIR", default_value = "./hsmkms-data")]
    data_dir: PathBuf,
    /// Availability Zone of the new HSM.
    #[arg(long)]
    availability_zone: String,
    /// Address the new HSM will listen on (`host:port`).
    #[arg(long)]
    listen: String,
    /// Address its peers should use to reach it, if not `--listen`.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory to provision (copy it to the host that runs the HSM).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HsmNode(args)) => hsm_node::cli::run(args),
        Some(Command::HsmCli(args)) => {
            let code = actix_rt::System::new().block_on(hsmkms::hsm_cli::run(args));
            match code {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(1)
                }
            }
        }
        Some(Command::AddHsm(args)) => actix_rt::System::new().block_on(async move {
            let mut cluster = ClusterDir::open(&args.data_dir)?;
            let entry = cluster
                .add_hsm(
                    &args.availability_zone,
                    &args.listen,
                    args.advertise.as_deref(),
                    &args.out,
                )
                .await?;
            println!(
                "provisioned {} ({}) in {}; start it with: hsm-node --node-dir {}",
                entry.hsm_id,
                entry.availability_zone,
                args.out.display(),
                args.out.display()
            );
            Ok(())
        }),
        None => actix_rt::System::new().block_on(hsmkms::launcher::run(cli.run)),
    }
}
