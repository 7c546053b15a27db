//! `/healthz`, `/readyz` and `/metrics`.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use synapse_shared::Problem;

/// The body of a liveness probe, as the other services answer it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The body of a readiness probe: Postgres answers; NATS is `connected` or
/// `disconnected` (commands work without it, the relay catches up later).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub postgres: &'static str,
    pub nats: &'static str,
}

/// Alive: the process answers (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Ready: Postgres answers and NATS is connected. Commands work without NATS (the relay
/// catches up later), so NATS being down is reported but does not fail readiness.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready (NATS may be disconnected: commands work, the relay catches up)", body = Readiness),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    // Within a second, shorter than a typical probe timeout: a pool waiting for a
    // connection to a Postgres that is gone took 5 s to say so.
    let probe = sqlx::query("select 1").execute(&state.pool);
    match tokio::time::timeout(std::time::Duration::from_secs(1), probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: postgres unreachable");
            return Problem::unavailable("the database").into_response();
        }
        Err(_) => {
            tracing::warn!("readiness: postgres did not answer within 1 s");
            return Problem::unavailable("the database").into_response();
        }
    }
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => "connected",
        _ => "disconnected",
    };
    (
        StatusCode::OK,
        axum::Json(Readiness {
            status: "ready",
            postgres: "ok",
            nats,
        }),
    )
        .into_response()
}

/// Prometheus metrics: append rate, relay lag and published events, HTTP latency.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        synapse_shared::telemetry::metrics().render(),
    )
}
