//! Connecting to Postgres and applying this repository's migrations.
//!
//! Migrations come in two sets so the read models can live in another database:
//! `migrations/command` (owned by the command service) and `migrations/read` (owned by
//! the projection service, also applied by the query service). Both sets may share one
//! database and one `_sqlx_migrations` table, so versions never overlap (command 1xxx,
//! read 2xxx) and each migrator ignores the other's rows.

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

static COMMAND_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/command");
static READ_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/read");

/// A session setting for the pools of the services that write: a transaction left idle
/// longer than this, by a process frozen (`SIGSTOP`, a stalled VM) while it held locks
/// (the log's append lock, rows), is ended by Postgres, so the other replicas' writers
/// wait at most this long instead of until the process thaws. A transaction meant to
/// stay open while its process works elsewhere sets its own (`set local ... = 0`).
pub const IDLE_IN_TRANSACTION: (&str, &str) = ("idle_in_transaction_session_timeout", "30s");

/// A pool whose connections are checked out for at most `acquire_timeout`: a client
/// gets a 503 rather than hanging when Postgres is down.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with_settings(url, max_connections, &[]).await
}

/// [`connect`], with run-time settings (`name`, `value`) for every connection.
pub async fn connect_with_settings(
    url: &str,
    max_connections: u32,
    settings: &[(&str, &str)],
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.options(settings.iter().copied());
    Ok(pool_options(max_connections).connect_lazy_with(options))
}

/// The pool settings every service uses.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
}

/// Apply the command-side migrations (event log, snapshots, state tables).
pub async fn migrate_command(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    run_tolerating_other_set(&COMMAND_MIGRATIONS, pool).await
}

/// Apply the read-model migrations.
pub async fn migrate_read(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    run_tolerating_other_set(&READ_MIGRATIONS, pool).await
}

async fn run_tolerating_other_set(
    set: &Migrator,
    pool: &PgPool,
) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = Migrator {
        migrations: set.migrations.clone(),
        ignore_missing: true,
        ..Migrator::DEFAULT
    };
    migrator.run(pool).await
}

/// The read-model migrations this build knows that the database has not applied
/// successfully (empty when it is up to date). For a service that must not migrate, such
/// as a query service on a read-only replica, to tell an old schema from a current one.
pub async fn missing_read_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar("select to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if table.is_some() {
        sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(READ_MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.contains(version))
        .collect())
}

/// Wait until Postgres answers, for up to `patience`.
pub async fn wait_until_reachable(pool: &PgPool, patience: Duration) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match sqlx::query("select 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "postgres not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
