//! The HTTP surface: health, readiness and metrics only (the projection service has no
//! API of its own).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::Problem;
use tower_http::trace::TraceLayer;

/// How long a readiness probe waits for Postgres: below a typical probe timeout, so
/// the probe gets a 503 rather than no answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    pub pool: PgPool,
    pub nats: async_nats::Client,
}

/// The router: `/healthz`, `/readyz`, `/metrics`, and a problem+json 404 for the rest.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(synapse_shared::problem::not_found)
        .method_not_allowed_fallback(synapse_shared::problem::method_not_allowed)
        .layer(synapse_shared::http_metrics::layer("projection"))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The process is alive (it answers); nothing else is checked.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when Postgres answers and the NATS connection is up; else a 503 problem.
async fn readyz(State(state): State<HttpState>) -> Result<Json<Value>, Problem> {
    match tokio::time::timeout(READY_TIMEOUT, sqlx::query("select 1").execute(&state.pool)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: postgres");
            return Err(Problem::unavailable("postgres"));
        }
        Err(_elapsed) => {
            tracing::warn!("not ready: postgres did not answer in time");
            return Err(Problem::unavailable("postgres"));
        }
    }
    let nats = state.nats.connection_state();
    if nats != async_nats::connection::State::Connected {
        tracing::warn!(state = %nats, "not ready: nats");
        return Err(Problem::unavailable("nats"));
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus text exposition of every metric of the process.
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        synapse_shared::telemetry::metrics().render(),
    )
}
