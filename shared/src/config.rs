//! Configuration pieces every service reads from the environment (with CLI overrides).
//!
//! Each service's `Config` flattens the pieces it needs, so `DATABASE_URL` or `NATS_URL`
//! mean the same thing everywhere. Defaults are the local development setup.

use crate::nats_credentials::NatsCredentials;
use crate::subject::SubjectScheme;

/// Where the command-side database lives.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL: of the event log and command-side state (command service), and of
    /// the read models unless `READ_DATABASE_URL` names another database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/synapse"
    )]
    pub database_url: String,
    /// Upper bound of pooled connections of this process. Every replica of every service
    /// holds up to this many, so keep the sum under Postgres' `max_connections` (100).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,
}

/// Where the read models live: defaults to the command-side database.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadDatabaseArgs {
    /// Postgres URL of the read models; `DATABASE_URL` when unset.
    #[arg(long, env = "READ_DATABASE_URL")]
    pub read_database_url: Option<String>,
}

/// The JetStream stream and subject prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The stream every event is published to.
    #[arg(long, env = "NATS_STREAM", default_value = "SYNAPSE_EVENTS")]
    pub nats_stream: String,
    /// The subject prefix; see `synapse_shared::subject` for the full scheme.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "synapse.events")]
    pub nats_subject_prefix: String,
    /// This service's own NATS credentials, if the server requires them (see
    /// `deploy/nats/synapse-auth.conf` for the users and their subject permissions).
    #[command(flatten)]
    pub credentials: NatsCredentials,
}

impl NatsArgs {
    pub fn subjects(&self) -> SubjectScheme {
        SubjectScheme::new(self.nats_subject_prefix.clone())
    }

    /// A configuration for tests: a stream and prefix no other test uses.
    pub fn isolated(nats_url: &str, unique: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            nats_stream: format!("TEST_{unique}"),
            nats_subject_prefix: format!("test_{unique}.events"),
            credentials: NatsCredentials::default(),
        }
    }

    /// The same settings, connecting with these credentials.
    pub fn with_credentials(mut self, credentials: NatsCredentials) -> Self {
        self.credentials = credentials;
        self
    }
}

/// The socket a service listens on.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address to bind; port 0 picks a free port (tests).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<std::net::SocketAddr>,
}

impl ListenArgs {
    pub fn or_default_port(&self, port: u16) -> std::net::SocketAddr {
        self.listen_addr
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)))
    }
}
