//! Batches: every import, execution, rollback and single change is one, with a
//! `correlation_id` shared by all its events.

use crate::store::AppendError;
use chrono::Utc;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use synapse_shared::domain::Change;
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// What started a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    SingleChange,
    CsvImport,
    RuleExecution,
    Rollback,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::SingleChange => "single_change",
            BatchKind::CsvImport => "csv_import",
            BatchKind::RuleExecution => "rule_execution",
            BatchKind::Rollback => "rollback",
        }
    }
}

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Running,
    Completed,
    Failed,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "running",
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
        }
    }
}

/// A batch being written: builds its events with the right correlation, actor and
/// batch-aggregate versions.
#[derive(Debug, Clone)]
pub struct Batch {
    pub correlation_id: Uuid,
    pub actor: String,
    pub kind: BatchKind,
    /// Version of the batch aggregate after the last event built.
    version: i64,
    /// The batch's `BATCH_STARTED`, once built: what its later batch events follow from.
    started: Option<Uuid>,
    /// The `RULE_EXECUTION_STARTED` of the rule running, once built: what the rule's
    /// outcomes and completion follow from.
    rule_started: Option<Uuid>,
}

impl Batch {
    /// A new batch with a fresh correlation id.
    pub fn new(kind: BatchKind, actor: impl Into<String>) -> Self {
        Self {
            correlation_id: Uuid::now_v7(),
            actor: actor.into(),
            kind,
            version: 0,
            started: None,
            rule_started: None,
        }
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// The same batch with its version counted from 0: events built on it ahead of
    /// time get their real versions from [`Batch::adopt`].
    pub fn detached(&self) -> Self {
        Self {
            version: 0,
            ..self.clone()
        }
    }

    /// Take over `events` built on a [`Batch::detached`] copy: this batch's events among
    /// them get the versions that follow this batch's, and all of them the time they
    /// are written at, not the time they were built at.
    pub fn adopt(&mut self, events: &mut [NewEvent]) {
        let base = self.version;
        let now = Utc::now();
        for event in events.iter_mut() {
            event.occurred_at = now;
            if event.aggregate_type == AggregateType::Batch
                && event.aggregate_id == self.correlation_id
            {
                event.aggregate_version += base;
                self.version = self.version.max(event.aggregate_version);
            }
        }
    }

    /// A batch-level event (`BATCH_*`, `RULE_EXECUTION_*`, rule outcomes), caused by
    /// what it follows from (SPEC §4): a rule's outcomes, progress and completion by
    /// the rule's `RULE_EXECUTION_STARTED`, every other by the `BATCH_STARTED`, which
    /// itself has no cause in the log (a request). A caller may name another cause.
    pub fn event(&mut self, event_type: EventType, payload: Value) -> NewEvent {
        self.version += 1;
        let event_id = Uuid::now_v7();
        let causation_id = match event_type {
            EventType::BatchStarted => None,
            EventType::RuleExecuted
            | EventType::RuleSkipped
            | EventType::RuleError
            | EventType::RuleExecutionCompleted
            | EventType::BatchProgress => self.rule_started.or(self.started),
            _ => self.started,
        };
        match event_type {
            EventType::BatchStarted => self.started = Some(event_id),
            EventType::RuleExecutionStarted => self.rule_started = Some(event_id),
            _ => {}
        }
        NewEvent {
            event_id,
            event_type,
            aggregate_type: AggregateType::Batch,
            aggregate_id: self.correlation_id,
            aggregate_version: self.version,
            correlation_id: self.correlation_id,
            causation_id,
            rule_id: None,
            rule_version: None,
            discipline: None,
            actor: self.actor.clone(),
            occurred_at: Utc::now(),
            payload,
        }
    }

    /// A change to an asset, cable or relationship, caused by `causation_id`.
    pub fn change(
        &self,
        target: ChangeTarget,
        change: Change,
        causation_id: Option<Uuid>,
    ) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: target.event_type,
            aggregate_type: target.aggregate_type,
            aggregate_id: target.aggregate_id,
            aggregate_version: target.version,
            correlation_id: self.correlation_id,
            causation_id,
            rule_id: None,
            rule_version: None,
            discipline: target.discipline,
            actor: self.actor.clone(),
            occurred_at: Utc::now(),
            payload: change.into_payload(),
        }
    }
}

/// Which aggregate a change event is about.
#[derive(Debug, Clone)]
pub struct ChangeTarget {
    pub event_type: EventType,
    pub aggregate_type: AggregateType,
    pub aggregate_id: Uuid,
    /// The aggregate's version after the change.
    pub version: i64,
    pub discipline: Option<String>,
}

