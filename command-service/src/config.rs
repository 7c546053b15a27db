//! The command service's configuration: environment variables with local defaults.

use synapse_shared::auth::AuthArgs;
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
    /// Bearer tokens: `JWT_SECRET` (or an explicit `AUTH_DISABLED=true`) is required.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Run the relay (event log → JetStream) in this process. Several replicas may all
    /// run it: only the leader publishes.
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,
    /// Seconds without a heartbeat after which a running batch counts as abandoned and
    /// is marked failed.
    #[arg(long, env = "BATCH_STALE_AFTER_SECS", default_value_t = 30)]
    pub batch_stale_after_secs: u64,
}
