//! The service's configuration: environment variables with CLI overrides.

use crate::live::LiveLimits;
use synapse_shared::auth::AuthArgs;
use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs, ReadDatabaseArgs};

/// Default port of the query service (SPEC §10).
pub const DEFAULT_PORT: u16 = 8082;

/// Everything the query service reads from the environment (or the command line).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "query-service",
    about = "SYNAPSE read side: timeline, histories, asset states and the live feed"
)]
pub struct Config {
    /// Used only as the fallback of `READ_DATABASE_URL`: the query service reads read
    /// models, never command-side tables.
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub read_database: ReadDatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub live: LiveLimits,
    /// Bearer tokens: every query and the live feed need at least the viewer role.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Apply the read-model migrations at start-up (`RUN_MIGRATIONS`, default true).
    /// Set it to false on a replica that reads a Postgres read replica: a hot standby
    /// refuses every write, the projection service applies the migrations on the primary
    /// and replication brings them over. Without migrating, the service checks at
    /// start-up that every read-model migration it needs is there, and refuses to start
    /// otherwise.
    #[arg(
        long,
        env = "RUN_MIGRATIONS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub run_migrations: bool,
}

impl Config {
    /// A configuration with default live-feed limits, no separate read database and
    /// **authentication disabled**, for callers (such as tests) that assemble one in code
    /// and do not exercise authentication; add [`Config::with_auth`] to require tokens.
    pub fn new(database: DatabaseArgs, nats: NatsArgs, listen: ListenArgs) -> Self {
        Self {
            database,
            read_database: ReadDatabaseArgs {
                read_database_url: None,
            },
            nats,
            listen,
            live: LiveLimits::default(),
            auth: AuthArgs::disabled(),
            run_migrations: true,
        }
    }

    /// The same configuration, not applying migrations (a replica on a read replica).
    pub fn without_migrations(mut self) -> Self {
        self.run_migrations = false;
        self
    }

    /// The same configuration with these authentication settings.
    pub fn with_auth(mut self, auth: AuthArgs) -> Self {
        self.auth = auth;
        self
    }

    /// The read-model database: `READ_DATABASE_URL`, else `DATABASE_URL`.
    pub fn read_database_url(&self) -> &str {
        self.read_database
            .read_database_url
            .as_deref()
            .unwrap_or(&self.database.database_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn migrations_run_unless_switched_off_by_run_migrations() {
        let default = Config::try_parse_from(["query-service"]).unwrap();
        let replica =
            Config::try_parse_from(["query-service", "--run-migrations", "false"]).unwrap();
        let command = Config::command();
        let setting = command
            .get_arguments()
            .find(|argument| argument.get_id() == "run_migrations")
            .unwrap();

        assert!(default.run_migrations);
        assert!(!replica.run_migrations);
        assert_eq!(
            setting.get_env().and_then(|name| name.to_str()),
            Some("RUN_MIGRATIONS")
        );
    }
}