/// Record a batch as running.
pub async fn open(
    connection: &mut PgConnection,
    batch: &Batch,
    request: Option<&Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into batches (correlation_id, kind, status, actor, request, version)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(batch.correlation_id)
    .bind(batch.kind.as_str())
    .bind(BatchStatus::Running.as_str())
    .bind(&batch.actor)
    .bind(request)
    .bind(batch.version)
    .execute(connection)
    .await?;
    Ok(())
}

/// Record how a batch ended (or refresh a running batch's heartbeat and version), if it
/// is still running: [`AppendError::BatchEnded`] if not. That fences an executor that
/// stalled past its heartbeat (another replica's sweep failed its batch, and the batch
/// may have been rolled back since): its next chunk or closing event is refused, in the
/// transaction that would have written it.
pub async fn record(
    connection: &mut PgConnection,
    batch: &Batch,
    status: BatchStatus,
) -> Result<(), AppendError> {
    let recorded = sqlx::query(
        "update batches set status = $2, version = $3, heartbeat_at = now(),
             finished_at = case when $2 = 'running' then null else now() end
         where correlation_id = $1 and status = 'running'",
    )
    .bind(batch.correlation_id)
    .bind(status.as_str())
    .bind(batch.version)
    .execute(connection)
    .await?
    .rows_affected();
    match recorded {
        0 => Err(AppendError::BatchEnded(batch.correlation_id)),
        _ => Ok(()),
    }
}

/// Whether the batch is no longer running.
pub async fn finished(pool: &PgPool, correlation_id: Uuid) -> Result<bool, sqlx::Error> {
    let status: Option<(String,)> =
        sqlx::query_as("select status from batches where correlation_id = $1")
            .bind(correlation_id)
            .fetch_optional(pool)
            .await?;
    Ok(status.is_some_and(|(status,)| status != BatchStatus::Running.as_str()))
}

/// The report of a finished execution, as `POST /rules/execute` with `wait` answers it,
/// from its closing event (`BATCH_COMPLETED` or `BATCH_FAILED`, its last); `None` while
/// it runs.
pub async fn report(pool: &PgPool, correlation_id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    let last: Option<(String, Value)> = sqlx::query_as(
        "select event_type, payload from workflow_events where correlation_id = $1
         order by position desc limit 1",
    )
    .bind(correlation_id)
    .fetch_optional(pool)
    .await?;
    let Some((event_type, payload)) = last else {
        return Ok(None);
    };
    let status = if event_type == EventType::BatchCompleted.as_str() {
        BatchStatus::Completed
    } else if event_type == EventType::BatchFailed.as_str() {
        BatchStatus::Failed
    } else {
        return Ok(None);
    };
    Ok(Some(json!({
        "correlation_id": correlation_id,
        "status": status.as_str(),
        "rules": payload["rules"],
        "totals": payload["totals"],
        "duration_ms": payload["duration_ms"],
        "error": payload["error"],
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_built_on_a_detached_batch_take_the_versions_that_follow_the_batch() {
        let mut batch = Batch::new(BatchKind::RuleExecution, "erin");
        batch.event(EventType::BatchStarted, json!({}));
        batch.event(EventType::RuleExecutionStarted, json!({}));

        let mut ahead = batch.detached();
        let executed = ahead.event(EventType::RuleExecuted, json!({}));
        let target = ChangeTarget {
            event_type: EventType::AssetUpdated,
            aggregate_type: AggregateType::Asset,
            aggregate_id: Uuid::now_v7(),
            version: 7,
            discipline: None,
        };
        let change = ahead.change(
            target,
            Change {
                before: None,
                after: None,
            },
            Some(executed.event_id),
        );
        let skipped = ahead.event(EventType::RuleSkipped, json!({}));
        let mut events = vec![executed, change, skipped];
        let built_at = events[0].occurred_at;

        batch.adopt(&mut events);
        let versions: Vec<i64> = events.iter().map(|e| e.aggregate_version).collect();
        assert_eq!(versions, vec![3, 7, 4], "the asset's own version is kept");
        assert_eq!(batch.version(), 4);
        assert_eq!(
            batch
                .event(EventType::BatchProgress, json!({}))
                .aggregate_version,
            5
        );
        assert!(events.iter().all(|e| e.occurred_at >= built_at));
        assert!(events
            .iter()
            .all(|e| e.occurred_at == events[0].occurred_at));
    }
}
