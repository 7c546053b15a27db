//! `bench`: benchmarks of SYNAPSE against the real Postgres and NATS. Each runs the built
//! service binaries as child processes on a database and stream of its own, measures the
//! limit it is compared with in the same run (or prints each figure next to its target),
//! prints a table (and a JSON line with `--json`), and removes everything it created.

mod api;
mod copy_limit;
mod environment;
mod execute;
mod latency;
mod plan;
mod plant;
mod profile;
mod read;
mod relay;
mod report;
mod rollback;
mod scenario;
mod service;
mod stream;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench", about = "SYNAPSE benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One rule over a plant, against a raw COPY of the same event rows.
    Execute(execute::ExecuteArgs),
    /// A dry run and the apply of its plan, against the plain execution.
    Plan(plan::PlanArgs),
    /// Execute, then roll the batch back; compare times and check the state.
    Rollback(rollback::RollbackArgs),
    /// The relay emptying a backlog, against a raw JetStream publish.
    Relay(relay::RelayArgs),
    /// The read side with a large log: query latency, projection throughput,
    /// end-to-end lag and live-feed latency, each against its target.
    Read(read::ReadArgs),
    /// Only the query load of `read`, against a running query service and a database
    /// kept by `read --keep-database`.
    ReadQueries(read::ReadQueriesArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Execute(args) => execute::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Read(args) => read::run(args).await,
        Command::ReadQueries(args) => read::run_queries(args).await,
    }
}
