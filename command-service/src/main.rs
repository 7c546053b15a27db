//! The command-service binary: configuration from the environment, then
//! [`Application`] until Ctrl-C or SIGTERM; or `rebuild [--check]` to fold the
//! current-state tables again from the event log.

use clap::Parser;
use command_service::{rebuild, Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "command-service",
    about = "SYNAPSE command service: imports, rules, executions, rollbacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Fold the current-state tables (assets, cables, relationships, findings, rules,
    /// batches) again from the event log and replace their rows, in one transaction
    /// that makes command writers wait.
    Rebuild {
        /// Only compare the tables with the fold of the log; change nothing, and exit
        /// with status 1 if any differs (2 if the comparison could not be made).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(command_service::THREAD_STACK)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    synapse_shared::telemetry::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        None => {
            let shutdown = synapse_shared::shutdown::on_signal();
            Application::build(cli.config)
                .await?
                .run_until_stopped(shutdown)
                .await
        }
        Some(Command::Rebuild { check }) => {
            let url = &cli.config.database.database_url;
            let done = if check {
                rebuild::check(url)
                    .await
                    .map(|reports| (reports, None))
                    .map_err(rebuild::RebuildError::from)
            } else {
                rebuild::rebuild(url).await.map(|rebuilt| {
                    let timing = format!(
                        "folded the log to position {} in {:.2} s without locks; held the \
                         tables for {:.2} s, catching up with {} event(s) appended meanwhile",
                        rebuilt.folded_to,
                        rebuilt.fold_time.as_secs_f64(),
                        rebuilt.held.as_secs_f64(),
                        rebuilt.caught_up
                    );
                    (rebuilt.reports, Some(timing))
                })
            };
            // Status 1 says the tables differ; 2 that the command could not do its work.
            let (reports, timing) = match done {
                Ok(done) => done,
                Err(error) => {
                    eprintln!("command-service rebuild: {error}");
                    std::process::exit(2);
                }
            };
            print!("{}", rebuild::render(&reports));
            if let Some(timing) = timing {
                println!("{timing}");
            }
            let differing = reports.iter().filter(|report| !report.agrees()).count();
            match (check, differing) {
                (_, 0) => println!("every table agrees with the event log"),
                (true, _) => {
                    println!("{differing} table(s) differ from the event log");
                    std::process::exit(1);
                }
                (false, _) => println!(
                    "{differing} table(s) differed from the event log and were rebuilt from it"
                ),
            }
            Ok(())
        }
    }
}
