//! The command service's configuration: environment variables with local defaults.

use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs};

/// Default port of the command service.
pub const DEFAULT_PORT: u16 = 8081;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "command-service",
    about = "SYNAPSE command service: imports, rules, executions, rollbacks"
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Run the relay (event log → JetStream) in this process. Several replicas may all
    /// run it: only the leader publishes.
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,
}
