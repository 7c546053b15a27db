//! `rm_findings`: the open findings, with their asset's current tag.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A finding a rule raised on an asset that no later run of the rule resolved.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FindingRow {
    pub asset_id: Uuid,
    /// The asset's tag now.
    pub tag: Option<String>,
    pub rule_id: Uuid,
    /// The rule version that raised it.
    pub rule_version: Option<i32>,
    /// The rule's discipline.
    pub discipline: Option<String>,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub message: String,
    /// The batch that first raised it.
    pub raised_in: Uuid,
    /// When it was raised, or reopened by a rollback of the batch that resolved it.
    pub raised_at: DateTime<Utc>,
    /// Position of the `FINDING_RAISED` that opened it; the keyset of the list.
    pub position: i64,
}

/// Filters of the finding list; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub asset_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub discipline: Option<String>,
    pub severity: Option<String>,
}

/// Up to `limit` open findings raised after position `after` that match `filter`, on
/// assets that still exist, in the order they were raised.
pub async fn page(
    pool: &PgPool,
    filter: &FindingFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<FindingRow>, sqlx::Error> {
    // Null parameters switch a filter off.
    sqlx::query_as(
        "select f.asset_id, a.state->>'tag' as tag, f.rule_id, f.rule_version, f.discipline,
             f.severity, f.message, f.raised_in, f.raised_at, f.position
         from rm_findings f
         join rm_aggregates a on a.aggregate_id = f.asset_id and a.state is not null
         where f.position > $1
           and ($2::uuid is null or f.asset_id = $2)
           and ($3::uuid is null or f.rule_id = $3)
           and ($4::text is null or f.discipline = $4)
           and ($5::text is null or f.severity = $5)
         order by f.position
         limit $6",
    )
    .bind(after)
    .bind(filter.asset_id)
    .bind(filter.rule_id)
    .bind(filter.discipline.as_deref())
    .bind(filter.severity.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await
}
