//! `GET /events/assets/{id}/history`: every change to one asset and to the cables and
//! relationships at its ends, with diffs.

use crate::http::error::ApiError;
use crate::http::pagination::PageRequest;
use crate::read::events::{self, AssetMatch, EventFilter, TimelineEntry};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use synapse_shared::auth::Principal;
use synapse_shared::problem::{ApiPath, ApiQuery};
use synapse_shared::Problem;
use uuid::Uuid;

/// Pagination of a history and whether it lists the asset's links; nothing else is
/// accepted.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Return events after this position (the previous page's `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Also list the change events of every cable and relationship with the asset at
    /// either end, before or after the change (default true); `false` lists only the
    /// events about the asset itself or naming it.
    pub links: Option<bool>,
}

/// One event of an asset's history: the timeline entry plus the states around it. Its
/// `aggregate_type` and `aggregate_id` say what the event is about: the asset itself,
/// one of its cables or relationships (`cable`, `relationship`), or a batch (a rule's
/// outcome on the asset).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub entry: TimelineEntry,
    /// State before the change (absent for creations and non-change events).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Box<RawValue>>,
    /// State after the change (absent for deletions and non-change events).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Box<RawValue>>,
}

/// The states around a change, as a change event's payload carries them (`null` or
/// absent: none), borrowed from the payload's text.
#[derive(Deserialize)]
struct Sides<'a> {
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
}

impl TryFrom<TimelineEntry> for HistoryEntry {
    type Error = sqlx::Error;

    fn try_from(entry: TimelineEntry) -> Result<Self, Self::Error> {
        let sides: Sides = serde_json::from_str(entry.payload.get())
            .map_err(|error| sqlx::Error::Decode(error.into()))?;
        let before = sides.before.map(RawValue::to_owned);
        let after = sides.after.map(RawValue::to_owned);
        Ok(Self {
            entry,
            before,
            after,
        })
    }
}

/// A page of an asset's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Events in ascending position.
    pub events: Vec<HistoryEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// Every event about the asset or concerning it and, unless `links=false`, every change
/// of a cable or relationship with the asset at either end, merged in ascending
/// position, with diffs.
#[utoipa::path(
    get,
    path = "/events/assets/{id}/history",
    tag = "events",
    params(("id" = Uuid, Path, description = "Asset id"), HistoryParams),
    responses(
        (status = 200, description = "A page of the asset's history, its cables' and relationships' changes included unless `links=false`", body = HistoryPage),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No asset has this id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiPath(asset_id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    let page = PageRequest::new(params.after, params.limit)?;
    let filter = EventFilter {
        asset: Some(AssetMatch::ConcernsOrIs(asset_id)),
        with_links_of_asset: params.links.unwrap_or(true),
        ..EventFilter::everything()
    };
    // An empty page past the end of a known history is fine; an id that is no asset's
    // (unknown, or a cable's, a relationship's, a batch's) is not found.
    if !events::is_asset(&state.pool, asset_id).await? {
        return Err(
            Problem::new(StatusCode::NOT_FOUND, "asset-not-found", "no such asset")
                .with_detail(format!("no asset has id {asset_id}"))
                .into(),
        );
    }
    let rows = events::page(&state.pool, &filter, page.after, page.fetch_limit()).await?;
    let (rows, next_after) = page.finish(rows, |entry| entry.position);
    Ok(Json(HistoryPage {
        events: rows
            .into_iter()
            .map(HistoryEntry::try_from)
            .collect::<Result<_, _>>()?,
        next_after,
    }))
}
