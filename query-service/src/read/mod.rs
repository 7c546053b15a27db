//! Queries over the read models the projection service maintains.
//!
//! The tables are defined in `migrations/read` (owned by the projection service); this
//! module holds the query service's SQL against them. Queries are checked at runtime
//! (`query_as` + `FromRow`) and every value is bound, never formatted into SQL.

pub mod aggregates;
pub mod batches;
pub mod checkpoints;
pub mod disciplines;
pub mod events;
pub mod findings;
pub mod scan;
pub mod time_index;

/// A read-only transaction on one snapshot, for an answer built from several queries:
/// each sees the read models as the others do (a projector commits between them
/// otherwise, and a batch's totals disagreed with its own rule rows).
pub async fn snapshot(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *transaction)
        .await?;
    Ok(transaction)
}
