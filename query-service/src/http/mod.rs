//! The HTTP API: routes, their OpenAPI document and the error format.

pub mod assets;
pub mod batches;
pub mod disciplines;
pub mod error;
pub mod export;
pub mod findings;
pub mod health;
pub mod history;
pub mod pagination;
pub mod time;
pub mod timeline;

use crate::live::{socket, ticket};
use crate::state::AppState;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use synapse_shared::auth::BearerSecurity;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Top-level facts of the OpenAPI document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SYNAPSE query service",
        description = "Read side of SYNAPSE: the event timeline, asset histories and \
                       states, batches, disciplines, open findings, and a live WebSocket feed at `/ws`. Every route but health, \
                       readiness and metrics needs a bearer token (any role; 401 without one)."
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "events", description = "The timeline and asset histories"),
        (name = "assets", description = "Asset state, current or as of a time; the current assets as CSV"),
        (name = "batches", description = "Batches: status, timings, who ran and rolled back, per-rule counts"),
        (name = "disciplines", description = "Activity per discipline"),
        (name = "findings", description = "Open findings of `flag` rules"),
        (name = "live", description = "The live WebSocket feed"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// The query string of a route that takes no parameters. Every route refuses what it
/// does not know, this one anything at all, so a misspelt filter is a 400 rather than
/// a silently unfiltered answer.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Every route of the service, with its state.
pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(timeline::timeline))
        .routes(routes!(history::history))
        .routes(routes!(assets::asset))
        .routes(routes!(export::export_assets))
        .routes(routes!(batches::list))
        .routes(routes!(batches::detail))
        .routes(routes!(disciplines::list))
        .routes(routes!(disciplines::detail))
        .routes(routes!(findings::list))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(socket::upgrade))
        .routes(routes!(ticket::ticket))
        .split_for_parts();
    let mut api = api;
    BearerSecurity::open(&mut api, &["/healthz", "/readyz", "/metrics"]);
    synapse_shared::problem::document_refusals(&mut api);
    synapse_shared::problem::document_problems(&mut api);
    let api = Arc::new(api);
    router
        .route(
            "/openapi.json",
            get(move || async move { Json(api.as_ref().clone()) }),
        )
        .fallback(synapse_shared::problem::not_found)
        .method_not_allowed_fallback(synapse_shared::problem::method_not_allowed)
        .layer(axum::middleware::from_fn(error::log_failures))
        .layer(synapse_shared::http_metrics::layer("query"))
        // Spans name the path, not the whole URI: `/ws?ticket=` carries a credential.
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            },
        ))
        .with_state(state)
}
