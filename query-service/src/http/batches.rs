//! `GET /batches` and `GET /batches/{correlation_id}`: batch list and detail.

use crate::http::error::{actor_param, one_of, ApiError};
use crate::http::pagination::PageRequest;
use crate::http::NoParams;
use crate::read::batches::{self, BatchFilter, BatchRow, RuleRunRow};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use synapse_shared::auth::Principal;
use synapse_shared::problem::{ApiPath, ApiQuery};
use synapse_shared::Problem;
use uuid::Uuid;

/// The statuses a batch can have.
const STATUSES: &[&str] = &[
    "running",
    "completed",
    "failed",
    "rolled_back",
    "partially_rolled_back",
];

/// The kinds of batch.
const KINDS: &[&str] = &["rule_execution", "csv_import", "single_change", "rollback"];

/// Batch list filters; all optional, combined with `and`. Unknown parameters are refused
/// so a misspelt filter never silently returns everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchListParams {
    /// `running`, `completed`, `failed`, `rolled_back` or `partially_rolled_back`.
    pub status: Option<String>,
    /// `rule_execution`, `csv_import`, `single_change` or `rollback`.
    pub kind: Option<String>,
    /// Who ran the batch.
    pub actor: Option<String>,
    /// Return batches that started after this position (the previous page's `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of batches.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchPage {
    /// Batches in the order they started.
    pub batches: Vec<BatchRow>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// A batch with its rule runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchDetail {
    #[serde(flatten)]
    pub batch: BatchRow,
    /// Per rule (executions only), in the order the rules ran.
    pub rules: Vec<RuleRunRow>,
}

/// List batches matching the filters, in the order they started.
#[utoipa::path(
    get,
    path = "/batches",
    tag = "batches",
    params(BatchListParams),
    responses(
        (status = 200, description = "A page of batches", body = BatchPage),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<BatchListParams>,
) -> Result<Json<BatchPage>, ApiError> {
    let page = PageRequest::new(params.after, params.limit)?;
    let filter = BatchFilter {
        status: one_of("status", params.status, STATUSES)?,
        kind: one_of("kind", params.kind, KINDS)?,
        actor: actor_param(params.actor)?,
    };
    let rows = batches::page(&state.pool, &filter, page.after, page.fetch_limit()).await?;
    let (batches, next_after) = page.finish(rows, |batch| batch.first_position);
    Ok(Json(BatchPage {
        batches,
        next_after,
    }))
}

/// One batch: status, timings, who ran it, who rolled it back, and per-rule counts.
#[utoipa::path(
    get,
    path = "/batches/{correlation_id}",
    tag = "batches",
    params(("correlation_id" = Uuid, Path, description = "The batch's correlation id")),
    responses(
        (status = 200, description = "The batch", body = BatchDetail),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Bad correlation id or any query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such batch", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    _caller: Principal,
    State(state): State<AppState>,
    ApiPath(correlation_id): ApiPath<Uuid>,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<BatchDetail>, ApiError> {
    let mut snapshot = crate::read::snapshot(&state.pool).await?;
    let batch = batches::find(&mut snapshot, correlation_id)
        .await?
        .ok_or_else(|| {
            Problem::new(StatusCode::NOT_FOUND, "batch-not-found", "no such batch").with_detail(
                format!(
                    "no batch has correlation id {correlation_id} in the read models; one the \
                     command service has just accepted appears here within moments: retry"
                ),
            )
        })?;
    let rules = batches::rule_runs(&mut snapshot, correlation_id).await?;
    Ok(Json(BatchDetail { batch, rules }))
}

/// `value` if it is one of `allowed`: a typo is a 400 rather than an empty page.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_statuses_pass() {
        assert!(one_of("status", Some("completed".into()), STATUSES).is_ok());
        assert!(one_of("status", Some("done".into()), STATUSES).is_err());
        assert_eq!(one_of("status", None, STATUSES).ok(), Some(None));
    }
}
