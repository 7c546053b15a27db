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
    /// The rule version that raised it (none if raised before it was recorded).
    pub rule_version: Option<i32>,
    /// The rule's discipline (its latest version's).
    pub discipline: Option<String>,
    pub message: String,
    pub severity: String,
    /// The batch that raised it.
    pub raised_in: Uuid,
    pub raised_at: chrono::DateTime<chrono::Utc>,
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
    commit_with(
        connection,
        actor,
        target,
        version_before,
        change,
        Consequences::default(),
    )
    .await
}

/// A change that another change of the batch takes with it: a link of a deleted
/// asset. Its row is already written; its event is caused by the first change.
pub struct Dependent {
    pub target: ChangeTarget,
    pub version_before: i64,
    pub change: Change,
}

/// What a single change takes with it, each event caused by the change.
#[derive(Default)]
pub struct Consequences {
    /// Changes of other aggregates, each with its pre-batch snapshot.
    pub changes: Vec<Dependent>,
    /// Findings it closed: a `FINDING_RESOLVED` each.
    pub closed: Vec<ClosedFinding>,
}

/// [`commit`], plus the change's [`Consequences`].
pub async fn commit_with(
    connection: &mut PgConnection,
    actor: &str,
    target: ChangeTarget,
    version_before: i64,
    change: Change,
    consequences: Consequences,
) -> Result<Vec<EventEnvelope>, AppendError> {
    let Consequences {
        changes: dependents,
        closed,
    } = consequences;
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
    let count = 1 + dependents.len();
    for dependent in dependents {
        if let Some(before) = &dependent.change.before {
            snapshot::take(
                connection,
                batch.correlation_id,
                dependent.target.aggregate_type,
                dependent.target.aggregate_id,
                before,
                dependent.version_before,
            )
            .await?;
        }
        events.push(batch.change(dependent.target, dependent.change, Some(cause)));
    }
    for finding in closed {
        let payload = FindingPayload {
            asset_id: finding.asset_id,
            tag: Some(finding.tag),
            severity: finding.severity,
            message: finding.message,
            raised_in: Some(finding.raised_in),
            raised_by_rule_version: finding.rule_version,
            rolled_back_correlation_id: None,
            raised_at: Some(finding.raised_at),
        };
        let mut resolved = batch.event(EventType::FindingResolved, json!(payload));
        resolved.causation_id = Some(cause);
        resolved.rule_id = Some(finding.rule_id);
        resolved.rule_version = finding.rule_version;
        resolved.discipline = finding.discipline;
        events.push(resolved);
    }
    events.push(batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "changed": count}),
    ));
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    append(connection, events).await
}
