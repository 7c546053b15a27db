//! `POST /ws/ticket`: a short-lived ticket to open the live feed.
//!
//! Browsers cannot set an `Authorization` header on a WebSocket handshake, so they
//! exchange their bearer token for a ticket (valid 30 s for one connection, useless as
//! an API token) and open `/ws?ticket=...`. Other clients may send the bearer header on the handshake.

use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use synapse_shared::auth::{Principal, Ticket};
use synapse_shared::problem::{ApiQuery, NoQuery};
use synapse_shared::Problem;

/// A ticket for the caller to open `/ws?ticket=...`.
#[utoipa::path(
    post,
    path = "/ws/ticket",
    tag = "live",
    responses(
        (status = 200, description = "A ticket valid for 30 seconds", body = Ticket),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ticket(
    caller: Principal,
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
) -> Result<Json<Ticket>, Problem> {
    state.auth.issue_ticket(&caller).map(Json).map_err(|error| {
        tracing::error!(%error, "cannot sign a WebSocket ticket");
        Problem::internal()
    })
}
