//! `GET /findings`: the open findings of `flag` rules.

use crate::http::error::{discipline_param, one_of, ApiError};
use crate::http::pagination::PageRequest;
use crate::read::findings::{self, FindingFilter, FindingRow};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use synapse_shared::auth::Principal;
use synapse_shared::problem::ApiQuery;
use synapse_shared::Problem;
use uuid::Uuid;

/// The severities a finding can have.
const SEVERITIES: &[&str] = &["info", "warning", "error"];

/// Finding list filters; all optional, combined with `and`. Unknown parameters are
/// refused so a misspelt filter never silently returns everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindingListParams {
    /// Findings on this asset.
    pub asset_id: Option<Uuid>,
    /// Findings of this rule.
    pub rule_id: Option<Uuid>,
    /// Findings of rules of this discipline.
    pub discipline: Option<String>,
    /// `info`, `warning` or `error`.
    pub severity: Option<String>,
    /// Return findings raised after this position (the previous page's `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of open findings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FindingPage {
    /// Findings in the order they were raised.
    pub findings: Vec<FindingRow>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// The open findings: raised by a rule's `flag` action and not resolved since (a
/// later run of the rule no longer flagged them) nor rolled back.
#[utoipa::path(
    get,
    path = "/findings",
    tag = "findings",
    params(FindingListParams),
    responses(
        (status = 200, description = "A page of open findings", body = FindingPage),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FindingListParams>,
) -> Result<Json<FindingPage>, ApiError> {
    let page = PageRequest::new(params.after, params.limit)?;
    let filter = FindingFilter {
        asset_id: params.asset_id,
        rule_id: params.rule_id,
        discipline: discipline_param(params.discipline.as_deref())?,
        severity: one_of("severity", params.severity, SEVERITIES)?,
    };
    let rows = findings::page(&state.pool, &filter, page.after, page.fetch_limit()).await?;
    let (findings, next_after) = page.finish(rows, |finding| finding.position);
    Ok(Json(FindingPage {
        findings,
        next_after,
    }))
}
