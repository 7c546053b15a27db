//! The HTTP layer's one error type.
//!
//! Handlers return [`ApiError`]; client errors become their `application/problem+json`
//! body as is, failures of the read database become an opaque problem whose cause is
//! logged once, by [`log_failures`], never sent to the client.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use synapse_shared::Problem;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 4xx the handler chose (bad filter, unknown asset, ...), sent as is.
    #[error("{}", .0.title)]
    Problem(Problem),
    /// 503 when the read database cannot be reached in time, else 500.
    #[error("querying the read models")]
    Database(#[from] sqlx::Error),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError::Problem(problem)
    }
}

/// The cause of a 5xx, carried from the response to the logging middleware.
#[derive(Debug, Clone)]
struct FailureCause(Arc<String>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Problem(problem) => problem.into_response(),
            ApiError::Database(error) => {
                let problem = match &error {
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                        Problem::unavailable("the read database")
                    }
                    _ => Problem::internal(),
                };
                let mut response = problem.into_response();
                response
                    .extensions_mut()
                    .insert(FailureCause(Arc::new(format!("{error:#}"))));
                response
            }
        }
    }
}

/// Middleware that logs the cause of every server-side failure, once.
pub async fn log_failures(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(FailureCause(cause)) = response.extensions().get::<FailureCause>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), %cause, "request failed");
    }
    response
}

/// A 400 for a query parameter with an acceptable shape but an unacceptable value.
/// `value` if it is one of `allowed` (or absent); a 400 naming parameter `name` and
/// the allowed values otherwise.
pub fn one_of(
    name: &str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match value {
        Some(value) if !allowed.contains(&value.as_str()) => Err(invalid_query(format!(
            "`{name}` must be one of {}, got `{value}`",
            allowed.join(", ")
        ))),
        value => Ok(value),
    }
}

pub fn invalid_query(detail: impl Into<String>) -> ApiError {
    ApiError::Problem(
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "the query string was refused",
        )
        .with_detail(detail),
    )
}

/// A `discipline` query parameter as the read models hold it
/// ([`crate::read::disciplines::code`]), or a 400 that says what a discipline is.
/// An `actor` filter: who did it, as events record it. A blank one asks for nobody:
/// refused, as every other blank filter is.
pub fn actor_param(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(actor) if actor.trim().is_empty() => Err(invalid_query(
            "`actor` is blank; leave it out to get every actor's".to_owned(),
        )),
        actor => Ok(actor),
    }
}

pub fn discipline_param(value: Option<&str>) -> Result<Option<String>, ApiError> {
    value
        .map(crate::read::disciplines::code)
        .transpose()
        .map_err(invalid_query)
}
