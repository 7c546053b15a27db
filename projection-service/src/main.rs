//! The projection-service binary: configuration from the environment, then
//! [`Application`] until Ctrl-C or SIGTERM; or `rebuild [PROJECTOR...]` to rebuild
//! read models from the event log while the running service keeps serving.

use clap::Parser;
use projection_service::startup::{Application, Config};

/// Decoding and projecting allocates many small, short-lived JSON values; glibc's
/// malloc and free were about a third of the service's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "projection-service",
    about = "Projects the SYNAPSE event stream into read models"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Rebuild read models from the event log into new tables, then swap them in
    /// atomically (all projectors when none is named).
    Rebuild {
        /// Projectors to rebuild: asset_history, batches, disciplines.
        projectors: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    synapse_shared::telemetry::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        None => {
            let application = Application::build(cli.config).await?;
            application
                .run_until_stopped(synapse_shared::shutdown::on_signal())
                .await
        }
        Some(Command::Rebuild { projectors }) => {
            let names: Vec<String> = if projectors.is_empty() {
                projection_service::projectors::ALL
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect()
            } else {
                projectors
            };
            let read_url = cli.config.read_database_url().to_owned();
            let read = synapse_shared::db::connect(&read_url, 2).await?;
            synapse_shared::db::migrate_read(&read).await?;
            for name in names {
                let rebuilt = projection_service::rebuild::rebuild(
                    &cli.config.database.database_url,
                    &read_url,
                    &name,
                )
                .await?;
                println!(
                    "rebuilt {}: {} events folded, up to position {}",
                    rebuilt.projector, rebuilt.events, rebuilt.position
                );
            }
            Ok(())
        }
    }
}
