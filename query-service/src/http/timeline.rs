//! `GET /events/timeline`: every event, filtered by any mix of fields, by position.

use crate::http::error::{actor_param, discipline_param, invalid_query, ApiError};
use crate::http::pagination::PageRequest;
use crate::http::time;
use crate::read::events::{self, AssetMatch, EventFilter, TimelineEntry};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use synapse_shared::auth::Principal;
use synapse_shared::problem::ApiQuery;
use synapse_shared::{EventType, Problem};
use uuid::Uuid;

/// Timeline filters; all optional, combined with `and`. Unknown parameters are refused
/// so a misspelt filter never silently returns everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Events concerning this asset.
    pub asset_id: Option<Uuid>,
    /// Events of this aggregate (asset, cable, relationship, rule or batch).
    pub aggregate_id: Option<Uuid>,
    /// Events of this batch.
    pub correlation_id: Option<Uuid>,
    /// Comma-separated event types, e.g. `ASSET_UPDATED,CABLE_CREATED`.
    pub event_type: Option<String>,
    pub rule_id: Option<Uuid>,
    pub discipline: Option<String>,
    pub actor: Option<String>,
    /// Events that occurred at or after this time (RFC 3339, 4714-11-24 BC or later).
    #[serde(default, deserialize_with = "time::storable_from")]
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred at or before this time (RFC 3339, 4714-11-24 BC or later).
    #[serde(default, deserialize_with = "time::storable")]
    pub to: Option<DateTime<Utc>>,
    /// Whether events a rollback undid are listed (default true).
    pub include_rolled_back: Option<bool>,
    /// Return events after this position (the previous page's `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of the timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelinePage {
    /// Events in ascending position.
    pub events: Vec<TimelineEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// List events matching the filters, ascending by position.
#[utoipa::path(
    get,
    path = "/events/timeline",
    tag = "events",
    params(TimelineParams),
    responses(
        (status = 200, description = "A page of events", body = TimelinePage),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn timeline(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<TimelineParams>,
) -> Result<Json<TimelinePage>, ApiError> {
    let page = PageRequest::new(params.after, params.limit)?;
    let filter = filter_from(&params)?;
    let rows = events::page(&state.pool, &filter, page.after, page.fetch_limit()).await?;
    let (events, next_after) = page.finish(rows, |entry| entry.position);
    Ok(Json(TimelinePage { events, next_after }))
}

fn filter_from(params: &TimelineParams) -> Result<EventFilter, ApiError> {
    if let (Some(from), Some(to)) = (params.from, params.to) {
        if from > to {
            return Err(invalid_query("`from` is after `to`"));
        }
    }
    Ok(EventFilter {
        asset: params.asset_id.map(AssetMatch::Concerns),
        aggregate_id: params.aggregate_id,
        correlation_id: params.correlation_id,
        with_rollbacks_of_batch: false,
        with_links_of_asset: false,
        event_types: parse_event_types(params.event_type.as_deref())?,
        rule_id: params.rule_id,
        discipline: discipline_param(params.discipline.as_deref())?,
        actor: actor_param(params.actor.clone())?,
        from: params.from,
        to: params.to,
        include_rolled_back: params.include_rolled_back.unwrap_or(true),
    })
}

/// Parse a comma list of event types, refusing unknown names so a typo is a 400 rather
/// than an empty page.
fn parse_event_types(list: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let types: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse::<EventType>()
                .map(|event_type| event_type.as_str().to_owned())
                .map_err(|error| invalid_query(format!("`event_type`: {error}")))
        })
        .collect::<Result<_, _>>()?;
    // `event_type=` or `event_type=,` asks for no type: refused, as the other filters
    // refuse a blank value, rather than read as no filter at all.
    if types.is_empty() {
        return Err(invalid_query(
            "`event_type` names no event type; leave it out to get every type".to_owned(),
        ));
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_type_list_is_split_trimmed_and_validated() {
        let types = parse_event_types(Some("ASSET_UPDATED, CABLE_CREATED,")).unwrap();
        assert_eq!(types, vec!["ASSET_UPDATED", "CABLE_CREATED"]);
        assert!(parse_event_types(Some("ASSET_UPDATED,ASSET_EXPLODED")).is_err());
        assert!(parse_event_types(None).unwrap().is_empty());
        assert!(parse_event_types(Some(",")).is_err());
        assert!(parse_event_types(Some(" ")).is_err());
    }
}
