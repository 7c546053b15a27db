//! Pre-batch snapshots: the state of an aggregate before a batch first touched it,
//! written in the same transaction as the change. Rollback restores from these.

use serde_json::Value;
use sqlx::PgConnection;
use synapse_shared::AggregateType;
use uuid::Uuid;

/// Remember `state` (None: the aggregate did not exist) at `version` as the pre-batch
/// state, unless the batch already has a snapshot of this aggregate.
pub async fn take(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    aggregate_type: AggregateType,
    aggregate_id: Uuid,
    state: Option<&Value>,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into execution_snapshots (correlation_id, aggregate_type, aggregate_id, state, version)
         values ($1, $2, $3, $4, $5)
         on conflict (correlation_id, aggregate_id) do nothing",
    )
    .bind(correlation_id)
    .bind(aggregate_type.as_str())
    .bind(aggregate_id)
    .bind(state)
    .bind(version)
    .execute(connection)
    .await?;
    Ok(())
}
