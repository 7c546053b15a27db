//! `rm_findings`: the open findings, with their asset's current tag.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
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
///
/// Only the filters given are in the SQL: its connections plan generically, and a
/// `$n is null or column = $n` condition would keep the planner off the index of the
/// filter (`rm_findings_rule_idx`, `rm_findings_discipline_idx`, the primary key for
/// an asset).
pub async fn page(
    pool: &PgPool,
    filter: &FindingFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<FindingRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(
        "select f.asset_id, a.state->>'tag' as tag, f.rule_id, f.rule_version, f.discipline,
             f.severity, f.message, f.raised_in, f.raised_at, f.position
         from rm_findings f
         join rm_aggregates a on a.aggregate_id = f.asset_id and a.state is not null
         where f.position > ",
    );
    query.push_bind(after);
    if let Some(asset_id) = filter.asset_id {
        query.push(" and f.asset_id = ").push_bind(asset_id);
    }
    if let Some(rule_id) = filter.rule_id {
        query.push(" and f.rule_id = ").push_bind(rule_id);
    }
    if let Some(discipline) = &filter.discipline {
        query
            .push(" and f.discipline = ")
            .push_bind(discipline.clone());
    }
    if let Some(severity) = &filter.severity {
        query.push(" and f.severity = ").push_bind(severity.clone());
    }
    query.push(" order by f.position limit ").push_bind(limit);
    query.build_query_as().fetch_all(pool).await
}
