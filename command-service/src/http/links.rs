//! `POST /cables`, `PATCH/DELETE /cables/{id}`, `POST /relationships`,
//! `DELETE /relationships/{id}`: single changes to links, each its own batch.

use super::actor::Engineer;
use super::assets::{expected_version, DeleteParams};
use super::error::ApiError;
use super::transaction::run_single_change;
use super::AppState;
use crate::assets::CommandOutcome;
use crate::links::cables::{self, CablePatch, NewCable};
use crate::links::relationships::{self, NewRelationship};
use crate::links::LinkError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use synapse_shared::problem::{ApiJson, ApiPath, ApiQuery, NoQuery};
use synapse_shared::Problem;
use uuid::Uuid;

impl From<LinkError> for ApiError {
    fn from(error: LinkError) -> Self {
        let detail = error.to_string();
        let problem = match error {
            LinkError::Database(error) => return error.into(),
            LinkError::Invalid(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "the request is invalid",
            )
            .with_errors(json!(errors)),
            LinkError::NotFound { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such cable or relationship",
            ),
            LinkError::EndMissing(id) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-asset",
                "an end of the link is not an asset",
            )
            .with_errors(json!({"asset_id": id})),
            LinkError::TagTaken(_) => {
                Problem::new(StatusCode::CONFLICT, "tag-taken", "the tag is already used")
            }
            LinkError::RelationshipExists { .. } => Problem::new(
                StatusCode::CONFLICT,
                "relationship-exists",
                "the relationship exists already",
            ),
            LinkError::Concurrent => Problem::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "the link was changed concurrently; read it again and retry",
            ),
            LinkError::VersionConflict {
                id,
                expected,
                actual,
            } => Problem::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "the cable changed since you read it",
            )
            .with_errors(
                json!({"id": id, "expected_version": expected, "current_version": actual}),
            ),
        };
        problem.with_detail(detail).into()
    }
}

/// Create a cable between two assets (one batch).
#[utoipa::path(post, path = "/cables", request_body = NewCable,
    responses((status = 201, body = CommandOutcome), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_cable(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(input): ApiJson<NewCable>,
) -> Result<Response, ApiError> {
    let request = format!(
        "POST /cables {}",
        serde_json::to_string(&input).unwrap_or_default()
    );
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::CREATED,
        move |connection, actor| {
            Box::pin(async move { Ok(cables::create(connection, &actor, input).await?) })
        },
    )
    .await
}

/// Change a cable (one batch); a stale `expected_version` or `If-Match` is a 409.
#[utoipa::path(patch, path = "/cables/{id}", request_body = CablePatch,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 200, body = CommandOutcome), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update_cable(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    _: ApiQuery<NoQuery>,
    ApiJson(mut patch): ApiJson<CablePatch>,
) -> Result<Response, ApiError> {
    patch.expected_version = expected_version(&headers, patch.expected_version)?;
    let request = format!(
        "PATCH /cables/{id} {}",
        serde_json::to_string(&patch).unwrap_or_default()
    );
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::OK,
        move |connection, actor| {
            Box::pin(async move { Ok(cables::update(connection, &actor, id, patch).await?) })
        },
    )
    .await
}

/// Delete a cable (one batch).
#[utoipa::path(delete, path = "/cables/{id}",
    params(("id" = Uuid, Path), DeleteParams, ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 200, body = CommandOutcome), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_cable(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers, params.expected_version)?;
    let request = format!("DELETE /cables/{id} {expected:?}");
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::OK,
        move |connection, actor| {
            Box::pin(async move { Ok(cables::delete(connection, &actor, id, expected).await?) })
        },
    )
    .await
}

/// Create a relationship between two assets (one batch).
#[utoipa::path(post, path = "/relationships", request_body = NewRelationship,
    responses((status = 201, body = CommandOutcome), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_relationship(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(input): ApiJson<NewRelationship>,
) -> Result<Response, ApiError> {
    let request = format!(
        "POST /relationships {}",
        serde_json::to_string(&input).unwrap_or_default()
    );
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::CREATED,
        move |connection, actor| {
            Box::pin(async move { Ok(relationships::create(connection, &actor, input).await?) })
        },
    )
    .await
}

/// Delete a relationship (one batch).
#[utoipa::path(delete, path = "/relationships/{id}",
    params(("id" = Uuid, Path), DeleteParams, ("If-Match" = Option<String>, Header, description = "expected version")),
    responses((status = 200, body = CommandOutcome), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_relationship(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers, params.expected_version)?;
    let request = format!("DELETE /relationships/{id} {expected:?}");
    run_single_change(
        &state.pool,
        &actor,
        &headers,
        &request,
        StatusCode::OK,
        move |connection, actor| {
            Box::pin(
                async move { Ok(relationships::delete(connection, &actor, id, expected).await?) },
            )
        },
    )
    .await
}
