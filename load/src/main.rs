//! `hsmkms-load`: see the crate documentation and the README's Benchmarks section.

use clap::{Parser, Subcommand};

/// The load tool of hsmkms: load runs, the comparison's echo server, and its report.
#[derive(Debug, Parser)]
#[command(name = "hsmkms-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a running emulator (or any KMS endpoint) with signed KMS requests for a bounded
    /// time; print requests/s, latency percentiles and errors.
    Bench(hsmkms_load::bench::BenchArgs),
    /// The comparison's reference handlers: a minimal actix-web server that answers KMS JSON
    /// requests with the least work (`--handler parse`, `inline` or `actor`).
    Echo(hsmkms_load::echo::EchoArgs),
    /// Set up a run as `bench` does and write a Lua script that makes `wrk` send its request.
    WrkScript(hsmkms_load::wrk::WrkArgs),
    /// Write BENCHMARKS.md and its chart from the results of `benches/compare.sh`.
    Report(hsmkms_load::report::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => hsmkms_load::bench::main(args),
        Command::Echo(args) => actix_rt::System::new().block_on(hsmkms_load::echo::run(args)),
        Command::WrkScript(args) => hsmkms_load::wrk::main(args),
        Command::Report(args) => hsmkms_load::report::main(args),
    }
}
