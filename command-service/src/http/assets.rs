//! `POST /assets`, `PATCH /assets/{id}`, `DELETE /assets/{id}`.

use super::actor::Engineer;
use super::error::ApiError;
use super::transaction::run_single_change;
use super::AppState;
use crate::assets::{self, AssetPatch, CommandOutcome, NewAsset};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use synapse_shared::problem::{ApiJson, ApiPath, ApiQuery, NoQuery};
use synapse_shared::Problem;
use uuid::Uuid;

/// Create an asset (one batch).
#[utoipa::path(post, path = "/assets", request_body = NewAsset,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first response")),
    responses(
        (status = 201, description = "created", body = CommandOutcome),
        (status = 409, description = "tag already used", body = Problem),
        (status = 422, description = "invalid asset", body = Problem),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(input): ApiJson<NewAsset>,
) -> Result<Response, ApiError> {
    let request = format!(
        "POST /assets {}",
        serde_json::to_string(&input).unwrap_or_default()
    );
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::CREATED,
        move |connection, actor| {
            Box::pin(async move { Ok(assets::create(connection, &actor, input).await?) })
        },
    )
    .await
}

/// Change an asset (one batch). A stale `expected_version` or `If-Match` is a 409.
#[utoipa::path(patch, path = "/assets/{id}", request_body = AssetPatch,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses(
        (status = 200, description = "changed, or nothing to change", body = CommandOutcome),
        (status = 404, description = "no such asset", body = Problem),
        (status = 400, description = "If-Match and expected_version disagree", body = Problem),
        (status = 409, description = "stale version", body = Problem),
        (status = 422, description = "invalid change", body = Problem),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    _: ApiQuery<NoQuery>,
    ApiJson(mut patch): ApiJson<AssetPatch>,
) -> Result<Response, ApiError> {
    patch.expected_version = expected_version(&headers, patch.expected_version)?;
    let request = format!(
        "PATCH /assets/{id} {}",
        serde_json::to_string(&patch).unwrap_or_default()
    );
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::OK,
        move |connection, actor| {
            Box::pin(async move { Ok(assets::update(connection, &actor, id, patch).await?) })
        },
    )
    .await
}

/// Query string of `DELETE /assets/{id}` (and of the cable and relationship deletes).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The version the client last saw (or send `If-Match`).
    pub expected_version: Option<i64>,
}

/// Delete an asset (one batch).
#[utoipa::path(delete, path = "/assets/{id}",
    params(("id" = Uuid, Path), DeleteParams, ("If-Match" = Option<String>, Header, description = "expected version")),
    responses(
        (status = 200, description = "deleted", body = CommandOutcome),
        (status = 404, description = "no such asset", body = Problem),
        (status = 409, description = "stale version", body = Problem),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<Response, ApiError> {
    let expected_version = expected_version(&headers, params.expected_version)?;
    let request = format!("DELETE /assets/{id} {expected_version:?}");
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::OK,
        move |connection, actor| {
            Box::pin(
                async move { Ok(assets::delete(connection, &actor, id, expected_version).await?) },
            )
        },
    )
    .await
}

/// The version a change expects: from `If-Match` or the request's own
/// `expected_version`; both may be given only if they agree.
pub(super) fn expected_version(
    headers: &HeaderMap,
    given: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    match (if_match(headers)?, given) {
        (Some(header), Some(given)) if header != given => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "conflicting-versions",
            format!(
                "If-Match expects version {header} and expected_version {given}; send one of them"
            ),
        )
        .into()),
        (header, given) => Ok(header.or(given)),
    }
}

/// The version in an `If-Match` header (`"3"` or `3`); none for `*`, which matches
/// whatever version exists (RFC 9110 §13.1.1: the change needs only that it exists,
/// which it does anyway).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    if value.to_str().is_ok_and(|text| text.trim() == "*") {
        return Ok(None);
    }
    // A weak tag (`W/"3"`) never matches in `If-Match` (RFC 9110 §13.1.1): refused
    // as any other value that is no version.
    value
        .to_str()
        .ok()
        .map(|text| text.trim().trim_matches('"'))
        .and_then(|text| text.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-if-match",
                "If-Match must carry the version the change expects, e.g. \"3\"",
            )
            .into()
        })
}
