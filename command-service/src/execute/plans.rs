//! Dry-run plans: stored so `POST /rules/execute {plan_id}` applies exactly what was
//! previewed, or is refused when anything the plan read has changed since.

use super::world::Read;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A stored plan.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPlan {
    pub plan_id: Uuid,
    pub request: Json<super::request::ExecuteRequest>,
    pub rule_versions: Json<BTreeMap<Uuid, i32>>,
    pub read_versions: Json<BTreeMap<String, i64>>,
    pub created_ids: Json<BTreeMap<String, Uuid>>,
    pub applied_by_correlation_id: Option<Uuid>,
}

/// Something a plan read that is different now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StaleRead {
    /// An aggregate id, or `tag:TAG` / `cable:TAG` for something that did not exist.
    pub key: String,
    pub planned_version: i64,
    pub current_version: i64,
}

#[allow(clippy::too_many_arguments)]
pub async fn save(
    connection: &mut PgConnection,
    plan_id: Uuid,
    actor: &str,
    request: &super::request::ExecuteRequest,
    rule_versions: &BTreeMap<Uuid, i32>,
    read_versions: &BTreeMap<String, i64>,
    created_ids: &BTreeMap<String, Uuid>,
    summary: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into execution_plans (plan_id, created_by, request, rule_versions, read_versions, created_ids, summary)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(plan_id)
    .bind(actor)
    .bind(Json(request))
    .bind(Json(rule_versions))
    .bind(Json(read_versions))
    .bind(Json(created_ids))
    .bind(summary)
    .execute(connection)
    .await?;
    Ok(())
}

/// Load a plan and lock it, so it is applied at most once.
pub async fn load_for_apply(
    connection: &mut PgConnection,
    plan_id: Uuid,
) -> Result<Option<StoredPlan>, sqlx::Error> {
    sqlx::query_as(
        "select plan_id, request, rule_versions, read_versions, created_ids, applied_by_correlation_id
         from execution_plans where plan_id = $1 for update",
    )
    .bind(plan_id)
    .fetch_optional(connection)
    .await
}

pub async fn mark_applied(
    connection: &mut PgConnection,
    plan_id: Uuid,
    correlation_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("update execution_plans set applied_by_correlation_id = $2 where plan_id = $1")
        .bind(plan_id)
        .bind(correlation_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Everything in `read_versions` whose version is different now.
pub async fn stale_reads(
    connection: &mut PgConnection,
    read_versions: &BTreeMap<String, i64>,
) -> Result<Vec<StaleRead>, sqlx::Error> {
    let mut ids = Vec::new();
    let mut asset_tags = Vec::new();
    let mut cable_tags = Vec::new();
    // A key that is no `Read` (plans never store one) matches nothing now, so it counts
    // as stale unless it was planned at 0.
    for read in read_versions
        .keys()
        .filter_map(|key| key.parse::<Read>().ok())
    {
        match read {
            Read::Id(id) => ids.push(id),
            Read::AbsentTag(tag) => asset_tags.push(tag),
            Read::AbsentCable(tag) => cable_tags.push(tag),
        }
    }
    let current: Vec<(String, i64)> = sqlx::query_as(
        "select id::text, version from assets where id = any($1)
         union all select id::text, version from cables where id = any($1)
         union all select 'tag:' || tag, version from assets where tag = any($2)
         union all select 'cable:' || tag, version from cables where tag = any($3)",
    )
    .bind(&ids)
    .bind(&asset_tags)
    .bind(&cable_tags)
    .fetch_all(connection)
    .await?;
    let current: BTreeMap<String, i64> = current.into_iter().collect();
    Ok(read_versions
        .iter()
        .filter_map(|(key, planned)| {
            let now = current.get(key).copied().unwrap_or(0);
            (now != *planned).then(|| StaleRead {
                key: key.clone(),
                planned_version: *planned,
                current_version: now,
            })
        })
        .collect())
}
