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
        .routes(routes!(assets::find))
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
    BearerSecurity::open(&mut api, synapse_shared::problem::OPERATIONAL_PATHS);
    synapse_shared::problem::document_refusals(&mut api);
    synapse_shared::problem::document_problems(&mut api);
    let api = Arc::new(api);
    let cors = cors(state.auth.allowed_origins());
    let router = router
        .route(
            "/openapi.json",
            get(move || async move { Json(api.as_ref().clone()) }),
        )
        .fallback(synapse_shared::problem::not_found)
        .method_not_allowed_fallback(synapse_shared::problem::method_not_allowed)
        .layer(axum::middleware::from_fn(error::log_failures))
        .layer(axum::middleware::from_fn(
            synapse_shared::unread_body::close_if_unread,
        ))
        .layer(synapse_shared::http_metrics::layer("query"))
        // Spans name the path, not the whole URI: `/ws?ticket=` carries a credential.
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            },
        ));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
    .with_state(state)
}

/// Cross-origin requests from the browser origins `ALLOWED_ORIGINS` lists: a page
/// served from one of them may read and ask for a live-feed ticket (whose request
/// carries `Authorization`, so the browser asks first with a preflight `OPTIONS`,
/// which got a 405 before). None listed: same origin only, no CORS headers at all.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600))
    })
}
