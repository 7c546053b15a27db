//! `POST /rules`, `PUT /rules/{id}`, `GET /rules`, `GET /rules/{id}`.

use super::actor::{Admin, Viewer};
use super::error::ApiError;
use super::transaction::run_command;
use super::AppState;
use crate::rules::definition::RuleInput;
use crate::rules::store::{self, StoredRule};
use crate::rules::{self, RuleError};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use synapse_shared::problem::{ApiJson, ApiPath, ApiQuery, NoQuery};
use synapse_shared::Problem;
use uuid::Uuid;

impl From<RuleError> for ApiError {
    fn from(error: RuleError) -> Self {
        match error {
            RuleError::Invalid(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-rule",
                "the rule does not compile",
            )
            .with_errors(json!(errors))
            .into(),
            RuleError::NotFound(id) => {
                Problem::new(StatusCode::NOT_FOUND, "rule-not-found", "no such rule")
                    .with_detail(format!("rule {id} does not exist"))
                    .into()
            }
            RuleError::VersionConflict {
                id,
                expected,
                current,
            } => Problem::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "the rule changed since you read it",
            )
            .with_detail(format!(
                "rule {id} is at version {current}, not the {expected} If-Match expects"
            ))
            .with_errors(json!({"rule_id": id, "expected_version": expected,
                                "current_version": current}))
            .into(),
            RuleError::Database(error) => error.into(),
        }
    }
}

/// Define a rule. Its condition and actions are compiled first: an invalid expression
/// is a 422 listing each problem with its field, line and column.
#[utoipa::path(post, path = "/rules", request_body = RuleInput,
    responses(
        (status = 201, description = "version 1 of the rule", body = StoredRule),
        (status = 422, description = "does not compile", body = Problem),
    ))]
pub async fn define(
    State(state): State<AppState>,
    Admin(actor): Admin,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(input): ApiJson<RuleInput>,
) -> Result<Response, ApiError> {
    let request = format!(
        "POST /rules {}",
        serde_json::to_string(&input).unwrap_or_default()
    );
    let actor_name = actor.0.clone();
    run_command(&state.pool, &actor, &headers, &request, move |connection| {
        Box::pin(async move {
            let stored = rules::define(connection, &actor_name, input).await?;
            Ok((StatusCode::CREATED, json!(stored)))
        })
    })
    .await
}

/// Store a new version of a rule; earlier versions stay as they were. With `If-Match`,
/// only if the rule's latest version is that one (a stale edit is a 409).
#[utoipa::path(put, path = "/rules/{id}", request_body = RuleInput,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "expected version")),
    responses(
        (status = 200, description = "the new version", body = StoredRule),
        (status = 404, description = "no such rule", body = Problem),
        (status = 409, description = "the rule is at another version than If-Match expects", body = Problem),
        (status = 422, description = "does not compile", body = Problem),
    ))]
pub async fn revise(
    State(state): State<AppState>,
    Admin(actor): Admin,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    _: ApiQuery<NoQuery>,
    ApiJson(input): ApiJson<RuleInput>,
) -> Result<Response, ApiError> {
    let expected = super::assets::expected_version(&headers, None)?;
    let request = format!(
        "PUT /rules/{id} {expected:?} {}",
        serde_json::to_string(&input).unwrap_or_default()
    );
    let actor_name = actor.0.clone();
    run_command(&state.pool, &actor, &headers, &request, move |connection| {
        Box::pin(async move {
            let stored = rules::revise(connection, &actor_name, id, input, expected).await?;
            Ok((StatusCode::OK, json!(stored)))
        })
    })
    .await
}

/// The newest version of a rule, with its version as the `ETag`: sent back as
/// `If-Match` with a `PUT`, the edit is refused if the rule changed meanwhile.
#[utoipa::path(get, path = "/rules/{id}", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "the newest version", body = StoredRule,
         headers(("ETag" = String, description = "the version, e.g. `\"3\"`"))),
        (status = 404, description = "no such rule", body = Problem),
    ))]
pub async fn show(
    State(state): State<AppState>,
    _viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
    _: ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let stored = store::latest(&state.pool, id)
        .await?
        .ok_or(RuleError::NotFound(id))?;
    let tag = format!("\"{}\"", stored.version);
    Ok(([(header::ETAG, tag)], axum::Json(stored)).into_response())
}

/// The newest version of every rule, in execution order.
#[utoipa::path(get, path = "/rules", responses((status = 200, body = Vec<StoredRule>)))]
pub async fn list(
    State(state): State<AppState>,
    _viewer: Viewer,
    _: ApiQuery<NoQuery>,
) -> Result<axum::Json<Vec<StoredRule>>, ApiError> {
    Ok(axum::Json(store::latest_all(&state.pool).await?))
}
