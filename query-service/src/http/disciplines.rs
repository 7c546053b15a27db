//! `GET /disciplines` and `GET /disciplines/{discipline}`: activity per discipline.

use crate::http::error::{invalid_query, ApiError};
use crate::http::pagination::MAX_LIMIT;
use crate::http::NoParams;
use crate::read::disciplines::{self, DisciplineBatchRow, TypeCountRow};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synapse_shared::auth::Principal;
use synapse_shared::problem::{ApiPath, ApiQuery};
use synapse_shared::{EventType, Problem};

/// Recent batches a detail shows when the client does not say: a screenful.
const DEFAULT_RECENT: u32 = 20;

/// What a discipline has seen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DisciplineSummary {
    pub discipline: String,
    /// Events of the discipline, all types.
    pub events: i64,
    /// Events by type (wire name).
    pub counts: BTreeMap<String, i64>,
    /// RULE_ERROR events.
    pub errors: i64,
    /// Batches the discipline took part in.
    pub batches: i64,
    /// When its last event occurred.
    pub last_activity: DateTime<Utc>,
}

/// Every discipline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DisciplineList {
    /// Ordered by discipline.
    pub disciplines: Vec<DisciplineSummary>,
}

/// One discipline and its most recently active batches.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DisciplineDetail {
    #[serde(flatten)]
    pub summary: DisciplineSummary,
    /// Most recently active first (by the log position of the discipline's last event
    /// in each batch).
    pub recent_batches: Vec<DisciplineBatchRow>,
}

/// How many recent batches the detail lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DisciplineParams {
    /// Recent batches to list, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Summaries of every discipline: events by type, errors, batches, last activity.
#[utoipa::path(
    get,
    path = "/disciplines",
    tag = "disciplines",
    responses(
        (status = 200, description = "Every discipline", body = DisciplineList),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Any query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<DisciplineList>, ApiError> {
    let mut snapshot = crate::read::snapshot(&state.pool).await?;
    let counts = disciplines::type_counts(&mut snapshot, None).await?;
    let batches: BTreeMap<String, i64> = disciplines::batch_counts(&mut snapshot, None)
        .await?
        .into_iter()
        .collect();
    let disciplines = summarise(counts)
        .into_iter()
        .map(|mut summary| {
            summary.batches = batches.get(&summary.discipline).copied().unwrap_or(0);
            summary
        })
        .collect();
    Ok(Json(DisciplineList { disciplines }))
}

/// One discipline: its summary and its most recently active batches.
#[utoipa::path(
    get,
    path = "/disciplines/{discipline}",
    tag = "disciplines",
    params(("discipline" = String, Path, description = "e.g. `ELECTRICAL`"), DisciplineParams),
    responses(
        (status = 200, description = "The discipline", body = DisciplineDetail),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event has this discipline", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn detail(
    _caller: Principal,
    State(state): State<AppState>,
    ApiPath(discipline): ApiPath<String>,
    ApiQuery(params): ApiQuery<DisciplineParams>,
) -> Result<Json<DisciplineDetail>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_RECENT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid_query(format!(
            "`limit` must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    // A path that is not a code names no discipline: not found, like an unknown one.
    let discipline = disciplines::code(&discipline).unwrap_or(discipline);
    let mut snapshot = crate::read::snapshot(&state.pool).await?;
    let counts = disciplines::type_counts(&mut snapshot, Some(&discipline)).await?;
    let Some(mut summary) = summarise(counts).pop() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "discipline-not-found",
            "no such discipline",
        )
        .with_detail(format!("no event has discipline `{discipline}`"))
        .into());
    };
    let recent_batches =
        disciplines::recent_batches(&mut snapshot, &discipline, i64::from(limit)).await?;
    // The detail lists at most `limit` batches, so count them all separately.
    summary.batches = disciplines::batch_counts(&mut snapshot, Some(&discipline))
        .await?
        .first()
        .map_or(0, |(_, count)| *count);
    Ok(Json(DisciplineDetail {
        summary,
        recent_batches,
    }))
}

/// Group per-type rows into one summary per discipline, ordered by discipline; the
/// batch count is left at 0 for the caller.
fn summarise(rows: Vec<TypeCountRow>) -> Vec<DisciplineSummary> {
    let mut summaries: BTreeMap<String, DisciplineSummary> = BTreeMap::new();
    for row in rows {
        let summary =
            summaries
                .entry(row.discipline.clone())
                .or_insert_with(|| DisciplineSummary {
                    discipline: row.discipline.clone(),
                    events: 0,
                    counts: BTreeMap::new(),
                    errors: 0,
                    batches: 0,
                    last_activity: row.last_at,
                });
        summary.events += row.count;
        if row.event_type == EventType::RuleError.as_str() {
            summary.errors += row.count;
        }
        summary.last_activity = summary.last_activity.max(row.last_at);
        summary.counts.insert(row.event_type, row.count);
    }
    summaries.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(discipline: &str, event_type: &str, count: i64) -> TypeCountRow {
        TypeCountRow {
            discipline: discipline.to_owned(),
            event_type: event_type.to_owned(),
            count,
            last_at: Utc::now(),
        }
    }

    #[test]
    fn rows_group_into_one_summary_per_discipline_with_errors_counted() {
        let summaries = summarise(vec![
            row("ELECTRICAL", "RULE_ERROR", 2),
            row("ELECTRICAL", "RULE_EXECUTED", 5),
            row("MECHANICAL", "ASSET_CREATED", 1),
        ]);

        assert_eq!(summaries.len(), 2);
        assert_eq!((summaries[0].events, summaries[0].errors), (7, 2));
        assert_eq!(summaries[1].counts["ASSET_CREATED"], 1);
    }
}
