//! The query-service binary: read configuration, build, run until Ctrl-C or SIGTERM.

use clap::Parser;
use query_service::startup::{Application, Config};

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
