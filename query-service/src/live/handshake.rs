//! Who may open the live feed: the WebSocket handshake's authentication.

use crate::state::AppState;
use axum::http::HeaderMap;
use synapse_shared::auth::{bearer_token, AuthError, Principal};

/// How a handshake may authenticate besides the `Authorization` header.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HandshakeParams {
    /// A ticket from `POST /ws/ticket`, for clients that cannot set headers (browsers).
    pub ticket: Option<String>,
}

/// The handshake needs an allowed `Origin` (browsers) and a ticket or bearer token; the
/// live feed is a read, so any role will do. Refused before upgrading, as a problem.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &HandshakeParams,
) -> Result<Principal, AuthError> {
    state.auth.check_origin(headers)?;
    match (&params.ticket, bearer_token(headers)?) {
        (Some(ticket), _) => state.auth.authenticate_ticket(ticket),
        (None, Some(token)) => state.auth.authenticate(token),
        (None, None) if state.auth.is_disabled() => state.auth.authenticate(""),
        (None, None) => Err(AuthError::Missing),
    }
}
