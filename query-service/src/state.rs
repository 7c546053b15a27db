//! What every request handler and WebSocket session shares.

use crate::live::hub::Hub;
use crate::live::LiveLimits;
use axum::extract::FromRef;
use sqlx::PgPool;
use synapse_shared::auth::Authenticator;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared, cheaply cloneable handles of the running service.
#[derive(Clone)]
pub struct AppState {
    /// Pool of the read-model database (never the command side).
    pub pool: PgPool,
    /// Used by `/readyz` to report whether NATS is reachable.
    pub nats: async_nats::Client,
    /// The process-wide live feed.
    pub hub: Hub,
    /// Queue and buffer sizes of WebSocket sessions.
    pub live_limits: LiveLimits,
    /// Cancelled on shutdown: every WebSocket session watches it, because axum's graceful
    /// shutdown does not wait for upgraded connections (axum#3003).
    pub shutdown: CancellationToken,
    /// Tracks WebSocket sessions so shutdown can wait for their close frames to go out.
    pub sessions: TaskTracker,
    /// Checks bearer tokens and WebSocket tickets; handlers get the caller as a
    /// `Principal` extractor.
    pub auth: Authenticator,
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
