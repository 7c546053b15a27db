//! A single change as its own batch: `BATCH_STARTED`, the change (caused by it),
//! `BATCH_COMPLETED`, with the pre-batch snapshot, in the caller's transaction.

use super::batches::{self, Batch, BatchKind, BatchStatus, ChangeTarget};
use super::{append, snapshot, AppendError};
use serde_json::json;
use sqlx::PgConnection;
use synapse_shared::domain::{Change, FindingPayload};
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// A finding a single change closes: the asset it was raised on is deleted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClosedFinding {
    pub asset_id: Uuid,
    pub tag: String,
    pub rule_id: Uuid,
    /// The rule's discipline (its latest version's).
    pub discipline: Option<String>,
    pub message: String,
    pub severity: String,
    /// The batch that raised it.
    pub raised_in: Uuid,
}

/// Write the batch of one change to `target` (whose `version` is the version after the
/// change; `version_before` the one before). Call after the state row is written.
pub async fn commit(
    connection: &mut PgConnection,
    actor: &str,
    target: ChangeTarget,
    version_before: i64,
    change: Change,
) -> Result<Vec<EventEnvelope>, AppendError> {
    commit_closing(
        connection,
        actor,
        target,
        version_before,
        change,
        Vec::new(),
    )
    .await
}

/// [`commit`], plus a `FINDING_RESOLVED` (caused by the change) for each finding the
/// change closed.
pub async fn commit_closing(
    connection: &mut PgConnection,
    actor: &str,
    target: ChangeTarget,
    version_before: i64,
    change: Change,
    closed: Vec<ClosedFinding>,
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
    let cause = changed.event_id;
    let mut events = vec![started, changed];
    for finding in closed {
        let payload = FindingPayload {
            asset_id: finding.asset_id,
            tag: Some(finding.tag),
            severity: finding.severity,
            message: finding.message,
            raised_in: Some(finding.raised_in),
            rolled_back_correlation_id: None,
        };
        let mut resolved = batch.event(EventType::FindingResolved, json!(payload));
        resolved.causation_id = Some(cause);
        resolved.rule_id = Some(finding.rule_id);
        resolved.discipline = finding.discipline;
        events.push(resolved);
    }
    events.push(batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "changed": 1}),
    ));
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    append(connection, events).await
}
