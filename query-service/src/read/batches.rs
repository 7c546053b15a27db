//! `rm_batches` and `rm_batch_rules`: batches and the rule runs of executions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The columns every batch query selects, in [`BatchRow`] order.
const COLUMNS: &str = "correlation_id, kind, status, actor, rolled_back_by, \
     rolled_back_by_actor, first_position, started_at, finished_at, duration_ms, counts, error";

/// One batch: what it was, where it stands, who ran it and who rolled it back.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BatchRow {
    pub correlation_id: Uuid,
    /// `rule_execution`, `csv_import`, `single_change` or `rollback`.
    pub kind: Option<String>,
    /// `running`, `completed`, `failed`, `rolled_back` or `partially_rolled_back`.
    pub status: String,
    /// Who ran the batch.
    pub actor: String,
    /// The rollback batch that undid this one.
    pub rolled_back_by: Option<Uuid>,
    /// Who ran that rollback.
    pub rolled_back_by_actor: Option<String>,
    /// Position of the batch's first event; the keyset of the list.
    pub first_position: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Totals over the batch's events: `executed`, `skipped`, `errors`, `matched`,
    /// `findings` (raised), `findings_resolved`, `changes`.
    #[schema(value_type = Object)]
    pub counts: Value,
    /// Why the batch failed.
    pub error: Option<String>,
}

/// One rule's run within an execution.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RuleRunRow {
    pub rule_id: Uuid,
    pub rule_version: Option<i32>,
    pub name: Option<String>,
    /// Assets the execution's filters selected for the rule.
    pub total: Option<i64>,
    /// Assets the rule has gone through so far, of `total` (matched or not): its
    /// progress while it runs, `total` once it completed. Null for runs projected before
    /// the read models kept it.
    pub done: Option<i64>,
    pub executed: i64,
    pub skipped: i64,
    pub errors: i64,
    /// Assets the rule's condition matched: `executed + skipped + errors`, less the
    /// executions that only resolved findings of assets it no longer matches
    /// (`RULE_EXECUTED` with `"matched": false`) and the errors of conditions that
    /// could not be evaluated (`RULE_ERROR` with `"matched": false`).
    pub matched: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Filters of the batch list; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
}

/// Up to `limit` batches that started after position `after` and match `filter`, in
/// start order.
pub async fn page(
    pool: &PgPool,
    filter: &BatchFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    // Null parameters switch a filter off; the planner folds `$n is null` away per call.
    sqlx::query_as(&format!(
        "select {COLUMNS} from rm_batches
         where first_position > $1
           and ($2::text is null or status = $2)
           and ($3::text is null or kind = $3)
           and ($4::text is null or actor = $4)
         order by first_position
         limit $5"
    ))
    .bind(after)
    .bind(filter.status.as_deref())
    .bind(filter.kind.as_deref())
    .bind(filter.actor.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The batch with this correlation id.
pub async fn find(
    connection: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<Option<BatchRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from rm_batches where correlation_id = $1"
    ))
    .bind(correlation_id)
    .fetch_optional(connection)
    .await
}

/// The rule runs of a batch, in the order they ran.
pub async fn rule_runs(
    connection: &mut PgConnection,
    correlation_id: Uuid,
) -> Result<Vec<RuleRunRow>, sqlx::Error> {
    sqlx::query_as(
        "select rule_id, rule_version, name, total, done, executed, skipped, errors, matched,
             started_at, completed_at
         from rm_batch_rules where correlation_id = $1
         order by first_position",
    )
    .bind(correlation_id)
    .fetch_all(connection)
    .await
}
