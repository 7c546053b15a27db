//! The `projector_checkpoints` table: how far each projector got.
//!
//! A checkpoint is only ever written inside the transaction that applied the events it
//! points past, so the read models and the checkpoint cannot disagree.

use sqlx::{PgConnection, PgPool};

/// How far a projector got: the last event position it applied and the JetStream
/// sequence of the last message it consumed (where it resumes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Checkpoint {
    /// Last event position applied; 0 before the first event (positions start at 1).
    pub position: i64,
    /// JetStream sequence of the last message consumed; 0 before the first.
    pub stream_sequence: i64,
}

impl Checkpoint {
    /// The stream sequence as JetStream counts it.
    pub fn stream_sequence(&self) -> u64 {
        u64::try_from(self.stream_sequence).unwrap_or(0)
    }
}

/// The checkpoint without locking it; `None` before the projector's first batch.
pub async fn read(pool: &PgPool, projector: &str) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as::<_, Checkpoint>(
        "select position, stream_sequence from projector_checkpoints where projector = $1",
    )
    .bind(projector)
    .fetch_optional(pool)
    .await
}

/// Lock the projector's checkpoint row for the rest of the transaction, creating it at
/// zero first if needed. Another replica applying the same messages waits here and
/// then sees what this one applied, so each event takes effect once.
pub async fn lock(
    connection: &mut PgConnection,
    projector: &str,
) -> Result<Checkpoint, sqlx::Error> {
    if let Some(checkpoint) = select_for_update(connection, projector).await? {
        return Ok(checkpoint);
    }
    // Two replicas may race to create the row; `do nothing` lets the loser go on to
    // lock the winner's row.
    sqlx::query(
        "insert into projector_checkpoints (projector, position, stream_sequence)
         values ($1, 0, 0)
         on conflict (projector) do nothing",
    )
    .bind(projector)
    .execute(&mut *connection)
    .await?;
    match select_for_update(connection, projector).await? {
        Some(checkpoint) => Ok(checkpoint),
        // The row was inserted above in this very transaction, so it exists.
        None => Err(sqlx::Error::RowNotFound),
    }
}

/// Lock the checkpoint row of `projector` if no other transaction holds it: `None`
/// when one does, or when the row does not exist yet. The transaction is unusable
/// after `None` and must be rolled back.
///
/// A transaction that already holds rows another transaction may wait for (a batch
/// prepared ahead) must not wait for the checkpoint lock: the holder could be a second
/// replica waiting for those very rows.
pub async fn try_lock(
    connection: &mut PgConnection,
    projector: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let locked = sqlx::query_as::<_, Checkpoint>(
        "select position, stream_sequence from projector_checkpoints
         where projector = $1
         for update nowait",
    )
    .bind(projector)
    .fetch_optional(connection)
    .await;
    match locked {
        Ok(checkpoint) => Ok(checkpoint),
        // lock_not_available
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => Ok(None),
        Err(error) => Err(error),
    }
}

async fn select_for_update(
    connection: &mut PgConnection,
    projector: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as::<_, Checkpoint>(
        "select position, stream_sequence from projector_checkpoints
         where projector = $1
         for update",
    )
    .bind(projector)
    .fetch_optional(connection)
    .await
}

/// Store the new checkpoint; call only with the row locked by [`lock`].
pub async fn store(
    connection: &mut PgConnection,
    projector: &str,
    checkpoint: Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projector_checkpoints
         set position = $2, stream_sequence = $3, updated_at = now()
         where projector = $1",
    )
    .bind(projector)
    .bind(checkpoint.position)
    .bind(checkpoint.stream_sequence)
    .execute(connection)
    .await?;
    Ok(())
}
