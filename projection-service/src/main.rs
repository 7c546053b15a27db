//! The projection-service binary: configuration from the environment, then
//! [`Application`] until Ctrl-C or SIGTERM.

use clap::Parser;
use projection_service::startup::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    synapse_shared::telemetry::init_tracing();
    let config = Config::parse();
    let application = Application::build(config).await?;
    application
        .run_until_stopped(synapse_shared::shutdown::on_signal())
        .await
}
