//! The bearer security scheme in the services' OpenAPI documents.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, PathItem, Ref, ResponseBuilder};

/// Name of the scheme in `components.securitySchemes`.
const SCHEME: &str = "bearer";

/// `#[openapi(modifiers(&BearerSecurity))]`: declares the JWT bearer scheme and requires
/// it on every operation. Operations open to anyone are marked with
/// [`BearerSecurity::open`] once the paths are known.
pub struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT with `sub`, `role` (viewer, engineer, admin), `iss`, `aud` \
                         and `exp`. Viewer reads; engineer imports and executes; admin \
                         defines rules and rolls back.",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    }
}

impl BearerSecurity {
    /// Mark the operations under `paths` as needing no token (health, metrics).
    pub fn open(openapi: &mut OpenApi, paths: &[&str]) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !paths.contains(&path.as_str()) {
                continue;
            }
            for operation in operations(item) {
                operation.security = Some(vec![SecurityRequirement::default()]);
            }
        }
    }

    /// Document the 401 (no valid token) and 403 (role too low) problems on every
    /// operation that does not already describe them. Call once the paths are known;
    /// the `Problem` schema must be among the components.
    pub fn document_refusals(openapi: &mut OpenApi) {
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The probes and `/metrics` take no token.
            if crate::problem::OPERATIONAL_PATHS.contains(&path.as_str()) {
                continue;
            }
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                responses.entry("401".to_owned()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("no valid bearer token (missing, expired, forged)")
                        .content(crate::problem::PROBLEM_JSON, problem())
                        .build()
                        .into()
                });
                responses.entry("403".to_owned()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("the token's role does not allow this")
                        .content(crate::problem::PROBLEM_JSON, problem())
                        .build()
                        .into()
                });
            }
        }
    }
}

pub(crate) fn operations(
    item: &mut PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}
