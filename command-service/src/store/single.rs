//! A single change as its own batch: `BATCH_STARTED`, the change (caused by it),
//! `BATCH_COMPLETED`, with the pre-batch snapshot, in the caller's transaction.

use super::batches::{self, Batch, BatchKind, BatchStatus, ChangeTarget};
use super::{append, snapshot, AppendError};
use serde_json::json;
use sqlx::PgConnection;
use synapse_shared::domain::Change;
use synapse_shared::{EventEnvelope, EventType};

/// Write the batch of one change to `target` (whose `version` is the version after the
/// change; `version_before` the one before). Call after the state row is written.
pub async fn commit(
    connection: &mut PgConnection,
    actor: &str,
    target: ChangeTarget,
    version_before: i64,
    change: Change,
) -> Result<Vec<EventEnvelope>, AppendError> {
    let mut batch = Batch::new(BatchKind::SingleChange, actor);
    let started = batch.event(
        EventType::BatchStarted,
        json!({"kind": batch.kind.as_str(), "aggregate_type": target.aggregate_type, "aggregate_id": target.aggregate_id,
               "asset_id": (target.aggregate_type == synapse_shared::AggregateType::Asset).then_some(target.aggregate_id)}),
    );
    batches::open(connection, &batch, None).await?;
    if let Some(before) = &change.before {
        snapshot::take(
            connection,
            batch.correlation_id,
            target.aggregate_type,
            target.aggregate_id,
            before,
            version_before,
        )
        .await?;
    }
    let changed = batch.change(target, change, Some(started.event_id));
    let completed = batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "changed": 1}),
    );
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    append(connection, vec![started, changed, completed]).await
}
