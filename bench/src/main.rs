//! `bench`: benchmarks of the SYNAPSE command service against the real Postgres and
//! NATS. Each runs the built `command-service` binary as a child process on a database
//! and stream of its own, measures the limit it is compared with in the same run, prints
//! a table (and a JSON line with `--json`), and removes everything it created.

mod api;
mod copy_limit;
mod environment;
mod execute;
mod plant;
mod profile;
mod relay;
mod report;
mod rollback;
mod scenario;
mod service;
mod stream;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "SYNAPSE command-service benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One rule over a plant, against a raw COPY of the same event rows.
    Execute(execute::ExecuteArgs),
    /// Execute, then roll the batch back; compare times and check the state.
    Rollback(rollback::RollbackArgs),
    /// The relay emptying a backlog, against a raw JetStream publish.
    Relay(relay::RelayArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Execute(args) => execute::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Relay(args) => relay::run(args).await,
    }
}
