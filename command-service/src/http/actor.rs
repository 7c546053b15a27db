//! Who is calling. Every event records the caller as its `actor`.
//!
//! Until bearer-token authentication lands (issue 6), the actor is taken from the
//! `X-Synapse-Actor` header and defaults to `anonymous`; it is never taken from a body.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use synapse_shared::Problem;

pub const ACTOR_HEADER: &str = "x-synapse-actor";

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(ACTOR_HEADER) else {
            return Ok(Actor("anonymous".to_owned()));
        };
        match value.to_str() {
            Ok(name) if !name.is_empty() && name.len() <= 128 => Ok(Actor(name.to_owned())),
            _ => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-actor",
                "the actor header must be 1 to 128 visible ASCII characters",
            )),
        }
    }
}
