//! The service's configuration: environment variables with CLI overrides.

use synapse_shared::config::{DatabaseArgs, ListenArgs, NatsArgs, ReadDatabaseArgs};

/// The port `/healthz`, `/readyz` and `/metrics` listen on unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 8083;

/// Everything the projection service reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "projection-service",
    about = "Projects the SYNAPSE event stream into read models"
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where the read models live; the command-side database when unset.
    #[command(flatten)]
    pub read_database: ReadDatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
}

impl Config {
    /// A configuration with default projector tuning and the default listen port, for
    /// callers (such as tests) that assemble one in code rather than from the environment.
    pub fn new(database: DatabaseArgs, nats: NatsArgs, listen: ListenArgs) -> Self {
        Self {
            database,
            read_database: ReadDatabaseArgs {
                read_database_url: None,
            },
            nats,
            listen,
            projector: ProjectorArgs::default(),
        }
    }

    /// The database the read models are written to: `READ_DATABASE_URL`, falling back to
    /// `DATABASE_URL` when the read models share the command-side database.
    pub fn read_database_url(&self) -> &str {
        self.read_database
            .read_database_url
            .as_deref()
            .unwrap_or(&self.database.database_url)
    }
}

/// Default upper bound of messages applied in one transaction. It only matters while
/// catching up on a backlog (at a steady rate the batch window closes a batch first).
/// Large enough that the per-transaction and per-statement costs are amortised over
/// many events (the throughput example ran ~15% faster than with 500), small enough
/// that a transaction stays well under a second and a shutdown waits for at most a
/// few such batches.
pub const DEFAULT_BATCH_SIZE: usize = 2_000;

/// Default time to wait for more messages once the first message of a batch arrived.
pub const DEFAULT_BATCH_WINDOW_MS: u64 = 20;

/// How projectors batch their work.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorArgs {
    /// Most messages applied in one read-model transaction.
    #[arg(long, env = "PROJECTOR_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub projector_batch_size: usize,
    /// Milliseconds to keep collecting a batch after its first message arrived: a short
    /// wait turns a burst into one transaction instead of many, at the cost of this much
    /// extra latency for a lone event.
    #[arg(long, env = "PROJECTOR_BATCH_WINDOW_MS", default_value_t = DEFAULT_BATCH_WINDOW_MS)]
    pub projector_batch_window_ms: u64,
}

impl Default for ProjectorArgs {
    fn default() -> Self {
        Self {
            projector_batch_size: DEFAULT_BATCH_SIZE,
            projector_batch_window_ms: DEFAULT_BATCH_WINDOW_MS,
        }
    }
}

impl ProjectorArgs {
    /// The batch window as a duration.
    pub fn batch_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.projector_batch_window_ms)
    }

    /// The batch size, never zero (a zero batch would never make progress).
    pub fn batch_size(&self) -> usize {
        self.projector_batch_size.max(1)
    }
}
