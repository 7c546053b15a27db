//! Relay leadership: a session advisory lock on a connection of its own.
//!
//! Pooled connections are recycled, which would release or leak the lock; a dedicated
//! connection holds it exactly as long as it lives.

use sqlx::{Connection, PgConnection};

/// Advisory lock key of the relay leader (arbitrary, fixed).
const LEADER_LOCK: i64 = 7_346_298_402;
/// Channel the append trigger notifies on commit.
pub const NOTIFY_CHANNEL: &str = "synapse_workflow_events";

/// Proof of leadership, valid while its connection lives.
pub struct Leadership {
    connection: PgConnection,
}

/// Become the leader if nobody is.
pub async fn try_acquire(database_url: &str) -> Result<Option<Leadership>, sqlx::Error> {
    let mut connection = PgConnection::connect(database_url).await?;
    let (acquired,): (bool,) = sqlx::query_as("select pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut connection)
        .await?;
    Ok(acquired.then_some(Leadership { connection }))
}

impl Leadership {
    /// False once the lock's connection is gone (the lock went with it).
    pub async fn still_held(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }
}
