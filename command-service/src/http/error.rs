//! The command service's HTTP errors: one enum, each variant's status documented, all
//! rendered as `application/problem+json`. Causes of 5xx are logged once, here, and
//! never sent to the client.

use crate::assets::AssetError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use synapse_shared::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 4xx with a ready problem (validation, not found, conflict, ...).
    #[error("{}", .0.title)]
    Client(Problem),
    /// 503: Postgres is unreachable (pool timeout, connection refused).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// 500: anything else; logged, opaque to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError::Client(problem)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            ApiError::Unavailable(error)
        } else if is_concurrent(&error) {
            tracing::info!(%error, "request refused: it ran into a concurrent one");
            ApiError::Client(
                Problem::new(
                    StatusCode::CONFLICT,
                    "concurrent-change",
                    "another request changed the same data at the same time",
                )
                .with_detail("nothing was written; retry the request"),
            )
        } else {
            ApiError::Internal(error.into())
        }
    }
}

/// Errors that mean "two transactions got in each other's way": a deadlock (two
/// requests locking the same rows in opposite orders, e.g. a cable's update and its end
/// asset's deletion) or a serialization failure. Postgres rolled the loser back whole;
/// retrying it is safe.
pub fn is_concurrent(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|database_error| database_error.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// Errors that mean "Postgres is not there right now" rather than "the query is wrong".
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    ) || error
        .as_database_error()
        .and_then(|database_error| database_error.code())
        .is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
}

impl From<AssetError> for ApiError {
    fn from(error: AssetError) -> Self {
        let detail = error.to_string();
        let problem = match error {
            AssetError::Database(error) => return ApiError::from(error),
            AssetError::Invalid(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "the asset is invalid",
            )
            .with_errors(json!(errors)),
            AssetError::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "asset-not-found", "no such asset")
                    .with_detail(detail)
            }
            AssetError::TagTaken(_) => {
                Problem::new(StatusCode::CONFLICT, "tag-taken", "the tag is already used")
                    .with_detail(detail)
            }
            AssetError::VersionConflict {
                id,
                expected,
                actual,
            } => Problem::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "the asset changed since you read it",
            )
            .with_detail(detail)
            .with_errors(
                json!({"asset_id": id, "expected_version": expected, "current_version": actual}),
            ),
            AssetError::Concurrent => Problem::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "the asset was changed concurrently; read it again and retry",
            ),
        };
        ApiError::Client(problem)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client(problem) => problem.into_response(),
            ApiError::Unavailable(error) => {
                tracing::warn!(error = %error, "database unavailable");
                Problem::unavailable("the database").into_response()
            }
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                Problem::internal().into_response()
            }
        }
    }
}
