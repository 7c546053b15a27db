//! `rm_aggregates`: the current state of every asset, cable and relationship.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// One aggregate's current state.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AggregateRow {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    /// `None` once the aggregate was deleted.
    pub state: Option<Value>,
    pub version: i64,
    /// Position of the last event applied to it.
    pub last_position: i64,
}

/// The aggregate with this id, deleted or not.
pub async fn find(pool: &PgPool, aggregate_id: Uuid) -> Result<Option<AggregateRow>, sqlx::Error> {
    sqlx::query_as(
        "select aggregate_id, aggregate_type, state, version, last_position \
         from rm_aggregates where aggregate_id = $1",
    )
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await
}
