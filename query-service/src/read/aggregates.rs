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

/// The current (not deleted) assets with this tag: one, or none (tags are unique among
/// current assets; the projection may briefly hold two while it applies a rename).
pub async fn assets_by_tag(pool: &PgPool, tag: &str) -> Result<Vec<AggregateRow>, sqlx::Error> {
    sqlx::query_as(
        "select aggregate_id, aggregate_type, state, version, last_position \
         from rm_aggregates \
         where aggregate_type = 'asset' and state is not null and state ->> 'tag' = $1 \
         order by aggregate_id",
    )
    .bind(tag)
    .fetch_all(pool)
    .await
}
