//! `/healthz`, `/readyz` and `/metrics`.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use synapse_shared::Problem;

/// Alive: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: Postgres answers and NATS is connected. Commands work without NATS (the relay
/// catches up later), so NATS being down is reported but does not fail readiness.
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
        axum::Json(serde_json::json!({"postgres": "ok", "nats": nats})),
    )
        .into_response()
}

/// Prometheus text exposition.
pub async fn metrics() -> String {
    synapse_shared::telemetry::metrics().render()
}
