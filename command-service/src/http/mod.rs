//! The command service's HTTP surface.

pub mod actor;
pub mod assets;
pub mod error;
pub mod execute;
pub mod health;
pub mod import;
pub mod links;
pub mod rollback;
pub mod rules;
pub mod transaction;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use std::sync::Arc;
use synapse_shared::auth::{Authenticator, BearerSecurity};
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted: a CSV import of a large plant fits, a runaway upload
/// does not (it gets a 413 problem).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    /// Cancelled on shutdown: background executions stop between chunks.
    pub shutdown: synapse_shared::shutdown::CancellationToken,
    /// Background executions, which shutdown waits for: each ends its batch as failed
    /// ("the command service shut down during the batch") before the process exits.
    pub executions: tokio_util::task::TaskTracker,
    /// Checks bearer tokens; handlers get the caller through `actor::Actor`.
    pub auth: Authenticator,
    /// Permits for requests that hold more than one pooled connection at once (dry
    /// runs: up to three): taken before the first, so that such requests cannot fill
    /// the pool and each wait for another connection until the acquire timeout
    /// answers 503 ([`wide_permits`]).
    pub wide: Arc<Semaphore>,
    /// Cascading rollbacks of this process, one at a time: a cascade waiting for
    /// another holds no connection (the advisory lock orders them across processes).
    pub cascades: Arc<tokio::sync::Mutex<()>>,
}

/// How many requests may hold several connections at once with a pool of
/// `max_connections`: each holds at most three, and one connection stays free.
pub fn wide_permits(max_connections: u32) -> usize {
    usize::try_from(max_connections.saturating_sub(1) / 3)
        .unwrap_or(1)
        .max(1)
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SYNAPSE command service",
        description = "Commands: asset changes, CSV import, rules, execution and rollback. Every change is a batch of immutable events. Every route needs a bearer token: viewer reads rules; engineer changes assets, imports and executes; admin defines rules and rolls back (401 without a valid token, 403 for a role that may not)."
    ),
    modifiers(&BearerSecurity)
)]
struct ApiDoc;

/// Every command (each operation but a `GET`) honours `Idempotency-Key`
/// ([`transaction::run_command`]), and refuses a key used for another request with a
/// 422: documented on each, whether or not its annotation says so.
fn document_idempotency_keys(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
    for item in openapi.paths.paths.values_mut() {
        let commands = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in commands.into_iter().flatten() {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            if !parameters
                .iter()
                .any(|parameter| parameter.name == "Idempotency-Key")
            {
                parameters.push(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some("replays the first response"))
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::String),
                        ))
                        .build(),
                );
            }
            operation
                .responses
                .responses
                .entry("422".to_owned())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("the Idempotency-Key was used for another request")
                        .content(
                            synapse_shared::problem::PROBLEM_JSON,
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
    }
}

/// The router with every route and the OpenAPI document at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(assets::create))
        .routes(routes!(assets::update, assets::delete))
        .routes(routes!(import::import_assets))
        .routes(routes!(rules::define, rules::list))
        .routes(routes!(rules::revise, rules::show))
        .routes(routes!(execute::execute))
        .routes(routes!(rollback::rollback))
        .routes(routes!(links::create_cable))
        .routes(routes!(links::update_cable, links::delete_cable))
        .routes(routes!(links::create_relationship))
        .routes(routes!(links::delete_relationship))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts();
    let mut openapi = openapi;
    BearerSecurity::open(&mut openapi, synapse_shared::problem::OPERATIONAL_PATHS);
    document_idempotency_keys(&mut openapi);
    BearerSecurity::document_refusals(&mut openapi);
    synapse_shared::problem::document_refusals(&mut openapi);
    synapse_shared::problem::document_problems(&mut openapi);
    let openapi_json = openapi.clone();
    api.route(
        "/openapi.json",
        get(move || async move { axum::Json(openapi_json) }),
    )
    .fallback(synapse_shared::problem::not_found)
    .method_not_allowed_fallback(synapse_shared::problem::method_not_allowed)
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(axum::middleware::from_fn(
        synapse_shared::unread_body::close_if_unread,
    ))
    .layer(synapse_shared::http_metrics::layer("command"))
    .layer(TraceLayer::new_for_http())
    .with_state(state)
}
