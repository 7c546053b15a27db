use clap::Parser;
use command_service::{Application, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    synapse_shared::telemetry::init_tracing();
    let config = Config::parse();
    let shutdown = synapse_shared::shutdown::on_signal();
    Application::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}
