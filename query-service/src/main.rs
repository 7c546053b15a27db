//! The query-service binary: read configuration, build, run until Ctrl-C or SIGTERM.

use clap::Parser;
use query_service::startup::{Application, Config};

/// The allocator of the other two services: a timeline page allocates thousands of
/// small JSON values, and with the system allocator malloc and free were a fifth of
/// the query service's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    synapse_shared::telemetry::init_tracing();
    let config = Config::parse();
    let application = Application::build(config).await?;
    tracing::info!(port = application.port(), "query-service listening");
    application
        .run_until_stopped(synapse_shared::shutdown::on_signal())
        .await
}
