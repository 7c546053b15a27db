//! `/healthz`, `/readyz` and `/metrics`: what orchestrators and Prometheus scrape.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::time::Duration;
use synapse_shared::Problem;

/// How long a readiness probe waits for Postgres: shorter than a typical probe timeout
/// (1-5 s), so the probe gets a 503 rather than a hung connection.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The body of a healthy probe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is alive (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The read database and NATS are reachable, and the live feed follows the stream.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "A dependency is unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    let probe = sqlx::query("select 1").execute(&state.pool);
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: read database unreachable");
            return Err(Problem::unavailable("the read database"));
        }
        Err(_) => {
            tracing::warn!("readiness: read database did not answer in time");
            return Err(Problem::unavailable("the read database"));
        }
    }
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(Problem::unavailable("NATS"));
    }
    if !state.hub.is_ready() {
        return Err(Problem::unavailable("the event stream"));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics, including `synapse_ws_clients`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        synapse_shared::telemetry::metrics().render(),
    )
}
