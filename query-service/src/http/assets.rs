//! `GET /assets/{id}`: an asset's current state, or its state as of a time;
//! `GET /assets?tag=`: the current asset with a tag.

use crate::http::error::{invalid_query, ApiError};
use crate::http::time;
use crate::read::{aggregates, events};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use synapse_shared::auth::Principal;
use synapse_shared::problem::{ApiPath, ApiQuery};
use synapse_shared::{AggregateType, EventType, Problem};
use uuid::Uuid;

/// Optional point in time.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssetParams {
    /// Show the state as of this time (RFC 3339, 4714-11-24 BC or later) instead of the
    /// current one.
    #[serde(default, deserialize_with = "time::storable")]
    pub as_of: Option<DateTime<Utc>>,
}

/// An asset's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetView {
    pub id: Uuid,
    /// The asset's fields (`tag`, `asset_type`, `discipline`, `properties`, ...).
    #[schema(value_type = Object)]
    pub state: Value,
    /// The asset's version in this state.
    pub version: Option<i64>,
    /// Position of the last event reflected in this state.
    pub last_position: i64,
    /// The time asked for, when the state is historical.
    pub as_of: Option<DateTime<Utc>>,
}

/// The asset's current state, or with `as_of` its state at that time.
#[utoipa::path(
    get,
    path = "/assets/{id}",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id"), AssetParams),
    responses(
        (status = 200, description = "The asset's state", body = AssetView),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such asset (at that time)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The asset was deleted (by that time)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn asset(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiPath(asset_id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<AssetParams>,
) -> Result<Json<AssetView>, ApiError> {
    match params.as_of {
        None => current(&state, asset_id).await,
        Some(as_of) => historical(&state, asset_id, as_of).await,
    }
    .map(Json)
}

async fn current(state: &AppState, asset_id: Uuid) -> Result<AssetView, ApiError> {
    let row = aggregates::find(&state.pool, asset_id)
        .await?
        .filter(|row| row.aggregate_type == AggregateType::Asset.as_str())
        .ok_or_else(|| not_found(asset_id, "no asset has this id"))?;
    let Some(asset_state) = row.state else {
        return Err(deleted(asset_id, "the asset was deleted"));
    };
    Ok(AssetView {
        id: asset_id,
        state: asset_state,
        version: Some(row.version),
        last_position: row.last_position,
        as_of: None,
    })
}

/// Folding the history is trivial because every change event carries the whole state
/// after it: the state at `as_of` is the `after` of the last change up to then.
async fn historical(
    state: &AppState,
    asset_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<AssetView, ApiError> {
    let change_types: Vec<&str> = EventType::ALL
        .iter()
        .filter(|event_type| event_type.is_state_change())
        .map(|event_type| event_type.as_str())
        .collect();
    let change = events::last_change_as_of(&state.pool, asset_id, &change_types, as_of)
        .await?
        .filter(|entry| entry.aggregate_type == AggregateType::Asset.as_str())
        .ok_or_else(|| not_found(asset_id, &format!("the asset did not exist at {as_of}")))?;
    let payload = change.payload_value()?;
    let Some(after) = payload.get("after").filter(|after| !after.is_null()) else {
        return Err(deleted(
            asset_id,
            &format!("the asset was deleted by {as_of}"),
        ));
    };
    Ok(AssetView {
        id: asset_id,
        version: after.get("version").and_then(Value::as_i64),
        state: after.clone(),
        last_position: change.position,
        as_of: Some(as_of),
    })
}

fn not_found(asset_id: Uuid, detail: &str) -> ApiError {
    Problem::new(StatusCode::NOT_FOUND, "asset-not-found", "no such asset")
        .with_detail(format!("asset {asset_id}: {detail}"))
        .into()
}

fn deleted(asset_id: Uuid, detail: &str) -> ApiError {
    Problem::new(StatusCode::GONE, "asset-deleted", "the asset was deleted")
        .with_detail(format!("asset {asset_id}: {detail}"))
        .into()
}

/// The asset to find.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindParams {
    /// The asset's tag, exactly as stored (case and spaces count), e.g. `M-101A`.
    pub tag: String,
}

/// The current assets with the tag asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetList {
    /// The asset with that tag, or none (a deleted asset's tag finds nothing).
    pub assets: Vec<AssetView>,
}

/// The current asset with a tag: its id (for `/assets/{id}`, its history, or an
/// execution's `asset_ids` filter) and state.
#[utoipa::path(
    get,
    path = "/assets",
    tag = "assets",
    params(FindParams),
    responses(
        (status = 200, description = "The asset with that tag, or an empty list", body = AssetList),
        (status = 400, description = "No tag, a blank one, or an unknown parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn find(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FindParams>,
) -> Result<Json<AssetList>, ApiError> {
    if params.tag.trim().is_empty() || params.tag.len() > MAX_TAG_BYTES {
        return Err(invalid_query(format!(
            "`tag` must be a tag: 1 to {MAX_TAG_BYTES} bytes, not blank"
        )));
    }
    // No tag is written so (the command service refuses them): it would find nothing,
    // silently (a helper, area G: `Ü-100` typed as `U` and a combining mark).
    if !unicode_normalization::is_nfkc(&params.tag) {
        let usual: String =
            unicode_normalization::UnicodeNormalization::nfkc(params.tag.as_str()).collect();
        return Err(invalid_query(format!(
            "`tag` is written with characters that look like `{usual}` but are not \
             (combining marks, fullwidth or other compatibility forms), as no tag is: \
             write `{usual}`"
        )));
    }
    let rows = aggregates::assets_by_tag(&state.pool, &params.tag).await?;
    let assets = rows
        .into_iter()
        .filter_map(|row| {
            Some(AssetView {
                id: row.aggregate_id,
                state: row.state?,
                version: Some(row.version),
                last_position: row.last_position,
                as_of: None,
            })
        })
        .collect();
    Ok(Json(AssetList { assets }))
}

/// The longest tag an asset may have.
const MAX_TAG_BYTES: usize = 256;
