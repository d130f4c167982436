//! `hsm-node`: one HSM node of an hsmkms cluster, started by hand (for a cluster that spans
//! hosts). See `hsm_node::cli`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    hsm_node::cli::run(hsm_node::cli::NodeArgs::parse())
}
