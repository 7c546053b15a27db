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

/// Close every open finding of the assets `gone` (id and tag), which are deleted: the
/// findings closed, to be resolved by [`resolution`] events.
pub async fn close_findings_of(
    connection: &mut PgConnection,
    gone: &[(Uuid, String)],
) -> Result<Vec<ClosedFinding>, sqlx::Error> {
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "with gone as (
             select * from unnest($1::uuid[], $2::text[]) as g(asset_id, tag)
         ),
         closed as (
             delete from findings f using gone g where f.asset_id = g.asset_id
             returning f.asset_id, g.tag, f.rule_id, f.message, f.severity, f.correlation_id,
                 f.rule_version, f.raised_at)
         select c.asset_id, c.tag, c.rule_id, c.rule_version, r.discipline, c.message,
             c.severity, c.correlation_id as raised_in, c.raised_at
         from closed c
         left join lateral (
             select discipline from rules where id = c.rule_id order by version desc limit 1
         ) r on true
         order by c.asset_id, c.rule_id, c.message",
    )
    .bind(gone.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(gone.iter().map(|(_, tag)| tag.as_str()).collect::<Vec<_>>())
    .fetch_all(connection)
    .await
}

/// The `FINDING_RESOLVED` of `finding`, closed in `batch` because its asset is deleted
/// (by a rollback of `rolled_back`, if one deleted it), caused by `cause`.
pub fn resolution(
    batch: &mut Batch,
    finding: ClosedFinding,
    cause: Uuid,
    rolled_back: Option<Uuid>,
) -> synapse_shared::NewEvent {
    let payload = FindingPayload {
        asset_id: finding.asset_id,
        tag: Some(finding.tag),
        severity: finding.severity,
        message: finding.message,
        raised_in: Some(finding.raised_in),
        raised_by_rule_version: finding.rule_version,
        rolled_back_correlation_id: rolled_back,
        raised_at: Some(finding.raised_at),
    };
    let mut resolved = batch.event(EventType::FindingResolved, json!(payload));
    resolved.causation_id = Some(cause);
    resolved.rule_id = Some(finding.rule_id);
    resolved.rule_version = finding.rule_version;
    resolved.discipline = finding.discipline;
    resolved
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
        events.push(resolution(&mut batch, finding, cause, None));
    }
    events.push(batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "changed": count}),
    ));
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    append(connection, events).await
}
